"""A tiny project made without any model: two samples of synthetic fields with round cells, a finished
classification (predictions and feature arrays) and a user label, for the differential and export tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellsearch_gui.core.project import open_project
from cellsearch_gui.core.project.arrays import save_run_arrays
from cellsearch_gui.core.segmentation.masks import encode_rle
from cellsearch_gui.core.types import Cell, FeatureSet

CLASSES = ["lymphocyte", "neutrophil"]


def disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (xx * xx + yy * yy) <= radius * radius


def make_field(path: Path, size=(60, 80)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 230, np.uint8)).save(path)
    return path


def field_cells(field: Path, centres: list[tuple[int, int]], radius: int = 6) -> list[Cell]:
    """Round cells at (x, y) centres; crops are the field itself (the exports read masks, not crops)."""
    mask = disc(radius)
    cells = []
    for x, y in centres:
        bbox = (x - radius, y - radius, x + radius + 1, y + radius + 1)
        cells.append(Cell(f"{field.stem}_x{x}_y{y}", str(field), str(field), bbox, (float(x), float(y)),
                          int(mask.sum()), encode_rle(mask)))
    return cells


def make_project(root: Path, predictions: dict[str, tuple[str, float]] | None = None,
                 sample_dirs: tuple[str, str] = ("slide_A", "slide_B")) -> tuple[Path, list[Cell]]:
    """Project at ``root/project``: sample A has 3 cells in one field, sample B 2 cells; ``predictions`` by
    cell id (label, entropy) override the defaults (A: lymph, lymph, neutro; B: neutro, neutro)."""
    a = make_field(root / sample_dirs[0] / "field1.png")
    b = make_field(root / sample_dirs[1] / "field2.png")
    cells = field_cells(a, [(10, 10), (40, 20), (60, 40)]) + field_cells(b, [(15, 30), (50, 30)])
    default = dict(zip([c.cell_id for c in cells], [("lymphocyte", 0.1), ("lymphocyte", 0.5), ("neutrophil", 0.0),
                                                    ("neutrophil", 0.2), ("neutrophil", 0.9)]))
    default.update(predictions or {})
    folder = root / "project"
    with open_project(folder, create=True) as store:
        store.add_source("query", a.parent)
        store.add_source("query", b.parent)
        store.put_cells(cells)
        run = store.start_run("classify", {})
        rng = np.random.default_rng(0)
        reference = _features([Path(f"ref{i}.png") for i in range(4)], CLASSES * 2, rng, [])
        query = _features([Path(c.crop_path) for c in cells], [None] * len(cells), rng, [c.cell_id for c in cells])
        save_run_arrays(folder, run, reference, query)
        store.finish_run(run, "finished", {"models": ["m1", "m2"], "params": {"entropy_threshold": 0.3},
                                           "app_version": "test"},
                         [], [(uid, label, entropy, 3) for uid, (label, entropy) in default.items()])
    return folder, cells


def _features(paths, labels, rng, cell_ids) -> FeatureSet:
    per_model = {"m1": rng.normal(size=(len(paths), 4)).astype(np.float32),
                 "m2": rng.normal(size=(len(paths), 3)).astype(np.float32)}
    return FeatureSet(list(paths), list(labels), np.concatenate(list(per_model.values()), axis=1), ["m1", "m2"],
                      [4, 3], False, {"m1": "m1|abc", "m2": "m2|def"}, per_model=per_model, cell_ids=cell_ids)
