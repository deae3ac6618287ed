"""Contrast normalisation (CLAHE) and magnification adaptation (rescaling to a target pixel size)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Normalisation:
    clahe: bool = False
    clahe_clip: float = 2.0
    clahe_grid: int = 8
    target_pixel_size_um: float | None = None
    colour: str = "none"  # none | reinhard | macenko | grayscale (CLAHE via ``clahe``)

    def scale_for(self, pixel_size_um: float | None) -> float:
        """Rescale factor = source um/px / target um/px (1 when either is unknown)."""
        if not self.target_pixel_size_um or not pixel_size_um:
            return 1.0
        return pixel_size_um / self.target_pixel_size_um

    def as_dict(self) -> dict:
        return asdict(self)


def apply_clahe(rgb: np.ndarray, clip: float = 2.0, grid: int = 8) -> np.ndarray:
    """CLAHE on the lightness channel (LAB), so colours keep their hue."""
    import cv2

    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid)).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def rescale(image: np.ndarray, scale: float, nearest: bool = False) -> np.ndarray:
    import cv2

    if abs(scale - 1.0) < 1e-6:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return cv2.resize(image, size, interpolation=interp)
