"""numpy images -> Qt pixmaps, thumbnails with a small cache, and one colour per class."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PySide6.QtGui import QColor, QImage, QPixmap

from cellsearch_gui.core.errors import BadImageError
from cellsearch_gui.core.io.images import read_rgb

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78"]


def class_colour(classes: list[str], label: str | None) -> QColor:
    if label is None or label not in classes:
        return QColor("#ffffff")
    return QColor(PALETTE[classes.index(label) % len(PALETTE)])


def to_qimage(rgb: np.ndarray) -> QImage:
    rgb = np.ascontiguousarray(rgb[:, :, :3], dtype=np.uint8)
    height, width = rgb.shape[:2]
    return QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


@lru_cache(maxsize=2048)
def thumbnail(path: str, size: int = 96) -> QPixmap:
    """A cell crop as a square thumbnail; a grey tile when the file cannot be read."""
    import cv2


    try:
        rgb = read_rgb(path)
    except BadImageError:
        rgb = np.full((size, size, 3), 128, np.uint8)
    scale = size / max(rgb.shape[:2])
    small = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    return QPixmap.fromImage(to_qimage(small))
