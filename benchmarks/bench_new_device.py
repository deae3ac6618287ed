"""A new microscope: PBC (reference) -> BCCD crops (query), five white-cell classes, mobilenetv2 +
efficientnet_lite0. The learning curve of `cellsearch evaluate --shots N` (0, 1, 3, 5, 10 labelled cells per
class, 5 seeds) for each configuration, with the share of cells answered uncertain, next to the in-domain
ceiling (5-fold cross-validation on BCCD alone, the 4 classes with more than 3 cells) and PBC internal
(stratified 80/20). Every configuration run is printed: the choice of defaults can be judged from it.

Usage: python benchmarks/bench_new_device.py [--json out/bench_new_device.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import _common  # noqa: F401  (puts the checkout on the path)
import numpy as np

from cellsearch_gui.core.app.defaults import DEFAULT_EWC, DEFAULT_PRESET
from cellsearch_gui.core.app.experiments import embed_both, load_inputs
from cellsearch_gui.core.app.shots import score_with_shots
from cellsearch_gui.core.classify.coverage import accuracy_by_certainty
from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams
from cellsearch_gui.core.crops.prepare import preset
from cellsearch_gui.core.embedding.cache import EmbeddingCache, default_cache_dir
from cellsearch_gui.core.embedding.job import EmbedOptions
from cellsearch_gui.core.jobs import CancelToken, run_job

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELS = ["mobilenetv2", "efficientnet_lite0"]
WBC5 = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
SHOTS = (1, 3, 5, 10)
SEEDS = list(range(5))
CONFIGS = {  # name: (crop preset, EWC parameters, device vote)
    "paper: raw, log_k, paper": ("raw", EWCParams(), "library"),
    "raw, log_k, lowest_entropy": ("raw", EWCParams(stopping="lowest_entropy"), "library"),
    "raw, log_min_kc, lowest_entropy": ("raw", EWCParams(entropy_norm="log_min_kc", stopping="lowest_entropy"),
                                        "library"),
    "raw, log_k, lowest_entropy, loo_mix": ("raw", DEFAULT_EWC, "loo_mix"),
    "old app: cell_device_colour, log_min_kc, paper": (DEFAULT_PRESET, EWCParams(entropy_norm="log_min_kc"),
                                                       "library"),
    "cell_device_colour, log_min_kc, lowest_entropy": (
        DEFAULT_PRESET, EWCParams(entropy_norm="log_min_kc", stopping="lowest_entropy"), "library"),
    "cell_device_colour, log_k, lowest_entropy, library": (DEFAULT_PRESET, DEFAULT_EWC, "library"),
    "DEFAULT: cell_device_colour, log_k, lowest_entropy, loo_mix": (DEFAULT_PRESET, DEFAULT_EWC, "loo_mix"),
}


def features(reference: Path, query: Path | None, prep_name: str, split: float | None = None):
    inputs = load_inputs(reference, query, split=split, classes=WBC5)
    options = EmbedOptions(prep=preset(prep_name))
    return run_job(embed_both(inputs, MODELS, EmbeddingCache(default_cache_dir()), options, CancelToken()))


def zero_shot(ref, query, params: EWCParams) -> dict:
    preds = EWCClassifier(params).fit(ref.features, ref.labels).predict(query.features)
    scores = evaluate_predictions(query.labels, preds.labels)
    certainty = accuracy_by_certainty(query.labels, preds.labels, preds.uncertain)
    return {"balanced_accuracy": scores["balanced_accuracy"], "share_uncertain": certainty["share_uncertain"],
            "confident_balanced_accuracy": certainty["confident"]["balanced_accuracy"]}


def four_classes(result: dict) -> float:
    """Macro recall over the classes with more than 3 cells (BCCD has 3 basophils, so a scored basophil is a
    single cell worth a fifth of the 5-class score), pooled over the seeds."""
    return float(np.mean([v["recall"] for c, v in result["per_class"].items() if c != "basophil"]))


def in_domain_ceiling(query) -> float:
    """5-fold cross-validation on the query set alone (classes with > 3 cells), default EWC."""
    labels = np.asarray(query.labels)
    keep = np.flatnonzero([np.sum(labels == c) > 3 for c in labels])
    rng = np.random.default_rng(0)
    folds = np.zeros(len(keep), int)
    for c in sorted(set(labels[keep])):
        rows = np.flatnonzero(labels[keep] == c)
        folds[rng.permutation(rows)] = np.arange(len(rows)) % 5
    predicted = np.empty(len(keep), object)
    for f in range(5):
        train, test = keep[folds != f], keep[folds == f]
        clf = EWCClassifier(DEFAULT_EWC).fit(query.features[train], list(labels[train]))
        predicted[folds == f] = clf.predict(query.features[test]).labels
    return evaluate_predictions(list(labels[keep]), list(predicted))["balanced_accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path, default=Path("out/bench_new_device.json"))
    args = ap.parse_args()
    pbc, bccd = SHARED / "pbc_barcelona", SHARED / "bccd_wbc"
    rows, sets = [], {}
    print(f"{'configuration':<62}{'PBC 80/20':>10}{'BCCD 0':>8}" + "".join(f"{s:>6}" for s in SHOTS)
          + f"{'uncertain@0':>13}{'5, 4 cl.':>10}")
    for name, (prep_name, params, vote) in CONFIGS.items():
        if prep_name not in sets:
            sets[prep_name] = (features(pbc, bccd, prep_name), features(pbc, None, prep_name, split=0.2))
        (ref, query), (pbc_ref, pbc_val) = sets[prep_name]
        row = {"configuration": name, "prep": prep_name, "params": params.as_dict(), "device_vote": vote,
               "pbc_internal": zero_shot(pbc_ref, pbc_val, params)["balanced_accuracy"],
               "bccd": {0: zero_shot(ref, query, params)}}
        for shots in SHOTS:
            result = score_with_shots(ref, query, dataclasses.replace(params), shots, SEEDS, device_vote=vote)
            row["bccd"][shots] = {"balanced_accuracy": result["balanced_accuracy"],
                                  "per_seed": [s["balanced_accuracy"] for s in result["per_seed"]],
                                  "four_classes_pooled": four_classes(result)}
        rows.append(row)
        print(f"{name:<62}{row['pbc_internal']:>10.3f}{row['bccd'][0]['balanced_accuracy']:>8.3f}"
              + "".join(f"{row['bccd'][s]['balanced_accuracy']:>6.2f}" for s in SHOTS)
              + f"{row['bccd'][0]['share_uncertain']:>13.2f}{row['bccd'][5]['four_classes_pooled']:>10.3f}",
              flush=True)
    ceiling = {p: in_domain_ceiling(q) for p, ((_, q), _) in sets.items()}
    for prep_name, value in ceiling.items():
        print(f"in-domain ceiling, BCCD 5-fold on BCCD alone (4 classes), {prep_name}: {value:.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "bccd_in_domain_ceiling": ceiling}, indent=1))


if __name__ == "__main__":
    main()
