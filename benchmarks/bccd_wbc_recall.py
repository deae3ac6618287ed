"""White-cell recall of `cellsearch segment` on the BCCD fields with NO cell diameter given (issue 17).

Runs exactly ``cellsearch segment FIELDS --out DIR --objects nucleated --segmenter S`` (the cell size is
then measured on each field) and scores the cells.csv against the VOC white-cell boxes: recall and
precision at box IoU >= 0.5 (``bench_segmentation.py``'s boxes and greedy one-to-one matching), the fields where
a white cell is annotated but no cell was found, and the seconds taken. The MobileSAM checkpoint is
``../shared/models/mobile_sam_vit_t.pt``, passed with ``--checkpoint``.

Usage:
  python benchmarks/bccd_wbc_recall.py                              # both segmenters, all 364 fields
  python benchmarks/bccd_wbc_recall.py --segmenters mobilesam --sample 100 --seed 0
  python benchmarks/bccd_wbc_recall.py --fields BloodImage_00000.jpg BloodImage_00001.jpg
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import write_json  # noqa: E402
from bench_segmentation import load_boxes, match  # noqa: E402  (the same boxes and matching)

from cellsearch_gui.cli import main as cellsearch  # noqa: E402

SHARED = Path(os.environ.get("CELLSEARCH_SHARED", REPO.parent / "shared"))
FOV = SHARED / "data" / "bccd_fov"
MOBILE_SAM = SHARED / "models" / "mobile_sam_vit_t.pt"
BOX_COLUMNS = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")


def white_cell_boxes(fov: Path = FOV) -> dict[str, list[tuple[int, int, int, int]]]:
    """VOC white-cell boxes per field name (every field listed, boxes or not)."""
    return {name: [b["box"] for b in found] for name, found in load_boxes(fov).items()}


def score(cells_csv: Path, names: list[str], boxes: dict[str, list]) -> dict:
    found: dict[str, list] = {}
    with open(cells_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            found.setdefault(Path(row["source_image"]).name, []).append(tuple(int(row[k]) for k in BOX_COLUMNS))
    hits = {name: len(match(boxes[name], found.get(name, []))) for name in names}
    truth = sum(len(boxes[n]) for n in names)
    detections = sum(len(found.get(n, [])) for n in names)
    return {"fields": len(names), "white_cells": truth, "found": sum(hits.values()), "detections": detections,
            "recall": sum(hits.values()) / max(1, truth), "precision": sum(hits.values()) / max(1, detections),
            "empty_fields": sorted(n for n in names if boxes[n] and not found.get(n)),
            "missed_fields": sorted(n for n in names if hits[n] < len(boxes[n]))}


def measure(segmenter: str, names: list[str], work: Path, boxes: dict[str, list]) -> dict:
    """``cellsearch segment`` on the fields, no diameter given, then the scores and the time."""
    out = work / segmenter
    command = ["segment", *(str(FOV / "JPEGImages" / n) for n in names), "--out", str(out),
               "--objects", "nucleated", "--segmenter", segmenter, "--quiet"]
    if segmenter != "classical":
        command += ["--checkpoint", str(MOBILE_SAM), "--offline"]
    t0 = time.perf_counter()
    if cellsearch(command) != 0:
        raise SystemExit(f"cellsearch {' '.join(command[:1])} failed")
    seconds = time.perf_counter() - t0
    result = score(out / "cells.csv", names, boxes)
    diameters = [note for image in json.loads((out / "segment.json").read_text())["per_image"]
                 for note in image["notes"] if note.startswith("cell diameter")]
    return {**result, "seconds": seconds, "seconds_per_field": seconds / max(1, len(names)),
            "diameter_notes": diameters[:3]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--segmenters", default="classical,mobilesam")
    ap.add_argument("--fields", nargs="*", default=None, help="field names (default: all 364)")
    ap.add_argument("--sample", type=int, default=0, help="a random subset of this many fields (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    boxes = white_cell_boxes()
    names = args.fields or sorted(boxes)
    if args.sample:
        names = sorted(random.Random(args.seed).sample(names, args.sample))
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for segmenter in args.segmenters.split(","):
            r = results[segmenter] = measure(segmenter, names, Path(work), boxes)
            print(f"{segmenter:<10} fields {r['fields']}: recall {100 * r['recall']:.1f} % "
                  f"({r['found']}/{r['white_cells']} white cells, IoU >= 0.5), precision {100 * r['precision']:.1f} % "
                  f"({r['detections']} cells found), empty fields with a white cell: {len(r['empty_fields'])}, "
                  f"{r['seconds']:.0f} s ({r['seconds_per_field']:.2f} s/field)", flush=True)
            print(f"{'':<10} missed in: {', '.join(r['missed_fields']) or 'none'}", flush=True)
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
