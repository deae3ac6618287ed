"""Values that cross stages: one cell (Cell, keyed by its id) and the features of a set of cells (FeatureSet)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class FeatureSet:
    """Concatenated features for the crops that could be read; ``skipped`` says which could not and why."""

    paths: list[Path]
    labels: list[str | None]
    features: np.ndarray
    model_ids: list[str]
    dims: list[int]
    per_model_l2: bool
    fingerprints: dict[str, str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    per_model: dict[str, np.ndarray] = field(default_factory=dict)
    prep: dict = field(default_factory=dict)
    prep_notes: list[tuple[str, str]] = field(default_factory=list)
    # the cell of each row (Cell.cell_id); ``paths`` stay the file-level key of the embedding cache. Empty for
    # feature sets made without ids (a project run saved before ids were kept)
    cell_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what embedding decided (a library's features not usable...)

    def append_rows(self, other: "FeatureSet", rows: list[int], labels: list[str]) -> None:
        """Take ``other``'s crops at ``rows`` in, with these labels (query cells joining a reference library)."""
        if self.cell_ids and other.cell_ids:
            self.cell_ids += [other.cell_ids[i] for i in rows]
        self.paths += [other.paths[i] for i in rows]
        self.labels += list(labels)
        self.features = np.concatenate([self.features, other.features[rows]])
        for model in self.per_model:
            self.per_model[model] = np.concatenate([self.per_model[model], other.per_model[model][rows]])

    def select(self, model_ids: list[str], per_model_l2: bool | None = None) -> np.ndarray:
        """Concatenate a sub-combination from the per-model blocks without re-embedding."""
        l2 = self.per_model_l2 if per_model_l2 is None else per_model_l2
        return concat_blocks([self.per_model[m] for m in model_ids], l2)


def concat_blocks(blocks: list[np.ndarray], per_model_l2: bool) -> np.ndarray:
    if per_model_l2:
        blocks = [b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12) for b in blocks]
    return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)


@dataclass
class Cell:
    """One cell, keyed by ``cell_id``: cut from a segmented field (a row of the segment job's cells.csv) or a
    ready-made crop file. The same record goes through segmentation, the project store, features and export."""

    cell_id: str
    crop_path: str
    source_image: str  # the field it was cut from, or the crop file itself
    bbox: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in source pixels
    centroid: tuple[float, float] | None = None  # x, y
    area_px: int | None = None
    mask_rle: str | None = None  # bbox-sized, source pixel coordinates
    true_label: str | None = None  # from a class-per-folder query set
    # how a segmented cell was found and cut (cells.csv); None for a crop file and for cells read from a project
    tile: int | None = None
    area_um2: float | None = None
    pixel_size_um: float | None = None
    pixel_size_source: str | None = None
    scale: float | None = None  # working scale of the field (output px per source px)
    segmenter: str | None = None
    score: float | None = None
    touches_border: bool | None = None  # the mask reaches the field's edge: the cell may be cut (kept, flagged)

    def as_dict(self) -> dict:
        return asdict(self)


def crop_cell_id(path: str | Path) -> str:
    """The id of a ready-made crop file: its name and a short hash of its path (the same name may recur)."""
    path = Path(path)
    stem = os.fsencode(path.stem).decode("utf-8", "backslashreplace")  # names that are not UTF-8 stay printable
    return f"{stem}_{hashlib.sha1(os.fsencode(path)).hexdigest()[:8]}"
