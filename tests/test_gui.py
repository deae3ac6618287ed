"""The real main window, offscreen: drop a folder, run, click a cell, inspect neighbours, label, export."""

import csv
import shutil

import pytest

pytest.importorskip("pytestqt")
from conftest import PBC, SHARED, WBC5, make_subset, needs_shared  # noqa: E402
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QDockWidget, QFileDialog, QMessageBox  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Function.*QDragEnterEvent:DeprecationWarning")

FOV = SHARED / "data" / "bccd_fov" / "JPEGImages"




def drop(widget, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    enter = QDragEnterEvent(QPoint(10, 10), *args)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(widget, QDropEvent(QPointF(10, 10), *args))


@pytest.fixture
def inputs(tmp_path):
    ref = make_subset(PBC, tmp_path / "ref", WBC5, 5)
    fields = tmp_path / "fields"
    fields.mkdir()
    for name in ("BloodImage_00001.jpg", "BloodImage_00003.jpg", "BloodImage_00005.jpg"):
        shutil.copy(FOV / name, fields / name)
    return ref, fields


@needs_shared
def test_drop_run_click_label_export(window, qtbot, inputs, tmp_path, real_weights, monkeypatch):
    ref, fields = inputs
    c = window.controller
    c.add_reference(ref)
    assert window.reference_panel.tree.topLevelItemCount() == 5
    drop(window, [fields])
    assert c.workspace.query_paths == [str(fields)]
    window.model_panel.models.item(1).setCheckState(Qt.CheckState.Unchecked)  # efficientnet off: faster
    assert c.workspace.settings.models == ["mobilenetv2"]
    with qtbot.waitSignal(c.result_changed, timeout=120_000):
        window.run_action.trigger()
    qtbot.waitUntil(lambda: not c.runner.busy and window.export_action.isEnabled(), timeout=5000)
    assert window.last_error is None
    n = len(c.workspace.cells)
    assert n >= 2 and window.cells_table.model().rowCount() == n
    window.show_notes()
    assert window.last_dialog.text().endswith(("note(s)", "changed"))
    assert window.image_panel.chooser.count() >= 2  # fields shown with outlines
    assert len(window.image_panel._overlays) >= 2

    # click the first row of the table -> the inspector and the gallery follow
    table = window.cells_table
    window.tabs.setCurrentWidget(table)
    rect = table.visualRect(table.model().index(0, 0))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    row = table.cells_model.cell_index(0)
    assert c.selected == row
    gallery = window.cell_panel.gallery
    assert gallery.count() == min(12, len(c.workspace.result.reference.labels))
    first = gallery.item(0).text().split("\n")[0]
    assert first in WBC5

    # a neighbour opens the same way
    window.cell_panel._open_neighbour(gallery.item(0))
    assert window.cell_panel.view.kind == "reference"
    c.select_cell(row)

    # label the cell with a class typed in, add it to the library without re-embedding
    window.cell_panel.label_choice.setCurrentText("monocyte")
    qtbot.mouseClick(window.cell_panel.set_button, Qt.MouseButton.LeftButton)
    assert c.workspace.label_of(row) == "monocyte"
    assert table.model().index(0, 5).data() == "monocyte"
    n_ref = len(c.workspace.result.reference.labels)
    with qtbot.waitSignal(c.predictions_changed, timeout=60_000):  # the cells are voted again on the worker
        qtbot.mouseClick(window.cell_panel.add_button, Qt.MouseButton.LeftButton)
    assert len(c.workspace.result.reference.labels) == n_ref + 1
    assert window.cell_panel.gallery.item(0).text().startswith("monocyte\nd=0")

    # PCA scatter: every reference and query cell is a point; a box labels several at once
    scatter = window.scatter_panel
    assert len(scatter.references.data) == n_ref + 1 and len(scatter.queries.data) == n
    from PySide6.QtCore import QRectF

    scatter.box_label.setCurrentText("lymphocyte")
    scatter._box_selected(QRectF(-1e9, -1e9, 2e9, 2e9))
    assert all(c.workspace.label_of(i) == "lymphocyte" for i in range(n))

    # export through the menu action, with crops
    out = tmp_path / "out" / "cells.csv"
    out.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), "CSV (*.csv)"))
    monkeypatch.setattr(QMessageBox, "exec", lambda self: QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(c.exported, timeout=60_000):  # written on the worker
        window.export_action.trigger()
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(rows) == n and {r["user_label"] for r in rows} == {"lymphocyte"}
    assert all(r["models"] == "mobilenetv2" and r["bbox_x1"] for r in rows)
    assert len(list((out.parent / "cells_crops" / "lymphocyte").iterdir())) == n


@needs_shared
def test_cancel_stops_the_job_quickly_and_window_stays_usable(window, qtbot, tmp_path, real_weights):
    c = window.controller
    c.add_reference(make_subset(PBC, tmp_path / "ref", WBC5, 20))
    c.add_queries([make_subset(PBC, tmp_path / "q", WBC5, 20, offset=20)])
    c.workspace.settings.views = 8  # slow on purpose
    with qtbot.waitSignal(c.runner.progress, timeout=60_000, check_params_cb=lambda p, _: p.stage == "embedding"):
        assert c.run_analysis()
    with qtbot.waitSignal(c.runner.cancelled, timeout=60_000):  # benchmarks/bench_gui.py measures how fast
        window.cancel_button.click()
    qtbot.waitUntil(lambda: not c.runner.busy, timeout=5000)
    assert window.run_action.isEnabled() and c.workspace.result is None


def test_errors_are_shown_not_raised(window):
    window.run_action.trigger()  # nothing added yet
    assert "reference library" in window.last_error[0]


def test_settings_are_remembered(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSEARCH_CONFIG_DIR", str(tmp_path / "config"))
    from cellsearch_gui.gui.app import create_window

    first = create_window()
    qtbot.addWidget(first)
    first.show()
    first.set_device("cpu")
    first.findChild(QDockWidget, "Models and parameters").hide()
    first.handle_drop([str(tmp_path)])
    first.close()
    second = create_window()
    qtbot.addWidget(second)
    second.show()
    assert second.controller.device == "cpu"
    assert not second.findChild(QDockWidget, "Models and parameters").isVisible()  # layout remembered
    assert second.findChild(QDockWidget, "Selected cell").isVisible()
    assert second._last_dir() == str(tmp_path)


@needs_shared
def test_transfer_evaluation_and_suggestion_from_the_window(window, qtbot, tmp_path, real_weights, monkeypatch):
    from conftest import BCCD_WBC

    classes = ["eosinophil", "lymphocyte", "neutrophil"]
    c = window.controller
    c.add_reference(make_subset(PBC, tmp_path / "ref", classes, 6))
    other_device = make_subset(BCCD_WBC, tmp_path / "bccd", classes, 3)
    c.workspace.settings.models = ["mobilenetv2"]
    window.model_panel.load()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(other_device))
    with qtbot.waitSignal(c.transfer_ready, timeout=120_000):
        window.evaluate_transfer()
    dialog = window.last_dialog
    assert dialog.summary.rowCount() == 2  # both stopping rules
    assert dialog.per_class.rowCount() == 3
    assert dialog.summary.item(0, 1).text().endswith("%")
    qtbot.waitUntil(lambda: not c.runner.busy, timeout=5000)

    # label a handful of this device's cells in the app, then ask for a setting
    c.add_queries([other_device])
    with qtbot.waitSignal(c.result_changed, timeout=120_000):
        c.run_analysis()
    qtbot.waitUntil(lambda: not c.runner.busy, timeout=5000)
    ws = c.workspace
    ws.set_labels({cell.cell_id: cell.true_label for cell in ws.cells})
    with qtbot.waitSignal(c.device_curve_ready, timeout=60_000):  # how well the library knows this device
        assert c.device_curve()
    curve = window.last_dialog
    assert [p["n_labelled"] for p in ws.device_curve()] == [2, 3, 5, 8, 9]
    assert len(curve.library_line.xData) == 5 and "After 9 labelled cells" in curve.summary.text()
    qtbot.waitUntil(lambda: not c.runner.busy, timeout=5000)
    assert c.suggest_setting()
    qtbot.waitUntil(lambda: not c.runner.busy, timeout=300_000)
    assert window.last_error is None
    suggestion = window.last_dialog.suggestion
    assert window.last_dialog.table.rowCount() == 10
    c.apply_suggestion(suggestion)
    assert ws.settings.preprocessing == suggestion["preprocessing"]
    assert window.model_panel.preprocessing.currentText() == suggestion["preprocessing"]
    assert ws.settings.params["entropy_norm"] == suggestion["params"]["entropy_norm"]


def test_cancel_reaches_inside_a_batch(tmp_path):
    """The runner checks the token between forward passes, not only between crop batches."""
    import numpy as np

    from cellsearch_gui.core.embedding.runner import ModelRunner
    from cellsearch_gui.core.errors import Cancelled
    from cellsearch_gui.core.jobs import CancelToken

    runner = ModelRunner("mobilenetv2", weights="random", device="cpu", batch_size=2)
    runner.token = CancelToken()
    calls = []
    model = runner.load()
    runner._model = lambda batch: (calls.append(len(batch)), runner.token.cancel(), model(batch))[2]
    with pytest.raises(Cancelled):
        runner.embed_arrays([np.zeros((32, 32, 3), np.uint8)] * 8)
    assert calls == [2]  # stopped after the first of four forward passes


def test_whole_library_votes_are_flagged():
    from types import SimpleNamespace

    import numpy as np

    from cellsearch_gui.gui.controller import whole_library_warning

    def result(k_used):
        return SimpleNamespace(cells=[0] * len(k_used), reference=SimpleNamespace(labels=["a"] * 10),
                               predictions=SimpleNamespace(k_used=np.array(k_used)))

    assert whole_library_warning(result([3, 6, 9, 10, 4])) == ""  # 1 of 5: below the threshold
    assert whole_library_warning(result([10, 10, 3, 6])).startswith("50% of the cells needed the whole library")


def test_a_field_with_thousands_of_cells_is_drawn_in_few_items(window, tmp_path):
    """Outlines are grouped per class and grid square; one item per cell crashed PySide6 (a refcount
    error in bool_dealloc) at about a thousand cells."""
    import numpy as np
    from PIL import Image

    from cellsearch_gui.core.app.run import AnalysisResult, pca_2d
    from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams
    from cellsearch_gui.core.segmentation.masks import encode_rle
    from cellsearch_gui.core.types import Cell, FeatureSet

    field = tmp_path / "field.png"
    Image.fromarray(np.full((600, 800, 3), 200, np.uint8)).save(field)
    crop = tmp_path / "crop.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(crop)
    rng = np.random.default_rng(0)
    n_ref, n = 300, 2500
    ref_x, query_x = rng.normal(size=(n_ref, 8)).astype(np.float32), rng.normal(size=(n, 8)).astype(np.float32)
    ref_labels = [f"class{i % 4}" for i in range(n_ref)]
    yy, xx = np.mgrid[:12, :12]
    rle = encode_rle((yy - 5.5) ** 2 + (xx - 5.5) ** 2 <= 30)
    cells = [Cell(f"c{i}", str(crop), str(field), (16 * (i % 50), 12 * (i // 50), 16 * (i % 50) + 12,
                                                        12 * (i // 50) + 12), (0.0, 0.0), 90, rle)
             for i in range(n)]

    def features(x, labels):
        return FeatureSet([crop] * len(x), labels, x, ["m"], [8], False, {}, per_model={"m": x})

    classifier = EWCClassifier(EWCParams(k_max=50, index="flat")).fit(ref_x, ref_labels)
    mean, axes = pca_2d(ref_x)
    result = AnalysisResult(cells, features(ref_x, ref_labels), features(query_x, [None] * n), classifier,
                            classifier.predict(query_x, keep_neighbours=12), mean, axes, [], {}, ["m"])
    c, panel = window.controller, window.image_panel
    c.workspace.apply(result)
    c.result_changed.emit()
    window.tabs.setCurrentWidget(panel)
    QApplication.processEvents()
    assert 0 < len(panel._overlays) <= 4 * 2 * 16  # classes x (predicted, labelled) x grid squares
    for index in (10, 2000, 1234):
        c.select_cell(index)
        c.set_label(index, "class1")
        QApplication.processEvents()
    assert len(panel._selection) == 2  # the selected cell's outline and its name
    assert c.workspace.label_of(1234) == "class1"
