"""Issue 17, the window: the library's classes are the user's choice (reference pane, settings, pipeline and
CLI alike), near-even votes are flagged whatever k_max is, and the inspector explains a prediction that the
class weights turned against the nearest neighbours. The window bugs: test_window_bugs.py."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from conftest import colour_class_folders  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from test_gui_threads import show  # noqa: E402

from cellsearch_gui.core.app.experiments import load_inputs  # noqa: E402
from cellsearch_gui.core.app.run import AnalysisResult, AnalysisSettings, pca_2d, pipeline_job  # noqa: E402
from cellsearch_gui.core.app.session import Workspace  # noqa: E402
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams  # noqa: E402
from cellsearch_gui.core.classify.vote_checks import (  # noqa: E402
    NEAR_EVEN_RATIO,
    depth_note,
    near_even_share,
    near_even_warning,
    weighting_note,
)
from cellsearch_gui.core.jobs import run_job  # noqa: E402
from cellsearch_gui.core.types import Cell, FeatureSet  # noqa: E402
from cellsearch_gui.gui.controller import vote_warning, whole_library_warning  # noqa: E402

COLOURS = {"basophil": (120, 40, 160), "eosinophil": (230, 120, 60), "lymphocyte": (60, 60, 200),
           "platelet": (200, 200, 200)}


# --- the classes are the user's choice ---------------------------------------------------------------------
def test_class_choice_is_a_setting_that_survives_saving_and_bad_values():
    s = AnalysisSettings(classes=["eosinophil", "lymphocyte"])
    assert AnalysisSettings.from_dict(s.as_dict()).classes == ["eosinophil", "lymphocyte"]
    assert AnalysisSettings.from_dict({}).classes is None  # settings saved before the choice: every class
    repaired, notes = AnalysisSettings.load({"classes": "eosinophil"})
    assert repaired.classes is None and "classes" in notes[0]


def test_the_pipeline_builds_the_classifier_on_the_ticked_classes_only(tmp_path):
    library = colour_class_folders(tmp_path / "lib", COLOURS, 4, seed=0)
    queries = colour_class_folders(tmp_path / "query", {"mixed": (200, 200, 200)}, 3, seed=1) / "mixed"
    ws = Workspace(tmp_path / "project")
    ws.add_reference_dir(library)
    ws.add_query_paths([queries])
    ws.settings.models, ws.settings.weights, ws.settings.preprocessing = ["mobilenetv2"], "random", "raw"
    ws.choose_classes(["eosinophil", "lymphocyte", "basophil"])
    assert ws.settings.classes == ["basophil", "eosinophil", "lymphocyte"]
    assert ws.classes_in_use() == ["basophil", "eosinophil", "lymphocyte"]
    ws.save()
    result = run_job(pipeline_job(ws.plan("cpu")))
    assert result.classifier.classes == ["basophil", "eosinophil", "lymphocyte"]
    assert "platelet" not in set(result.predictions.labels) | set(result.reference.labels)
    ws.apply(result)
    assert ws.reference_counts() == {"basophil": 4, "eosinophil": 4, "lymphocyte": 4, "platelet": 4}
    ws.close()
    reopened = Workspace.open(tmp_path / "project")
    assert reopened.settings.classes == ["basophil", "eosinophil", "lymphocyte"]  # saved with the project
    reopened.choose_classes(list(COLOURS))
    assert reopened.settings.classes is None  # every class ticked: no restriction
    reopened.close()


def test_the_cli_class_option_names_a_class_the_library_lacks(tmp_path):
    library = colour_class_folders(tmp_path / "lib", COLOURS, 4, seed=0)
    inputs = load_inputs(library, split=0.5, classes=["eosinophil", "eosinophill"])
    assert inputs.reference.classes == ["eosinophil"]
    assert any("'eosinophill'" in note and "no such class" in note for note in inputs.notes)


def test_reference_pane_ticks_choose_the_classes(window, tmp_path):
    library = colour_class_folders(tmp_path / "lib", COLOURS, 2, seed=0)
    c, panel = window.controller, window.reference_panel
    c.add_reference(library)
    tree = panel.tree
    assert tree.topLevelItemCount() == 4
    assert all(tree.topLevelItem(i).checkState(0) == Qt.CheckState.Checked for i in range(4))
    platelet = next(tree.topLevelItem(i) for i in range(4) if tree.topLevelItem(i).text(0) == "platelet")
    platelet.setCheckState(0, Qt.CheckState.Unchecked)
    assert c.workspace.settings.classes == ["basophil", "eosinophil", "lymphocyte"]
    assert panel.summary.text().endswith("the classifier uses the ticked classes: 3 classes, 6 cells")
    for i in range(4):
        if tree.topLevelItem(i).text(0) != "basophil":
            tree.topLevelItem(i).setCheckState(0, Qt.CheckState.Unchecked)
    tree.topLevelItem(0).setCheckState(0, Qt.CheckState.Unchecked)  # the last one: put back
    assert panel.ticked() == ["basophil"] and c.workspace.settings.classes == ["basophil"]
    platelet = next(tree.topLevelItem(i) for i in range(4) if tree.topLevelItem(i).text(0) == "platelet")
    platelet.setCheckState(0, Qt.CheckState.Checked)
    assert c.workspace.settings.classes == ["basophil", "platelet"]


# --- near-even votes, whatever k_max is -----------------------------------------------------------------
def near_even_result(n_ref: int = 400, k_max: int = 20) -> AnalysisResult:
    """A library far larger than k_max whose classes are mixed: every vote is near-even, none uses it all."""
    rng = np.random.default_rng(3)
    ref_x, query_x = rng.normal(size=(n_ref, 6)).astype(np.float32), rng.normal(size=(40, 6)).astype(np.float32)
    labels = [f"class{i % 4}" for i in range(n_ref)]
    classifier = EWCClassifier(EWCParams(k_min=20, k_max=k_max, index="flat")).fit(ref_x, labels)
    cells = [Cell(f"c{i}", f"c{i}.png", f"c{i}.png") for i in range(40)]
    fs = FeatureSet([f"r{i}.png" for i in range(n_ref)], labels, ref_x, ["m"], [6], False, {}, per_model={"m": ref_x})
    query = FeatureSet([c.crop_path for c in cells], [None] * 40, query_x, ["m"], [6], False, {})
    mean, axes = pca_2d(ref_x)
    return AnalysisResult(cells, fs, query, classifier, classifier.predict(query_x, keep_neighbours=12), mean, axes,
                          [], {}, ["m"])


def test_near_even_votes_are_flagged_when_the_library_is_larger_than_k_max():
    result = near_even_result()
    p = result.predictions
    assert int(p.k_used.max()) < len(result.reference.labels)
    assert whole_library_warning(result) == ""  # the old warning is silent here
    assert near_even_share(p.scores) >= 0.25
    warning = vote_warning(result)
    assert "voted near-evenly" in warning and f"at least {NEAR_EVEN_RATIO:.0%} of the winner" in warning


def test_near_even_rule_on_hand_made_votes():
    scores = np.array([[5.0, 5.0, 0, 0], [10.0, 0.5, 0.5, 0], [4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0],
                       [4.0, 2.9, 0, 0]])
    # a two-way tie, a 4 : 3 lead and an even vote are near-even; 10 : 0.5 and 4 : 2.9 are not
    assert near_even_share(scores) == pytest.approx(3 / 5)
    assert near_even_warning(scores[[1, 4]]) == ""
    assert near_even_warning(scores).startswith("60% of the cells voted near-evenly")


# --- the inspector explains a vote the class weights turned ---------------------------------------------
def weighted_against_majority() -> AnalysisResult:
    """90 platelets around the query, 10 eosinophils right beside it: 8 of 9 neighbours are platelets, the
    weighted vote calls eosinophil (each platelet weighs 100 / (2 * 90), each eosinophil 100 / (2 * 10))."""
    rng = np.random.default_rng(0)
    platelets = rng.normal(0.0, 1.0, size=(90, 4)).astype(np.float32)
    eosinophils = np.vstack([np.full((1, 4), 0.05), rng.normal(8.0, 0.1, size=(9, 4))]).astype(np.float32)
    ref_x, labels = np.vstack([platelets, eosinophils]), ["platelet"] * 90 + ["eosinophil"] * 10
    classifier = EWCClassifier(EWCParams(k_min=9, k_max=9, index="flat")).fit(ref_x, labels)
    query_x = np.zeros((1, 4), np.float32)
    cells = [Cell("c0", "c0.png", "c0.png")]
    fs = FeatureSet([f"r{i}.png" for i in range(100)], labels, ref_x, ["m"], [4], False, {}, per_model={"m": ref_x})
    query = FeatureSet(["c0.png"], [None], query_x, ["m"], [4], False, {})
    mean, axes = pca_2d(ref_x)
    return AnalysisResult(cells, fs, query, classifier, classifier.predict(query_x, keep_neighbours=12), mean, axes,
                          [], {}, ["m"])


def test_weighting_note_explains_a_prediction_against_the_neighbours():
    result = weighted_against_majority()
    p = result.predictions
    assert p.labels[0] == "eosinophil"
    note = weighting_note(p.labels[0], p.scores[0], p.classes, result.classifier.weights, int(p.k_used[0]))
    assert note.text().startswith("called eosinophil: 8 of 9 neighbours are platelet, but platelet is 90% of "
                                  "the library, so each weighs 0.56 vs 5 for eosinophil")
    assert weighting_note("platelet", p.scores[0] * 0 + [0, 9 * 0.56], p.classes, result.classifier.weights, 9) is None


def test_inspector_shows_the_weighting_note(window):
    show(window, weighted_against_majority())
    window.controller.select_cell(0)
    assert "8 of 9 neighbours are platelet" in window.cell_panel.weighting.text()
    assert window.cell_panel.weighting.isVisibleTo(window.cell_panel)


def test_depth_note_explains_a_vote_that_went_past_the_nearest_neighbours():
    classes, weights = ["eosinophil", "platelet"], np.array([1.0, 1.0])
    nearest = ["platelet"] * 8 + ["eosinophil"] * 4
    text = depth_note("eosinophil", nearest, np.array([520.0, 480.0]), classes, weights, 1000)
    assert text.startswith("called eosinophil: 8 of the 12 nearest neighbours are platelet")
    assert "k = 1000 neighbours: 520 eosinophil vs 480 platelet" in text
    assert depth_note("platelet", nearest, np.array([4.0, 8.0]), classes, weights, 12) == ""  # all of them voted


def test_cli_classify_uses_the_chosen_classes_and_warns_about_near_even_votes(tmp_path, capsys):
    """The CLI's --classes is the window's class choice; the near-even warning uses the window's rule."""
    from cellsearch_gui.cli import main

    library = colour_class_folders(tmp_path / "lib", COLOURS, 6, seed=0)
    grey = colour_class_folders(tmp_path / "query", {"grey": (128, 128, 128)}, 4, seed=2) / "grey"
    out = tmp_path / "p.csv"
    assert main(["classify", "--reference", str(library), "--query", str(grey), "--out", str(out),
                 "--models", "mobilenetv2", "--random-init", "--device", "cpu", "--quiet", "--k-min", "24",
                 "--classes", "eosinophil,lymphocyte,platelet,eosinophill"]) == 0
    captured = capsys.readouterr()
    assert "'eosinophill' was chosen but the reference library has no such class" in captured.err
    assert "basophil" not in out.read_text()
    assert "voted near-evenly (the runner-up class got at least 75%" in captured.err  # k = all 18: even


def test_weighting_note_says_when_the_weighted_votes_tie():
    """Over the whole library every class's weighted vote is the same; the call is the tie-break."""
    classes, weights = ["neutrophil", "platelet"], np.array([2.0, 2 / 3])  # 25 % and 75 % of the library
    note = weighting_note("neutrophil", np.array([20.0, 20.0]), classes, weights, 40)
    assert note.text().endswith("the weighted votes tie (as over the whole library), and a tie goes to the class "
                                "of the nearest neighbour")
