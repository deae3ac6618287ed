"""Issue 15: the lowest-entropy stopping rule never answers with a uniform whole-library vote, the paper's rule
is unchanged, and the few-shot protocol never scores a cell it used as a label."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import colour_class_folders

from cellsearch_gui.cli import main
from cellsearch_gui.core.app.shots import score_with_shots, shot_split
from cellsearch_gui.core.classify.coverage import accuracy_by_coverage
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams, adaptive_vote, class_weights
from cellsearch_gui.core.types import FeatureSet


def _whole_library_uniform(vote, n_library):
    scores = vote.scores
    uniform = np.isclose(scores, scores[:, :1]).all(axis=1)
    return (vote.k_used == n_library) & uniform


@pytest.mark.parametrize("norm", ["log_k", "log_min_kc"])
def test_a_mixed_neighbourhood_never_yields_a_uniform_whole_library_vote(rng, norm):
    for library_sizes in ([40, 40, 40, 40, 40], [120, 40, 20, 15, 5]):  # balanced and imbalanced, N = 200
        library = np.repeat(np.arange(5), library_sizes)
        weights = class_weights(library, 5)
        rows = np.stack([rng.permutation(library) for _ in range(300)])  # neighbours: the whole library, mixed
        rows[0] = np.resize(np.arange(5), 200) if library_sizes[0] == 40 else rows[0]
        paper = adaptive_vote(rows, weights, 3, 1000, 0.05, entropy_norm=norm)
        new = adaptive_vote(rows, weights, 3, 1000, 0.05, entropy_norm=norm, stopping="lowest_entropy")
        assert _whole_library_uniform(paper, 200).any()  # the failure the new rule removes
        assert not _whole_library_uniform(new, 200).any()
        assert (new.k_used < 200).all()


def test_lowest_entropy_keeps_the_least_ambiguous_k_and_ties_go_to_the_smaller_k():
    # k=3: (2, 1) of 3 classes; k=6: (5, 1); k=12 mixed; k=20 mixed
    row = np.array([0, 1, 0, 0, 0, 0] + [1, 2] * 7)[None, :]
    vote = adaptive_vote(row, np.ones(3), 3, 20, 0.0, entropy_norm="log_min_kc", stopping="lowest_entropy")
    assert vote.k_used[0] == 6 and vote.label_ids[0] == 0
    same = np.array([0, 1, 2] * 7)[None, :]  # every k equally ambiguous: the smallest
    vote = adaptive_vote(same, np.ones(3), 3, 21, 0.0, entropy_norm="log_min_kc", stopping="lowest_entropy")
    assert vote.k_used[0] == 3


def test_the_rules_agree_when_a_k_reaches_the_threshold_and_paper_is_the_default(rng):
    x = rng.normal(size=(300, 8)).astype(np.float32)
    labels = [f"c{i % 3}" for i in range(300)]
    x[:, 0] += np.arange(300) % 3 * 3  # separable: every query stops below the threshold
    q = x[::7] + 0.01
    default = EWCClassifier(EWCParams(index="flat")).fit(x, labels).predict(q)
    paper = EWCClassifier(EWCParams(index="flat", stopping="paper")).fit(x, labels).predict(q)
    new = EWCClassifier(EWCParams(index="flat", stopping="lowest_entropy")).fit(x, labels).predict(q)
    assert default.labels == paper.labels == new.labels
    assert (paper.k_used == new.k_used).all() and np.array_equal(paper.entropy, new.entropy)


def test_unknown_stopping_rule_is_refused():
    with pytest.raises(Exception, match="stopping rule"):
        EWCParams(stopping="median").validate()


def test_coverage_keeps_the_most_confident_cells():
    truth = ["a", "a", "b", "b", "a"]
    predicted = ["a", "b", "b", "a", "a"]
    entropy = np.array([0.1, 0.9, 0.2, 0.8, 0.3])
    table = accuracy_by_coverage(truth, predicted, entropy)
    assert table["1.0"]["accuracy"] == pytest.approx(0.6) and table["1.0"]["n_cells"] == 5
    assert table["0.6"]["accuracy"] == 1.0 and table["0.6"]["n_cells"] == 3
    assert table["0.4"]["max_entropy"] == pytest.approx(0.2)


def _features(rng, labels, shift=0.0, prefix="q"):
    centres = {c: rng.normal(size=6) * 3 for c in sorted(set(labels))}
    x = np.stack([centres[c] + rng.normal(size=6) + shift for c in labels]).astype(np.float32)
    ids = [f"{prefix}{i}" for i in range(len(labels))]
    return FeatureSet([Path(f"{prefix}{i}.png") for i in range(len(labels))], list(labels), x, ["m"], [6], False,
                      {}, per_model={"m": x}, cell_ids=ids)


def test_shot_split_never_scores_a_label_and_falls_back_on_small_classes():
    labels = ["a"] * 10 + ["b"] * 3 + ["c"]
    labelled, scored, notes = shot_split(labels, 5, seed=0)
    assert not set(labelled) & set(scored) and sorted(labelled + scored) == list(range(14))
    taken = [labels[i] for i in labelled]
    assert taken.count("a") == 5 and taken.count("b") == 2 and taken.count("c") == 0
    assert any("'b' has 3" in n for n in notes) and any("'c' has 1" in n for n in notes)
    assert shot_split(labels, 5, seed=1)[0] != labelled


def test_shots_never_score_a_labelled_cell_and_the_labels_join_the_library(rng):
    ref = _features(rng, ["a"] * 30 + ["b"] * 30, prefix="r")
    query = _features(np.random.default_rng(7), ["a"] * 8 + ["b"] * 8 + ["new"] * 4, shift=5.0)
    out = score_with_shots(ref, query, EWCParams(index="flat", k_max=50, stopping="lowest_entropy"), 2,
                           [0, 1, 2])
    assert out["shots"] == 2 and len(out["per_seed"]) == 3 and out["n_query"] == 14
    for seed in out["per_seed"]:
        assert not set(seed["labelled_cells"]) & set(seed["scored_cells"])
        assert len(seed["labelled_cells"]) == 6 and len(seed["scored_cells"]) == 14
    assert out["balanced_accuracy"] == pytest.approx(np.mean([s["balanced_accuracy"] for s in out["per_seed"]]))
    assert "new" in out["classes"] and any("'new' has no reference cells" in n for n in out["shot_notes"])
    assert len(ref.paths) == 60  # the library the caller gave is left as it was




def test_cli_shots_json_and_a_class_too_small(tmp_path, capsys):
    classes = {"red": (200, 40, 40), "blue": (40, 40, 200)}
    ref = colour_class_folders(tmp_path / "ref", classes, 4, seed=0)
    query = colour_class_folders(tmp_path / "query", classes, 3, seed=1)
    out = tmp_path / "result.json"
    assert main(["evaluate", "--reference", str(ref), "--query", str(query), "--models", "mobilenetv2",
                 "--random-init", "--no-cache", "--json", str(out), "--quiet", "--shots", "5", "--shot-seeds", "2",
                 "--stopping", "lowest_entropy"]) == 0
    data = json.loads(out.read_text())
    assert data["shots"] == 5 and data["shot_seeds"] == [0, 1] and data["n_query"] == 2
    assert data["params"]["stopping"] == "lowest_entropy"
    for seed in data["per_seed"]:
        assert not set(seed["labelled_cells"]) & set(seed["scored_cells"])
    assert any("2 labelled instead of 5" in n for n in data["notes"])
    assert set(data["coverage"]) == {"1.0", "0.8", "0.6", "0.4"}


@pytest.mark.parametrize("norm", ["log_k", "log_min_kc"])
def test_explicit_paper_rule_reproduces_the_reference_implementation(rng, norm):
    from ewc_reference import ewc_predict_one

    centres = rng.normal(size=(4, 10))
    y = rng.integers(0, 4, 200)
    x = (centres[y] + rng.normal(size=(200, 10)) * 2).astype(np.float32)  # mixed: many reach k_max
    labels = [f"c{v}" for v in y]
    q = (centres[rng.integers(0, 4, 40)] + rng.normal(size=(40, 10)) * 2).astype(np.float32)
    pred = EWCClassifier(EWCParams(k_max=200, entropy_threshold=0.2, index="flat", entropy_norm=norm,
                                   stopping="paper")).fit(x, labels).predict(q)
    for i in range(len(q)):
        label, k, h, scores = ewc_predict_one(q[i].astype(np.float64), x, labels, "l2", 3, 200, 0.2, norm)
        assert (pred.labels[i], pred.k_used[i]) == (label, k)
        assert pred.entropy[i] == pytest.approx(h, abs=1e-9) and pred.scores[i] == pytest.approx(scores)
