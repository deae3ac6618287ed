"""A direct, loop-by-loop numpy/scipy transcription of the paper's formulas, for comparison in tests."""

import math

import numpy as np
from scipy.spatial import distance


def distances(q, refs, metric):
    if metric == "l2":
        return np.sqrt(((refs.astype(np.float64) - q) ** 2).sum(1))
    if metric == "cosine":
        return np.array([distance.cosine(q, r) for r in refs])
    return np.array([distance.canberra(q, r) for r in refs])


def ewc_predict_one(q, refs, labels, metric, k_min, k_max, threshold, norm="log_k"):
    classes = sorted(set(labels))
    n, c = len(labels), len(classes)
    weights = {cl: n / (c * labels.count(cl)) for cl in classes}
    order = np.argsort(distances(q, refs, metric), kind="stable")
    cap = min(k_max, n)
    k = min(k_min, cap)
    while True:
        near = [labels[i] for i in order[:k]]
        h = 0.0
        base = k if norm == "log_k" else min(k, c)
        if base > 1:
            for cl in classes:
                p = near.count(cl) / k
                if p > 0:
                    h -= p * math.log(p)
            h /= math.log(base)
        if h < threshold or k >= cap:
            break
        k = min(k * 2, cap)
    scores = {cl: weights[cl] * near.count(cl) for cl in classes}
    best = max(scores.values())
    tied = [cl for cl in classes if scores[cl] >= best - 1e-9 * abs(best)]
    winner = min(tied, key=near.index)
    return winner, k, h, [scores[cl] for cl in classes]
