"""How well the library knows this device: leave-one-out accuracy on the cells the user labelled, against
the number labelled (core: Workspace.device_curve)."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QVBoxLayout

LIBRARY_PEN, DEVICE_PEN = "#1f77b4", "#d62728"


def curve_summary(curve: list[dict]) -> str:
    if not curve:
        return ("Label at least 2 cells of this device to see how well the library knows it "
                "(each labelled cell is predicted with itself left out).")
    last = curve[-1]
    verdict = ("the library knows this device better than its labelled cells alone"
               if last["library"] >= last["device_alone"] else
               "this device's labelled cells alone predict each other better than the library: label more of "
               "them and add them to the reference, or try another crop preparation")
    return (f"After {last['n_labelled']} labelled cells: library {last['library']:.0%}, "
            f"these cells alone {last['device_alone']:.0%} (leave-one-out accuracy): {verdict}.")


class DeviceCurveDialog(QDialog):
    def __init__(self, curve: list[dict], parent=None):
        super().__init__(parent)
        self.setWindowTitle("How well the library knows this device")
        self.plot = pg.PlotWidget(background="w")
        self.plot.setLabel("bottom", "cells labelled on this device")
        self.plot.setLabel("left", "leave-one-out accuracy")
        self.plot.setYRange(0, 1)
        self.plot.addLegend(offset=(-10, -10))  # bottom right, away from the curves' usual top left
        n = [p["n_labelled"] for p in curve]
        self.library_line = self.plot.plot(n, [p["library"] for p in curve], pen=pg.mkPen(LIBRARY_PEN, width=2),
                                           symbol="o", symbolBrush=LIBRARY_PEN, name="library (with them in it)")
        self.device_line = self.plot.plot(n, [p["device_alone"] for p in curve], pen=pg.mkPen(DEVICE_PEN, width=2),
                                          symbol="s", symbolBrush=DEVICE_PEN, name="these cells alone")
        self.summary = QLabel(curve_summary(curve))
        self.summary.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (self.plot, self.summary, buttons):
            layout.addWidget(widget)
        self.resize(560, 420)
