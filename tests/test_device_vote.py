"""Issue 15: one default everywhere, a vote that says when it is unsure, and the device's labelled cells."""

from __future__ import annotations

import numpy as np
import pytest

from cellsearch_gui.cli.common import crop_prep, ewc_params
from cellsearch_gui.cli.parser import build_parser
from cellsearch_gui.core.app.defaults import DEFAULT_EWC, DEFAULT_PRESET
from cellsearch_gui.core.app.run import AnalysisSettings
from cellsearch_gui.core.classify.combinations import Grid, search_combinations
from cellsearch_gui.core.classify.device_vote import (
    DeviceAwareClassifier,
    device_learning_curve,
)
from cellsearch_gui.core.classify.review import review_order
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams, vote_ambiguity
from cellsearch_gui.core.crops.prepare import CropPrep, preset
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.types import FeatureSet


def _evaluate_args(*extra: str):
    return build_parser().parse_args(["evaluate", "--reference", "r", "--split", "0.2", "--models", "mobilenetv2",
                                      *extra])


def test_cli_and_window_share_every_default_that_changes_a_prediction():
    args = _evaluate_args()
    settings = AnalysisSettings()
    assert ewc_params(args) == settings.ewc_params() == DEFAULT_EWC
    assert crop_prep(args) == preset(settings.preprocessing) == preset(DEFAULT_PRESET)
    assert DEFAULT_EWC.stopping == "lowest_entropy" and DEFAULT_EWC.entropy_norm == "log_k"


def test_prep_raw_and_paper_stopping_are_the_papers_configuration():
    args = _evaluate_args("--prep", "raw", "--entropy-norm", "log_k", "--stopping", "paper")
    assert crop_prep(args) == CropPrep()
    assert ewc_params(args) == EWCParams()


def test_single_crop_options_change_one_step_of_the_preset():
    prep = crop_prep(_evaluate_args("--prep", "raw", "--centre"))
    assert prep.centre and not prep.mask and prep.colour == "none"
    prep = crop_prep(_evaluate_args("--colour", "grayscale"))
    assert prep.colour == "grayscale" and prep.mask and prep.centre  # the rest of cell_device_colour


def _clusters(rng, centres: dict[str, tuple[float, float]], n: int, spread: float = 0.3):
    feats, labels = [], []
    for name, centre in centres.items():
        feats.append(rng.normal(centre, spread, size=(n, 2)))
        labels += [name] * n
    return np.concatenate(feats).astype(np.float32), labels


def test_a_mixed_neighbourhood_never_ends_in_a_uniform_whole_library_vote():
    rng = np.random.default_rng(0)
    feats, labels = _clusters(rng, {"a": (0, 0), "b": (0.2, 0), "c": (5, 5)}, 40, spread=1.0)
    preds = EWCClassifier(DEFAULT_EWC).fit(feats, labels).predict(np.array([[0.1, 0.0]], np.float32))
    assert preds.k_used[0] < len(labels)
    assert preds.ambiguity[0] < 1.0 - 1e-6
    paper = EWCClassifier(EWCParams(entropy_norm="log_min_kc", entropy_threshold=0.05)).fit(feats, labels)
    whole = paper.predict(np.array([[0.1, 0.0]], np.float32))
    assert whole.k_used[0] == len(labels) and whole.ambiguity[0] == pytest.approx(1.0)  # the paper's prior
    assert whole.uncertain[0]


def test_vote_ambiguity_is_zero_for_one_class_and_one_for_equal_weights():
    scores = np.array([[5.0, 0, 0], [1.0, 1.0, 1.0], [2.0, 2.0, 0]])
    assert vote_ambiguity(scores, np.array([5, 3, 8])) == pytest.approx([0.0, 1.0, np.log(2) / np.log(3)])


def _fit(params, rule, ref, ref_labels, dev, dev_labels):
    features = np.concatenate([ref, dev])
    return DeviceAwareClassifier(params, rule).fit(features, list(ref_labels) + list(dev_labels),
                                                   range(len(ref_labels), len(features)))


def _device_case():
    """Library classes a and b; on the new device each class sits where the library has the other."""
    rng = np.random.default_rng(1)
    ref, ref_labels = _clusters(rng, {"a": (0, 0), "b": (3, 0)}, 60)
    dev, dev_labels = _clusters(rng, {"a": (3, 0), "b": (0, 0)}, 6)
    return ref, ref_labels, dev, dev_labels


def test_device_cells_outvote_a_library_that_is_wrong_on_this_device():
    ref, ref_labels, dev, dev_labels = _device_case()
    params = EWCParams(k_min=3, k_max=64, stopping="lowest_entropy")
    labelled = [0, 1, 2, 6, 7, 8]
    scored = [3, 4, 5, 9, 10, 11]
    library = _fit(params, "library", ref, ref_labels, dev[labelled], [dev_labels[i] for i in labelled])
    mixed = _fit(params, "loo_mix", ref, ref_labels, dev[labelled], [dev_labels[i] for i in labelled])
    truth = [dev_labels[i] for i in scored]
    assert mixed.fit_record.alpha < 1.0  # the library fails the device's own cells, left out one at a time
    assert mixed.fit_record.loo_accuracy["0.00"] == 1.0
    assert mixed.predict(dev[scored]).labels == truth
    assert library.predict(dev[scored]).labels != truth  # drowned: 6 device cells against 120


