"""A stitched field of at least 20000 x 20000 pixels built from BCCD smear fields, written as an
uncompressed BigTIFF, segmented tile by tile (white cells) with peak memory printed; with ``--models``, the
cells' crops then embedded and classified against a PBC reference: file to predictions, timed per stage.

Usage: python benchmarks/bench_stitched.py [--size 20000] [--json out/bench_stitched.json]
       python benchmarks/bench_stitched.py --segmenter auto --checkpoint SAM.pt --models dinov2_vitb14,convnext_base \
           --reference PBC_DIR --device cuda      # the GPU run (gpu_check.sh): SAM on the card, random weights
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tifffile

from cellsearch_gui.core.app.segment import segment_images
from cellsearch_gui.core.io.images import read_rgb
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.segmentation.settings import SegmentSettings

SHARED = Path(os.environ.get("CELLSEARCH_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MemorySampler(threading.Thread):
    """Peak anonymous (heap) and file-backed (memory-mapped, reclaimable page cache) resident memory."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self.running = True

    def run(self):
        while self.running:
            for line in Path("/proc/self/status").read_text().splitlines():
                key = line.split(":")[0]
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(line.split()[1]) // 1024)
            time.sleep(0.05)


def build(path: Path, size: int) -> tuple[int, int]:
    fields = sorted((SHARED / "data" / "bccd_fov" / "JPEGImages").glob("*.jpg"))
    fh, fw = 480, 640
    rows, cols = -(-size // fh), -(-size // fw)
    out = tifffile.memmap(path, shape=(rows * fh, cols * fw, 3), dtype=np.uint8, bigtiff=True,
                          photometric="rgb")
    for r in range(rows):
        for c in range(cols):
            out[r * fh : (r + 1) * fh, c * fw : (c + 1) * fw] = read_rgb(fields[(r * cols + c) % len(fields)])
        out.flush()
    shape = out.shape
    del out
    return shape[0], shape[1]


def classify_cells(out: Path, args: argparse.Namespace) -> dict:
    """The segmented cells' crops embedded (random weights: the cost of real ones) and classified against
    the reference folder; seconds per stage."""
    from cellsearch_gui.core.app.experiments import Inputs, classify_job
    from cellsearch_gui.core.classify.ewc import EWCParams
    from cellsearch_gui.core.crops.prepare import preset
    from cellsearch_gui.core.embedding.cache import EmbeddingCache
    from cellsearch_gui.core.embedding.job import EmbedOptions
    from cellsearch_gui.core.io.dataset import read_cells_csv, scan_class_folders

    query, reference = read_cells_csv(out / "cells.csv"), scan_class_folders(args.reference)
    options = EmbedOptions(weights="random", device=args.device, prep=preset(args.prep))
    cache = EmbeddingCache(out / "cache")
    t0 = time.perf_counter()
    try:
        _, _, preds, timings = run_job(classify_job(Inputs(reference, query), args.models.split(","), EWCParams(),
                                                    cache, options))
    finally:
        cache.close()
    total = time.perf_counter() - t0
    return {"query_cells": len(query.paths), "reference_crops": len(reference.paths), "classify_total_s": total,
            "predictions": 0 if preds is None else len(preds.labels), "query_cells_per_second": len(query.paths) / total,
            **{f"{k}_s": v for k, v in timings.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--tile-size", type=int, default=2048)
    ap.add_argument("--segmenter", default="classical", help="auto: SAM on a CUDA GPU (the app's default rule)")
    ap.add_argument("--checkpoint", default=None, help="SAM checkpoint file")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--models", default="", help="embed and classify the cells with these (random weights)")
    ap.add_argument("--reference", type=Path, default=SHARED / "data" / "pbc_barcelona")
    ap.add_argument("--prep", default="cell")
    ap.add_argument("--json", type=Path, default=Path("out/bench_stitched.json"))
    ap.add_argument("--build-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        build(args.build_only, args.size)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stitched.tif"
        t0 = time.perf_counter()
        # built in a child process, so this process's memory figures cover only the segmentation
        subprocess.run([sys.executable, __file__, "--build-only", str(path), "--size", str(args.size)], check=True)
        build_s = time.perf_counter() - t0
        with tifffile.TiffFile(path) as tif:
            height, width = tif.pages.first.shape[:2]
        sampler = MemorySampler()
        sampler.start()
        settings = SegmentSettings(segmenter=args.segmenter, objects="nucleated", cell_diameter_px=160,
                                   tile_size=args.tile_size, drop_border_cells=False, device=args.device,
                                   checkpoint=args.checkpoint)
        t0 = time.perf_counter()
        summary = run_job(segment_images([path], Path(tmp) / "out", settings))
        seg_s = time.perf_counter() - t0
        sampler.running = False
        sampler.join()
        image = summary.as_dict()["per_image"][0]
        result = {"height": height, "width": width, "megapixels": height * width / 1e6,
                  "file_mb": path.stat().st_size / 2**20, "build_s": build_s, "segment_s": seg_s,
                  "s_per_megapixel": seg_s / (height * width / 1e6), "tiles": image["tiles"],
                  "cells": image["cells"], "dropped": image["dropped"],
                  "peak_rss_mb": peak_rss_mb(), "peak_anon_mb": sampler.peak["RssAnon"],
                  "peak_file_backed_mb": sampler.peak["RssFile"],
                  "image_mb_in_ram_if_loaded": height * width * 3 / 2**20,
                  "segmenter": summary.settings.get("segmenter_choice", summary.settings["segmenter"])}
        if args.models:
            result.update(classify_cells(Path(tmp) / "out", args))
    print(f"stitched image {width} x {height} ({result['megapixels']:.0f} MP, {result['file_mb']:.0f} MB BigTIFF)")
    print(f"{result['segmenter']}: segmented in {seg_s:.1f} s ({result['s_per_megapixel']:.3f} s/MP), {image['tiles']} tiles, "
          f"{image['cells']} white cells")
    print(f"peak memory: {result['peak_anon_mb']:.0f} MB heap + {result['peak_file_backed_mb']:.0f} MB memory-mapped "
          f"file pages (reclaimable), peak RSS {result['peak_rss_mb']:.0f} MB; the whole image in RAM would be "
          f"{result['image_mb_in_ram_if_loaded']:.0f} MB")
    if args.models:
        print("file to predictions, s: " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in result.items()
                                                    if k.endswith("_s")))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
