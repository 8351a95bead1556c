#!/usr/bin/env bash
# Builds the Dockerfile's images without a Docker engine or a registry, with buildah:
#   1. installs Debian's buildah, podman, runc, fuse-overlayfs, mmdebstrap and skopeo;
#   2. writes a containers configuration that works on a CI machine (runc, cgroupfs,
#      lowered rlimits) and a container storage in the cache, outside the repo;
#   3. makes a stand-in for python:3.11-slim-bookworm with mmdebstrap (no registry to
#      pull it from), passed to the Dockerfile as PYTHON_IMAGE, as an air-gapped user would;
#   4. builds the targets given (default: operator trial) and tags them like the chart's
#      defaults, ghcr.io/diartune/<target>:<appVersion>.
# Each image is labelled with a key of everything it is built from; an image whose key
# matches is not rebuilt, so the heavy trial image is built once and then reused until
# the Dockerfile, the locks or the source change. buildah's layer cache makes a change
# under diartune/ rebuild only the wheel layer.
#
# Usage: scripts/build-images.sh [base] [operator] [trial]   (default: operator trial)
# Prints "<target> <image reference>" for each target on stdout (the log goes to stderr).
set -euo pipefail
cd "$(dirname "$0")/.."

# The host's uv cache (filled by scripts/setup.sh from requirements/dev.lock) is the
# build's download cache: the trial lock's 3.5 GB of torch and CUDA wheels are already
# there. It is mounted where the Dockerfile's `RUN --mount=type=cache,id=uv` looks.
UV_CACHE="${UV_CACHE_DIR:-$HOME/.cache/uv}"
IMAGES_ROOT="${DIARTUNE_CACHE:-$HOME/.cache/diartune}/images"
CONFIG_DIR="$IMAGES_ROOT/config"
GRAPH_ROOT="$IMAGES_ROOT/storage"
# Run-time state belongs on a tmpfs; one directory per storage, so that caches of two
# checkouts never share one.
RUN_ROOT="/run/diartune-containers/$(printf '%s' "$GRAPH_ROOT" | sha256sum | cut -c1-12)"
BASE_IMAGE=localhost/python:3.11-slim-bookworm-local
BASE_SUITE=bookworm
BASE_PACKAGES=python3,libpython3.11,python3-pip-whl,ca-certificates
KEY_LABEL=io.diartune.build-key
TOOLS=(buildah podman runc fuse-overlayfs mmdebstrap skopeo)

export CONTAINERS_CONF="$CONFIG_DIR/containers.conf"
export CONTAINERS_STORAGE_CONF="$CONFIG_DIR/storage.conf"
export CONTAINERS_REGISTRIES_CONF="$CONFIG_DIR/registries.conf"
# buildah puts `RUN --mount=type=cache,id=ID` directories at $TMPDIR/buildah-cache/ID.
export TMPDIR="$IMAGES_ROOT/tmp"
NICE=(nice -n 19)

