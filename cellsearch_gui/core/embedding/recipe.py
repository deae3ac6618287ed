"""How a crop becomes a model's input, in one place: the crop preparation (``CropPrep``: find the cell,
centre, scale, mask, colour; the same for every model, done once per crop) and the model's side (a square
resize to its input size, then its mean and std). ``tag()`` is the recipe's part of the cache fingerprint."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cellsearch_gui.core.crops.prepare import CropPrep, PrepRecord, prepare_crop
from cellsearch_gui.core.models.registry import ModelSpec

PREPROCESS_VERSION = "resize-square-v1"  # the resize rule of ``CropRecipe.resize``; part of every fingerprint


@dataclass(frozen=True)
class CropRecipe:
    """Crop file -> model input: ``prepare`` (crop level), then ``resize`` (uint8, the model's square input)
    and ``normalise`` (float32, the model's mean/std; on a GPU this runs on the device, see ModelRunner)."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    prep: CropPrep = field(default_factory=CropPrep)
    resize_rule: str = PREPROCESS_VERSION  # area-averaged when shrinking, bilinear when enlarging

    @classmethod
    def for_model(cls, spec: ModelSpec, prep: CropPrep | None = None) -> CropRecipe:
        return cls(spec.input_size, tuple(spec.mean), tuple(spec.std), prep or CropPrep())

    def tag(self) -> str:
        """Input size, resize rule and prep tag; mean and std are fixed by the model id the fingerprint
        starts with, so they are not repeated (fingerprints of existing caches stay as they are)."""
        return f"{self.input_size}|{self.resize_rule}|{self.prep.tag()}"

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, PrepRecord]:
        return prepare_crop(image, self.prep)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 -> uint8 SxSx3 at the model's input size."""
        import cv2

        size = self.input_size
        shrink = image.shape[0] > size or image.shape[1] > size
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def normalise(self, resized: np.ndarray) -> np.ndarray:
        """uint8 SxSx3 -> float32 3xSxS, scaled to [0, 1] and standardised with the model's mean and std."""
        x = resized.astype(np.float32) / 255.0
        x = (x - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        return x.transpose(2, 0, 1)

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """A prepared crop as the model sees it (the reference path; ModelRunner normalises on the device)."""
        return self.normalise(self.resize(image))