def test_a_library_that_knows_the_device_keeps_the_whole_vote():
    ref, ref_labels, _, _ = _device_case()
    rng = np.random.default_rng(2)
    dev, dev_labels = _clusters(rng, {"a": (0, 0), "b": (3, 0)}, 3)  # the library's own device
    params = EWCParams(k_min=3, k_max=64)
    mixed = _fit(params, "loo_mix", ref, ref_labels, dev, dev_labels)
    plain = _fit(params, "library", ref, ref_labels, dev, dev_labels)
    assert mixed.fit_record.alpha == 1.0  # ties go to the library
    query = rng.normal((1.5, 0), 1.0, size=(20, 2)).astype(np.float32)
    assert mixed.predict(query).labels == plain.predict(query).labels


def test_a_single_labelled_cell_falls_back_to_the_library_with_a_note():
    ref, ref_labels, dev, dev_labels = _device_case()
    clf = _fit(EWCParams(k_min=3, k_max=64), "loo_mix", ref, ref_labels, dev[:1], ["a"])
    assert clf.fit_record.alpha == 1.0 and "fewer than 2" in clf.fit_record.note
    assert len(clf.predict(dev).labels) == len(dev)


def test_cells_labelled_later_join_the_device_vote_as_in_the_window():
    ref, ref_labels, dev, dev_labels = _device_case()
    params = EWCParams(k_min=3, k_max=64, stopping="lowest_entropy")
    grown = _fit(params, "loo_mix", ref, ref_labels, dev[:0], [])
    assert grown.fit_record.n_labelled == 0 and grown.classes == ["a", "b"]
    grown.add(dev[[0, 1, 2, 6, 7, 8]], [dev_labels[i] for i in (0, 1, 2, 6, 7, 8)])  # Add labelled cells
    at_once = _fit(params, "loo_mix", ref, ref_labels, dev[[0, 1, 2, 6, 7, 8]],
                   [dev_labels[i] for i in (0, 1, 2, 6, 7, 8)])
    assert grown.fit_record == at_once.fit_record and grown.fit_record.alpha < 1.0
    assert grown.predict(dev).labels == at_once.predict(dev).labels == dev_labels


def test_learning_curve_follows_the_cells_in_the_order_labelled():
    ref, ref_labels, dev, dev_labels = _device_case()
    order = np.random.default_rng(3).permutation(len(dev_labels))
    curve = device_learning_curve(ref, ref_labels, dev[order], [dev_labels[i] for i in order],
                                  EWCParams(k_min=1, k_max=64))
    assert [p["n_labelled"] for p in curve] == [2, 3, 5, 8, 12]
    assert curve[-1]["device_alone"] > curve[-1]["library"]
    assert all(0.0 <= p["library"] <= 1.0 for p in curve)


def test_search_ranks_stopping_rules():
    rng = np.random.default_rng(4)
    ref_x, ref_l = _clusters(rng, {"a": (0, 0), "b": (1, 0)}, 20, spread=1.0)
    val_x, val_l = _clusters(rng, {"a": (0, 0), "b": (1, 0)}, 5, spread=1.0)

    def fs(x, labels):
        return FeatureSet(paths=[f"{i}.png" for i in range(len(labels))], labels=labels, features=x,
                          model_ids=["m"], dims=[x.shape[1]], per_model_l2=False, fingerprints={},
                          per_model={"m": x})

    grid = Grid(metrics=["l2"], thresholds=[0.05], stoppings=["paper", "lowest_entropy"])
    rows = run_job(search_combinations(fs(ref_x, ref_l), fs(val_x, val_l), ["m"], grid))
    assert {r["stopping"] for r in rows} == {"paper", "lowest_entropy"}


def test_the_next_cell_to_label_is_an_ambiguous_typical_one_not_an_outlier():
    rng = np.random.default_rng(5)
    crowd = rng.normal(0, 0.2, size=(30, 4))
    outlier = np.full((1, 4), 9.0)
    features = np.concatenate([crowd, outlier])
    ambiguity = np.full(31, 0.5)
    ambiguity[30] = 0.9  # the most ambiguous vote, on a lone outlier
    ambiguity[7] = 0.8
    order = review_order(features, ambiguity, list(range(31)))
    assert order[0] == 7 and sorted(order) == list(range(31))
    assert review_order(features, ambiguity, [30, 2]) [0] in (2, 30) and review_order(features, ambiguity, []) == []


def test_the_window_shows_and_changes_the_stopping_rule_and_device_vote(window):
    panel, settings = window.model_panel, window.controller.workspace
    assert panel.stopping.currentText() == DEFAULT_EWC.stopping  # the one default, shown
    assert panel.device_vote.currentText() == AnalysisSettings().device_vote
    panel.stopping.setCurrentText("paper")
    panel.device_vote.setCurrentText("library")
    assert settings.settings.ewc_params().stopping == "paper"
    assert settings.settings.device_vote == "library"
