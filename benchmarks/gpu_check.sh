#!/usr/bin/env bash
# The GPU figures of the speed benchmarks in one short run (at most 9 minutes, planned for about 5 on an H100).
#
#   bash benchmarks/gpu_check.sh stage       # on a machine with PyPI: fills .gpu-carry/ (git-ignored) with
#                                            # the wheels the GPU image lacks and 512 PBC crops (~12 MB)
#   bash benchmarks/gpu_check.sh run OUTDIR  # on the GPU machine, from the repository root
#
# run: GPU-only tests (tests/test_gpu.py: CUDA path against the CPU, fp16 tolerance, pinned memory), crops/s
# per model in fp32 and fp16 autocast (bench_models.py, random weights where none are here: speed does not
# depend on them), and the pipeline against the bare forward pass with and without pinned memory
# (bench_pipeline.py). Everything lands in OUTDIR as logs and JSON.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry
MODELS=mobilenetv2,efficientnet_lite0,dinov2_vits14,dinov2_vitb14,convnext_base,swin_base,clip_vitb16,vitmae_base,sam_vit_b
PIPELINE=mobilenetv2+efficientnet_lite0:raw,mobilenetv2+efficientnet_lite0:cell,dinov2_vitb14+convnext_base:cell

stage() {
    grep -qxF "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >> .git/info/exclude
    rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/data/pbc_barcelona"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        -d "$CARRY/wheels" open_clip_torch ftfy wcwidth segment-anything || exit 1
    local shared=${CELLSEARCH_SHARED:-../shared}
    for class in "$shared"/data/pbc_barcelona/*/; do
        name=$(basename "$class"); mkdir -p "$CARRY/data/pbc_barcelona/$name"
        ls "$class" | head -64 | while read -r f; do cp "$class/$f" "$CARRY/data/pbc_barcelona/$name/"; done
    done
    du -sh "$CARRY"
}

run() {
    local out=${1:?give an output folder}
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$CARRY"/wheels/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CELLSEARCH_OFFLINE=1
    export CELLSEARCH_SHARED=$PWD/$CARRY CELLSEARCH_CACHE_DIR=$(mktemp -d) CELLSEARCH_CONFIG_DIR=$(mktemp -d)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
    timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/test_gpu.log"
    timeout 300 python3 benchmarks/bench_models.py --models "$MODELS" --cpu-precisions none --gpu-crops 512 \
        --json "$out/bench_models.json" 2>&1 | tee "$out/bench_models.log"
    timeout 150 python3 benchmarks/bench_pipeline.py --device cuda --crops 512 --repeats 2 --configs "$PIPELINE" \
        --json "$out/bench_pipeline.json" 2>&1 | tee "$out/bench_pipeline.log"
}

case "${1:-}" in
    stage) stage ;;
    run) run "${2:-out/gpu}" ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
