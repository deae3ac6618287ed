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

PLATFORMS="--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64"

python312() {  # a Python 3.12 here (the image's version) for the clean-venv check
    python3.12 -c "" 2>/dev/null && { command -v python3.12; return; }
    ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1
}

stage() {  # wheels first (the run dies without them), then the data, then the proof in a clean 3.12 venv
    local exclude; exclude="$(git rev-parse --git-common-dir)/info/exclude"
    grep -qxF "/$CARRY/" "$exclude" 2>/dev/null || echo "/$CARRY/" >> "$exclude"
    rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/data/pbc_barcelona" "$CARRY/stage"
    local py; py=$(python312)
    [ -n "$py" ] || { echo "stage: no python3.12 here to resolve and check the image's wheels"; exit 1; }
    local venv=$CARRY/stage/venv log=$CARRY/stage
    "$py" -m venv "$venv" || exit 1
    timeout 300 "$venv/bin/python" benchmarks/gpu_carry.py resolve "$venv" "$log/carried.txt" || {
        echo "stage: resolving the carried wheels failed"; exit 1; }
    # shellcheck disable=SC2086
    timeout 600 python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $PLATFORMS -d "$CARRY/wheels" -r "$log/carried.txt" || { echo "stage: a wheel could not be downloaded"; exit 1; }
    local shared=${CELLSEARCH_SHARED:-../shared}
    for class in "$shared"/data/pbc_barcelona/*/; do
        name=$(basename "$class"); mkdir -p "$CARRY/data/pbc_barcelona/$name"
        ls "$class" | head -"${PBC_PER_CLASS:-300}" | while read -r f; do cp "$class/$f" "$CARRY/data/pbc_barcelona/$name/"; done
    done
    cp -r "$shared/data/bccd_fov" "$shared/data/bccd_wbc" "$CARRY/data/" 2>/dev/null
    mkdir -p "$CARRY/models" && cp "$shared"/models/mobile_sam_vit_t.pt "$CARRY/models/" 2>/dev/null
    check_carry "$venv" || exit 1
    du -sh "$CARRY"
}

check_carry() {  # the image stand-in: real numpy, stubs for torch/torchvision/timm, then ONLY the carried wheels
    local venv=$1 log=$CARRY/stage
    rm -rf "$venv" && "$(python312)" -m venv "$venv" || return 1
    timeout 120 "$venv/bin/python" -m pip install -q "numpy==$(sed -n 's/^numpy==//p' benchmarks/gpu_image_packages.txt)" \
        || timeout 120 "$venv/bin/python" -m pip install -q numpy || return 1
    "$venv/bin/python" benchmarks/gpu_carry.py stubs
    timeout 180 "$venv/bin/python" -m pip install -q --no-index --no-deps "$CARRY"/wheels/*.whl || return 1
    timeout 60 "$venv/bin/python" -m pip check 2>&1 | tee "$log/pip_check.txt"
    grep -q "No broken requirements" "$log/pip_check.txt" || { echo "stage: pip check failed"; return 1; }
    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 timeout 240 "$venv/bin/python" benchmarks/gpu_carry.py verify 2>&1 \
        | tee "$log/verify.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "stage: an import failed with only the carried wheels"; return 1; }
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
