"""Embedding speed and memory of every backend in the model zoo.

Each model runs in its own fresh process (so its peak memory is its own): built with its real weights
when they are present here (imported or in the hub cache), otherwise with random weights (said in the
output: speed and memory do not depend on the weights' values). Crops are real PBC cell images when
../shared is present, resized by the model's own preprocessing; the batch goes through ModelRunner,
so the model's batch cap (SAM encoders: 4 or 8 crops at 1024 px) applies as in real use.

* CPU: crops/s in fp32 (``--cpu-precisions fp32,bf16`` adds bf16 autocast) and the process's peak
  resident memory (ru_maxrss), with the memory after imports (before the model is built) as baseline.
* GPU (when torch sees CUDA): crops/s in fp32 and fp16 autocast of the device itself (input batches
  resized and pinned before timing: transfer and forward pass are timed), peak allocated GPU memory.

Usage: python benchmarks/bench_models.py [--models a,b] [--crops 32] [--batch 32] [--sam-crops 2]
                                         [--cpu-precisions fp32] [--json out/bench_models.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CELLSEARCH_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _images(n: int):
    import numpy as np

    from cellsearch_gui.core.io.images import read_rgb

    pbc = SHARED / "data" / "pbc_barcelona"
    if pbc.is_dir():
        files = sorted(p for c in sorted(pbc.iterdir()) if c.is_dir() for p in sorted(c.iterdir())[:8])
        return [read_rgb(files[i % len(files)]) for i in range(n)], "PBC crops"
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (360, 363, 3), np.uint8) for _ in range(n)], "random crops"


def worker(model_id: str, crops: int, batch: int | None, device: str, precision: str,
           forward: str = "default") -> dict:
    """One model (or models joined by '+', run at the same time), one device and precision, in this
    process; returns the figures."""
    if "+" in model_id:
        return concurrent_worker(model_id.split("+"), crops, batch, device, precision)
    import torch

    from cellsearch_gui.core.embedding.forward import ForwardOptions, fused_attention_share
    from cellsearch_gui.core.embedding.runner import ModelRunner
    from cellsearch_gui.core.models.checkpoints import locate_weights
    from cellsearch_gui.core.models.registry import get_spec

    spec = get_spec(model_id)
    images, source = _images(crops)
    base_rss = _rss_mb()
    weights = "real" if locate_weights(spec) else "random"
    runner = ModelRunner(model_id, weights="pretrained" if weights == "real" else "random", device=device,
                         batch_size=batch, precision=precision, forward=ForwardOptions.parse(forward))
    t0 = time.perf_counter()
    model = runner.load()
    build_s = time.perf_counter() - t0
    sdpa_blocks = fused_attention_share(getattr(model, "_orig_mod", model))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    gpu = device.startswith("cuda")
    if not gpu:
        runner.embed_arrays(images[:1])  # warm-up (kernels, allocator)
        t0 = time.perf_counter()
        feats = runner.embed_arrays(images)
    else:  # the device's own rate: input batches built (resized, pinned) before the clock starts
        import numpy as np

        runner.embed_arrays(images[: runner.batch_size])  # warm-up at full batch (halved if it does not fit)
        size = runner.batch_size
        batches = [runner.input_batch(images[i : i + size]) for i in range(0, len(images), size)]
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        launched = [runner._forward(batch) for batch in batches]
        feats = np.concatenate([runner.collect(out) for out in launched])
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    result = {
        "model": model_id, "device": device, "precision": runner.precision, "weights": weights,
        "params_m": round(params, 1), "batch": runner.batch_size, "crops": len(images), "crop_source": source,
        "input": spec.input_size, "dim": int(feats.shape[1]), "seconds": round(seconds, 2),
        "crops_per_s": round(len(images) / seconds, 3), "build_s": round(build_s, 2),
        "threads": torch.get_num_threads(), "forward": forward, "sdpa_blocks": list(sdpa_blocks),
        "gflop_per_crop": _gflop_per_crop(runner, images[0]),
    }
    if result["gflop_per_crop"]:  # FLOP counted as 2 per multiply-add: the share of the card's peak
        result["tflop_per_s"] = round(result["gflop_per_crop"] * result["crops_per_s"] / 1e3, 2)
    if gpu:
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    else:
        result["rss_after_imports_mb"] = round(base_rss)
        result["peak_rss_mb"] = round(_peak_rss_mb())
    return result


def _gflop_per_crop(runner, image) -> float | None:
    """Forward-pass GFLOP of one crop (torch's FLOP counter, on the CPU copy of the input), for the share of
    the card's peak; None where the counter fails."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        model = getattr(runner.load(), "_orig_mod", runner.load())
        x = runner.input_batch([image]).to(runner.device).permute(0, 3, 1, 2).float()
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x)
        return round(counter.get_total_flops() / 1e9, 2)
    except Exception:  # noqa: BLE001 - a figure left out, not a failed run
        return None


