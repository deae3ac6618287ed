"""Embedding pipeline throughput against the bare model forward pass on the same batches.

    .venv/bin/python benchmarks/bench_pipeline.py [--crops 160] [--repeats 3] [--device auto]
        [--configs mobilenetv2+efficientnet_lite0:raw,mobilenetv2+efficientnet_lite0:cell,dinov2_vits14:cell]
        [--json out/bench_pipeline.json]

Bare: crops already decoded and prepared in memory; only ModelRunner.embed_arrays is timed (resize to
the model's input, transfer, forward pass, result back), batch by batch.
Pipeline: embed_crops from the files with a fresh cache (hashing, decoding, crop preparation, cache
writes), crops prepared by the default crop-preparation processes (``prep_workers``) and read ahead of the
models; building the models is left out (the bare pass uses models built beforehand); the baselines are the
same without read-ahead, with the crops prepared on a reader thread (``prep_workers=0``, the path before
issue 18) and, on CUDA, without pinned memory. Runs are taken in turn, ``--repeats`` times; crops/s are medians and
each ratio is the median of the ratios to the bare pass of the same round.
Models without weights here run with random weights (said in the output; speed does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import REPO, write_json

PBC = Path(os.environ.get("CELLSEARCH_SHARED", REPO.parent / "shared")) / "data" / "pbc_barcelona"
DEFAULT_CONFIGS = "mobilenetv2+efficientnet_lite0:raw,mobilenetv2+efficientnet_lite0:cell,dinov2_vits14:cell"


def _paths(n: int) -> list[Path]:
    classes = sorted(p for p in PBC.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    files = sorted(f for c in classes for f in c.iterdir())
    return files[:: max(1, len(files) // n)][:n]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(models: list[str], prep_name: str, paths: list[Path], device: str, batch: int | None,
            repeats: int, precision: str) -> dict:
    from cellsearch_gui.core.crops.prepare import prepare_crop, preset
    from cellsearch_gui.core.embedding.cache import EmbeddingCache
    from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
    from cellsearch_gui.core.embedding.runner import ModelRunner
    from cellsearch_gui.core.io.dataset import CropSet
    from cellsearch_gui.core.io.images import read_rgb
    from cellsearch_gui.core.jobs import run_job
    from cellsearch_gui.core.models.checkpoints import locate_weights
    from cellsearch_gui.core.models.registry import get_spec

    prep = preset(prep_name)
    weights = "pretrained" if all(locate_weights(get_spec(m)) for m in models) else "random"
    images = [prepare_crop(read_rgb(p), prep)[0] for p in paths]
    runners = [ModelRunner(m, weights=weights, device=device, batch_size=batch, prep=prep, precision=precision)
               for m in models]
    size = max(r.batch_size for r in runners)
    for r in runners:
        r.embed_arrays(images[:size])  # load and warm up at the full batch size
    _sync(device)
    variants = {"pipeline": {}, "no read-ahead": {"prefetch": False}, "prep on a thread": {"prep_workers": 0}}
    if device.startswith("cuda"):
        variants["no pinned memory"] = {"pin_memory": False}
    rates: dict[str, list[float]] = {"bare": [], **{name: [] for name in variants}}
    for _ in range(repeats):
        t0 = time.perf_counter()
        for start in range(0, len(images), size):
            for r in runners:
                r.embed_arrays(images[start : start + size])
        _sync(device)
        rates["bare"].append(len(images) / (time.perf_counter() - t0))
        for name, extra in variants.items():
            with tempfile.TemporaryDirectory() as cache_dir:
                cache = EmbeddingCache(cache_dir)
                options = EmbedOptions(weights=weights if weights == "random" else "pretrained", device=device,
                                       batch_size=batch, prep=prep, precision=precision, **extra)
                t0 = time.perf_counter()
                result = run_job(embed_crops(CropSet(list(paths), [None] * len(paths)), models, cache, options))
                building = sum(v for k, v in result.timings_s.items() if k.startswith("load_"))
                rates[name].append(len(result.paths) / (time.perf_counter() - t0 - building))
                cache.close()
    median = {name: statistics.median(values) for name, values in rates.items()}
    # paired: each run against the bare pass just before it, so slow drift of a shared machine cancels
    paired = {name: statistics.median(v / b for v, b in zip(rates[name], rates["bare"])) for name in variants}
    return {"models": "+".join(models), "prep": prep_name, "device": device, "weights": weights,
            "precision": runners[0].precision, "batch": size, "crops": len(paths),
            "crops_per_s": median, "runs": rates, "ratio_to_bare": paired}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crops", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="models+models:prep, comma-separated")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="default: sized to the device")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import torch

    from cellsearch_gui.core.embedding.job import use_prep_workers, use_read_workers
    from cellsearch_gui.core.models.devices import pick_device

    device = pick_device(args.device)
    paths = _paths(args.crops)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"{len(paths)} PBC crops on {device} ({name}); {use_read_workers(None, device)} crop reader(s), "
          f"{use_prep_workers(None, device, len(paths))} crop preparation process(es)")
    rows = []
    for config in args.configs.split(","):
        models, prep_name = config.split(":")
        row = measure(models.split("+"), prep_name, paths, device, args.batch_size, args.repeats, args.precision)
        rows.append(row)
        rates = row["crops_per_s"]
        others = "; ".join(f"{k} {rates[k]:.1f} ({v:.0%})" for k, v in row["ratio_to_bare"].items())
        print(f"{row['models']:<32} {prep_name:<5} {row['precision']} batch {row['batch']:>3}"
              f"{' random weights' if row['weights'] == 'random' else ''}: bare {rates['bare']:.1f} crops/s; "
              f"{others} of bare")
    write_json(args.json, {"device": device, "device_name": name, "rows": rows})


if __name__ == "__main__":
    main()
