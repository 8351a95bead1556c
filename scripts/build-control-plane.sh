#!/usr/bin/env bash
# Builds a real Kubernetes control plane for tests from the Go module proxy:
# kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kwok and helm.
# Binaries go to a versioned cache outside the repo; bin/ holds links to the
# pinned versions. Already-built versions are skipped, so a warm run takes seconds.
set -euo pipefail

KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0

CACHE_ROOT="${DIARTUNE_CACHE:-$HOME/.cache/diartune}/control-plane"
BIN_DIR="$CACHE_ROOT/bin"

LOG_NAME=build-control-plane
# shellcheck source=scripts/go-build-lib.sh
source "$(dirname "$0")/go-build-lib.sh"

have_all() { # have_all DIR NAME... -> true if every DIR/NAME is an executable file
  local dir=$1 name; shift
  for name in "$@"; do [[ -x "$dir/$name" ]] || return 1; done
}

# Prints the go and godebug directives of a go.mod, so a wrapper module keeps the
# runtime GODEBUG defaults of the upstream build.
go_directives() {
  awk '/^godebug \(/ { blk = 1 }
       blk { print; if (/^\)/) blk = 0; next }
       /^go / || /^godebug / { print }' "$1"
}

check_version() { # check_version EXPECTED CMD... -> prints CMD's version output, fails if EXPECTED missing
  local expected=$1 out; shift
  out=$("$@" 2>&1) || die "'$*' failed: $out"
  grep -qF -- "$expected" <<<"$out" || die "'$*' printed '$out', expected '$expected'"
  log "  $(basename "$1"): $(head -n1 <<<"$out")"
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION dir="$CACHE_ROOT/kubernetes-$KUBERNETES_VERSION"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler)
  if have_all "$dir/bin" "${cmds[@]}"; then
    log "kubernetes $v: already built, skipping"
    return
  fi
  local minor=${v#v1.}; minor=${minor%%.*}
  local staging_version="v0.${v#v1.}" gomod staging
  log "kubernetes $v: downloading k8s.io/kubernetes@$v"
  gomod=$(download_gomod "k8s.io/kubernetes@$v")
  # Staging modules are required as v0.0.0 and replaced by ./staging/... paths, which
  # are ignored in a dependency; point each one at its published v0.Y.Z instead.
  staging=$(awk '$1 == "require" { $1 = ""; $0 = $0 }
                 $1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod" | sort -u)
  [[ -n "$staging" ]] || die "no k8s.io/* v0.0.0 requirements found in $gomod"
  log "kubernetes $v: replacing $(wc -l <<<"$staging") staging modules with $staging_version"

  mkdir -p "$dir/src" "$dir/bin"
  {
    echo "module diartune.local/control-plane/kubernetes"
    echo
    go_directives "$gomod"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    echo "replace ("
    while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_version"; done <<<"$staging"
    echo ")"
  } >"$dir/src/go.mod"
  rm -f "$dir/src/go.sum"

  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done

  local cmd start
  for cmd in "${cmds[@]}"; do
    if [[ -x "$dir/bin/$cmd" ]]; then
      log "kubernetes $v: $cmd already built, skipping"
      continue
    fi
    log "kubernetes $v: building $cmd"
    start=$(date +%s)
    build_in_module "$dir/src" "$dir/bin/$cmd" "k8s.io/kubernetes/cmd/$cmd" -ldflags "$ldflags"
    log "kubernetes $v: built $cmd in $(elapsed "$start")"
  done
}

build_etcd() {
  local v=$ETCD_VERSION dir="$CACHE_ROOT/etcd-$ETCD_VERSION"
  if have_all "$dir/bin" etcd; then
    log "etcd $v: already built, skipping"
    return
  fi
  local mod=go.etcd.io/etcd/server/v3 gomod locals start
  log "etcd $v: downloading $mod@$v"
  gomod=$(download_gomod "$mod@$v")
  # Sibling modules replaced by relative paths (../api, ...) are pinned to the same
  # release; the FORBIDDEN_DEPENDENCY guards are not needed outside etcd's repo.
  locals=$(awk '$1 == "replace" { $1 = ""; $0 = $0 }
                $2 == "=>" && $3 ~ /^\.\.?\// && $3 !~ /FORBIDDEN/ { print $1 }' "$gomod" | sort -u)
  mkdir -p "$dir/src" "$dir/bin"
  {
    echo "module diartune.local/control-plane/etcd"
    echo
    go_directives "$gomod"
    echo
    echo "require $mod $v"
    if [[ -n "$locals" ]]; then
      echo
      echo "replace ("
      while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$v"; done <<<"$locals"
      echo ")"
    fi
  } >"$dir/src/go.mod"
  rm -f "$dir/src/go.sum"

  log "etcd $v: building etcd"
  start=$(date +%s)
  build_in_module "$dir/src" "$dir/bin/etcd" "$mod" \
    -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$v"
  log "etcd $v: built etcd in $(elapsed "$start")"
}

build_kwok() {
  local v=$KWOK_VERSION dir="$CACHE_ROOT/kwok-$KWOK_VERSION" start
  if have_all "$dir/bin" kwok; then
    log "kwok $v: already built, skipping"
    return
  fi
  log "kwok $v: building kwok"
  start=$(date +%s)
  go_install_to "$dir" kwok "sigs.k8s.io/kwok/cmd/kwok@$v" -ldflags "-s -w"
  log "kwok $v: built kwok in $(elapsed "$start")"
}

build_helm() {
  local v=$HELM_VERSION dir="$CACHE_ROOT/helm-$HELM_VERSION" start
  if have_all "$dir/bin" helm; then
    log "helm $v: already built, skipping"
    return
  fi
  local major=${v%%.*} gomod k8s_minor
  gomod=$(download_gomod "helm.sh/helm/$major@$v")
  # Helm's offline default kubeVersion (helm template, lint) comes from ldflags,
  # derived from its client-go like helm's Makefile does; otherwise it claims v1.20.
  k8s_minor=$(awk '$1 == "k8s.io/client-go" { split($2, p, "."); print p[2] }' "$gomod")
  [[ -n "$k8s_minor" ]] || die "no k8s.io/client-go requirement in $gomod"
  local ldflags="-s -w -X helm.sh/helm/$major/internal/version.version=$v"
  local pkg
  for pkg in pkg/lint/rules pkg/chartutil; do
    ldflags+=" -X helm.sh/helm/$major/$pkg.k8sVersionMajor=1 -X helm.sh/helm/$major/$pkg.k8sVersionMinor=$k8s_minor"
  done
  log "helm $v: building helm"
  start=$(date +%s)
  go_install_to "$dir" helm "helm.sh/helm/$major/cmd/helm@$v" -ldflags "$ldflags"
  log "helm $v: built helm in $(elapsed "$start")"
}

link_bins() {
  mkdir -p "$BIN_DIR"
  local name target
  for name in kube-apiserver kube-controller-manager kube-scheduler; do
    ln -sfn "../kubernetes-$KUBERNETES_VERSION/bin/$name" "$BIN_DIR/$name"
  done
  for target in "etcd-$ETCD_VERSION/bin/etcd" "kwok-$KWOK_VERSION/bin/kwok" "helm-$HELM_VERSION/bin/helm"; do
    ln -sfn "../$target" "$BIN_DIR/$(basename "$target")"
  done
}

verify() {
  log "verifying binaries in $BIN_DIR"
  local cmd
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    check_version "Kubernetes $KUBERNETES_VERSION" "$BIN_DIR/$cmd" --version
  done
  check_version "etcd Version: ${ETCD_VERSION#v}" "$BIN_DIR/etcd" --version
  check_version "${KWOK_VERSION#v}" "$BIN_DIR/kwok" --version
  check_version "$HELM_VERSION" "$BIN_DIR/helm" version --short
}

main() {
  command -v go >/dev/null || die "go is not installed"
  mkdir -p "$CACHE_ROOT"
  # Two concurrent runs would race on the same wrapper modules and outputs.
  exec 9>"$CACHE_ROOT/.lock"
  flock 9
  local start
  start=$(date +%s)
  log "cache: $CACHE_ROOT ($(go version))"
  build_etcd
  build_kwok
  build_helm
  build_kubernetes
  link_bins
  verify
  log "done in $(elapsed "$start"); binaries in $BIN_DIR"
}

main "$@"
