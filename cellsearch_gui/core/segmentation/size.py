"""The typical cell diameter of a field, measured on the field itself when the user gives none.

The rule (the classical counterpart of cellpose's size model, which regresses the median diameter of the
masks it would find and then refines it on those masks):

1. Find the objects without any size assumption. ``objects='all'``: the stain (or grey-level) foreground,
   thresholded by Otsu; each connected object's size is the diameter of its largest inscribed circle
   (twice its distance-transform maximum), which stays one cell's size even when cells touch in clumps.
   ``objects='nucleated'``: the stained nuclei (``nucleus_map``, independent of any diameter).
2. ``nucleated`` only: nuclei are grouped into cells and grown by a margin, both scaled by the diameter;
   starting from a size no cell exceeds (half the window, at most 4x the largest nucleus), the diameter is
   replaced by the measured one until it settles (at most 4 rounds), as ``find_cell`` does for one crop,
   but never to a size at which more cells appear: lobes of one nucleus join at the large start, and a
   smaller size that splits them again is refused, so a neutrophil or eosinophil counts whole.
3. The typical size is the area-weighted median of the objects' equivalent diameters (2 sqrt(area / pi)):
   the size of the object a stained pixel belongs to. Specks, platelets and debris hold few pixels, so
   they cannot pull it down, however many there are.

The estimate is in working pixels; with a known pixel size it is also said in um and bounded to the
range of real cells (``PLAUSIBLE_UM``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cellsearch_gui.core.segmentation.classical import ClassicalSegmenter, ForegroundModel, nucleus_map
from cellsearch_gui.core.segmentation.fields import plural

ESTIMATE_WINDOW = 2048  # the estimate looks at a central window this many working pixels wide at most
MIN_DIAMETER_PX = 8.0  # below this nothing can be told apart from noise
PLAUSIBLE_UM = (2.0, 60.0)  # platelets to megakaryocytes: an estimate outside is bounded to this range
REFINE_ROUNDS = 4


@dataclass(frozen=True)
class DiameterEstimate:
    diameter_px: float | None  # None: no object found (the caller keeps its fallback)
    objects: int  # how many objects the estimate rests on
    how: str  # one line for the notes


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value below which half the total weight lies."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def _equivalent_diameters(areas: np.ndarray) -> np.ndarray:
    return 2.0 * np.sqrt(areas / np.pi)


def _all_objects(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inscribed-circle diameter, area) per foreground object."""
    import cv2

    fg = ForegroundModel.fit(rgb).apply(rgb).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return np.zeros(0), np.zeros(0)
    dist = cv2.distanceTransform(fg, cv2.DIST_L2, 5)
    radius = np.zeros(n, np.float64)
    np.maximum.at(radius, labels.ravel(), dist.ravel())
    return 2.0 * radius[1:], stats[1:, cv2.CC_STAT_AREA].astype(np.float64)


def _sized(cells: list, diameter: float) -> list:
    """The cells within the segmenter's default size filter (0.25-4x the typical area) at this diameter."""
    area = np.pi / 4 * diameter ** 2
    return [c for c in cells if 0.25 * area <= c.area <= 4 * area]


def _nucleated_size(rgb: np.ndarray) -> tuple[float | None, int]:
    """(settled diameter, cells found at it) of the nucleated cells; (None, 0) without any nucleus."""
    nuclei = nucleus_map(rgb)
    if not nuclei.any():
        return None, 0
    import cv2

    largest = cv2.connectedComponentsWithStats(nuclei, connectivity=8)[2][1:, cv2.CC_STAT_AREA].max()
    start = min(0.5 * min(rgb.shape[:2]), 4.0 * float(_equivalent_diameters(np.array([largest]))[0]))
    finder = ClassicalSegmenter(objects="nucleated", cell_diameter_px=max(start, MIN_DIAMETER_PX))
    cells = _sized(finder.cells_from_nuclei(nuclei), finder.cell_diameter_px)
    for _ in range(REFINE_ROUNDS):
        if not cells:
            return None, 0
        areas = np.array([c.area for c in cells], np.float64)
        measured = max(weighted_median(_equivalent_diameters(areas), areas), MIN_DIAMETER_PX)
        if abs(measured - finder.cell_diameter_px) < 0.05 * finder.cell_diameter_px:
            break
        finer = _sized(replace(finder, cell_diameter_px=measured).cells_from_nuclei(nuclei), measured)
        if len(finer) > len(cells):  # a smaller size splits cells (lobes of one nucleus): keep the larger
            break
        finder.cell_diameter_px, cells = measured, finer
    return finder.cell_diameter_px, len(cells)


def central_window(height: int, width: int, side: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the centred window at most ``side`` wide and tall."""
    h, w = min(height, side), min(width, side)
    y0, x0 = (height - h) // 2, (width - w) // 2
    return y0, y0 + h, x0, x0 + w


def estimate_diameter(rgb: np.ndarray, objects: str, pixel_size_um: float | None = None) -> DiameterEstimate:
    """The typical diameter (working pixels) of the ``objects`` in ``rgb`` (see the module's rule)."""
    if objects == "nucleated":
        diameter, count = _nucleated_size(rgb)
        counted = plural(count, "nucleated cell")
    else:
        sizes, areas = _all_objects(rgb)
        keep = sizes >= MIN_DIAMETER_PX
        count, counted = int(keep.sum()), plural(int(keep.sum()), "object")
        diameter = weighted_median(sizes[keep], areas[keep]) if count else None
    if diameter is None:
        return DiameterEstimate(None, 0, "no object found to measure the cell size on")
    how = f"estimated {diameter:.0f} px from {counted} in the image"
    if pixel_size_um:
        low, high = (um / pixel_size_um for um in PLAUSIBLE_UM)
        bounded = float(np.clip(diameter, low, high))
        how += f" ({diameter * pixel_size_um:.1f} um at {pixel_size_um:g} um/px"
        how += f", bounded to {bounded:.0f} px: cells are {PLAUSIBLE_UM[0]:g}-{PLAUSIBLE_UM[1]:g} um)" \
            if bounded != diameter else ")"
        diameter = bounded
    return DiameterEstimate(round(diameter, 1), count, how)
