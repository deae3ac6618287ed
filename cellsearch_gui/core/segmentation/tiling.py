"""Tiles with overlap over a large field, and ownership rules that keep each cell exactly once.

Each tile has a core (the tiling step) and a margin of ``overlap`` pixels on every side. A mask is
kept by the tile whose core holds its centroid, and only if it does not touch a tile edge that lies
inside the image (a touching mask is a cut cell; the neighbouring tile sees it whole). With an overlap
of at least one cell diameter every cell is whole in the tile that owns it: none is split or doubled.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from cellsearch_gui.core.segmentation.masks import CellMask


@dataclass(frozen=True)
class Tile:
    index: int
    row: int
    col: int
    y0: int  # read window, image coordinates
    y1: int
    x0: int
    x1: int
    core_y0: int
    core_y1: int
    core_x0: int
    core_x1: int


def tiles(height: int, width: int, size: int, overlap: int) -> Iterator[Tile]:
    if height <= size + 2 * overlap and width <= size + 2 * overlap:
        yield Tile(0, 0, 0, 0, height, 0, width, 0, height, 0, width)
        return
    index = 0
    for row, cy in enumerate(range(0, height, size)):
        for col, cx in enumerate(range(0, width, size)):
            cy1, cx1 = min(cy + size, height), min(cx + size, width)
            yield Tile(index, row, col, max(0, cy - overlap), min(height, cy1 + overlap),
                       max(0, cx - overlap), min(width, cx1 + overlap), cy, cy1, cx, cx1)
            index += 1


def owned(mask: CellMask, tile: Tile, height: int, width: int, drop_image_border: bool) -> str | None:
    """None when this tile keeps the mask (image coordinates), else the reason it is dropped."""
    x0, y0, x1, y1 = mask.bbox
    cy, cx = mask.centroid
    if not (tile.core_y0 <= cy < tile.core_y1 and tile.core_x0 <= cx < tile.core_x1):
        return "centroid in another tile"
    inner_edges = ((y0 <= tile.y0 and tile.y0 > 0) or (y1 >= tile.y1 and tile.y1 < height)
                   or (x0 <= tile.x0 and tile.x0 > 0) or (x1 >= tile.x1 and tile.x1 < width))
    if inner_edges:
        return "cut by the tile edge (overlap smaller than the cell)"
    if drop_image_border and touches_border(mask, height, width):
        return BORDER_REASON
    return None


BORDER_REASON = "touches the image border"


def touches_border(mask: CellMask, height: int, width: int) -> bool:
    """Whether the mask (image coordinates) reaches the image's edge: the cell may be cut by it."""
    x0, y0, x1, y1 = mask.bbox
    return y0 <= 0 or x0 <= 0 or y1 >= height or x1 >= width
