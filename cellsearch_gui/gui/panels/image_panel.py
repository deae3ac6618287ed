"""A field of view with each cell's outline in its predicted class colour; click a cell to select it."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QComboBox, QLabel, QVBoxLayout, QWidget

from cellsearch_gui.core.io.fields import Field
from cellsearch_gui.core.segmentation.masks import decode_rle
from cellsearch_gui.gui.pixmaps import class_colour, readable_background

OVERVIEW_SIDE = 4096  # huge stitched images are shown downsampled to this many pixels
OUTLINE_TILES = 4  # outlines are grouped per class and per square of a 4 x 4 grid: a click repaints few
NAMED_CELLS = 200  # fields with more cells name only the selected one (colours still tell the class)
NO_CELL = "no cell found"


def empty_fields(result) -> list[str]:
    """The fields of the last run where segmentation found no cell (recorded in its provenance)."""
    if result is None:
        return []
    return list((result.provenance or {}).get("segmentation", {}).get("empty_fields") or [])


def outline(cell) -> np.ndarray | None:
    """Closed polygon (x, y) of a cell's mask in source pixels."""
    import cv2


    if not cell.mask_rle or not cell.bbox:
        return None
    mask = decode_rle(cell.mask_rle).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    points = max(contours, key=len)[:, 0, :].astype(np.float32)
    points += (cell.bbox[0], cell.bbox[1])
    return np.vstack([points, points[:1]])


