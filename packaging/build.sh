#!/usr/bin/env bash
# Build the one-folder app into dist/CellSearch and run its smoke test (under Xvfb when there is no display).
#   packaging/build.sh            full bundle (CUDA libraries included)
#   packaging/build.sh --cpu-only without the CUDA libraries
set -euo pipefail
cd "$(dirname "$0")/.."
[[ "${1:-}" == "--cpu-only" ]] && export CELLSEARCH_BUNDLE_CPU_ONLY=1
.venv/bin/pip install -q -e '.[packaging]'
start=$(date +%s)
.venv/bin/pyinstaller packaging/cellsearch.spec --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller
echo "built in $(( $(date +%s) - start )) s; bundle size: $(du -sh dist/CellSearch | cut -f1)"
install -D -m 644 resources/cellsearch.png dist/CellSearch/share/icons/hicolor/256x256/apps/cellsearch.png
install -D -m 644 packaging/cellsearch.desktop dist/CellSearch/share/applications/cellsearch.desktop
.venv/bin/python packaging/smoke_test.py dist/CellSearch/cellsearch
