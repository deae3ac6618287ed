"""Embedding pipeline throughput against the bare model forward pass on the same batches.

    .venv/bin/python benchmarks/bench_pipeline.py [--crops 160] [--prep raw|cell_device_colour]

Bare: crops already decoded and prepared in memory, only ModelRunner forward passes are timed.
Pipeline: embed_crops from the files (hashing, decoding, crop preparation, cache writes), with the next
batch read on a worker thread (prefetch) and without it. Prints crops/s and the ratio to bare.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PBC = REPO.parent / "shared" / "data" / "pbc_barcelona"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crops", type=int, default=160)
    parser.add_argument("--models", default="mobilenetv2,efficientnet_lite0")
    parser.add_argument("--prep", default="raw")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    import torch

    from cellsearch_gui.core.cellcrop import prepare_crop, preset
    from cellsearch_gui.core.dataset import CropSet
    from cellsearch_gui.core.embed_cache import EmbeddingCache
    from cellsearch_gui.core.embedding import EmbedOptions, ModelRunner, embed_crops
    from cellsearch_gui.core.images import read_rgb
    from cellsearch_gui.core.jobs import run_job

    classes = sorted(p.name for p in PBC.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    paths = sorted(f for c in classes for f in (PBC / c).iterdir())[:: max(1, 2400 // args.crops)][: args.crops]
    models = args.models.split(",")
    prep = preset(args.prep)
    if prep.colour == "device_reinhard":
        prep = preset("cell")  # the device statistics pass is a separate, one-off step
    images = [prepare_crop(read_rgb(p), prep)[0] for p in paths]
    runners = [ModelRunner(m, device="cpu", batch_size=args.batch_size, prep=prep) for m in models]
    for r in runners:
        r.embed_arrays(images[:4])  # load and warm up
    print(f"{len(paths)} PBC crops, {'+'.join(models)}, prep {args.prep}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads")
    rows = []
    for attempt in range(2):
        t0 = time.perf_counter()
        for start in range(0, len(images), args.batch_size):
            for r in runners:
                r.embed_arrays(images[start : start + args.batch_size])
        bare = len(images) / (time.perf_counter() - t0)
        for prefetch in (True, False):
            with tempfile.TemporaryDirectory() as cache_dir:
                cache = EmbeddingCache(cache_dir)
                options = EmbedOptions(device="cpu", batch_size=args.batch_size, prep=prep, prefetch=prefetch)
                t0 = time.perf_counter()
                result = run_job(embed_crops(CropSet(list(paths), [None] * len(paths)), models, cache, options))
                rate = len(result.paths) / (time.perf_counter() - t0)
                cache.close()
            rows.append((attempt, prefetch, bare, rate))
            print(f"run {attempt + 1}: bare forward {bare:.1f} crops/s; pipeline "
                  f"{'with' if prefetch else 'without'} prefetch {rate:.1f} crops/s = {rate / bare:.0%} of bare")


if __name__ == "__main__":
    main()
