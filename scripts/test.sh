#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite: ruff (lint and format), mypy, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh
scripts/build-control-plane.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"
ruff check
ruff format --check
echo "== mypy"
mypy
echo "== pytest"
pytest -q -rs "$@"
echo "test.sh: done in $(( $(date +%s) - start )) s"
