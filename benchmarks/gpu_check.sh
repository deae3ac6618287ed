#!/usr/bin/env bash
# The GPU figures of issue 18 in one prepared run (planned for 6 minutes of the 8 a device call may take).
#
#   bash benchmarks/gpu_check.sh stage            # here, with PyPI: fills .gpu-carry/ (git-ignored, < 60 MiB with
#                                                 # the tree): the wheels the image lacks, checked in a clean 3.12
#                                                 # venv, 256 PBC crops, 64 BCCD fields, MobileSAM (fp16 copy)
#   bash benchmarks/gpu_check.sh run OUTDIR       # on the GPU machine, from the repository root (carry .gpu-carry)
#   bash benchmarks/gpu_check.sh run OUTDIR --dry-run   # here, on the CPU, tiny sizes: every step starts
#
# run, steps in order of value, each with its own time limit, skipped once the run's budget (RUN_BUDGET s) is
# spent; JSON figures, steps.txt, gpu.txt and logs.tar.gz land in OUTDIR (8 files: what a device call returns).
# Steps: tests/test_gpu.py; the 20,000 x 20,000 stitched image from file to predictions (SAM by the app's default rule, DINOv2-B + ConvNeXt-B, per stage); the 2,400-crop PBC
# evaluation with DINOv2-B + ConvNeXt-B ('cell' preparation, random weights: the same cost); SAM s/megapixel,
# prompted with tiles batched against SamAutomaticMaskGenerator, with BCCD white-cell recall; forward-pass
# options (channels_last, CUDA graphs, two models at once; FLOP/s for the share of the card's peak); the
# pipeline against the bare forward pass.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry
PIPELINE=mobilenetv2+efficientnet_lite0:cell,dinov2_vitb14+convnext_base:cell
PAIR=dinov2_vitb14,convnext_base
CARRY_LIMIT_MB=60  # the device call carries the tree and .gpu-carry: 64 MiB in all

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
    local venv log=$CARRY/stage
    venv=$(mktemp -d)/venv
    "$py" -m venv "$venv" || exit 1
    timeout 300 "$venv/bin/python" benchmarks/gpu_carry.py resolve "$venv" "$log/carried.txt" || {
        echo "stage: resolving the carried wheels failed"; exit 1; }
    # shellcheck disable=SC2086
    timeout 600 python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $PLATFORMS -d "$CARRY/wheels" -r "$log/carried.txt" || { echo "stage: a wheel could not be downloaded"; exit 1; }
    local shared=${CELLSEARCH_SHARED:-../shared}
    for class in "$shared"/data/pbc_barcelona/*/; do
        name=$(basename "$class"); mkdir -p "$CARRY/data/pbc_barcelona/$name"
        ls "$class" | head -"${PBC_PER_CLASS:-32}" | while read -r f; do cp "$class/$f" "$CARRY/data/pbc_barcelona/$name/"; done
    done
    mkdir -p "$CARRY/data/bccd_fov/JPEGImages" "$CARRY/models"
    cp "$shared/data/bccd_fov/wbc_boxes_with_subtype.csv" "$CARRY/data/bccd_fov/"
    ls "$shared/data/bccd_fov/JPEGImages" | sort | head -"${BCCD_FIELDS:-64}" | while read -r f; do
        cp "$shared/data/bccd_fov/JPEGImages/$f" "$CARRY/data/bccd_fov/JPEGImages/"; done
    # MobileSAM in fp16 (half the size; loaded into the fp32 network): the carry limit has no room for 40 MB
    "${PYTHON:-python3}" -c "import sys, torch; s = torch.load(sys.argv[1], map_location='cpu', weights_only=True); \
torch.save({k: v.half() if v.is_floating_point() else v for k, v in s.items()}, sys.argv[2])" \
        "$shared/models/mobile_sam_vit_t.pt" "$CARRY/models/mobile_sam_vit_t.pt" || exit 1
    check_carry "$venv" || exit 1
    rm -rf "$(dirname "$venv")"
    local total; total=$(( ($(du -sk "$CARRY" | cut -f1) + $(git ls-files -co --exclude-standard -z | du -ck --files0-from=- | tail -1 | cut -f1)) / 1024 ))
    echo "stage: .gpu-carry $(du -sh "$CARRY" | cut -f1), with the working tree ${total} MB (limit $CARRY_LIMIT_MB)"
    [ "$total" -le "$CARRY_LIMIT_MB" ] || { echo "stage: too large to carry"; exit 1; }
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

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, or skip once the budget is spent
    local name=$1 limit=$(( $2 * ${LIMIT_SCALE:-1} )); shift 2
    local left=$(( RUN_BUDGET - SECONDS ))
    if [ "$left" -lt 20 ]; then echo "SKIPPED $name (budget spent)" | tee -a "$OUT/steps.txt"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $(( SECONDS - t0 )) s (limit $limit)" | tee -a "$OUT/steps.txt"
    tail -4 "$OUT/$name.log"
}

pbc2400() {  # the 2,400-crop evaluation set, 300 per class, from the carried crops (copies: the same cost)
    local src=$1 dest=$2 per=$3
    for class in "$src"/*/; do
        name=$(basename "$class"); mkdir -p "$dest/$name"; local files=("$class"*) i=0
        while [ "$i" -lt "$per" ]; do cp "${files[$((i % ${#files[@]}))]}" "$dest/$name/$i-$(basename "${files[$((i % ${#files[@]}))]}")"; i=$((i + 1)); done
    done
}

run() {
    OUT=${1:?give an output folder}; local dry=${2:-}
    mkdir -p "$OUT"; : > "$OUT/steps.txt"
    SECONDS=0
    local py=${PYTHON:-python3} dev=cuda size=20000 per=300 sam_images=2 sam_grid=4 sam_tile=1024 points=32 gpu_crops=1024 forward=default,channels_last,cudagraphs
    if [ "$dry" = "--dry-run" ]; then  # the CPU, tiny sizes: proves every step starts and writes its figures
        dev=cpu size=1200 per=3 sam_images=1 sam_grid=2 sam_tile=640 points=4 gpu_crops=4 forward=default,channels_last
        LIMIT_SCALE=${LIMIT_SCALE:-5}; RUN_BUDGET=${RUN_BUDGET:-1800}  # a 2-core CPU is slow
        PAIR=mobilenetv2,efficientnet_lite0; PIPELINE=mobilenetv2+efficientnet_lite0:cell
    else
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$CARRY"/wheels/*.whl \
            || { echo "the carried wheels did not install"; exit 1; }
        export PYTHONPATH=/tmp/site
    fi
    export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CELLSEARCH_OFFLINE=1
    export CELLSEARCH_SHARED=$PWD/$CARRY CELLSEARCH_CACHE_DIR=$(mktemp -d) CELLSEARCH_CONFIG_DIR=$(mktemp -d)
    export CELLSEARCH_WEIGHTS_DIR=$(mktemp -d); RUN_BUDGET=${RUN_BUDGET:-360}
    local sam=$PWD/$CARRY/models/mobile_sam_vit_t.pt pbc=$PWD/$CARRY/data/pbc_barcelona eval_set; eval_set=$(mktemp -d)
    pbc2400 "$pbc" "$eval_set" "$per"
    [ "$dev" = cpu ] && pbc=$eval_set  # the dry run's reference: 3 crops per class
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
      "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"; } \
        | tee "$OUT/gpu.txt"
    step test_gpu 60 "$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_forward_options.py
    step stitched 200 "$py" benchmarks/bench_stitched.py --size "$size" --tile-size 1024 --segmenter auto \
        --checkpoint "$sam" --device "$dev" --models "$PAIR" --reference "$pbc" --json "$OUT/stitched.json"
    step evaluate 80 "$py" -m cellsearch_gui evaluate --reference "$eval_set" --models "$PAIR" --random-init \
        --split 0.5 --device "$dev" --prep cell --no-cache --quiet --json "$OUT/evaluate.json"
    step sam 50 "$py" benchmarks/bench_sam.py --device "$dev" --images "$sam_images" --grid "$sam_grid" --tile-size "$sam_tile" \
        --tile-batch 1,8 --points "$points" --checkpoint "$sam" --json "$OUT/sam.json"
    step models 100 "$py" benchmarks/bench_models.py --models "mobilenetv2,$PAIR" --cpu-precisions "$([ "$dev" = cpu ] && echo fp32 || echo none)" \
        --gpu-precisions fp16 --gpu-crops "$gpu_crops" --crops 4 --forward "$forward" \
        --concurrent "mobilenetv2+efficientnet_lite0,${PAIR/,/+}" --json "$OUT/models.json"
    step pipeline 50 "$py" benchmarks/bench_pipeline.py --device "$dev" --crops "$([ "$dev" = cpu ] && echo 16 || echo 512)" \
        --repeats 1 --configs "$PIPELINE" --json "$OUT/pipeline.json"
    echo "run: $SECONDS s of $RUN_BUDGET" | tee -a "$OUT/steps.txt"
    # a device call brings back 8 files: the logs travel in one archive beside the JSON figures
    tar -czf "$OUT/logs.tar.gz" -C "$OUT" $(cd "$OUT" && ls ./*.log) && rm -f "$OUT"/*.log
}

case "${1:-}" in
    stage) stage ;;
    run) run "${2:-out/gpu}" "${3:-}" ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
esac
