"""What a segmenter is: cell masks for an image, after one look at the whole field."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from cellsearch_gui.core.segmentation.masks import CellMask


@runtime_checkable
class Segmenter(Protocol):
    """Classical, SAM (prompted by proposals) and SAM's point grid all serve ``segment_field`` this way."""

    name: str  # recorded with every cell it finds

    def prepare(self, overview: np.ndarray) -> None:
        """See an overview of the whole field before its tiles, so every tile is cut the same way (fixed
        thresholds); a segmenter with nothing to fix does nothing."""

    def segment(self, rgb: np.ndarray) -> list[CellMask]:
        """The cells of one RGB image (a tile), as masks in its pixel coordinates."""
