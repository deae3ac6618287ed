"""Opening a big project: 100,000 cells with masks, 20,000 labels and a run of 100,000 predictions.

    .venv/bin/python benchmarks/bench_project.py [--cells 100000]

Prints the time to open the project (lock, schema check, settings, sources, labels) and to load every cell
with its latest prediction, as the window does before showing the table.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from cellsearch_gui.core.app.session import Workspace
from cellsearch_gui.core.types import Cell


def build(folder: Path, n_cells: int) -> float:
    t0 = time.perf_counter()
    ws = Workspace()
    ws.reference_dirs = ["/data/reference"]
    ws.query_paths = ["/data/fields"]
    ws.save(folder)
    rle = ",".join(["12", "30"] * 40)  # a typical mask row-length encoding (~240 characters)
    cells = [Cell(f"field{i // 500:04d}_y{i:06d}_x{i:06d}", f"crops/{i}.png", f"/data/fields/f{i // 500}.tif",
                       (i, i, i + 60, i + 60), (i + 30.0, i + 30.0), 2800, rle) for i in range(n_cells)]
    ws.store.put_cells(cells)
    ws.set_labels({c.cell_id: "neutrophil" for c in cells[: n_cells // 5]})
    run = ws.store.start_run("classify", ws.settings.as_dict())
    ws.store.finish_run(run, "finished", {"models": ws.settings.models},
                        predictions=[(c.cell_id, "lymphocyte", 0.12, 6) for c in cells])
    ws.close()
    return time.perf_counter() - t0


def open_and_load(folder: Path) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    ws = Workspace.open(folder)
    opened = time.perf_counter() - t0
    cells = ws.store.cells()
    predictions = ws.store.predictions(ws.store.last_finished_run()["id"])
    loaded = time.perf_counter() - t0
    assert len(predictions) == len(cells)
    ws.close()
    return opened, loaded, len(cells)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cellsearch-bench-project-"))
    try:
        built = build(work / "project", args.cells)
        size_mb = sum(p.stat().st_size for p in (work / "project").iterdir()) / 1e6
        print(f"built a project of {args.cells:,} cells in {built:.1f} s ({size_mb:.0f} MB on disk)")
        for attempt in range(3):
            opened, loaded, n = open_and_load(work / "project")
            print(f"open {opened * 1000:.0f} ms; open + load {n:,} cells with their predictions "
                  f"{loaded * 1000:.0f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
