"""Segmentation figures on BCCD smear fields (640x480, VOC boxes):

1. white-cell detection recall and precision at box IoU >= 0.5 for the classical segmenter and for
   MobileSAM (real weights) prompted by classical proposals;
2. speed: seconds per megapixel of that prompting against segment-anything's SamAutomaticMaskGenerator
   (default settings: 32x32 point grid) with the same model on the same images, and the recall of both;
3. end to end: segment every field, crop the detected white cells, classify them against PBC
   (five white-cell classes, offline models) and score against wbc_boxes_with_subtype.csv.

Usage: python benchmarks/bench_segmentation.py [--limit N] [--grid-images 3] [--json out/bench_segmentation.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from cellsearch_gui.core.app.experiments import Inputs, classify_job
from cellsearch_gui.core.app.segment import segment_images
from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.classify.ewc import EWCParams
from cellsearch_gui.core.crops.prepare import CropPrep
from cellsearch_gui.core.embedding.cache import EmbeddingCache, default_cache_dir
from cellsearch_gui.core.embedding.job import EmbedOptions
from cellsearch_gui.core.io.dataset import read_cells_csv, scan_class_folders
from cellsearch_gui.core.io.images import read_rgb
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.segmentation.classical import ClassicalSegmenter
from cellsearch_gui.core.segmentation.masks import box_iou
from cellsearch_gui.core.segmentation.sam import SamGridSegmenter, SamSegmenter
from cellsearch_gui.core.segmentation.settings import SegmentSettings

WBC5 = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
DIAMETER_PX = 160  # typical white cell in these 100x fields, given as a user would
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def load_boxes(fov: Path) -> dict[str, list[dict]]:
    boxes: dict[str, list[dict]] = {}
    with open(fov / "wbc_boxes_with_subtype.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            boxes.setdefault(row["image"], [])
            if row["xmin"]:
                boxes[row["image"]].append({"box": tuple(int(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")),
                                            "label": row["unambiguous_class"] or None})
    return boxes


def match(gt_boxes, found_boxes, threshold=0.5) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU."""
    pairs = sorted(((box_iou(g, f), i, j) for i, g in enumerate(gt_boxes) for j, f in enumerate(found_boxes)),
                   reverse=True)
    used_g, used_f, out = set(), set(), []
    for iou, i, j in pairs:
        if iou >= threshold and i not in used_g and j not in used_f:
            used_g.add(i)
            used_f.add(j)
            out.append((i, j))
    return out


def detection(segmenter, names, fov, boxes) -> dict:
    tp = n_gt = n_found = 0
    t0 = time.perf_counter()
    megapixels = 0.0
    for name in names:
        rgb = read_rgb(fov / "JPEGImages" / name)
        megapixels += rgb.shape[0] * rgb.shape[1] / 1e6
        found = [m.bbox for m in segmenter.segment(rgb)]
        gt = [b["box"] for b in boxes[name]]
        tp += len(match(gt, found))
        n_gt += len(gt)
        n_found += len(found)
    seconds = time.perf_counter() - t0
    return {"images": len(names), "recall": tp / max(1, n_gt), "precision": tp / max(1, n_found),
            "true_positives": tp, "ground_truth": n_gt, "detections": n_found,
            "seconds": seconds, "s_per_megapixel": seconds / max(megapixels, 1e-9)}


