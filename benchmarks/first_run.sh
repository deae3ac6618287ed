#!/usr/bin/env bash
# Time to first result from a fresh clone: clone this repository's current branch into a scratch folder
# (beside a link to ../shared, as a checkout sits), run ./setup.sh, then the README's main job
# (benchmarks/first_result.py: the window with the demo library and fields, Run pressed) and print the
# seconds of each. A fresh user: private weights, cache and config folders (pip's download cache is kept).
#
#     bash benchmarks/first_run.sh [SCRATCH_DIR]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d /tmp/cellsearch-first-run-XXXX)}
mkdir -p "$WORK"
BRANCH=$(git -C "$REPO" rev-parse --abbrev-ref HEAD)
git clone --quiet --branch "$BRANCH" "$REPO" "$WORK/cellsearch"
[ -d "$REPO/../shared" ] && ln -sfn "$(cd "$REPO/../shared" && pwd)" "$WORK/shared"
export CELLSEARCH_WEIGHTS_DIR="$WORK/user/weights" CELLSEARCH_CACHE_DIR="$WORK/user/cache" \
       CELLSEARCH_CONFIG_DIR="$WORK/user/config" HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=offscreen
cd "$WORK/cellsearch"
echo "fresh clone of $BRANCH ($(git rev-parse --short HEAD)) in $WORK/cellsearch; $(nproc) cores"

start=$(date +%s.%N)
./setup.sh > "$WORK/setup.log" 2>&1 || { tail -n 30 "$WORK/setup.log"; exit 1; }
setup_s=$(awk "BEGIN { print $(date +%s.%N) - $start }")
grep -E '^\[|^ready|Warning|warning' "$WORK/setup.log" || true

start=$(date +%s.%N)
.venv/bin/python benchmarks/first_result.py demo/pbc_library demo/bccd_fields 2> "$WORK/first_result.err"
first_s=$(awk "BEGIN { print $(date +%s.%N) - $start }")

printf 'setup.sh: %.0f s\nmain job, launch to first result: %.1f s\n' "$setup_s" "$first_s"
