import numpy as np
import pytest
from ewc_reference import ewc_predict_one
from hypothesis import given, settings
from hypothesis import strategies as st

from cellsearch_gui.core.classify.ewc import (
    EWCClassifier,
    EWCParams,
    adaptive_vote,
    k_schedule,
)
from cellsearch_gui.core.errors import FeatureError


@st.composite
def libraries(draw):
    n = draw(st.integers(1, 40))
    dim = draw(st.integers(1, 6))
    n_classes = draw(st.integers(1, 4))
    labels = [f"c{draw(st.integers(0, n_classes - 1))}" for _ in range(n)]
    values = st.floats(-4, 4, allow_nan=False, width=32).map(lambda v: round(v, 1))  # many exact ties
    x = np.array(draw(st.lists(st.lists(values, min_size=dim, max_size=dim), min_size=n, max_size=n)),
                 dtype=np.float32)
    q = np.array(draw(st.lists(st.lists(values, min_size=dim, max_size=dim), min_size=1, max_size=5)),
                 dtype=np.float32)
    k_min = draw(st.integers(1, 8))
    k_max = draw(st.integers(k_min, 80))  # often above N
    threshold = draw(st.sampled_from([0.0, 0.1, 0.3, 0.7, 1.0]))
    return x, labels, q, k_min, k_max, threshold


@settings(max_examples=150, deadline=None)
@given(libraries())
def test_invariants_on_any_library(lib):
    x, labels, q, k_min, k_max, threshold = lib
    clf = EWCClassifier(EWCParams(k_min=k_min, k_max=k_max, entropy_threshold=threshold, index="flat"))
    pred = clf.fit(x, labels).predict(q)
    n = len(labels)
    assert set(pred.labels) <= set(labels)
    assert (pred.k_used >= 1).all() and (pred.k_used <= min(k_max, n)).all()
    assert ((pred.entropy >= -1e-12) & (pred.entropy <= 1 + 1e-9)).all()
    assert pred.neighbour_ids.shape == (len(q), min(k_max, n))
    for i, label in enumerate(pred.labels):
        # the winner has the largest weighted vote
        assert pred.scores[i][pred.classes.index(label)] >= pred.scores[i].max() - 1e-9
        # and the vote is over exactly k_used neighbours
        assert pred.scores[i] @ (1 / clf.weights) == pytest.approx(pred.k_used[i])
        # stopping rule: either below threshold or the cap was reached
        assert pred.entropy[i] < threshold or pred.k_used[i] == min(k_max, n)


@settings(max_examples=60, deadline=None)
@given(libraries())
def test_agrees_with_reference_without_distance_ties(lib):
    x, labels, q, k_min, k_max, threshold = lib
    # break distance ties so the neighbour order is unambiguous
    x = x + np.arange(len(x), dtype=np.float32)[:, None] * 1e-3
    pred = EWCClassifier(EWCParams(k_min=k_min, k_max=k_max, entropy_threshold=threshold,
                                   index="flat")).fit(x, labels).predict(q)
    for i in range(len(q)):
        d = np.sqrt(((x.astype(np.float64) - q[i]) ** 2).sum(1))
        if len(np.unique(np.round(d, 4))) < len(d):
            continue
        label, k, _, _ = ewc_predict_one(q[i].astype(np.float64), x, labels, "l2", k_min, k_max, threshold)
        assert (pred.labels[i], pred.k_used[i]) == (label, k)


def test_one_class_library():
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    pred = EWCClassifier().fit(x, ["only"] * 10).predict(x[:3])
    assert pred.labels == ["only"] * 3
    assert (pred.k_used == 3).all() and (pred.entropy == 0).all()


def test_class_with_single_sample_gets_large_weight():
    x = np.array([[0.0], [10.0], [10.1], [10.2], [10.3], [10.4]], np.float32)
    clf = EWCClassifier(EWCParams(k_min=1, k_max=6)).fit(x, ["rare"] + ["common"] * 5)
    assert clf.weights.tolist() == pytest.approx([6 / (2 * 5), 6 / (2 * 1)])
    assert clf.predict(np.array([[0.1]], np.float32)).labels == ["rare"]


