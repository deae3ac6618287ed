"""One model on one device: input preprocessing and batched forward passes."""

from __future__ import annotations

import contextlib
import time

import numpy as np

from cellsearch_gui.core.crops.prepare import CropPrep
from cellsearch_gui.core.embedding.forward import ForwardOptions, padded, prepare_model
from cellsearch_gui.core.embedding.recipe import CropRecipe
from cellsearch_gui.core.errors import OutOfMemoryError
from cellsearch_gui.core.jobs import CancelToken
from cellsearch_gui.core.models.backends import RANDOM_INIT, build_model
from cellsearch_gui.core.models.checkpoints import require_weights, weights_sha256
from cellsearch_gui.core.models.devices import (
    free_device_memory,
    is_out_of_memory,
    pick_device,
    pick_precision,
)
from cellsearch_gui.core.models.registry import ModelSpec, get_spec

CPU_BATCH, GPU_BATCH = 16, 256


class ModelRunner:
    """One loaded model. ``weights='pretrained'`` uses the model's checkpoint (imported, hub cache, or
    downloaded unless offline); 'random' is explicit.

    ``precision``: autocast dtype (``auto``: fp16 on CUDA, fp32 elsewhere). The batch is capped by the
    model's ``max_batch`` and halved on out-of-memory errors until it fits (``batch_size`` then holds the
    size that worked); ``release()`` frees the model.
    """

    def __init__(self, model_id: str, weights: str = "pretrained", device: str = "auto",
                 batch_size: int | None = None, seed: int = 0, prep: CropPrep | None = None, views: int = 1,
                 precision: str = "auto", pin_memory: bool = True, forward: ForwardOptions | None = None):
        self.spec = get_spec(model_id)
        self.random_init = weights == "random"
        if self.random_init:
            self.weights_id = f"random-seed{seed}"
        else:
            path = require_weights(self.spec)
            self.weights_id = weights_sha256(self.spec, path)
        self.device = pick_device(device)
        self.token: CancelToken | None = None  # set by the job that drives this runner
        self.precision = pick_precision(precision, self.device)
        if batch_size is None:
            self.batch_size = auto_batch_size(self.device, self.spec)
        else:
            self.batch_size = min(batch_size, self.spec.max_batch or batch_size)
        self.pin_memory = pin_memory and self.device.startswith("cuda")  # page-locked host batches copy faster
        self.seed = seed
        self.recipe = CropRecipe.for_model(self.spec, prep)
        if views not in (1, 4, 8):
            raise ValueError(f"views must be 1, 4 (rotations) or 8 (rotations and flips), got {views}")
        self.views = views
        self.forward = forward or ForwardOptions()  # channels-last, SDPA, torch.compile (embedding/forward.py)
        self._model = None
        self._norm = None  # mean and std on the device, shaped for NCHW batches
        self.load_seconds = 0.0  # time spent building the model (and reading its weights)

    @property
    def prep(self) -> CropPrep:
        return self.recipe.prep

    @property
    def fingerprint(self) -> str:
        """Model, weights, recipe (input size, resize rule, crop prep), views and precision: what decides
        a cached vector."""
        views = "" if self.views == 1 else f"|views={self.views}"
        precision = "" if self.precision == "fp32" else f"|{self.precision}"
        return f"{self.spec.id}|{self.weights_id}|{self.recipe.tag()}{views}{precision}"

    def load(self):
        if self._model is None:
            t0 = time.perf_counter()
            ckpt = RANDOM_INIT if self.random_init else None
            self._model = build_model(self.spec, checkpoint=ckpt, seed=self.seed).to(self.device)
            if self.forward != ForwardOptions():
                self._model = prepare_model(self._model, self.forward)
            self.load_seconds += time.perf_counter() - t0
        return self._model

    def release(self) -> None:
        """Drop the model and return its memory (GPU cache included); ``load()`` builds it again."""
        if self._model is not None:
            self._model = None
            free_device_memory(self.device)

    def _autocast(self):
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)

    def embed_arrays(self, images: list[np.ndarray]) -> np.ndarray:
        """Features of each image; with views > 1 the mean over its rotations (and flips): a cell has
        no canonical orientation, so this makes the embedding orientation-invariant."""
        if self.views == 1:
            return self._embed(images)
        rotated = [np.rot90(im, r) for im in images for r in range(4)]
        if self.views == 8:
            rotated += [np.ascontiguousarray(v[:, ::-1]) for v in rotated]
        feats = self._embed([np.ascontiguousarray(v) for v in rotated])
        n = len(images)
        stacked = feats[: 4 * n].reshape(n, 4, -1)
        if self.views == 8:
            stacked = np.concatenate([stacked, feats[4 * n :].reshape(n, 4, -1)], axis=1)
        return stacked.mean(axis=1).astype(np.float32)

    def input_batch(self, images: list[np.ndarray]):
        """The model's input for these crops: uint8 NxSxSx3, in pinned memory on CUDA. Thread-safe, so the
        crop readers build it while the model runs on the previous batch."""
        import torch

        batch = torch.from_numpy(np.stack([self.recipe.resize(im) for im in images]))
        return batch.pin_memory() if self.pin_memory else batch

    def _forward(self, batch):
        """Features of an input batch, left on the device (a GPU runs this asynchronously)."""
        import torch

        model = self.load()
        if self._norm is None:
            self._norm = tuple(torch.tensor(v, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
                               for v in (self.recipe.mean, self.recipe.std))
        mean, std = self._norm
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=self.pin_memory).permute(0, 3, 1, 2).float()
            x = x.div_(255.0).sub_(mean).div_(std)  # recipe.normalise on the device, left channels-last
            if self.forward.fixed_batch:  # a compiled model sees one batch shape
                x, n = padded(x, self.batch_size)
                with self._autocast():
                    return model(x)[:n].float()
            with self._autocast():
                return model(x).float()

    def launch(self, batch, images: list[np.ndarray]):
        """Start the forward pass of ``batch`` (from ``input_batch(images)``): features on the device,
        still being computed on a GPU; ``collect`` brings them back. A batch that does not fit is embedded
        right away in smaller batches instead (numpy array)."""
        if self.views == 1 and len(images) <= self.batch_size:
            if self.token is not None:
                self.token.raise_if_cancelled()
            try:
                return self._forward(batch)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled here
                if not is_out_of_memory(exc):
                    raise
                del exc
                self._shrink_batch()
        return self.embed_arrays(images)

    @staticmethod
    def collect(features) -> np.ndarray:
        """Host copy of ``launch``'s result (waits for the device)."""
        if isinstance(features, np.ndarray):
            return features
        return features.cpu().numpy().astype(np.float32, copy=False)

    def _shrink_batch(self) -> None:
        free_device_memory(self.device)
        if self.batch_size == 1:
            raise OutOfMemoryError(
                f"'{self.spec.id}' does not fit in the memory of {self.device} even one crop at a "
                f"time ({self.precision}). Close other programs using the GPU, use --precision fp16, "
                "--device cpu, or a smaller model.") from None
        self.batch_size = max(1, self.batch_size // 2)  # retry the same crops in smaller batches

    def _embed(self, images: list[np.ndarray]) -> np.ndarray:
        out = []
        start = 0
        while start < len(images):
            if self.token is not None:
                self.token.raise_if_cancelled()  # Cancel acts within one forward pass
            chunk = images[start : start + self.batch_size]
            try:
                out.append(self.collect(self._forward(self.input_batch(chunk))))
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled here
                if not is_out_of_memory(exc):
                    raise
                del exc  # drops the traceback that pins the failed batch's tensors
                self._shrink_batch()
                continue
            start += len(chunk)
        if not out:
            return np.zeros((0, self.spec.dim), np.float32)
        return np.concatenate(out).astype(np.float32)


def resize_for_model(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 HxWx3 -> uint8 SxSx3 at the model's input size (CropRecipe.resize)."""
    return CropRecipe.for_model(spec).resize(image)


def preprocess(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xSxS, resized to the model's input size and normalised (CropRecipe.model_input)."""
    return CropRecipe.for_model(spec).model_input(image)


def auto_batch_size(device: str, spec: ModelSpec) -> int:
    """Crops per forward pass for this device: 16 on the CPU (measured on 2 cores: 8-16 beat 32 by 20-50 %,
    the activations staying in cache), 256 on a GPU (out-of-memory halving then finds what fits); models with
    large activations keep their cap, x8 on a GPU."""
    if device == "cpu":
        return min(CPU_BATCH, spec.max_batch or CPU_BATCH)
    return min(GPU_BATCH, 8 * spec.max_batch) if spec.max_batch else GPU_BATCH
