#!/usr/bin/env bash
# Installs everything diartune needs into .venv/ (idempotent; a second run takes seconds).
#   - Debian's ffmpeg, whose shared libraries torchcodec loads to decode audio, and
#     Debian's chromium, the headless browser of tests/test_dashboard.py;
#   - the pinned Python packages of requirements/dev.lock, then diartune itself (editable);
#   - Resemblyzer without its dependencies: diartune uses only the speaker-encoder
#     weights that ship inside its wheel (see docs/models.md).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=$(for package in ffmpeg chromium; do dpkg -s "$package" >/dev/null 2>&1 || echo "$package"; done)
if [ -n "$missing" ]; then
    echo "setup: installing Debian's" $missing
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x .venv/bin/uv ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q uv==0.13.8
fi
export UV_CACHE_DIR="${UV_CACHE_DIR:-$HOME/.cache/uv}"
.venv/bin/uv pip install -q --python .venv/bin/python -r requirements/dev.lock
.venv/bin/uv pip install -q --python .venv/bin/python --no-deps resemblyzer==0.1.4 -e .
echo "setup: ready ($(.venv/bin/python --version), diartune $(.venv/bin/diartune --version))"
