"""Transfer evaluation and setting suggestion as the app runs them (issue 4's in-app parts)."""

import pytest
from conftest import BCCD_WBC, PBC, make_subset, needs_shared

from cellsearch_gui.core.app.run import AnalysisSettings
from cellsearch_gui.core.app.transfer import suggest_job, transfer_job
from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.io.dataset import scan_class_folders
from cellsearch_gui.core.jobs import run_job

CLASSES = ["eosinophil", "lymphocyte", "neutrophil"]


@pytest.fixture
def two_devices(tmp_path):
    return (make_subset(PBC, tmp_path / "pbc", CLASSES, 8),
            make_subset(BCCD_WBC, tmp_path / "bccd", CLASSES + ["monocyte"], 3))


@needs_shared
def test_transfer_reports_both_stopping_rules_with_per_class_figures(two_devices, tmp_path, real_weights):
    ref, query = two_devices
    settings = AnalysisSettings(models=["mobilenetv2"], preprocessing="cell")
    report = run_job(transfer_job([ref], query, settings, tmp_path / "c.sqlite", "cpu"))
    assert set(report.by_stopping_rule) == {"log_k", "log_min_kc"}
    for scores in report.by_stopping_rule.values():
        assert 0 <= scores["balanced_accuracy"] <= 1
        assert set(scores["per_class"]) >= set(CLASSES)
    assert report.n_query == 9  # monocyte has no reference cells: left out, with a note
    assert any("monocyte" in n for n in report.notes)
    assert report.preprocessing["mask"] is True


@needs_shared
def test_suggestion_ranks_presets_on_a_few_labelled_cells(two_devices, tmp_path, real_weights):
    ref, query = two_devices
    settings = AnalysisSettings(models=["mobilenetv2"])
    labelled = scan_class_folders(query).restrict(CLASSES)
    result = run_job(suggest_job([ref], labelled, settings, tmp_path / "c.sqlite", "cpu", presets=("raw", "cell")))
    suggestion = result.suggestion
    assert suggestion.preprocessing in ("raw", "cell")
    top = result.ranking[0]
    assert suggestion.balanced_accuracy == top["balanced_accuracy"] == max(
        r["balanced_accuracy"] for r in result.ranking)
    assert {r["preprocessing"] for r in result.ranking} == {"raw", "cell"}
    assert AnalysisSettings.from_dict({**settings.as_dict(), **suggestion.as_dict()}).ewc_params()


def test_suggestion_needs_a_handful_of_labelled_cells(tmp_path):
    from cellsearch_gui.core.io.dataset import CropSet

    with pytest.raises(DatasetError, match="at least 5"):
        run_job(suggest_job([tmp_path], CropSet([tmp_path / "a.png"], ["x"]), AnalysisSettings(), tmp_path / "c"))
