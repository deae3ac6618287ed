"""Issue 17, window bugs (each test fails on the main of 58eb8c9): after sorting the Cells table the highlighted
row is another cell, the PCA legend covers points and a big class takes PC 1, a reference cell is its own
nearest neighbour, the dashed "labelled" outline is hidden while selected, class names on the smear are hard
to read, the export dialog opens in the home folder."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QColor  # noqa: E402
from PySide6.QtWidgets import QApplication, QFileDialog  # noqa: E402
from test_gui_threads import show, synthetic_result  # noqa: E402

from cellsearch_gui.core.app.run import AnalysisResult, pca_2d  # noqa: E402
from cellsearch_gui.core.app.session import Workspace  # noqa: E402
from cellsearch_gui.core.types import Cell  # noqa: E402
from cellsearch_gui.gui.pixmaps import PALETTE  # noqa: E402


# --- window bugs ---------------------------------------------------------------------------------------
def test_sorting_the_table_keeps_the_selected_cell_highlighted(window, tmp_path):
    show(window, synthetic_result(tmp_path))
    c, table = window.controller, window.cells_table
    window.tabs.setCurrentWidget(table)
    c.select_cell(5)
    for column, order in ((3, Qt.SortOrder.DescendingOrder), (2, Qt.SortOrder.AscendingOrder),
                          (4, Qt.SortOrder.DescendingOrder)):
        table.sortByColumn(column, order)
        QApplication.processEvents()
        rows = table.selectionModel().selectedRows()
        assert len(rows) == 1 and table.cells_model.cell_index(rows[0].row()) == c.selected == 5
        assert table.cells_model.cell_index(table.currentIndex().row()) == 5
        assert window.cell_panel.view.index == 5


def test_pca_legend_is_beside_the_plot_not_on_it(window, tmp_path):
    show(window, synthetic_result(tmp_path))
    window.tabs.setCurrentWidget(window.scatter_panel)
    QApplication.processEvents()
    panel = window.scatter_panel
    legend, plot_area = panel.legend.sceneBoundingRect(), panel.view_box.sceneBoundingRect()
    assert len(panel.legend.items) == 5  # four classes and the query cells
    assert legend.left() >= plot_area.right() - 1  # its own column: no point can hide under it


def test_pca_axes_are_class_balanced():
    """A big class spread along x (platelets) and three small classes apart along y: plain PCA gives PC 1 to
    the big class, the class-balanced fit to what tells the classes apart."""
    rng = np.random.default_rng(0)
    big = np.c_[rng.normal(0, 6, 3000), rng.normal(0, 0.3, 3000)]
    small = [np.c_[rng.normal(0, 0.3, 40), rng.normal(y, 0.3, 40)] for y in (-8, 0, 8)]
    x = np.vstack([big, *small]).astype(np.float32)
    labels = ["platelet"] * 3000 + ["a"] * 40 + ["b"] * 40 + ["c"] * 40
    assert abs(pca_2d(x)[1][0, 0]) > 0.99  # unbalanced: PC 1 is the platelets' spread
    mean, axes = pca_2d(x, labels=labels)
    assert abs(axes[0, 1]) > 0.99  # balanced: PC 1 separates the classes
    assert np.allclose(axes @ axes.T, np.eye(2), atol=1e-5)


def test_a_class_no_cell_was_called_does_not_take_pc1():
    """Platelets far from everything, the cells called only white-cell classes: the scatter's axes are fitted
    on the classes in play, so PC 1 tells those apart instead of platelets from the rest."""
    from cellsearch_gui.core.app.run import scatter_axes
    from cellsearch_gui.core.types import FeatureSet

    rng = np.random.default_rng(1)
    platelets = np.c_[rng.normal(60, 1, 300), rng.normal(0, 1, 300), rng.normal(0, 1, 300)]
    white = [np.c_[rng.normal(0, 1, 100), rng.normal(y, 1, 100), rng.normal(0, 0.2, 100)] for y in (-6, 0, 6)]
    x = np.vstack([platelets, *white]).astype(np.float32)
    labels = ["platelet"] * 300 + ["lymphocyte"] * 100 + ["monocyte"] * 100 + ["neutrophil"] * 100
    ref = FeatureSet([f"r{i}" for i in range(len(x))], labels, x, ["m"], [3], False, {})
    assert abs(pca_2d(x, labels=labels)[1][0, 0]) > 0.9  # every class: the platelets' distance is PC 1
    mean, axes = scatter_axes(ref, ["lymphocyte", "neutrophil", "monocyte", "neutrophil"])
    assert abs(axes[0, 1]) > 0.99  # PC 1 separates the white cells


def test_a_reference_cell_is_not_its_own_neighbour(window, tmp_path):
    result = synthetic_result(tmp_path)
    ws = Workspace()
    ws.apply(result)
    for ref in (0, 7, 59):
        view = ws.reference_view(ref)
        assert view.neighbours and all(n.reference_index != ref for n in view.neighbours)
        assert view.neighbours[0].distance > 0
        assert view.k_used <= len(result.reference.labels) - 1


def image_result(tmp_path) -> AnalysisResult:
    from PIL import Image

    from cellsearch_gui.core.segmentation.masks import encode_rle

    field = tmp_path / "field.png"
    Image.fromarray(np.full((200, 300, 3), 200, np.uint8)).save(field)
    result = synthetic_result(tmp_path, n=12)
    yy, xx = np.mgrid[:12, :12]
    rle = encode_rle((yy - 5.5) ** 2 + (xx - 5.5) ** 2 <= 30)
    result.cells = [Cell(c.cell_id, c.crop_path, str(field), (20 * i, 30, 20 * i + 12, 42), (20 * i + 6.0, 36.0),
                         90, rle) for i, c in enumerate(result.cells)]
    return result


def test_the_selected_labelled_cell_keeps_its_dashed_outline(window, tmp_path):
    show(window, image_result(tmp_path))
    c, panel = window.controller, window.image_panel
    c.set_label(3, "class2")
    c.select_cell(3)
    QApplication.processEvents()
    assert panel._selection[0].opts["pen"].style() == Qt.PenStyle.DashLine
    c.select_cell(4)  # not labelled: solid
    assert panel._selection[0].opts["pen"].style() == Qt.PenStyle.SolidLine


def wcag_contrast(a: QColor, b: QColor) -> float:
    def luminance(c: QColor) -> float:
        lin = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in (c.redF(), c.greenF(), c.blueF())]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_class_names_on_the_smear_stand_out(window, tmp_path):
    """Each name on a background that contrasts with its class colour (WCAG 4.5:1), every palette colour."""
    result = image_result(tmp_path)
    result.predictions.labels = [f"class{i % 4}" for i in range(12)]  # every colour in use
    show(window, result)
    names = [item for item in window.image_panel._overlays if hasattr(item, "textItem")]
    assert len(names) == 12
    for text in names:
        assert text.fill.style() != Qt.BrushStyle.NoBrush
        assert wcag_contrast(text.color, text.fill.color()) >= 4.5
    from cellsearch_gui.gui.pixmaps import readable_background

    assert min(wcag_contrast(QColor(c), readable_background(QColor(c))) for c in PALETTE) >= 4.5


def test_export_dialog_opens_in_the_project_folder(window, tmp_path, monkeypatch):
    show(window, synthetic_result(tmp_path))
    project = tmp_path / "my project"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(project))
    window.save_project()
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda parent, title, start, *a: asked.append(start) or ("", ""))
    window.export_csv()
    assert asked and asked[0].startswith(str(project))
    window.controller.workspace.close()


def test_every_export_format_opens_in_the_project_folder(window, tmp_path, monkeypatch):
    """The Export menu's formats too (report, differential...): the project's folder, not the home folder."""
    from cellsearch_gui.gui.export_menu import FORMATS

    show(window, synthetic_result(tmp_path))
    project = tmp_path / "my project"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(project))
    window.save_project()
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda parent, title, start, *a: asked.append(start) or ("", ""))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda parent, title, start, *a: asked.append(start) or "")
    for kind in FORMATS:
        window.export_menu.target(kind)
    assert len(asked) == len(FORMATS) and all(start.startswith(str(project)) for start in asked)
    window.controller.workspace.close()
