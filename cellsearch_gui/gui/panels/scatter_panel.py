"""PCA scatter (the paper's Figure 2): reference cells by class, query cells on top; hover, click, box-label.
The axes are fitted class-balanced on the library classes in use (core.app.run.pca_2d), the legend sits
outside the plotting area."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from cellsearch_gui.core.app.session import sample_per_class
from cellsearch_gui.gui.pixmaps import class_colour, thumbnail

MAX_SHOWN_REFERENCES = 50_000  # more points only slow the plot down; every class keeps a share


class BoxSelectViewBox(pg.ViewBox):
    """Drag with the left button to draw a box when box mode is on; otherwise pan and zoom as usual."""

    box_selected = Signal(QRectF)

    def __init__(self):
        super().__init__()
        self.box_mode = False
        self._band = pg.QtWidgets.QGraphicsRectItem()
        self._band.setPen(pg.mkPen("#ffcc00", width=1, style=Qt.PenStyle.DashLine))
        self._band.hide()
        self.addItem(self._band, ignoreBounds=True)

    def mouseDragEvent(self, ev, axis=None):
        if not self.box_mode or ev.button() != Qt.MouseButton.LeftButton:
            return super().mouseDragEvent(ev, axis)
        ev.accept()
        start, end = self.mapSceneToView(ev.buttonDownScenePos()), self.mapSceneToView(ev.scenePos())
        rect = QRectF(start, end).normalized()
        self._band.setRect(rect)
        self._band.show()
        if ev.isFinish():
            self._band.hide()
            self.box_selected.emit(rect)


class ScatterPanel(QWidget):
    reference_clicked = Signal(int)

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.view_box = BoxSelectViewBox()
        self.plot = pg.PlotWidget(viewBox=self.view_box)
        self.plot.setLabel("bottom", "PC 1")
        self.plot.setLabel("left", "PC 2")
        self.legend = pg.LegendItem()  # beside the plot, in its own column: it never covers a point
        self.legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)  # rows stay together
        layout = self.plot.getPlotItem().layout
        layout.addItem(self.legend, 2, 3)
        layout.setAlignment(self.legend, Qt.AlignmentFlag.AlignTop)
        self.references = pg.ScatterPlotItem(size=6, pen=None, hoverable=True, hoverSize=10)
        self.queries = pg.ScatterPlotItem(size=11, symbol="star", hoverable=True, hoverSize=16)
        self.plot.addItem(self.references)
        self.plot.addItem(self.queries)
        self.references.sigClicked.connect(lambda _, pts, __: pts and self.reference_clicked.emit(int(pts[0].data())))
        self.queries.sigClicked.connect(lambda _, pts, __: pts and controller.select_cell(int(pts[0].data())))
        self.references.sigHovered.connect(self._hover_reference)
        self.queries.sigHovered.connect(self._hover_query)
        self.preview = QLabel(self.plot)
        self.preview.setFixedSize(100, 118)
        self.preview.setStyleSheet("background: rgba(0,0,0,160); color: white;")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.hide()
        self.box_button = QPushButton("Box-select query cells")
        self.box_button.setCheckable(True)
        self.box_button.toggled.connect(lambda on: setattr(self.view_box, "box_mode", on))
        self.box_label = QComboBox()
        self.box_label.setEditable(True)
        self.status = QLabel("")
        self.view_box.box_selected.connect(self._box_selected)
        bar = QHBoxLayout()
        bar.addWidget(self.box_button)
        bar.addWidget(QLabel("label as"))
        bar.addWidget(self.box_label, 1)
        bar.addWidget(self.status, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.plot, 1)
        self._ref_xy = np.zeros((0, 2))
        self._query_xy = np.zeros((0, 2))
        self._brushes = {}
        controller.result_changed.connect(self.refresh)
        controller.predictions_changed.connect(self.refresh)
        controller.labels_changed.connect(self.paint_queries)

    def refresh(self) -> None:
        """New result or predictions: project again (the reference sample is drawn once per result)."""
        ws = self.controller.workspace
        self.legend.clear()
        if ws.result is None:
            self.references.clear()
            self.queries.clear()
            return
        ref_xy, ref_labels, query_xy = ws.scatter()
        classes = ws.classes()
        self._brushes = {name: pg.mkBrush(class_colour(classes, name)) for name in set(classes) | set(ref_labels)}
        self._ref_xy, self._query_xy = ref_xy, query_xy
        shown = sample_per_class(ref_labels, MAX_SHOWN_REFERENCES)
        self.references.setData(x=ref_xy[shown, 0], y=ref_xy[shown, 1], data=shown,
                                brush=[self._brushes[ref_labels[i]] for i in shown])
        self.plot.setTitle(f"{len(shown):,} of {len(ref_xy):,} reference cells shown (a sample of each class)"
                           if len(shown) < len(ref_xy) else None)
        self.paint_queries()
        for name in classes:
            self.legend.addItem(pg.ScatterPlotItem(size=8, pen=None, brush=self._brushes[name]), name)
        self.legend.addItem(pg.ScatterPlotItem(size=11, symbol="star", brush=pg.mkBrush("w")), "query cells")
        current = self.box_label.currentText()
        self.box_label.clear()
        self.box_label.addItems(classes)
        if current:
            self.box_label.setCurrentText(current)

    def paint_queries(self) -> None:
        """Colour the query stars by the user's label, else the prediction (labels changed: nothing is
        projected again)."""
        ws = self.controller.workspace
        if ws.result is None:
            return
        classes = ws.classes()
        labelled = [ws.label_of(i) for i in range(len(self._query_xy))]
        shown = [mine or predicted for mine, predicted in zip(labelled, ws.result.predictions.labels)]
        for name in set(shown) - set(self._brushes):
            self._brushes[name] = pg.mkBrush(class_colour(classes, name))
        pens = {True: pg.mkPen("k", width=1.5), False: pg.mkPen("w", width=1.5)}
        self.queries.setData(x=self._query_xy[:, 0], y=self._query_xy[:, 1], data=np.arange(len(shown)),
                             brush=[self._brushes[name] for name in shown], pen=[pens[bool(m)] for m in labelled])

    def _hover(self, points, path_of, caption_of) -> None:
        if not len(points):
            self.preview.hide()
            return
        index = int(points[0].data())
        pixmap = thumbnail(path_of(index), 96)
        self.preview.setPixmap(pixmap)
        self.preview.setToolTip(caption_of(index))
        self.preview.move(self.plot.width() - 110, 10)
        self.preview.show()

    def _hover_reference(self, _item, points, _ev) -> None:
        r = self.controller.workspace.result
        self._hover(points, lambda i: str(r.reference.paths[i]), lambda i: r.reference.labels[i])

    def _hover_query(self, _item, points, _ev) -> None:
        ws = self.controller.workspace
        self._hover(points, lambda i: ws.cells[i].crop_path, lambda i: ws.result.predictions.labels[i])

    def query_cells_in(self, rect: QRectF) -> list[int]:
        xy = self._query_xy
        inside = ((xy[:, 0] >= rect.left()) & (xy[:, 0] <= rect.right())
                  & (xy[:, 1] >= rect.top()) & (xy[:, 1] <= rect.bottom()))
        return np.flatnonzero(inside).tolist()

    def _box_selected(self, rect: QRectF) -> None:
        label = self.box_label.currentText().strip()
        picked = self.query_cells_in(rect)
        if not label or not picked:
            self.status.setText("no query cells in the box" if label else "choose a label first")
            return
        self.controller.label_cells(picked, label)
        self.status.setText(f"{len(picked)} cells labelled '{label}'")
