"""Cell outlines and label images from the masks the project keeps (bbox-sized RLE in source pixels), and one
colour per class shared by every export and the report."""

from __future__ import annotations

import numpy as np

from cellsearch_gui.core.segmentation.masks import decode_rle
from cellsearch_gui.core.types import Cell

# the window's class colours (gui/pixmaps.py PALETTE: matplotlib's tab10 and two more), by class index
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120)]
UNCLASSIFIED_COLOUR = (160, 160, 160)


def class_colours(classes: list[str]) -> dict[str, tuple[int, int, int]]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(classes)}


def cell_mask(cell: Cell) -> np.ndarray | None:
    """The cell's bbox-sized mask, or None when the cell has none (a ready-made crop) or it does not fit."""
    if not cell.mask_rle or not cell.bbox:
        return None
    try:
        mask = decode_rle(cell.mask_rle)
    except (ValueError, IndexError):
        return None
    x0, y0, x1, y1 = cell.bbox
    return mask if mask.shape == (y1 - y0, x1 - x0) and mask.any() else None


def outline_rings(cell: Cell) -> list[list[list[list[float]]]]:
    """GeoJSON polygon coordinates (one polygon per connected part, outer ring then holes) in the source image's
    pixel coordinates, through the centres of the boundary pixels (pixel (x, y) spans [x, x+1))."""
    import cv2

    mask = cell_mask(cell)
    if mask is None:
        return []
    x0, y0 = cell.bbox[0], cell.bbox[1]
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []

    def ring(contour: np.ndarray) -> list[list[float]]:
        points = [[float(x + x0) + 0.5, float(y + y0) + 0.5] for x, y in contour.reshape(-1, 2)]
        while len(points) < 3:  # a one- or two-pixel part: a degenerate but valid ring
            points.append(list(points[-1]))
        return points + [points[0]]

    polygons = []
    for index, (_, _, _, parent) in enumerate(hierarchy[0]):
        if parent < 0:
            holes = [ring(contours[j]) for j, h in enumerate(hierarchy[0]) if h[3] == index]
            polygons.append([ring(contours[index])] + holes)
    return polygons


def paint_labels(shape: tuple[int, int], cells: list[Cell], values: list[int]) -> np.ndarray:
    """A label image: each cell's mask painted with its value (later cells over earlier ones)."""
    image = np.zeros(shape, np.uint32)
    for cell, value in zip(cells, values):
        mask = cell_mask(cell)
        if mask is None:
            continue
        x0, y0, x1, y1 = cell.bbox
        x1, y1 = min(x1, shape[1]), min(y1, shape[0])
        if x1 <= x0 or y1 <= y0:
            continue
        region = image[y0:y1, x0:x1]
        region[mask[: y1 - y0, : x1 - x0]] = value
    return image
