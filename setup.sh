#!/usr/bin/env bash
# One-command set-up: a virtual environment with CellSearch and its test tools, plus the offline
# model weights when a folder of checkpoints is at hand (default: ../shared/models).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "CellSearch needs Python 3.11"'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
WEIGHTS_SRC=${1:-${CELLSEARCH_MODELS_SRC:-../shared/models}}
if [ -d "$WEIGHTS_SRC" ]; then
    .venv/bin/cellsearch models import "$WEIGHTS_SRC"
else
    echo "no checkpoint folder at $WEIGHTS_SRC: run '.venv/bin/cellsearch models download mobilenetv2'"
    echo "or '.venv/bin/cellsearch models import ID FILE' before classifying"
fi
.venv/bin/cellsearch models list