log() { printf '[build-images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

elapsed() { # elapsed START_SECONDS -> "Mm SSs"
  local d=$(( $(date +%s) - $1 ))
  printf '%dm%02ds' $((d / 60)) $((d % 60))
}

install_tools() {
  local missing=() tool
  for tool in "${TOOLS[@]}"; do
    dpkg -s "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [[ ${#missing[@]} -eq 0 ]] && return
  log "installing Debian's ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_config() {
  mkdir -p "$CONFIG_DIR" "$GRAPH_ROOT" "$RUN_ROOT" "$TMPDIR"
  # crun refuses hybrid cgroup hierarchies and podman's default rlimits exceed what a
  # process without CAP_SYS_RESOURCE may set: runc, cgroupfs and lower limits work.
  cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$RUN_ROOT/libpod"
EOF
  cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$GRAPH_ROOT"
runroot = "$RUN_ROOT/storage"
EOF
  # Short names never go to a remote registry: they are local images or nothing.
  cat >"$CONTAINERS_REGISTRIES_CONF" <<EOF
unqualified-search-registries = []
EOF
  # Where the Dockerfile's cache mount with id=uv lands (see UV_CACHE above).
  mkdir -p "$UV_CACHE" "$TMPDIR/buildah-cache"
  [[ -L "$TMPDIR/buildah-cache/uv" ]] || rm -rf "$TMPDIR/buildah-cache/uv"
  ln -sfn "$UV_CACHE" "$TMPDIR/buildah-cache/uv"
}

image_label() { # image_label IMAGE LABEL -> the label's value, '' if no such image
  podman image inspect --format "{{index .Labels \"$2\"}}" "$1" 2>/dev/null || true
}

# This machine's own apt configuration (files no package owns: proxies, mirrors' quirks).
local_apt_conf() {
  local f
  for f in /etc/apt/apt.conf.d/*; do
    [[ -f "$f" ]] && ! dpkg -S "$f" >/dev/null 2>&1 && printf '%s\n' "$f"
  done
  return 0
}

host_sources() { # the host's Debian sources: a deb822 file or sources.list
  local f
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [[ -s "$f" ]] && { printf '%s\n' "$f"; return; }
  done
  die "no Debian sources found in /etc/apt"
}

# Writes each certificate of the second file that the first lacks to dir/host-N.crt.
AWK_NEW_CERTS='FNR == 1 { file++ }
/BEGIN CERT/ { cert = "" }
{ cert = cert $0 "\n" }
/END CERT/ {
  if (file == 1) { known[cert] = 1 }
  else if (!(cert in known)) { out = dir "/host-" ++n ".crt"; printf "%s", cert > out; close(out) }
}'
export AWK_NEW_CERTS

# A stand-in for python:3.11-slim-bookworm: Debian's Python 3.11 at /usr/local/bin/python3,
# with libpython3.11.so as in the official image (torchcodec's extensions link to it), and
# pip installed from Debian's wheel into /usr/local (so that it can be uninstalled, as from
# the official image; Debian's ensurepip is disabled).
build_base() {
  # What package downloads in the builds need from this machine: its CA certificates
  # (TLS may be intercepted), its pip configuration and its local apt configuration.
  local sources key apt_conf=() tar start
  local certs=/usr/local/share/ca-certificates/host
  sources=$(host_sources)
  mapfile -t apt_conf < <(local_apt_conf)
  key=$( { declare -f build_base; printf '%s\n' "$BASE_SUITE" "$BASE_PACKAGES"; \
           cat "$sources" /etc/ssl/certs/ca-certificates.crt "${apt_conf[@]}"; \
           cat /etc/pip.conf 2>/dev/null || true; } | sha256sum | cut -c1-16)
  if [[ "$(image_label "$BASE_IMAGE" "$KEY_LABEL")" == "$key" ]]; then
    log "base $BASE_IMAGE: up to date"
    return
  fi
  log "base $BASE_IMAGE: mmdebstrap $BASE_SUITE ($BASE_PACKAGES)"
  start=$(date +%s)
  tar="$TMPDIR/base-$key.tar"
  local hooks=(
    "mkdir -p \"\$1$certs\""
    "awk -v dir=\"\$1$certs\" \"\$AWK_NEW_CERTS\" \"\$1/etc/ssl/certs/ca-certificates.crt\" /etc/ssl/certs/ca-certificates.crt"
    'chroot "$1" update-ca-certificates >/dev/null'
    '[ ! -f /etc/pip.conf ] || cp /etc/pip.conf "$1/etc/pip.conf"'
    'rm -f "$1"/usr/lib/python3.*/EXTERNALLY-MANAGED'
    'chroot "$1" sh -c '\''set -- /usr/share/python-wheels/pip-*.whl; python3 "$1/pip" install --quiet --no-index "$1"'\'
    'ln -sf /usr/bin/python3 "$1/usr/local/bin/python3"'
    'ln -sf /usr/bin/python3 "$1/usr/local/bin/python"'
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
  )
  [[ ${#apt_conf[@]} -eq 0 ]] || hooks+=("cp ${apt_conf[*]@Q} \"\$1/etc/apt/apt.conf.d/\"")
  "${NICE[@]}" mmdebstrap --quiet --variant=minbase --mode=root --include="$BASE_PACKAGES" \
    "${hooks[@]/#/--customize-hook=}" "$BASE_SUITE" "$tar" "$sources"
  podman import --quiet \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
    --change "LABEL $KEY_LABEL=$key" \
    --change 'CMD ["python3"]' \
    "$tar" "$BASE_IMAGE" >/dev/null
  rm -f "$tar"
  # buildah would reuse layers built on the previous base (its cache ignores the base's
  # config): drop every layer that no tagged image uses.
  podman image prune --force >/dev/null
  log "base $BASE_IMAGE: built in $(elapsed "$start") ($(podman image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes)"
}

app_version() {
  sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/diartune/Chart.yaml
}

# A key of everything a target is built from: the base, the Dockerfile and its build
# context (.dockerignore lets in pyproject.toml, diartune/ and the two locks).
build_key() {
  local target=$1 base_id
  base_id=$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE")
  {
    printf '%s\n' "$target" "$base_id"
    cat Dockerfile .dockerignore pyproject.toml requirements/operator.lock requirements/trial.lock
    find diartune -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z \
      | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

build_target() {
  local target=$1 image key start
  image="ghcr.io/diartune/$target:$(app_version)"
  key=$(build_key "$target")
  if [[ "$(image_label "$image" "$KEY_LABEL")" == "$key" ]]; then
    log "$target $image: up to date"
  else
    local build_log="$IMAGES_ROOT/logs/$target.log"
    log "$target $image: building (log: $build_log)"
    start=$(date +%s)
    mkdir -p "$(dirname "$build_log")"
    if ! "${NICE[@]}" buildah bud --isolation chroot --layers --force-rm \
      --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
      --label "$KEY_LABEL=$key" \
      --target "$target" -t "$image" . >"$build_log" 2>&1; then
      tail -n 40 "$build_log" >&2
      die "$target: buildah bud failed after $(elapsed "$start") (log: $build_log)"
    fi
    log "$target $image: built in $(elapsed "$start") ($(podman image inspect --format '{{.Size}}' "$image") bytes)"
  fi
  printf '%s %s\n' "$target" "$image"
}

main() {
  local targets=("$@")
  [[ ${#targets[@]} -gt 0 ]] || targets=(operator trial)
  install_tools
  write_config
  exec 9>"$IMAGES_ROOT/.lock"
  flock 9
  # Working containers of a build that was killed would keep their images from pruning.
  buildah rm --all >/dev/null
  build_base
  local target
  for target in "${targets[@]}"; do
    case $target in
      base) ;;
      operator | trial) build_target "$target" ;;
      *) die "unknown target $target (base, operator or trial)" ;;
    esac
  done
}

main "$@"
