import numpy as np
import pytest
from ewc_reference import ewc_predict_one

from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams


def _data(rng, n_ref=240, n_q=60, dim=12, n_classes=4, positive=False):
    centres = rng.normal(size=(n_classes, dim)) * 1.2
    # imbalanced classes so the weights matter
    sizes = np.array([0.5, 0.25, 0.15, 0.1])[:n_classes]
    y = rng.choice(n_classes, size=n_ref, p=sizes / sizes.sum())
    x = centres[y] + rng.normal(size=(n_ref, dim))
    yq = rng.integers(0, n_classes, n_q)
    q = centres[yq] + rng.normal(size=(n_q, dim)) * 1.5
    if positive:  # ReLU-like features with exact zeros (the case that breaks FAISS's Canberra)
        x, q = np.maximum(x, 0), np.maximum(q, 0)
    labels = [f"class{v}" for v in y]
    return x.astype(np.float32), labels, q.astype(np.float32)


@pytest.mark.parametrize("norm", ["log_k", "log_min_kc"])
@pytest.mark.parametrize("metric", ["l2", "cosine", "canberra"])
@pytest.mark.parametrize("k_min,k_max,threshold", [(3, 1000, 0.3), (1, 50, 0.5), (5, 17, 0.05), (2, 8, 1.0)])
def test_matches_bruteforce(rng, metric, k_min, k_max, threshold, norm):
    x, labels, q = _data(rng, positive=(metric == "canberra"))
    clf = EWCClassifier(EWCParams(metric=metric, k_min=k_min, k_max=k_max, entropy_threshold=threshold,
                                  index="flat", entropy_norm=norm)).fit(x, labels)
    pred = clf.predict(q)
    for i in range(len(q)):
        label, k, h, scores = ewc_predict_one(q[i].astype(np.float64), x, labels, metric,
                                              k_min, k_max, threshold, norm)
        assert pred.labels[i] == label, i
        assert pred.k_used[i] == k
        assert pred.entropy[i] == pytest.approx(h, abs=1e-9)
        assert pred.scores[i] == pytest.approx(scores)


def test_k_really_adapts_and_weights_matter(rng):
    x, labels, q = _data(rng)
    pred = EWCClassifier(EWCParams(k_max=240)).fit(x, labels).predict(q)
    assert len(set(pred.k_used.tolist())) > 1
    weights = EWCClassifier().fit(x, labels).weights
    counts = np.array([labels.count(c) for c in sorted(set(labels))])
    assert weights == pytest.approx(len(labels) / (len(counts) * counts))


@pytest.mark.parametrize("metric", ["l2", "cosine", "canberra"])
def test_hnsw_agrees_with_exact(rng, metric):
    x, labels, q = _data(rng, n_ref=3000, positive=(metric == "canberra"))
    params = dict(metric=metric, k_min=3, k_max=100, entropy_threshold=0.3)
    exact = EWCClassifier(EWCParams(index="flat", **params)).fit(x, labels).predict(q)
    approx = EWCClassifier(EWCParams(index="hnsw", **params)).fit(x, labels).predict(q)
    recall = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(exact.neighbour_ids, approx.neighbour_ids)])
    assert recall >= 0.95
    assert np.mean(np.array(exact.labels) == np.array(approx.labels)) >= 0.95


def test_neighbour_distances_are_sorted_and_true(rng):
    x, labels, q = _data(rng)
    for metric in ("l2", "cosine", "canberra"):
        pred = EWCClassifier(EWCParams(metric=metric, k_max=20, index="flat")).fit(x, labels).predict(q[:5])
        assert (np.diff(pred.distances, axis=1) >= -1e-6).all()
        from ewc_reference import distances

        for i in range(5):
            d = distances(q[i].astype(np.float64), x, metric)
            assert pred.distances[i] == pytest.approx(d[pred.neighbour_ids[i]], rel=1e-4, abs=1e-5)


def test_paper_rule_always_stops_by_c_over_threshold_but_min_kc_does_not():
    """With C classes the paper's H <= log C / log k: for C=5 and 0.3 it stops by k=384 even on a
    perfectly mixed neighbourhood; the log min(k, C) rule keeps growing to k_max."""
    labels = np.tile(np.arange(5), 200)[None, :]  # maximally mixed neighbours
    from cellsearch_gui.core.classify.ewc import adaptive_vote

    paper = adaptive_vote(labels, np.ones(5), 3, 1000, 0.3)
    fixed = adaptive_vote(labels, np.ones(5), 3, 1000, 0.3, entropy_norm="log_min_kc")
    assert paper.k_used[0] <= 384 and paper.entropy[0] < 0.3
    assert fixed.k_used[0] == 1000 and fixed.entropy[0] == pytest.approx(1.0)


def test_class_weights_change_the_vote_on_an_imbalanced_library(rng):
    """A rare class that holds 2 of 5 neighbours beats a common class holding 3 when its weight is larger."""
    x = np.concatenate([rng.normal(0, 1, (90, 4)), rng.normal(0.3, 1, (10, 4))]).astype(np.float32)
    labels = ["common"] * 90 + ["rare"] * 10
    clf = EWCClassifier(EWCParams(k_min=5, k_max=5)).fit(x, labels)
    assert clf.weights.tolist() == pytest.approx([100 / (2 * 90), 100 / (2 * 10)])
    pred = clf.predict(rng.normal(0.15, 1, (400, 4)).astype(np.float32))
    ids = clf.label_ids[pred.neighbour_ids[:, :5]]
    rare_votes = (ids == 1).sum(1)
    assert all(p == "rare" for p, v in zip(pred.labels, rare_votes) if v >= 1)  # weight 5 vs 0.56: 1 rare beats 4
    assert any(v == 1 for v in rare_votes)  # the case occurs, so the weighting was exercised