def test_k_max_above_library_size():
    x = np.arange(5, dtype=np.float32)[:, None]
    pred = EWCClassifier(EWCParams(k_min=3, k_max=1000, entropy_threshold=0.0)).fit(
        x, ["a", "b", "a", "b", "a"]).predict(x[:1])
    assert pred.k_used[0] == 5 and pred.neighbour_ids.shape == (1, 5)


def test_tie_goes_to_the_class_with_the_nearest_member():
    labels = np.array([[1, 0, 0, 1]])  # classes 0 and 1 tie 2:2; class 1 owns the nearest neighbour
    vote = adaptive_vote(labels, np.array([1.0, 1.0]), k_min=4, k_max=4, threshold=0.3)
    assert vote.label_ids[0] == 1
    vote = adaptive_vote(labels[:, ::-1].copy(), np.array([1.0, 1.0]), 4, 4, 0.3)
    assert vote.label_ids[0] == 1  # reversed list: class 1 still ranks first


def test_k_schedule_is_exponential_and_capped():
    assert k_schedule(3, 1000) == [3, 6, 12, 24, 48, 96, 192, 384, 768, 1000]
    assert k_schedule(5, 5) == [5]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_rejected(bad):
    x = np.ones((4, 3), np.float32)
    x[2, 1] = bad
    with pytest.raises(FeatureError, match=r"NaN or infinite.*rows \[2\]"):
        EWCClassifier().fit(x, list("abab"))
    clf = EWCClassifier().fit(np.ones((4, 3), np.float32), list("abab"))
    with pytest.raises(FeatureError, match="query features"):
        clf.predict(x)


def test_mismatched_dimensions_are_named():
    clf = EWCClassifier().fit(np.ones((4, 3), np.float32), list("abab"))
    with pytest.raises(FeatureError, match="query features have 5 dimensions but the reference index has 3"):
        clf.predict(np.ones((2, 5), np.float32))


def test_bad_parameters():
    with pytest.raises(FeatureError):
        EWCParams(k_min=0).validate()
    with pytest.raises(FeatureError):
        EWCParams(k_min=10, k_max=5).validate()
    with pytest.raises(FeatureError, match="unknown metric"):
        EWCClassifier(EWCParams(metric="manhattan"))


def test_add_references_without_rebuilding(rng):
    x = rng.normal(size=(30, 4)).astype(np.float32)
    labels = ["a"] * 15 + ["b"] * 15
    full = EWCClassifier(EWCParams(index="flat")).fit(x, labels)
    grown = EWCClassifier(EWCParams(index="flat")).fit(x[:20], labels[:20])
    grown.add(x[20:], labels[20:])
    q = rng.normal(size=(10, 4)).astype(np.float32)
    a, b = full.predict(q), grown.predict(q)
    assert a.labels == b.labels and (a.neighbour_ids == b.neighbour_ids).all()
    assert full.weights == pytest.approx(grown.weights)


def test_predict_in_query_chunks_and_keep_few_neighbours(monkeypatch):
    from cellsearch_gui.core.classify import ewc

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    labels = [f"c{i % 3}" for i in range(300)]
    q = rng.normal(size=(50, 8)).astype(np.float32)
    clf = EWCClassifier(EWCParams(k_min=3, k_max=64, index="flat")).fit(x, labels)
    whole = clf.predict(q)
    monkeypatch.setattr(ewc, "QUERY_CHUNK", 7)
    chunked = clf.predict(q, keep_neighbours=5)
    assert chunked.labels == whole.labels and (chunked.k_used == whole.k_used).all()
    assert np.array_equal(chunked.scores, whole.scores) and np.array_equal(chunked.entropy, whole.entropy)
    assert np.array_equal(chunked.neighbour_ids, whole.neighbour_ids[:, :5])
    assert chunked.distances.shape == (50, 5) and (chunked.k_used > 5).any()  # votes used more than kept
