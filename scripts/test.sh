#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite: ruff (lint and format), mypy, pytest.
# Two builds run in the background, at low priority: the Dockerfile's images (mostly disk
# and network) while the control plane builds, and the test servers (SeaweedFS, the
# registry) while pytest runs the tests that do not need them; the tests that do wait for
# the build's lock (tests/servers.py).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh
logs="${DIARTUNE_CACHE:-$HOME/.cache/diartune}"
mkdir -p "$logs"
echo "== images (scripts/build-images.sh in the background, log: $logs/images-build.log)"
scripts/build-images.sh >"$logs/images-build.log" 2>&1 &
images=$!
scripts/build-control-plane.sh
echo "== test servers (scripts/build-test-servers.sh in the background, log: $logs/test-servers-build.log)"
scripts/build-test-servers.sh >"$logs/test-servers-build.log" 2>&1 &
servers=$!
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"
ruff check
ruff format --check
echo "== mypy"
mypy
if ! wait "$images"; then
    tail -n 40 "$logs/images-build.log"
    echo "test.sh: scripts/build-images.sh failed (log: $logs/images-build.log)"
    exit 1
fi
grep '^\[build-images' "$logs/images-build.log"
echo "== pytest"
status=0
pytest -q -rs "$@" || status=$?
if ! wait "$servers"; then
    tail -n 40 "$logs/test-servers-build.log"
    echo "test.sh: scripts/build-test-servers.sh failed (log: $logs/test-servers-build.log)"
    exit 1
fi
grep '^\[build-test-servers' "$logs/test-servers-build.log" | grep -E 'built|skipping|done'
echo "test.sh: done in $(( $(date +%s) - start )) s"
exit "$status"
