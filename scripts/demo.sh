#!/usr/bin/env bash
# Sets everything up, then runs the demo: a real two-stage tuning on this machine
# (local executor, a corpus made from pyannote.audio's real sample, offline models).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/diartune demo --output "${1:-demo-output}"
