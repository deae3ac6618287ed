"""Reference points on the same features: plain unweighted k-NN and a logistic-regression probe."""

from __future__ import annotations

import numpy as np

from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.index.knn import KnnIndex


def plain_knn(ref_x, ref_y, query_x, k: int = 5, metric: str = "l2") -> list[str]:
    """Majority vote of the k nearest references (no weights, fixed k); ties go to the nearest member."""
    classes = sorted(set(ref_y))
    lookup = {c: i for i, c in enumerate(classes)}
    ids = np.array([lookup[c] for c in ref_y])
    _, nn = KnnIndex(metric=metric, kind="flat").build(ref_x).search(query_x, k)
    labels = ids[nn]
    preds = []
    for row in labels:
        counts = np.bincount(row, minlength=len(classes))
        tied = np.flatnonzero(counts == counts.max())
        preds.append(classes[next(c for c in row if c in tied)])
    return preds


def logistic_probe(ref_x, ref_y, query_x, seed: int = 0) -> list[str]:
    """Standardised features, multinomial logistic regression (L2, C=1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    if len(set(ref_y)) < 2:
        return [ref_y[0]] * len(query_x)
    model.fit(ref_x, ref_y)
    return list(model.predict(query_x))


def run_baselines(ref_x, ref_y, query_x, query_y) -> dict:
    out = {}
    for name, preds in (("knn5_unweighted", plain_knn(ref_x, ref_y, query_x, 5)),
                        ("logistic_probe", logistic_probe(ref_x, ref_y, query_x))):
        scores = evaluate_predictions(query_y, preds)
        out[name] = {k: scores[k] for k in ("balanced_accuracy", "macro_precision", "per_class")}
    return out
