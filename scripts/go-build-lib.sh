# Shared by scripts/build-control-plane.sh and scripts/build-test-servers.sh, which set
# LOG_NAME and CACHE_ROOT and then source this file: Go build settings and helpers.

# Never fetch a different Go toolchain behind our back; all pins build with the local Go.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
# Static binaries, as in the upstream releases.
export CGO_ENABLED="${CGO_ENABLED:-0}"

# Keep this 2-core machine usable for others while building.
NICE=(nice -n 19)
GO_BUILD_FLAGS=(-p "${GO_BUILD_PARALLELISM:-$(nproc)}" -trimpath)

log() { printf '[%s %(%H:%M:%S)T] %s\n' "$LOG_NAME" -1 "$*"; }
die() { log "ERROR: $*"; exit 1; }

elapsed() { # elapsed START_SECONDS -> "Mm SSs"
  local d=$(( $(date +%s) - $1 ))
  printf '%dm%02ds' $((d / 60)) $((d % 60))
}

# Prints the go.mod path of MODULE@VERSION after downloading it into GOMODCACHE.
download_gomod() {
  local json gomod
  json=$(cd "$CACHE_ROOT" && GOFLAGS= go mod download -json "$1")
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
  [[ -f "$gomod" ]] || die "could not download $1: $json"
  printf '%s\n' "$gomod"
}

# go build in a wrapper module dir: build_in_module DIR OUT PACKAGE [go build flags...]
build_in_module() {
  local dir=$1 out=$2 pkg=$3; shift 3
  (cd "$dir" && GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" \
    "${NICE[@]}" go build "${GO_BUILD_FLAGS[@]}" "$@" -o "$out.tmp" "$pkg")
  mv -f "$out.tmp" "$out"
}

# go_install_to DIR NAME PACKAGE@VERSION [go install flags...]: modules without replace lines.
go_install_to() {
  local dir=$1 name=$2 target=$3; shift 3
  mkdir -p "$dir/bin"
  rm -rf "$dir/bin.tmp"
  (cd "$CACHE_ROOT" && GOBIN="$dir/bin.tmp" "${NICE[@]}" go install "${GO_BUILD_FLAGS[@]}" "$@" "$target")
  mv -f "$dir/bin.tmp/$name" "$dir/bin/$name"
  rmdir "$dir/bin.tmp"
}
