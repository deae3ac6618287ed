"""Cross-device transfer: PBC (CellaVision, reference) -> BCCD crops (another lab, query), five white-cell
classes, mobilenetv2+efficientnet_lite0, EWC. Each preprocessing step is added in turn (centring,
scale, mask, colour) and scored with the paper's stopping rule and with the log min(k, C) rule, next
to PBC internal accuracy (stratified 80/20) for the same preprocessing.

Usage: python benchmarks/bench_transfer.py [--steps raw,centre,...] [--json out/bench_transfer.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams
from cellsearch_gui.core.crops.prepare import CropPrep
from cellsearch_gui.core.embedding.cache import EmbeddingCache, default_cache_dir
from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
from cellsearch_gui.core.io.dataset import scan_class_folders, stratified_split
from cellsearch_gui.core.jobs import run_job

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS = ["mobilenetv2", "efficientnet_lite0"]
WBC5 = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
STEPS = {
    "raw": CropPrep(),
    "centre": CropPrep(centre=True),
    "centre+scale": CropPrep(centre=True, scale="cell_size"),
    "centre+scale+mask": CropPrep(centre=True, scale="cell_size", mask=True),
    "centre+scale+mask+reinhard": CropPrep(centre=True, scale="cell_size", mask=True, colour="reinhard"),
    "centre+scale+mask+device_reinhard": CropPrep(centre=True, scale="cell_size", mask=True,
                                                  colour="device_reinhard"),
    "centre+scale+mask+detail2": CropPrep(centre=True, scale="cell_size", mask=True, detail=2.0),
    "centre+scale+mask+device_reinhard+detail2": CropPrep(centre=True, scale="cell_size", mask=True,
                                                          colour="device_reinhard", detail=2.0),
    "centre+scale+mask+device_reinhard+detail2+rot4": (CropPrep(centre=True, scale="cell_size", mask=True,
                                                                colour="device_reinhard", detail=2.0), 4),
    "centre+scale+mask+device_reinhard+rot4": (CropPrep(centre=True, scale="cell_size", mask=True,
                                                        colour="device_reinhard"), 4),
    "centre+scale+mask+macenko": CropPrep(centre=True, scale="cell_size", mask=True, colour="macenko"),
    "centre+scale+mask+grayscale": CropPrep(centre=True, scale="cell_size", mask=True, colour="grayscale"),
    "centre+scale+mask+clahe": CropPrep(centre=True, scale="cell_size", mask=True, colour="clahe"),
}


def score(ref_x, ref_y, q_x, q_y, params) -> dict:
    pred = EWCClassifier(params).fit(ref_x, ref_y).predict(q_x)
    s = evaluate_predictions(q_y, pred.labels)
    return {"balanced_accuracy": s["balanced_accuracy"], "macro_precision": s["macro_precision"],
            "mean_k": float(pred.k_used.mean()),
            "per_class": {c: {"recall": v["recall"], "precision": v["precision"]} for c, v in s["per_class"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--json", type=Path, default=Path("out/bench_transfer.json"))
    args = ap.parse_args()
    cache = EmbeddingCache(default_cache_dir())
    pbc = scan_class_folders(SHARED / "data" / "pbc_barcelona").restrict(WBC5)
    bccd = scan_class_folders(SHARED / "data" / "bccd_wbc")
    keep, test = stratified_split(pbc.labels, 0.2, 0)
    results = {}
    print(f"{'preprocessing':<30}{'BCCD paper rule':>16}{'BCCD min(k,C)':>15}{'PBC internal':>14}  (macro acc / macro prec)")
    for name in args.steps.split(","):
        prep, views = STEPS[name] if isinstance(STEPS[name], tuple) else (STEPS[name], 1)
        t0 = time.perf_counter()
        opts = EmbedOptions(prep=prep, views=views)
        ref = run_job(embed_crops(pbc, MODELS, cache, opts))
        query = run_job(embed_crops(bccd, MODELS, cache, opts))
        row = {"prep": prep.as_dict(), "views": views, "embed_s": time.perf_counter() - t0,
               "prep_notes": len(ref.prep_notes) + len(query.prep_notes)}
        for rule in ("log_k", "log_min_kc"):
            row[f"bccd_{rule}"] = score(ref.features, ref.labels, query.features, query.labels,
                                        EWCParams(entropy_norm=rule))
        x, y = ref.features, ref.labels
        row["pbc_internal_log_k"] = score(x[keep], [y[i] for i in keep], x[test], [y[i] for i in test], EWCParams())
        results[name] = row

        def fmt(r):
            return f"{100 * r['balanced_accuracy']:5.1f}/{100 * r['macro_precision']:4.1f}"

        print(f"{name:<30}{fmt(row['bccd_log_k']):>16}{fmt(row['bccd_log_min_kc']):>15}"
              f"{fmt(row['pbc_internal_log_k']):>14}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