def detection_from_cells(rows, names, boxes, summary) -> dict:
    found: dict[str, list] = {}
    for row in rows:
        found.setdefault(Path(row["source_image"]).name, []).append(
            tuple(int(row[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")))
    tp = sum(len(match([b["box"] for b in boxes[n]], found.get(n, []))) for n in names)
    n_gt = sum(len(boxes[n]) for n in names)
    seconds = sum(i.seconds for i in summary.per_image)
    return {"images": len(names), "recall": tp / max(1, n_gt), "precision": tp / max(1, len(rows)),
            "true_positives": tp, "ground_truth": n_gt, "detections": len(rows), "seconds": seconds,
            "s_per_megapixel": seconds / (len(names) * 640 * 480 / 1e6)}


def end_to_end(names, fov, boxes, segmenter_id, work: Path, options: EmbedOptions | None = None
               ) -> tuple[dict, dict]:
    settings = SegmentSettings(segmenter=segmenter_id, objects="nucleated", cell_diameter_px=DIAMETER_PX,
                               drop_border_cells=False)
    out = work / segmenter_id
    summary = run_job(segment_images([fov / "JPEGImages" / n for n in names], out, settings))
    crops = read_cells_csv(out / "cells.csv")
    rows = list(csv.DictReader(open(out / "cells.csv", newline="")))
    detected = detection_from_cells(rows, names, boxes, summary)
    labels = []
    for row in rows:
        name = Path(row["source_image"]).name
        gt = [b for b in boxes.get(name, []) if b["label"]]
        box = tuple(int(row[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))
        best = max(gt, key=lambda b: box_iou(b["box"], box), default=None)
        labels.append(best["label"] if best and box_iou(best["box"], box) >= 0.5 else None)
    keep = [i for i, label in enumerate(labels) if label]
    query = crops.subset(keep)
    query.labels = [labels[i] for i in keep]
    reference = scan_class_folders(SHARED / "data" / "pbc_barcelona").restrict(WBC5)
    cache = EmbeddingCache(default_cache_dir())
    _, q, preds, _ = run_job(classify_job(Inputs(reference, query), ["mobilenetv2", "efficientnet_lite0"],
                                          EWCParams(), cache, options or EmbedOptions()))
    scores = evaluate_predictions(q.labels, preds.labels)
    n_labelled = sum(1 for n in names for b in boxes[n] if b["label"])
    return detected, {"cells_segmented": len(rows), "matched_to_labelled_wbc": len(keep),
                      "labelled_wbc_boxes": n_labelled, "balanced_accuracy": scores["balanced_accuracy"],
                      "macro_precision": scores["macro_precision"],
                      "per_class_recall": {c: v["recall"] for c, v in scores["per_class"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="first N fields only (0: all 364)")
    ap.add_argument("--grid-images", type=int, default=3, help="fields for the slow point-grid baseline")
    ap.add_argument("--json", type=Path, default=Path("out/bench_segmentation.json"))
    ap.add_argument("--device-invariant-only", action="store_true",
                    help="only the end-to-end figure with the device-invariant crop preprocessing")
    args = ap.parse_args()
    fov = SHARED / "data" / "bccd_fov"
    boxes = load_boxes(fov)
    names = sorted(boxes)[: args.limit or None]
    classical = ClassicalSegmenter(objects="nucleated", cell_diameter_px=DIAMETER_PX)
    prompted = SamSegmenter("mobilesam", proposals=classical)
    if args.device_invariant_only:
        opts = EmbedOptions(prep=CropPrep(centre=True, scale="cell_size", mask=True, colour="device_reinhard",
                                          detail=2.0), views=4)
        with tempfile.TemporaryDirectory() as work:
            for seg in ("classical", "mobilesam"):
                _, r = end_to_end(names, fov, boxes, seg, Path(work), opts)
                print(f"end to end ({seg}, device-invariant crops): {r['matched_to_labelled_wbc']}/"
                      f"{r['labelled_wbc_boxes']} labelled white cells found; macro accuracy "
                      f"{100 * r['balanced_accuracy']:.1f} %, macro precision {100 * r['macro_precision']:.1f} %",
                      flush=True)
        return
    results = {"detection": {}, "end_to_end": {}}
    with tempfile.TemporaryDirectory() as work:
        for seg in ("classical", "mobilesam"):
            results["detection"][seg], results["end_to_end"][seg] = end_to_end(names, fov, boxes, seg, Path(work))
    grid_names = names[: args.grid_images]
    results["speed"] = {"images": grid_names,
                        "mobilesam_prompted": detection(prompted, grid_names, fov, boxes),
                        "mobilesam_point_grid_default": detection(SamGridSegmenter("mobilesam"), grid_names,
                                                                  fov, boxes)}
    speed = results["speed"]
    speed["speedup"] = (speed["mobilesam_point_grid_default"]["s_per_megapixel"]
                        / speed["mobilesam_prompted"]["s_per_megapixel"])
    print(f"fields: {len(names)}")
    for name, r in results["detection"].items():
        print(f"detection {name:<20} recall {r['recall']:.3f}  precision {r['precision']:.3f}  "
              f"({r['true_positives']}/{r['ground_truth']} boxes, {r['detections']} detections, "
              f"{r['s_per_megapixel']:.2f} s/MP)")
    for name in ("mobilesam_prompted", "mobilesam_point_grid_default"):
        r = speed[name]
        print(f"speed {name:<30} {r['s_per_megapixel']:.2f} s/MP  recall {r['recall']:.3f} on {r['images']} fields")
    print(f"prompting speed-up over the point grid: {speed['speedup']:.1f}x")
    for seg, r in results["end_to_end"].items():
        print(f"end to end ({seg}): {r['matched_to_labelled_wbc']}/{r['labelled_wbc_boxes']} labelled white cells "
              f"found; macro accuracy {100 * r['balanced_accuracy']:.1f} %, macro precision "
              f"{100 * r['macro_precision']:.1f} % (PBC reference, mobilenetv2+efficientnet_lite0, EWC defaults)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
