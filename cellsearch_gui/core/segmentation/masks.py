"""A cell mask in a bounding box, plus run-length encoding for storage in CSV files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# a SAM mask below its quality bar: the cell keeps its classical outline (counted, not lost)
OUTLINE_KEPT = "SAM's mask below its quality bar (the classical outline kept)"
# a SAM mask outside the size filter whose classical proposal is inside it: the proposal's outline stands
SIZE_OUTLINE_KEPT = "SAM's mask outside the size filter (the classical outline kept)"


@dataclass
class CellMask:
    y0: int
    x0: int
    mask: np.ndarray  # bool, bounding-box sized
    score: float = 1.0  # segmenter confidence (SAM predicted IoU; 1 for classical)
    stability: float = 1.0
    outline: "CellMask | None" = None  # prompted SAM: the classical proposal this mask refines

    def within(self, lo: float, hi: float) -> "CellMask | None":
        """This mask when its area is in [lo, hi], else its classical proposal when that one is, else None."""
        if lo <= self.area <= hi:
            return self
        return self.outline if self.outline is not None and lo <= self.outline.area <= hi else None

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), exclusive end."""
        return self.x0, self.y0, self.x0 + self.mask.shape[1], self.y0 + self.mask.shape[0]

    @property
    def centroid(self) -> tuple[float, float]:
        ys, xs = np.nonzero(self.mask)
        return self.y0 + float(ys.mean()), self.x0 + float(xs.mean())

    def shifted(self, dy: int, dx: int) -> "CellMask":
        outline = None if self.outline is None else self.outline.shifted(dy, dx)
        return CellMask(self.y0 + dy, self.x0 + dx, self.mask, self.score, self.stability, outline)


def from_full(mask: np.ndarray, score: float = 1.0, stability: float = 1.0) -> CellMask | None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return CellMask(int(y0), int(x0), mask[y0:y1, x0:x1].copy(), score, stability)


def encode_rle(mask: np.ndarray) -> str:
    """'HxW:run,run,...' row-major runs starting with background."""
    flat = np.asarray(mask, bool).ravel()
    changes = np.flatnonzero(np.diff(np.concatenate([[False], flat, [False]]).astype(np.int8)))
    runs = np.diff(np.concatenate([[0], changes, [flat.size]]))
    if runs.size and runs[-1] == 0:
        runs = runs[:-1]
    return f"{mask.shape[0]}x{mask.shape[1]}:" + ",".join(map(str, runs.tolist()))


def decode_rle(text: str) -> np.ndarray:
    shape_text, runs_text = text.split(":")
    height, width = map(int, shape_text.split("x"))
    flat = np.zeros(height * width, bool)
    pos, value = 0, False
    for run in (int(r) for r in runs_text.split(",") if r):
        if value:
            flat[pos : pos + run] = True
        pos += run
        value = not value
    return flat.reshape(height, width)


def box_iou(a, b) -> float:
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iw = max(0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0
