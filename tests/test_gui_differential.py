"""The window's Differential tab (live as cells are labelled) and its Export menu, on a project made
without any model."""

import json

import pytest
from report_helpers import make_project


@pytest.fixture
def opened(window, qtbot, tmp_path):
    folder, cells = make_project(tmp_path)
    c = window.controller
    with qtbot.waitSignal(c.runner.succeeded, timeout=60_000):
        assert c.open_project(folder)
    qtbot.waitUntil(lambda: c.workspace.result is not None and not c.runner.busy, timeout=10_000)
    return window, folder, cells


def test_the_differential_tab_shows_each_sample_and_follows_the_labels(opened, qtbot):
    window, _, cells = opened
    panel, c = window.differential_panel, window.controller
    assert window.tabs.tabText(window.tabs.indexOf(panel)) == "Differential"
    qtbot.waitUntil(lambda: len(panel.charts) == 2, timeout=5000)
    assert [d.sample for d in panel.differentials] == ["slide_A", "slide_B"]
    before = panel.differentials[0]
    index = next(i for i, cell in enumerate(c.workspace.cells) if cell.cell_id == cells[0].cell_id)
    new_label = "neutrophil" if c.workspace.result.predictions.labels[index] != "neutrophil" else "lymphocyte"
    c.set_label(index, new_label)
    qtbot.waitUntil(lambda: panel.differentials[0].reviewed == 1, timeout=5000)
    after = panel.differentials[0]
    assert after.count_of(new_label) == before.count_of(new_label) + 1
    assert panel.charts[0].table.item(0, 0) is not None and "counted" in panel.status.text()


def test_the_export_menu_writes_each_format_on_the_worker(opened, qtbot, tmp_path):
    window, _, _ = opened
    menu, c = window.export_menu, window.controller
    assert set(menu.actions) == {"csv", "geojson", "h5ad", "ome-zarr", "report", "sample"}
    targets = {"geojson": tmp_path / "qupath", "h5ad": tmp_path / "cells.h5ad", "ome-zarr": tmp_path / "napari",
               "report": tmp_path / "report.html"}
    for kind, target in targets.items():
        with qtbot.waitSignal(c.exported, timeout=60_000) as signal:
            assert menu.export(kind, str(target))
        assert signal.args == [str(target), 5]
        qtbot.waitUntil(lambda: not c.runner.busy, timeout=5000)
    assert len(list((tmp_path / "qupath").rglob("*.geojson"))) == 2
    assert json.loads(next((tmp_path / "qupath").rglob("*.geojson")).read_text())["type"] == "FeatureCollection"
    assert (tmp_path / "cells.h5ad").is_file() and len(list((tmp_path / "napari").rglob("*.ome.zarr"))) == 2
    assert "Sample: slide_B" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_a_named_sample_regroups_the_differential(opened, qtbot, tmp_path):
    window, _, _ = opened
    panel = window.differential_panel
    assert window.export_menu.name_sample(str(tmp_path / "slide_A"), "patient 7")
    assert window.export_menu.name_sample(str(tmp_path / "slide_B"), "patient 7")
    qtbot.waitUntil(lambda: [d.sample for d in panel.differentials] == ["patient 7"], timeout=5000)
    assert panel.differentials[0].counted == 5
    assert not window.export_menu.name_sample(str(tmp_path / "slide_A"), "bad\x00name")
    assert "control characters" in window.last_error[0]


def test_exports_before_a_run_are_refused_clearly(window):
    assert not window.export_menu.export("h5ad", "/tmp/never.h5ad")
    assert window.last_error[0] == "nothing to export yet: run the analysis first"
    assert not window.export_menu.name_sample("x", "y")
    assert "save the project first" in window.last_error[0]


def test_exports_and_the_report_colour_classes_as_the_window_does():
    from PySide6.QtGui import QColor

    from cellsearch_gui.core.export.outlines import PALETTE
    from cellsearch_gui.gui.pixmaps import PALETTE as WINDOW

    assert [QColor(*rgb).name() for rgb in PALETTE] == WINDOW
