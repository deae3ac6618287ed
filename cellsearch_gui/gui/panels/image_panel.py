"""A field of view with each cell's outline in its predicted class colour; click a cell to select it."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QComboBox, QLabel, QVBoxLayout, QWidget

from cellsearch_gui.gui.pixmaps import class_colour

OVERVIEW_SIDE = 4096  # huge stitched images are shown downsampled to this many pixels


def outline(cell) -> np.ndarray | None:
    """Closed polygon (x, y) of a cell's mask in source pixels."""
    import cv2

    from cellsearch_gui.core.segmentation.masks import decode_rle

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
        self.chooser.blockSignals(True)
        self.chooser.clear()
        self.chooser.addItems(sorted(self._by_image))
        self.chooser.blockSignals(False)
        self._shown_path = None
        self.hint.setVisible(not self._by_image)
        if ws.result is not None and not self._by_image:
            self.hint.setText("These cells came as ready-made crops: see the Cells table and the PCA view.")
        self._show_current()

    def _show_current(self, *_):
        for item in self._overlays:
            self.plot.removeItem(item)
        self._overlays = []
        path = self.chooser.currentText()
        if not path:
            self.image_item.clear()
            self._shown_path = None
            return
        new_image = path != self._shown_path
        if new_image:
            from cellsearch_gui.core.fields import Field

            with Field(path) as field_:
                overview = field_.overview(OVERVIEW_SIDE)
                self._scale = overview.shape[1] / field_.shape[1]
            self.image_item.setImage(overview)
            self._shown_path = path
        ws = self.controller.workspace
        classes, labels = ws.classes(), ws.result.predictions.labels
        for i in self._by_image[path]:
            if i not in self._outlines:  # decoded once per result, not at every click
                self._outlines[i] = outline(ws.cells[i])
            if self._outlines[i] is None:
                continue
            poly = self._outlines[i] * self._scale
            user = ws.label_of(i)
            width = 4 if i == self.controller.selected else 2
            pen = pg.mkPen(class_colour(classes, user or labels[i]), width=width,
                           style=pg.QtCore.Qt.PenStyle.SolidLine if not user else pg.QtCore.Qt.PenStyle.DashLine)
            curve = pg.PlotCurveItem(poly[:, 0], poly[:, 1], pen=pen)
            self.plot.addItem(curve)
            text = pg.TextItem(user or labels[i], color=class_colour(classes, user or labels[i]), anchor=(0, 1))
            x0, y0 = ws.cells[i].bbox[:2]
            text.setPos(x0 * self._scale, y0 * self._scale)
            self.plot.addItem(text)
            self._overlays += [curve, text]
        if new_image:
            self.plot.autoRange()

    def _clicked(self, event) -> None:
        path = self.chooser.currentText()
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
        if cell.bbox and self.chooser.currentText() != cell.source_image:
            self.chooser.setCurrentText(cell.source_image)

    def _follow_selection(self, index: int) -> None:
        self.select_image_of(index)
        self._show_current()
