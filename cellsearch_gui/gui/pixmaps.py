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


def luminance(colour: QColor) -> float:
    """WCAG relative luminance of an sRGB colour."""
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(colour.redF()) + 0.7152 * linear(colour.greenF()) + 0.0722 * linear(colour.blueF())


def contrast(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio (1 to 21; 4.5 and above reads well)."""
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def readable_background(colour: QColor) -> QColor:
    """Near-black or near-white, whichever stands out more from ``colour``: a class name on a smear."""
    dark, light = QColor(0, 0, 0, 215), QColor(255, 255, 255, 225)
    return dark if contrast(colour, QColor("black")) >= contrast(colour, QColor("white")) else light


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
