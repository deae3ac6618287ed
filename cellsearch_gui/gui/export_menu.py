"""The Export menu: the cells CSV, QuPath GeoJSON, AnnData .h5ad, OME-Zarr label images and the differential
report of the window's result, each written on the worker from the labels as they are when asked."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QInputDialog

from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.export.samples import clean_sample_name, set_sample_name

FORMATS = {  # kind: (menu text, dialog title, default name, file filter or None for a folder)
    "geojson": ("QuPath GeoJSON (cell outlines)…", "Folder for the GeoJSON files (one per field)", "qupath", None),
    "h5ad": ("AnnData .h5ad (scanpy)…", "Export an .h5ad", "cells.h5ad", "AnnData (*.h5ad)"),
    "ome-zarr": ("OME-Zarr label images (napari)…", "Folder for the OME-Zarr fields", "napari", None),
    "report": ("Differential report (HTML or PDF)…", "Differential report", "report.html",
               "HTML (*.html);;PDF (*.pdf)"),
}


class ExportMenu:
    """Builds the menu on ``window`` (a MainWindow) and asks where to write; the controller runs the job."""

    def __init__(self, window) -> None:
        self.window = window
        menu = window.menuBar().addMenu("E&xport")
        self.menu = menu
        self.actions = {"csv": window._action(menu, "Cells CSV…", window.export_csv)}
        menu.addSeparator()
        for kind, (text, *_rest) in FORMATS.items():
            if kind == "report":
                menu.addSeparator()
            self.actions[kind] = window._action(menu, text, lambda _=False, k=kind: self.export(k))
        self.actions["sample"] = window._action(menu, "Name a sample…", self.name_sample)

    def target(self, kind: str) -> str:
        _, title, default, pattern = FORMATS[kind]
        start = str(Path(self.window._export_dir()) / default)  # the project's folder, else the last one used
        if pattern is None:
            return QFileDialog.getExistingDirectory(self.window, title, self.window._export_dir())
        return QFileDialog.getSaveFileName(self.window, title, start, pattern)[0]

    def export(self, kind: str, target: str | None = None) -> bool:
        if self.window.controller.workspace.result is None:
            self.window._on_error("nothing to export yet: run the analysis first", "")
            return False
        target = target or self.target(kind)
        if not target:
            return False
        self.window._remember_dir(target)
        return self.window.controller.export_as(kind, target)

    def name_sample(self, item: str | None = None, name: str | None = None) -> bool:
        """Give one dropped item's cells a sample name (kept in the project, so it needs one)."""
        controller = self.window.controller
        ws = controller.workspace
        if ws.store is None or ws.store.readonly:
            self.window._on_error("save the project first (File > Save project as…): sample names are kept in it", "")
            return False
        if item is None:
            item, ok = QInputDialog.getItem(self.window, "Name a sample", "Dropped item:", ws.query_paths, 0, False)
            if not ok:
                return False
        if name is None:
            name, ok = QInputDialog.getText(self.window, "Name a sample", f"Sample name for {item}:")
            if not ok:
                return False
        try:
            set_sample_name(ws.store, item, clean_sample_name(name) if name.strip() else None)
        except CellSearchError as exc:
            self.window._on_error(str(exc), "")
            return False
        controller.inputs_changed.emit()
        return True
