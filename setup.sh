#!/usr/bin/env bash
# One-command set-up: a virtual environment with CellSearch and its test tools, the offline model weights
# when a folder of checkpoints is at hand (default: ../shared/models), and the demo (a reference library
# with its features stored, plus blood-smear fields) when the sample data is at hand (../shared/data).
set -euo pipefail
cd "$(dirname "$0")"
step() { printf '\n[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# Python 3.11 (tested) or 3.12; python3.11 first, then python3.12, then python3
if [ -z "${PYTHON:-}" ]; then
    for candidate in python3.11 python3.12 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c '' >/dev/null 2>&1; then
            PYTHON=$candidate
            break
        fi
    done
fi
VERSION=$("${PYTHON:-python3}" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
case "$VERSION" in
    3.11) ;;
    3.12) echo "note: Python 3.12: torch comes from PyPI as a cp312 wheel (a larger download); 3.11 is the tested one" ;;
    *)
        cat >&2 <<EOF
error: CellSearch needs Python 3.11 (or 3.12); '${PYTHON:-python3}' is Python $VERSION.
Get Python 3.11 in one of these ways, then run ./setup.sh again:
  Debian/Ubuntu:  sudo apt-get install python3.11 python3.11-venv
                  (older Ubuntu: sudo add-apt-repository ppa:deadsnakes/ppa first)
  uv:             uv python install 3.11 && PYTHON="\$(uv python find 3.11)" ./setup.sh
  pyenv:          pyenv install 3.11 && PYTHON="\$(pyenv root)/versions/\$(pyenv latest 3.11)/bin/python" ./setup.sh
  macOS:          brew install python@3.11
Or name an interpreter: PYTHON=/path/to/python3.11 ./setup.sh
EOF
        exit 1
        ;;
esac

step "1/4 virtual environment .venv (Python $VERSION)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip

step "2/4 CellSearch and its libraries (torch, PySide6, FAISS...; 2-4 minutes the first time)"
NEED_GB=8  # the environment takes about 7.3 GB (torch is a CUDA build), plus room to unpack the largest wheel
free_gb() { df -Pk . | awk 'NR == 2 { printf "%.1f", $4 / 1048576 }'; }
if ! compgen -G ".venv/lib/python*/site-packages/torch" >/dev/null \
        && awk -v free="$(free_gb)" -v need="$NEED_GB" 'BEGIN { exit !(free < need) }'; then
    echo "warning: $(free_gb) GB free on the disk of $(pwd); the install needs about $NEED_GB GB" >&2
fi
set +e  # pip's own lines, one per package, as it goes; everything in .venv/pip-install.log
PYTHONUNBUFFERED=1 .venv/bin/python -m pip install --no-cache-dir -e '.[test,cluster]' 2>&1 | tee .venv/pip-install.log \
    | awk '/^Installing collected/ { n = split($0, names, ","); print "installing " n " packages (a few minutes)"; fflush() }
           /^(Collecting|Successfully|ERROR)/ { print substr($0, 1, 110); fflush() }'
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "error: pip install failed; the end of .venv/pip-install.log:" >&2
    tail -n 20 .venv/pip-install.log >&2
    if grep -q "No space left on device" .venv/pip-install.log; then
        echo "error: the disk of $(pwd) is full ($(free_gb) GB free now); CellSearch's environment needs about" \
             "$NEED_GB GB: free some space and run ./setup.sh again" >&2
    fi
    exit 1
fi

step "3/4 model weights"
WEIGHTS_SRC=${1:-${CELLSEARCH_MODELS_SRC:-../shared/models}}
if [ -d "$WEIGHTS_SRC" ]; then
    .venv/bin/cellsearch models import "$WEIGHTS_SRC"
else
    echo "no checkpoint folder at $WEIGHTS_SRC: run '.venv/bin/cellsearch models download mobilenetv2 efficientnet_lite0'"
    echo "or '.venv/bin/cellsearch models import ID FILE' before classifying"
fi
.venv/bin/cellsearch models list

step "4/4 the demo: a PBC white-cell library with its features, and BCCD fields (once, about 2 minutes)"
if CELLSEARCH_OFFLINE=1 .venv/bin/cellsearch library demo demo; then  # imported weights only, no download
    echo "ready. The main job: .venv/bin/cellsearch gui --reference demo/pbc_library demo/bccd_fields"
else
    echo "no demo (it needs the sample data and the two default models); CellSearch itself is ready"
fi
echo "To type 'cellsearch' instead of '.venv/bin/cellsearch': source .venv/bin/activate"
