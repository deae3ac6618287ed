"""Colour and contrast normalisation of cell crops: CLAHE, Reinhard, Macenko, grayscale.

Reinhard matches each LAB channel's mean and standard deviation to fixed targets, per image or (device
Reinhard) with one transform per device computed from the cell pixels of a sample of its crops; Macenko estimates the
two stain vectors (haematoxylin-like and eosin-like) of each image in optical density space and maps
the stain concentrations onto a fixed reference. Both targets are constants of the method, not fitted
to any data set, so every device is mapped to the same appearance.
"""

from __future__ import annotations

import numpy as np

from cellsearch_gui.core.options import ColourMode

COLOUR_MODES = tuple(ColourMode)

# Reinhard target: LAB (OpenCV 8-bit scale) statistics of a typical May-Gruenwald-Giemsa smear crop.
REINHARD_MEAN = np.array([190.0, 140.0, 118.0])
REINHARD_STD = np.array([35.0, 9.0, 9.0])
# Macenko reference stain matrix (columns: nucleus stain, eosin-like stain) and 99th-percentile concentrations.
MACENKO_REF = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
MACENKO_MAX_C = np.array([1.9705, 1.0308])


def reinhard(rgb: np.ndarray, mask: np.ndarray | None = None, stats=None) -> np.ndarray:
    """Match LAB mean/std to the target; ``stats`` (mean, std) of a whole device instead of this image
    keeps the colour differences between cells of one device (eosinophil red vs neutrophil lilac)."""
    import cv2

    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    if stats is not None:
        mean, std = np.asarray(stats[:3]), np.asarray(stats[3:]) + 1e-6
    else:
        sample = lab[mask] if mask is not None and mask.any() else lab.reshape(-1, 3)
        mean, std = sample.mean(0), sample.std(0) + 1e-6
    out = (lab - mean) / std * REINHARD_STD + REINHARD_MEAN
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def macenko(rgb: np.ndarray, beta: float = 0.15, alpha: float = 1.0) -> np.ndarray:
    """Macenko et al. 2009; returns the input unchanged when too little stain is present to fit."""
    od = -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1) / 256)
    tissue = od[(od > beta).all(axis=1)]
    if len(tissue) < 50:
        return rgb
    _, vecs = np.linalg.eigh(np.cov(tissue.T))
    plane = vecs[:, 1:3]
    proj = tissue @ plane
    angles = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(angles, [alpha, 100 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    stains = np.array([v1, v2]).T if v1[0] > v2[0] else np.array([v2, v1]).T
    stains *= np.sign(stains.sum(0, keepdims=True)) + (stains.sum(0, keepdims=True) == 0)
    conc = np.linalg.lstsq(stains, od.T, rcond=None)[0]
    max_c = np.percentile(conc, 99, axis=1)
    conc *= (MACENKO_MAX_C / np.maximum(max_c, 1e-6))[:, None]
    out = 256 * np.exp(-(MACENKO_REF @ conc)) - 1
    return np.clip(out.T.reshape(rgb.shape), 0, 255).astype(np.uint8)


def grayscale(rgb: np.ndarray) -> np.ndarray:
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return np.repeat(gray[:, :, None], 3, axis=2)


def lab_statistics(crops: list[np.ndarray], masks: list[np.ndarray | None]) -> tuple[float, ...]:
    """LAB mean and std over the cell pixels of a sample of one device's crops."""
    import cv2

    pixels = [cv2.cvtColor(c, cv2.COLOR_RGB2LAB).reshape(-1, 3)[m.ravel()] if m is not None and m.any()
              else cv2.cvtColor(c, cv2.COLOR_RGB2LAB).reshape(-1, 3) for c, m in zip(crops, masks)]
    data = np.concatenate(pixels).astype(np.float64)
    return tuple(round(float(v), 2) for v in (*data.mean(0), *data.std(0)))


def normalise_colour(rgb: np.ndarray, mode: str, mask: np.ndarray | None = None, stats=None) -> np.ndarray:
    if mode == "none":
        return rgb
    if mode == "clahe":
        return apply_clahe(rgb)
    if mode == "reinhard":
        return reinhard(rgb, mask)
    if mode == "device_reinhard":
        if stats is None:
            raise ValueError("device_reinhard needs the device's colour statistics")
        return reinhard(rgb, stats=stats)
    if mode == "macenko":
        return macenko(rgb)
    if mode == "grayscale":
        return grayscale(rgb)
    raise ValueError(f"unknown colour normalisation '{mode}'; choose one of {', '.join(COLOUR_MODES)}")


def apply_clahe(rgb: np.ndarray, clip: float = 2.0, grid: int = 8) -> np.ndarray:
    """CLAHE on the lightness channel (LAB), so colours keep their hue."""
    import cv2

    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid)).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
