"""Engine figures on real data: PBC internal (stratified 80/20) and PBC -> BCCD (cross-device),
EWC-FAISS with the paper's defaults and with settings chosen by the combination search on a
validation split of the training part, next to unweighted 5-NN and a logistic-regression probe.

Usage: python benchmarks/bench_engine.py [--shared ../shared] [--json out/bench_engine.json]
Needs the offline checkpoints imported (./setup.sh does it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cellsearch_gui.core.classify.baselines import run_baselines
from cellsearch_gui.core.classify.combinations import Grid, search_combinations
from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams
from cellsearch_gui.core.embedding.cache import EmbeddingCache, default_cache_dir
from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
from cellsearch_gui.core.io.dataset import scan_class_folders, stratified_split
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.types import FeatureSet

MODELS = ["mobilenetv2", "efficientnet_lite0"]
WBC5 = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def subset(fs: FeatureSet, idx) -> FeatureSet:
    idx = list(idx)
    return FeatureSet([fs.paths[i] for i in idx], [fs.labels[i] for i in idx], fs.features[idx], fs.model_ids,
                      fs.dims, fs.per_model_l2, fs.fingerprints,
                      per_model={m: v[idx] for m, v in fs.per_model.items()})


def ewc_scores(ref: FeatureSet, query: FeatureSet, params: EWCParams, models=MODELS) -> dict:
    t0 = time.perf_counter()
    clf = EWCClassifier(params).fit(ref.select(models), ref.labels)
    pred = clf.predict(query.select(models))
    scores = evaluate_predictions(query.labels, pred.labels)
    return {"balanced_accuracy": scores["balanced_accuracy"], "macro_precision": scores["macro_precision"],
            "mean_k": float(pred.k_used.mean()), "seconds": time.perf_counter() - t0,
            "per_class_recall": {c: v["recall"] for c, v in scores["per_class"].items()}}


def tuned(train: FeatureSet, query: FeatureSet, seed: int) -> dict:
    """Pick models + hyper-parameters on a validation split of the training part only."""
    keep, val = stratified_split(train.labels, 0.25, seed)
    grid = Grid(metrics=["l2", "cosine", "canberra"], k_mins=[1, 3], k_maxs=[10, 100, 1000],
                thresholds=[0.1, 0.3, 0.5])
    rows = run_job(search_combinations(subset(train, keep), subset(train, val), MODELS, grid))
    best = rows[0]
    params = EWCParams(metric=best["metric"], k_min=best["k_min"], k_max=best["k_max"],
                       entropy_threshold=best["entropy_threshold"])
    out = ewc_scores(train, query, params, best["models"])
    out["chosen"] = {k: best[k] for k in ("models", "metric", "k_min", "k_max", "entropy_threshold",
                                          "balanced_accuracy")}
    out["settings_searched"] = len(rows)
    return out


def experiment(name, train, query, seed) -> dict:
    row = {"n_reference": len(train.labels), "n_query": len(query.labels)}
    row["ewc_default"] = ewc_scores(train, query, EWCParams())
    row["ewc_tuned_on_validation"] = tuned(train, query, seed)
    row.update(run_baselines(train.features, train.labels, query.features, query.labels))
    return {name: row}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--json", type=Path, default=Path("out/bench_engine.json"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cache = EmbeddingCache(default_cache_dir())
    opts = EmbedOptions()

    def embed(folder):
        t0 = time.perf_counter()
        crops = scan_class_folders(folder)
        fs = run_job(embed_crops(crops, MODELS, cache, opts))
        return fs, len(crops) / (time.perf_counter() - t0)

    pbc, pbc_rate = embed(args.shared / "data" / "pbc_barcelona")
    bccd, _ = embed(args.shared / "data" / "bccd_wbc")
    keep, test = stratified_split(pbc.labels, 0.2, args.seed)
    results = {}
    results.update(experiment("pbc_8class_80_20", subset(pbc, keep), subset(pbc, test), args.seed))
    five = [i for i, c in enumerate(pbc.labels) if c in WBC5]
    pbc5 = subset(pbc, five)
    keep5, test5 = stratified_split(pbc5.labels, 0.2, args.seed)
    results.update(experiment("pbc_5class_80_20", subset(pbc5, keep5), subset(pbc5, test5), args.seed))
    results.update(experiment("pbc_to_bccd_5class", pbc5, bccd, args.seed))
    results["_meta"] = {"models": MODELS, "seed": args.seed, "embedding_crops_per_s_incl_cache": pbc_rate}

    print(f"{'experiment':<22}{'refs':>6}{'query':>6}  {'method':<28}{'macro acc':>10}{'macro prec':>11}")
    for name, row in results.items():
        if name.startswith("_"):
            continue
        for method in ("ewc_default", "ewc_tuned_on_validation", "knn5_unweighted", "logistic_probe"):
            r = row[method]
            print(f"{name:<22}{row['n_reference']:>6}{row['n_query']:>6}  {method:<28}"
                  f"{100 * r['balanced_accuracy']:>9.1f}%{100 * r['macro_precision']:>10.1f}%")
        print(f"{'':<36}tuned choice: {row['ewc_tuned_on_validation']['chosen']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
