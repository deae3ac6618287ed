"""The Differential tab: per sample, a bar chart of the class percentages with their 95 % intervals and the
counts (counted, uncertain, reviewed, corrected); recomputed as the user labels cells."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cellsearch_gui.core.classify.differential import Interval, SampleDifferential
from cellsearch_gui.core.export.outlines import UNCLASSIFIED_COLOUR, class_colours
from cellsearch_gui.core.export.table import table_from_workspace
from cellsearch_gui.core.options import values

INTERVAL_PEN = "w"  # whiskers on pyqtgraph's dark background
MAX_SAMPLES_SHOWN = 40  # more charts only slow the tab down; the report holds every sample


def summary_text(d: SampleDifferential) -> str:
    text = (f"{d.counted} counted · {d.uncertain} uncertain · {d.reviewed} reviewed · {d.corrected} corrected"
            + (f" · {d.unclassified} without a prediction" if d.unclassified else ""))
    return text + "".join(f"\n{note}" for note in d.notes)


class SampleChart(QWidget):
    """One sample: title, summary, a bar chart with interval whiskers and the count table."""

    def __init__(self, d: SampleDifferential, colours: dict, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        title = QLabel(f"<b>{d.sample}</b>")
        title.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(title)
        self.summary = QLabel(summary_text(d))
        layout.addWidget(self.summary)
        row = QHBoxLayout()
        self.plot = pg.PlotWidget()
        self.plot.setMinimumHeight(180)
        self.plot.setMouseEnabled(False, False)
        self.plot.setLabel("left", "% of counted cells")
        self.plot.setYRange(0, 100)
        positions = np.arange(len(d.classes), dtype=float)
        percent = np.array([c.percent for c in d.classes])
        brushes = [pg.mkBrush(*colours.get(c.name, UNCLASSIFIED_COLOUR)) for c in d.classes]
        self.bars = pg.BarGraphItem(x=positions, height=percent, width=0.7, brushes=brushes)
        self.plot.addItem(self.bars)
        if d.counted:
            low, high = np.array([c.low for c in d.classes]), np.array([c.high for c in d.classes])
            self.plot.addItem(pg.ErrorBarItem(x=positions, y=percent, top=high - percent, bottom=percent - low,
                                              beam=0.25, pen=pg.mkPen(INTERVAL_PEN, width=1.5)))
        self.plot.getAxis("bottom").setTicks([[(i, c.name) for i, c in enumerate(d.classes)]])
        row.addWidget(self.plot, 3)
        self.table = QTableWidget(len(d.classes), 3)
        self.table.setHorizontalHeaderLabels(["cells", "%", "95 % interval"])
        self.table.setVerticalHeaderLabels([c.name for c in d.classes])
        for i, c in enumerate(d.classes):
            for j, text in enumerate((str(c.count), f"{c.percent:.1f}", f"{c.low:.1f} – {c.high:.1f}")):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        row.addWidget(self.table, 2)
        layout.addLayout(row)


class DifferentialPanel(QWidget):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.differentials: list[SampleDifferential] = []
        self.charts: list[SampleChart] = []
        top = QHBoxLayout()
        self.status = QLabel("Run the analysis: the differential count of each sample appears here.")
        top.addWidget(self.status, 1)
        top.addWidget(QLabel("95 % interval:"))
        self.interval = QComboBox()
        self.interval.addItems(values(Interval))
        self.interval.currentTextChanged.connect(lambda _: self.refresh())
        top.addWidget(self.interval)
        self.report_button = QPushButton("Report…")
        top.addWidget(self.report_button)
        self.body = QWidget()
        self.body_layout = QVBoxLayout(self.body)
        self.body_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.body)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(scroll)
        self._timer = QTimer(self, singleShot=True, interval=150)  # many labels at once: one refresh
        self._timer.timeout.connect(self.refresh)
        for signal in (controller.result_changed, controller.predictions_changed, controller.labels_changed,
                       controller.inputs_changed):
            signal.connect(self._timer.start)

    def refresh(self) -> None:
        ws = self.controller.workspace
        for chart in self.charts:
            chart.setParent(None)
            chart.deleteLater()
        self.charts = []
        if ws.result is None:
            self.differentials = []
            self.status.setText("Run the analysis: the differential count of each sample appears here.")
            return
        table = table_from_workspace(ws)
        self.differentials = table.differential(self.interval.currentText())
        colours = class_colours(table.classes)
        shown = self.differentials[:MAX_SAMPLES_SHOWN]
        for d in shown:
            chart = SampleChart(d, colours)
            self.body_layout.insertWidget(self.body_layout.count() - 1, chart)
            self.charts.append(chart)
        more = len(self.differentials) - len(shown)
        self.status.setText(f"{len(self.differentials)} sample(s), {sum(d.counted for d in self.differentials)} "
                            f"cells counted; uncertain: {table.uncertain_rule()}"
                            + (f"; the first {len(shown)} shown (the report holds all {more + len(shown)})"
                               if more else ""))
