"""Class weighting on an imbalanced reference library (real PBC features): EWC with w_c = N/(C N_c)
against the same vote with all weights 1. With balanced references every weight is 1 and the
weighting is invisible, so the reference is subsampled: neutrophils keep all their training cells,
every other class keeps 10 %.

Usage: python benchmarks/bench_imbalance.py   (after bench_transfer.py has cached the embeddings)
"""

from __future__ import annotations

import numpy as np
from bench_transfer import MODELS, SHARED, WBC5

from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams
from cellsearch_gui.core.crops.prepare import CropPrep
from cellsearch_gui.core.embedding.cache import EmbeddingCache, default_cache_dir
from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
from cellsearch_gui.core.io.dataset import scan_class_folders, stratified_split
from cellsearch_gui.core.jobs import run_job

PREP = CropPrep(centre=True, scale="cell_size", mask=True, colour="device_reinhard", detail=2.0)


def main() -> None:
    cache = EmbeddingCache(default_cache_dir())
    opts = EmbedOptions(prep=PREP, views=4)
    pbc = run_job(embed_crops(scan_class_folders(SHARED / "data" / "pbc_barcelona").restrict(WBC5), MODELS,
                              cache, opts))
    bccd = run_job(embed_crops(scan_class_folders(SHARED / "data" / "bccd_wbc"), MODELS, cache, opts))
    keep, test = stratified_split(pbc.labels, 0.2, 0)
    rng = np.random.default_rng(0)
    labels = np.array(pbc.labels)
    imbalanced = np.concatenate([keep[labels[keep] == "neutrophil"]] + [
        rng.choice(keep[labels[keep] == c], size=int(0.1 * (labels[keep] == c).sum()), replace=False)
        for c in WBC5 if c != "neutrophil"])
    ref_x, ref_y = pbc.features[imbalanced], list(labels[imbalanced])
    counts = {c: ref_y.count(c) for c in WBC5}
    print(f"imbalanced reference: {counts}")
    for name, qx, qy in (("PBC test (balanced)", pbc.features[test], list(labels[test])),
                         ("BCCD", bccd.features, bccd.labels)):
        for k_rule in ({}, {"k_min": 3, "k_max": 30}):
            clf = EWCClassifier(EWCParams(**k_rule)).fit(ref_x, ref_y)
            weighted = evaluate_predictions(qy, clf.predict(qx).labels)
            clf.weights = np.ones_like(clf.weights)
            plain = evaluate_predictions(qy, clf.predict(qx).labels)
            print(f"{name:<20} {str(k_rule or 'defaults'):<28} weighted {100 * weighted['balanced_accuracy']:5.1f} %   "
                  f"unweighted {100 * plain['balanced_accuracy']:5.1f} %  (macro accuracy)")


if __name__ == "__main__":
    main()