class ImagePanel(QWidget):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.chooser = QComboBox()
        self.chooser.currentIndexChanged.connect(self._show_current)
        self.hint = QLabel("Drop microscope images or folders here, add a reference library, then press Run.")
        self.plot = pg.PlotWidget()
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        self.plot.hideAxis("bottom")
        self.plot.hideAxis("left")
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image_item)
        self.plot.scene().sigMouseClicked.connect(self._clicked)
        self._overlays: list = []
        self._selection: list = []  # the selected cell's outline and name
        self._scale = 1.0
        self._shown_path = None
        self._by_image: dict[str, list[int]] = {}
        self._outlines: dict[int, np.ndarray | None] = {}  # cell index -> polygon in source pixels
        layout = QVBoxLayout(self)
        layout.addWidget(self.chooser)
        layout.addWidget(self.hint)
        layout.addWidget(self.plot, 1)
        controller.result_changed.connect(self.refresh)
        controller.predictions_changed.connect(self._show_current)
        controller.labels_changed.connect(self._show_current)
        controller.selection_changed.connect(self._follow_selection)

    def refresh(self) -> None:
        ws = self.controller.workspace
        self._by_image = defaultdict(list)
        self._outlines = {}
        for i, cell in enumerate(ws.cells):
            if cell.bbox:
                self._by_image[cell.source_image].append(i)
        empty = [p for p in empty_fields(ws.result) if p not in self._by_image]
        self.chooser.blockSignals(True)
        self.chooser.clear()
        for path in sorted(self._by_image):
            self.chooser.addItem(path, path)
        for path in sorted(empty):  # fields where no cell was found stay visible, marked
            self._by_image[path] = []
            self.chooser.addItem(f"{path}  ({NO_CELL})", path)
        self.chooser.blockSignals(False)
        self._shown_path = None
        self.hint.setVisible(not self._by_image)
        if ws.result is not None and not self._by_image:
            self.hint.setText("These cells came as ready-made crops: see the Cells table and the PCA view.")
        self._show_current()

    def current_path(self) -> str:
        """The field shown (the chooser's text may carry a 'no cell found' mark)."""
        return self.chooser.currentData() or ""

    def _show_current(self, *_):
        """Outlines in one curve per class colour, style and grid square (NaN-separated polygons), so a
        field with thousands of cells is a few dozen items, and a click repaints only the squares it
        touches; names are written when the field has few cells."""
        for item in self._overlays:
            self.plot.removeItem(item)
        self._overlays = []
        path = self.current_path()
        if not path:
            self.image_item.clear()
            self._shown_path = None
            self._draw_selection()
            return
        self.hint.setVisible(not self._by_image[path])
        if not self._by_image[path]:
            self.hint.setText(f"{Path(path).name}: {NO_CELL} (Analysis > Notes says what was left out and why).")
        new_image = path != self._shown_path
        if new_image:

            with Field(path) as field_:
                overview = field_.overview(OVERVIEW_SIDE)
                self._scale = overview.shape[1] / field_.shape[1]
            self.image_item.setImage(overview)
            self._shown_path = path
        ws = self.controller.workspace
        classes, labels = ws.classes(), ws.result.predictions.labels
        groups = defaultdict(list)  # (class, labelled by the user, tile) -> polygons
        cells = self._by_image[path]
        tile = max(self.image_item.width() or 1, self.image_item.height() or 1) / OUTLINE_TILES
        for i in cells:
            poly = self._outline(i)
            if poly is not None:
                user = ws.label_of(i)
                poly = poly * self._scale
                where = (int(poly[0, 0] // tile), int(poly[0, 1] // tile))
                groups[(user or labels[i], bool(user), where)].append(poly)
        for (name, labelled, _), polys in groups.items():
            gap = np.full((1, 2), np.nan, np.float32)
            joined = np.concatenate([part for poly in polys for part in (poly, gap)])
            style = pg.QtCore.Qt.PenStyle.DashLine if labelled else pg.QtCore.Qt.PenStyle.SolidLine
            curve = pg.PlotCurveItem(joined[:, 0], joined[:, 1], connect="finite",
                                     pen=pg.mkPen(class_colour(classes, name), width=2, style=style))
            self.plot.addItem(curve, ignoreBounds=True)
            self._overlays.append(curve)
        if len(cells) <= NAMED_CELLS:
            for i in cells:
                self._overlays.append(self._name(i))
        self._draw_selection()
        if new_image:
            self.plot.autoRange()

    def _outline(self, index: int) -> np.ndarray | None:
        if index not in self._outlines:  # decoded once per result, not at every click
            self._outlines[index] = outline(self.controller.workspace.cells[index])
        return self._outlines[index]

    def _name(self, index: int):
        ws = self.controller.workspace
        name = ws.label_of(index) or ws.result.predictions.labels[index]
        colour = class_colour(ws.classes(), name)
        text = pg.TextItem(name, color=colour, anchor=(0, 1), fill=pg.mkBrush(readable_background(colour)))
        x0, y0 = ws.cells[index].bbox[:2]
        text.setPos(x0 * self._scale, y0 * self._scale)
        self.plot.addItem(text, ignoreBounds=True)  # names and outlines never move the view
        return text

    def _draw_selection(self) -> None:
        """The selected cell drawn thicker (and named), on its own items: a click redraws only these."""
        for item in self._selection:
            self.plot.removeItem(item)
        self._selection = []
        index, ws = self.controller.selected, self.controller.workspace
        if index is None or ws.result is None or index not in self._by_image.get(self.current_path(), ()):
            return
        poly = self._outline(index)
        if poly is None:
            return
        name = ws.label_of(index) or ws.result.predictions.labels[index]
        poly = poly * self._scale
        style = pg.QtCore.Qt.PenStyle.DashLine if ws.label_of(index) else pg.QtCore.Qt.PenStyle.SolidLine
        curve = pg.PlotCurveItem(poly[:, 0], poly[:, 1],  # thicker, still dashed when the user labelled it
                                 pen=pg.mkPen(class_colour(ws.classes(), name), width=4, style=style))
        self.plot.addItem(curve, ignoreBounds=True)
        self._selection = [curve]
        if len(self._by_image[self.current_path()]) > NAMED_CELLS:
            self._selection.append(self._name(index))

    def _clicked(self, event) -> None:
        path = self.current_path()
        if not path:
            return
        point = self.plot.getPlotItem().vb.mapSceneToView(event.scenePos())
        x, y = point.x() / self._scale, point.y() / self._scale
        cells = self.controller.workspace.cells
        inside = [i for i in self._by_image[path]
                  if cells[i].bbox[0] <= x <= cells[i].bbox[2] and cells[i].bbox[1] <= y <= cells[i].bbox[3]]
        if inside:
            best = min(inside, key=lambda i: (cells[i].centroid[0] - x) ** 2 + (cells[i].centroid[1] - y) ** 2)
            self.controller.select_cell(best)

    def select_image_of(self, index: int) -> None:
        cell = self.controller.workspace.cells[index]
        if cell.bbox and self.current_path() != cell.source_image:
            self.chooser.setCurrentIndex(self.chooser.findData(cell.source_image))

    def _follow_selection(self, index: int) -> None:
        shown = self.current_path()
        self.select_image_of(index)  # another field: the chooser redraws everything
        if self.current_path() == shown:
            self._draw_selection()