def concurrent_worker(models: list[str], crops: int, batch: int | None, device: str, precision: str) -> dict:
    """Several models on one device at the same time (embed_concurrently): crops/s of all together."""
    import torch

    from cellsearch_gui.core.embedding.forward import embed_concurrently
    from cellsearch_gui.core.embedding.runner import ModelRunner

    images, source = _images(crops)
    runners = [ModelRunner(m, weights="random", device=device, batch_size=batch, precision=precision)
               for m in models]
    for runner in runners:
        runner.embed_arrays(images[: runner.batch_size])  # warm-up
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for runner in runners:
        runner.embed_arrays(images)
    sync()
    one_after_other = time.perf_counter() - t0
    t0 = time.perf_counter()
    embed_concurrently(runners, images)
    sync()
    together = time.perf_counter() - t0
    return {"model": "+".join(models), "device": device, "precision": runners[0].precision, "weights": "random",
            "params_m": 0, "batch": runners[0].batch_size, "crops": len(images), "crop_source": source,
            "seconds": round(together, 2), "crops_per_s": round(len(images) / together, 3),
            "sequential_crops_per_s": round(len(images) / one_after_other, 3), "forward": "concurrent"}


def _run_isolated(model_id: str, crops: int, batch: int | None, device: str, precision: str,
                  forward: str = "default") -> dict:
    cmd = [sys.executable, __file__, "--worker", model_id, "--crops", str(crops), "--device", device,
           "--precision", precision, "--forward", forward] + (["--batch", str(batch)] if batch else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"model": model_id, "device": device, "precision": precision, "forward": forward,
                "error": tail[0][:200]}
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None, help="comma-separated ids (default: every embedder)")
    parser.add_argument("--crops", type=int, default=32, help="crops timed per model (after a 1-crop warm-up)")
    parser.add_argument("--sam-crops", type=int, default=2, help="crops for the SAM ViT encoders at 1024 px on CPU")
    parser.add_argument("--batch", type=int, default=None, help="default: sized to the device (32 CPU, 256 GPU)")
    parser.add_argument("--cpu-precisions", default="fp32", help="comma-separated; 'none' skips the CPU rows")
    parser.add_argument("--gpu-crops", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--forward", default="default",
                        help="comma-separated forward options to time, each 'default' or parts joined by '+': "
                             "channels_last, sdpa, no_sdpa, compile, cudagraphs (embedding/forward.py)")
    parser.add_argument("--concurrent", default="", help="comma-separated model groups a+b run at the same time")
    parser.add_argument("--gpu-precisions", default="fp32,fp16")
    parser.add_argument("--cpu-device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.crops, args.batch, args.device, args.precision, args.forward)))
        return 0

    import torch

    from cellsearch_gui.core.models.registry import REGISTRY

    models = args.models.split(",") if args.models else [m for m, s in REGISTRY.items() if "embed" in s.roles]
    runs = []
    forwards = args.forward.split(",")
    for model_id in models:
        crops = args.sam_crops if REGISTRY[model_id].arch in ("vit_b", "vit_l", "vit_h") else args.crops
        runs += [(model_id, crops, "cpu", p, f) for p in args.cpu_precisions.split(",") if p != "none"
                 for f in forwards]
        if torch.cuda.is_available():  # the 1024-px SAM encoders get an eighth of the crops
            gpu_crops = args.gpu_crops // 8 if REGISTRY[model_id].arch in ("vit_b", "vit_l", "vit_h") else args.gpu_crops
            runs += [(model_id, gpu_crops, "cuda", p, f) for p in args.gpu_precisions.split(",") for f in forwards]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for group in filter(None, args.concurrent.split(",")):
        runs.append((group, args.gpu_crops if device == "cuda" else args.crops, device,
                     "fp16" if device == "cuda" else "fp32", "default"))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, CUDA: "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available (GPU rows skipped)'}")
    header = (f"{'model':<23}{'device':<7}{'prec':<6}{'forward':<22}{'weights':<8}{'params M':>9}{'batch':>6}"
              f"{'crops':>6}{'crops/s':>9}{'peak MB':>9}{'base MB':>9}")
    print(header)
    results = []
    for model_id, crops, device, precision, forward in runs:
        r = _run_isolated(model_id, crops, args.batch, device, precision, forward)
        results.append(r)
        if "error" in r:
            print(f"{model_id:<23}{device:<7}{precision:<6}{forward:<22}ERROR {r['error']}")
            continue
        peak = r.get("peak_gpu_mb", r.get("peak_rss_mb", ""))
        print(f"{model_id:<23}{device:<7}{r['precision']:<6}{forward:<22}{r['weights']:<8}{r['params_m']:>9}"
              f"{r['batch']:>6}{r['crops']:>6}{r['crops_per_s']:>9.2f}{peak:>9}{r.get('rss_after_imports_mb', ''):>9}"
              + (f"  (one after the other: {r['sequential_crops_per_s']:.2f})" if "sequential_crops_per_s" in r else ""),
              flush=True)
    if any(r.get("weights") == "random" for r in results):
        print("weights 'random': no checkpoint here, so the network was built with random weights "
              "(same architecture and cost as the real one)")
    print("peak MB: process peak resident memory on CPU (base MB: after imports, before the model), "
          "peak allocated GPU memory on CUDA")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
