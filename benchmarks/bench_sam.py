"""Seconds per megapixel of prompted SAM (classical proposals -> box prompts; tiles batched through the
encoder) against segment-anything's SamAutomaticMaskGenerator (dense point grid), with white-cell recall on
the BCCD fields (VOC boxes, IoU >= 0.5). Fields are stitched ``--grid`` x ``--grid`` into one image, so a
field spans several tiles, as a large scan does.

Usage:
  python benchmarks/bench_sam.py --images 2 --grid 2 --methods prompted --tile-batch 1,4      # CPU
  python benchmarks/bench_sam.py --device cuda --images 8 --grid 2 --tile-batch 1,8 --json out/sam.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _common import REPO, write_json
from bench_segmentation import load_boxes, match

from cellsearch_gui.core.io.fields import Field
from cellsearch_gui.core.io.images import read_rgb
from cellsearch_gui.core.jobs import CancelToken, run_job
from cellsearch_gui.core.segmentation.classical import ClassicalSegmenter
from cellsearch_gui.core.segmentation.fields import segment_field
from cellsearch_gui.core.segmentation.sam import SamGridSegmenter, SamSegmenter
from cellsearch_gui.core.segmentation.settings import SegmentSettings

SHARED = Path(os.environ.get("CELLSEARCH_SHARED", REPO.parent / "shared"))
FOV = SHARED / "data" / "bccd_fov"
MOBILE_SAM = SHARED / "models" / "mobile_sam_vit_t.pt"


def stitched_fields(names: list[str], grid: int, folder: Path) -> list[tuple[Path, list]]:
    """Images of grid x grid BCCD fields, with their white-cell boxes in the stitched image's pixels."""
    from PIL import Image

    boxes = {n: [b["box"] for b in found] for n, found in load_boxes(FOV).items()}
    out = []
    per = grid * grid
    for k in range(0, len(names) - per + 1, per):
        group, rows, truth = names[k : k + per], [], []
        for r in range(grid):
            fields = [read_rgb(FOV / "JPEGImages" / n) for n in group[r * grid : (r + 1) * grid]]
            h, w = fields[0].shape[:2]
            rows.append(np.concatenate(fields, axis=1))
            for c, name in enumerate(group[r * grid : (r + 1) * grid]):
                truth += [(x0 + c * w, y0 + r * h, x1 + c * w, y1 + r * h) for x0, y0, x1, y1 in boxes[name]]
        path = folder / f"stitched_{k // per}.png"
        Image.fromarray(np.concatenate(rows, axis=0)).save(path)
        out.append((path, truth))
    return out


def make(method: str, device: str, tile_batch: int, points: int, checkpoint: str | None):
    proposals = ClassicalSegmenter(objects="nucleated", cell_diameter_px=160)
    if method == "grid":
        return SamGridSegmenter("mobilesam", device=device, points_per_side=points, checkpoint=checkpoint)
    seg = SamSegmenter("mobilesam", proposals=proposals, device=device, checkpoint=checkpoint)
    if hasattr(seg, "tile_batch"):  # main before tile batching has none: the 'before' figure
        seg.tile_batch = tile_batch
    return seg


def measure(images, seg, tile_size: int, device: str) -> dict:
    settings = SegmentSettings(segmenter="mobilesam", tile_size=tile_size, overlap=240, device=device)
    found = truth = hits = 0
    pixels = seconds = tiles = 0.0
    for path, boxes in images:
        with Field(path) as field_:
            t0 = time.perf_counter()
            masks, _, result = run_job(segment_field(field_, seg, settings, 160.0, 1.0, CancelToken()))
            seconds += time.perf_counter() - t0
            pixels += field_.shape[0] * field_.shape[1]
        tiles += result.tiles
        hits += len(match(boxes, [m.bbox for m in masks]))
        truth, found = truth + len(boxes), found + len(masks)
    return {"seconds": seconds, "megapixels": pixels / 1e6, "s_per_megapixel": seconds / max(pixels / 1e6, 1e-9),
            "tiles": tiles, "white_cells": truth, "recall": hits / max(1, truth), "masks": found}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=2, help="stitched images timed (each grid x grid fields)")
    ap.add_argument("--grid", type=int, default=2)
    ap.add_argument("--tile-size", type=int, default=640)
    ap.add_argument("--methods", default="prompted,grid")
    ap.add_argument("--tile-batch", default="1", help="comma-separated tile batches for the prompted method")
    ap.add_argument("--points", type=int, default=32, help="the grid method's points per side")
    ap.add_argument("--checkpoint", default=str(MOBILE_SAM) if MOBILE_SAM.is_file() else "random")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import tempfile

    names = sorted(n for n, b in load_boxes(FOV).items() if b and (FOV / "JPEGImages" / n).is_file())
    names = names[: args.images * args.grid ** 2]
    results = {"device": args.device, "checkpoint": Path(args.checkpoint).name, "grid": args.grid}
    with tempfile.TemporaryDirectory() as work:
        images = stitched_fields(names, args.grid, Path(work))
        for method in args.methods.split(","):
            for batch in (args.tile_batch.split(",") if method == "prompted" else ["1"]):
                seg = make(method, args.device, int(batch), args.points, args.checkpoint)
                measure(images[:1], seg, args.tile_size, args.device)  # warm-up: weights, kernels
                r = results[f"{method}_b{batch}" if method == "prompted" else method] = measure(
                    images, seg, args.tile_size, args.device)
                print(f"{method:<8} tile batch {batch}: {r['s_per_megapixel']:.2f} s/MP ({r['megapixels']:.1f} MP, "
                      f"{r['tiles']:.0f} tiles), recall {100 * r['recall']:.1f} % of {r['white_cells']} white cells, "
                      f"{r['masks']} masks", flush=True)
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
