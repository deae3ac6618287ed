"""Result dialogs: transfer evaluation (both stopping rules, per class) and the suggested setting."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from cellsearch_gui.core.options import EntropyNorm

RULES = {EntropyNorm.LOG_K: "paper (H / log k)", EntropyNorm.LOG_MIN_KC: "H / log min(k, C)"}


def pct(value: float) -> str:
    return f"{value:.1%}"


def _table(headers: list[str], rows: list[list]) -> QTableWidget:
    table = QTableWidget(len(rows), len(headers))
    table.setHorizontalHeaderLabels(headers)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.setItem(r, c, QTableWidgetItem(str(value)))
    table.resizeColumnsToContents()
    return table


class TransferDialog(QDialog):
    def __init__(self, report: dict, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Transfer evaluation")
        by_rule = report["by_stopping_rule"]
        summary = _table(["stopping rule", "macro accuracy", "macro precision", "mean k"],
                         [[RULES.get(rule, rule), pct(s["balanced_accuracy"]), pct(s["macro_precision"]), f"{s['mean_k']:.1f}"]
                          for rule, s in by_rule.items()])
        first = next(iter(by_rule.values()))
        per_class = _table(["class", *[f"recall ({r})" for r in by_rule], *[f"precision ({r})" for r in by_rule],
                            "cells"],
                           [[c, *[pct(by_rule[r]["per_class"][c]["recall"]) for r in by_rule],
                             *[pct(by_rule[r]["per_class"][c]["precision"]) for r in by_rule],
                             first["per_class"][c]["support"]] for c in first["classes"]])
        prep = report["preprocessing"]
        info = QLabel(f"Reference {', '.join(report['reference'])} ({report['n_reference']} cells) → query "
                      f"{report['query']} ({report['n_query']} cells)<br>models {'+'.join(report['models'])}; "
                      f"crops: centre={prep['centre']}, scale={prep['scale']}, mask={prep['mask']}, "
                      f"colour={prep['colour']}<br>" + "<br>".join(report["notes"]))
        info.setWordWrap(True)
        self.summary, self.per_class = summary, per_class
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (info, summary, per_class, buttons):
            layout.addWidget(widget)
        self.resize(760, 480)


class SuggestionDialog(QDialog):
    def __init__(self, result: dict, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Suggested setting for this device")
        self.suggestion = result["suggestion"]
        s = self.suggestion
        top = result["ranking"][:10]
        self.table = _table(["crop preparation", "models", "metric", "threshold", "stopping rule",
                             "macro accuracy", "macro precision"],
                            [[r["preprocessing"], "+".join(r["models"]), r["metric"], r["entropy_threshold"],
                              RULES.get(r["entropy_norm"], r["entropy_norm"]), pct(r["balanced_accuracy"]),
                              pct(r["macro_precision"])] for r in top])
        text = QLabel(f"Best on your {s['n_labelled']} labelled cells of this device: <b>{s['preprocessing']}</b>, "
                      f"{'+'.join(s['models'])}, {s['params']['metric']}, threshold "
                      f"{s['params']['entropy_threshold']}, rule {s['params']['entropy_norm']} — macro accuracy "
                      f"{s['balanced_accuracy']:.1%}. With few labelled cells this is a guide, not a guarantee.")
        text.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Apply | QDialogButtonBox.StandardButton.Close)
        buttons.button(QDialogButtonBox.StandardButton.Apply).clicked.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (text, self.table, buttons):
            layout.addWidget(widget)
        self.resize(760, 420)
