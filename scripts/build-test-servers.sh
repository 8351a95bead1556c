#!/usr/bin/env bash
# Builds, from the Go module proxy, the servers that the end-to-end tests use in place of
# production services:
#   - SeaweedFS (`weed`, Apache-2.0), whose S3 gateway is the object store;
#   - CNCF distribution (`registry`, Apache-2.0), the container registry the images are
#     pushed to and the test node pulls from.
# Binaries go to a versioned cache outside the repo; bin/ holds links to the pinned
# versions. Already-built versions are skipped, so a warm run takes a second.
set -euo pipefail

# SeaweedFS's release tags (4.53) are not Go module versions: the proxy serves commits
# as pseudo-versions. This one is SeaweedFS 4.53.
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6
DISTRIBUTION_VERSION=v3.1.2

CACHE_ROOT="${DIARTUNE_CACHE:-$HOME/.cache/diartune}/test-servers"
BIN_DIR="$CACHE_ROOT/bin"

LOG_NAME=build-test-servers
# shellcheck source=scripts/go-build-lib.sh
source "$(dirname "$0")/go-build-lib.sh"

build_seaweedfs() {
  local v=$SEAWEEDFS_VERSION dir="$CACHE_ROOT/seaweedfs-$SEAWEEDFS_VERSION"
  local mod=github.com/seaweedfs/seaweedfs gomod start
  if [[ -x "$dir/bin/weed" ]]; then
    log "seaweedfs $v: already built, skipping"
    return
  fi
  log "seaweedfs $v: downloading $mod@$v"
  gomod=$(download_gomod "$mod@$v")
  # Its go.mod replaces a dependency by a fork, which `go install` refuses; a wrapper
  # module repeats the module-to-module replace lines (not the commented local ones).
  mkdir -p "$dir/src" "$dir/bin"
  {
    echo "module diartune.local/test-servers/seaweedfs"
    echo
    grep -E '^go ' "$gomod"
    echo
    echo "require $mod $v"
    echo
    grep -E '^replace [^ ]+ => [^ ./][^ ]* v' "$gomod" || true
  } >"$dir/src/go.mod"
  rm -f "$dir/src/go.sum"
  log "seaweedfs $v: building weed (several minutes on 2 cores)"
  start=$(date +%s)
  build_in_module "$dir/src" "$dir/bin/weed" "$mod/weed" -ldflags "-s -w"
  log "seaweedfs $v: built weed in $(elapsed "$start")"
}

build_distribution() {
  local v=$DISTRIBUTION_VERSION dir="$CACHE_ROOT/distribution-$DISTRIBUTION_VERSION" start
  if [[ -x "$dir/bin/registry" ]]; then
    log "distribution $v: already built, skipping"
    return
  fi
  log "distribution $v: building registry"
  start=$(date +%s)
  go_install_to "$dir" registry "github.com/distribution/distribution/v3/cmd/registry@$v" \
    -ldflags "-s -w -X github.com/distribution/distribution/v3/version.version=$v"
  log "distribution $v: built registry in $(elapsed "$start")"
}

link_bins() {
  mkdir -p "$BIN_DIR"
  ln -sfn "../seaweedfs-$SEAWEEDFS_VERSION/bin/weed" "$BIN_DIR/weed"
  ln -sfn "../distribution-$DISTRIBUTION_VERSION/bin/registry" "$BIN_DIR/registry"
}

verify() {
  local out
  out=$("$BIN_DIR/weed" version 2>&1) || die "weed version failed: $out"
  log "  weed: $(head -n1 <<<"$out")"
  out=$("$BIN_DIR/registry" --version 2>&1) || die "registry --version failed: $out"
  grep -qF -- "$DISTRIBUTION_VERSION" <<<"$out" || die "registry --version printed '$out'"
  log "  registry: $out"
}

main() {
  command -v go >/dev/null || die "go is not installed"
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.lock"
  flock 9
  local start
  start=$(date +%s)
  log "cache: $CACHE_ROOT ($(go version))"
  build_distribution
  build_seaweedfs
  link_bins
  verify
  log "done in $(elapsed "$start"); binaries in $BIN_DIR"
}

main "$@"
