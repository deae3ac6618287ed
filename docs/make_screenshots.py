"""Screenshots of the real window for the README: BCCD fields classified against a PBC reference library.

Run under a display (e.g. `xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots.py`).
Needs ../shared/data and the imported weights (./setup.sh).

`--scene classes` (issue 17): the 8-class PBC library with three times as many neutrophils, only the five
white-cell classes ticked and k_max below the library size; the shots show the class checkboxes, the
near-even warning, the Cells table sorted with the selected cell highlighted, the PCA legend beside the plot,
and the inspector explaining a prediction that went against the nearest neighbours.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CLASSES = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def build_inputs(work: Path, per_class: int, n_fields: int, counts: dict[str, int] | None = None) -> tuple[Path, Path]:
    ref = work / "pbc_reference"
    for name, count in (counts or dict.fromkeys(CLASSES, per_class)).items():
        (ref / name).mkdir(parents=True)
        for f in sorted((DATA / "pbc_barcelona" / name).iterdir())[:count]:
            shutil.copy(f, ref / name / f.name)
    fields = work / "bccd_fields"
    fields.mkdir()
    for f in sorted((DATA / "bccd_fov" / "JPEGImages").iterdir())[:n_fields]:
        shutil.copy(f, fields / f.name)
    return ref, fields


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--fields", type=int, default=12)
    parser.add_argument("--scene", choices=["readme", "classes"], default="readme")
    args = parser.parse_args()
    app = QApplication(sys.argv[:1])
    from cellsearch_gui.gui.app import create_window

    work = Path(tempfile.mkdtemp(prefix="cellsearch-shots-"))
    counts = None
    if args.scene == "classes":
        names = sorted(p.name for p in (DATA / "pbc_barcelona").iterdir() if p.is_dir())
        counts = {name: args.per_class * (3 if name == "neutrophil" else 1) for name in names}
    ref, fields = build_inputs(work, args.per_class, args.fields, counts)
    window = create_window([fields], ref)
    window.show_dialogs = False
    # the cell diameter is measured on each field (issue 17); no value is set here
    window.model_panel.load()
    window.resize(1560, 960)
    window.show()
    c = window.controller
    shots = {}

    def grab(name: str) -> None:
        app.processEvents()
        path = args.out / f"screenshot-{name}.png"
        window.grab().save(str(path))
        shots[name] = path
        print(f"wrote {path}")

    def after_run() -> None:
        if window.last_error:
            print("error:", window.last_error[0])
            app.exit(1)
            return
        queue = c.workspace.review_queue()
        with_outline = [i for i in queue if c.workspace.cells[i].bbox]
        c.select_cell(with_outline[0] if with_outline else queue[0])
        window.tabs.setCurrentWidget(window.image_panel)
        grab("main")
        window.tabs.setCurrentWidget(window.scatter_panel)
        grab("pca")
        first = window.cell_panel.gallery.item(0)
        window.cell_panel._open_neighbour(first)
        window.tabs.setCurrentWidget(window.cells_table)
        grab("gallery")
        print(f"{len(c.workspace.cells)} cells; predictions: "
              f"{ {k: c.workspace.result.predictions.labels.count(k) for k in CLASSES} }")
        app.exit(0)

    if args.scene == "classes":
        c.choose_classes(CLASSES)  # as unticking the other three in the reference pane
        window.reference_panel.refresh()
        c.workspace.settings.params["k_max"] = 4 * args.per_class  # below the library's size
        window.model_panel.load()
        after_run = partial(classes_scene, app, window, grab)  # noqa: F811 - the other scene
    c.result_changed.connect(lambda: QTimer.singleShot(500, after_run))
    QTimer.singleShot(300, c.run_analysis)
    code = app.exec()
    shutil.rmtree(work, ignore_errors=True)
    return code


def classes_scene(app, window, grab) -> None:
    """Cells sorted by entropy with the selected cell highlighted, the PCA legend, the inspector's note."""
    from PySide6.QtCore import Qt

    c, ws = window.controller, window.controller.workspace
    if window.last_error:
        print("error:", window.last_error[0])
        app.exit(1)
        return
    noted = [i for i in range(len(ws.cells)) if ws.query_view(i).weighting]
    table = window.cells_table
    window.tabs.setCurrentWidget(table)
    c.select_cell(noted[0] if noted else 0)
    table.sortByColumn(3, Qt.SortOrder.DescendingOrder)
    grab("cells-sorted")
    window.tabs.setCurrentWidget(window.scatter_panel)
    grab("pca-legend")
    window.tabs.setCurrentWidget(window.image_panel)
    grab("inspector-note")
    print(f"{len(ws.cells)} cells, {len(noted)} with a note; selected {c.selected}: "
          f"{ws.query_view(c.selected).weighting or 'no note'}")
    print(f"predictions: { {k: ws.result.predictions.labels.count(k) for k in ws.classes()} }")
    app.exit(0)


if __name__ == "__main__":
    sys.exit(main())
