#!/usr/bin/env bash
# Sets everything up, then runs the demo on this machine: a segmentation model pretrained
# on simulated 'source' conversations, adapted to 'ems' audio of other speakers three ways
# (none, pyannote's tutorial fine-tuning, diartune's two-stage tuning), scored on test speakers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/diartune demo --output "${1:-demo-output}"
