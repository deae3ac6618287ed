"""The window with a large result: what the user waits for when a run has many cells.

    .venv/bin/python benchmarks/bench_gui_scale.py [--references 100000] [--queries 5000] [--json out/...]

A result is built from synthetic clustered 4,352-d embeddings (six-model widths) for N reference and M
query cells, with real PBC crop files behind every cell for the thumbnails (cycled), classified by EWC
(exact search, k 3..1000). Building it is not timed (in the app it happens on the worker thread). Then,
offscreen, it times: the result shown (every panel refreshed), selecting a cell (inspector and gallery),
labelling a cell, sorting the table by entropy, box-labelling about 1 % of the cells, and the longest
pause of the event loop over all of that (a 10 ms timer measures it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import REPO, Timer, peak_rss_mb, write_json  # noqa: E402,I001

PBC = Path(os.environ.get("CELLSEARCH_SHARED", REPO.parent / "shared")) / "data" / "pbc_barcelona"


def _in_field(field: Path, n: int) -> list[tuple]:
    """Bounding box, centroid and a round mask for n cells spread over the field on a grid."""
    import numpy as np

    from cellsearch_gui.core.io.images import read_rgb
    from cellsearch_gui.core.segmentation.masks import encode_rle

    height, width = read_rgb(field).shape[:2]
    side = int(np.ceil(np.sqrt(n * width / height)))
    step_x, step_y = width / side, height / int(np.ceil(n / side))
    yy, xx = np.mgrid[:16, :16]
    rle = encode_rle((yy - 7.5) ** 2 + (xx - 7.5) ** 2 <= 56)
    cells = []
    for i in range(n):
        x0, y0 = int((i % side) * step_x), int((i // side) * step_y)
        cells.append(((x0, y0, x0 + 16, y0 + 16), (x0 + 8.0, y0 + 8.0), rle))
    return cells


def build_result(n_ref: int, n_query: int, field: Path | None = None):

    from cellsearch_gui.core.app.run import KEPT_NEIGHBOURS, AnalysisResult, pca_2d
    from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams
    from synthetic import SyntheticWorld
    from cellsearch_gui.core.types import Cell, FeatureSet

    world = SyntheticWorld()
    ref_x, ref_y = next(iter(world.chunks(n_ref, 1, chunk=n_ref)))
    query_x, query_y = next(iter(world.chunks(n_query, 2, chunk=n_query)))
    files = sorted(f for c in sorted(PBC.iterdir()) if c.is_dir() for f in sorted(c.iterdir())[:20])
    ref_labels, query_truth = world.labels_for(ref_y), world.labels_for(query_y)

    def features(paths, labels, x):
        return FeatureSet(paths, labels, x, ["synthetic"], [x.shape[1]], False, {}, per_model={"synthetic": x})

    reference = features([files[i % len(files)] for i in range(n_ref)], ref_labels, ref_x)
    query_paths = [files[i % len(files)] for i in range(n_query)]
    query = features(query_paths, query_truth, query_x)
    if field is None:
        cells = [Cell(f"cell{i:07d}", str(p), str(p), true_label=t)
                 for i, (p, t) in enumerate(zip(query_paths, query_truth))]
    else:  # every cell cut from one field: the image view draws them all
        cells = [Cell(f"cell{i:07d}", str(p), str(field), bbox, centroid, 200, rle, t)
                 for i, (p, t, (bbox, centroid, rle)) in enumerate(zip(query_paths, query_truth,
                                                                       _in_field(field, n_query)))]
    classifier = EWCClassifier(EWCParams(index="flat", entropy_norm="log_min_kc")).fit(ref_x, ref_labels)
    predictions = classifier.predict(query_x, keep_neighbours=KEPT_NEIGHBOURS)
    mean, axes = pca_2d(ref_x)
    return AnalysisResult(cells, reference, query, classifier, predictions, mean, axes, [], {}, ["synthetic"])


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--references", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--json", default="out/bench_gui_scale.json")
    parser.add_argument("--screenshot", default=None, help="save the window here (PNG): the PCA tab, or the image tab with --field")
    parser.add_argument("--field", action="store_true",
                        help="put every query cell in one BCCD field, so the image view outlines them all")
    args = parser.parse_args()
    os.environ.setdefault("CELLSEARCH_CONFIG_DIR", tempfile.mkdtemp(prefix="cellsearch-config-"))
    from PySide6.QtCore import QElapsedTimer, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from cellsearch_gui.gui.app import create_window

    with Timer() as built:
        field = sorted((PBC.parent / "bccd_fov" / "JPEGImages").glob("*.jpg"))[0] if args.field else None
        result = build_result(args.references, args.queries, field)
    print(f"result of {args.references:,} references and {args.queries:,} query cells built in {built.s:.0f} s "
          "(worker-thread work, not timed below)")
    app = QApplication.instance() or QApplication([])
    window = create_window()
    window.show()
    app.processEvents()
    controller = window.controller
    pauses, clock = [], QElapsedTimer()
    clock.start()

    def tick():
        pauses.append(clock.restart())

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    figures = {}

    def step(name, action):
        t0 = time.perf_counter()
        action()
        app.processEvents()
        figures[name] = time.perf_counter() - t0
        print(f"  {name:<40} {figures[name] * 1e3:8.0f} ms", flush=True)

    def show_result():
        controller.workspace.apply(result)
        controller.result_changed.emit()

    step("result shown (all panels)", show_result)
    step("select a cell (inspector, gallery)", lambda: controller.select_cell(args.queries // 2))
    step("select another cell", lambda: controller.select_cell(args.queries // 3))
    step("label a cell", lambda: controller.set_label(args.queries // 2, "neutrophil"))
    step("sort the table by entropy", lambda: window.cells_table.sortByColumn(3, Qt.SortOrder.DescendingOrder))
    panel = window.scatter_panel
    xy = panel._query_xy
    import numpy as np
    from PySide6.QtCore import QRectF

    centre = np.median(xy, axis=0)
    radius = np.percentile(np.abs(xy - centre).max(axis=1), 1)
    box = QRectF(centre[0] - radius, centre[1] - radius, 2 * radius, 2 * radius)
    panel.box_label.setCurrentText("neutrophil")
    picked = len(panel.query_cells_in(box))
    step(f"box-label {picked} cells in the PCA plot", lambda: panel._box_selected(box))
    for _ in range(10):
        app.processEvents()
        time.sleep(0.01)
    timer.stop()
    longest = max(pauses, default=0)  # the first tick comes after the first step: it counts too
    print(f"  longest event-loop pause over all steps: {longest} ms; peak RSS {peak_rss_mb() / 1024:.1f} GiB")
    if args.screenshot:
        window.resize(1560, 960)
        window.tabs.setCurrentWidget(window.image_panel if args.field else window.scatter_panel)
        for _ in range(5):
            app.processEvents()
            time.sleep(0.05)
        window.grab().save(args.screenshot)
    window.close()
    out = {"references": args.references, "queries": args.queries, "steps_s": figures,
           "longest_pause_ms": longest, "build_s": built.s}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
