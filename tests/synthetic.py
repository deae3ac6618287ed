"""Synthetic, clustered "embedding" libraries for benchmarks and tests of the search engine.

A ``SyntheticWorld`` holds classes (imbalanced), each made of a few sub-clusters (cell states), in a
small latent space; every model sees the latent point through its own random linear map plus its own
isotropic noise, optionally through a ReLU (CNN-like features with exact zeros). So the per-model blocks
are correlated the way real backbones' features are, the spectrum decays (a few strong directions, a flat
noise floor), classes overlap, and a library of any size can be drawn in chunks without ever holding
it at fp32 in full.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

# realistic per-model widths of a six-model combination (SAM 256, DINOv2 768, ConvNeXt 1024, Swin 1024,
# CLIP 512, MAE 768: 4,352 dims in all)
SIX_MODELS = {"sam": 256, "dinov2": 768, "convnext": 1024, "swin": 1024, "clip": 512, "mae": 768}


@dataclass
class SyntheticWorld:
    dims: dict[str, int] = field(default_factory=lambda: dict(SIX_MODELS))
    n_classes: int = 8
    latent: int = 32
    states_per_class: int = 4
    separation: float = 0.5  # class centre spread relative to the within-class spread
    noise: float = 1.0  # per-model nuisance variation (decaying spectrum over ``noise_rank`` directions)
    noise_rank: int = 96
    floor: float = 0.35  # isotropic noise per dimension
    relu: tuple[str, ...] = ("convnext", "swin")  # blocks given exact zeros
    seed: int = 0

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        self.class_p = rng.dirichlet(np.full(self.n_classes, 2.0))
        self.centres = rng.normal(size=(self.n_classes, self.latent)) * self.separation
        self.states = self.centres[:, None, :] + rng.normal(
            size=(self.n_classes, self.states_per_class, self.latent)) * 0.6 * self.separation
        self.maps = {m: (rng.normal(size=(self.latent, d)) / np.sqrt(self.latent)).astype(np.float32)
                     for m, d in self.dims.items()}
        decay = (1.0 + np.arange(self.noise_rank)) ** -0.5
        self.nuisance = {m: (rng.normal(size=(self.noise_rank, d)) * decay[:, None] / np.sqrt(decay @ decay)
                             * np.sqrt(self.latent / 8)).astype(np.float32) for m, d in self.dims.items()}
        self.scales = {m: float(rng.uniform(0.5, 4.0)) for m in self.dims}

    @property
    def total_dim(self) -> int:
        return sum(self.dims.values())

    def labels_for(self, y: np.ndarray) -> list[str]:
        return [f"class{v}" for v in y]

    def sample(self, n: int, seed: int, balanced: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """n cells: ({model: (n, d) float32}, class ids)."""
        rng = np.random.default_rng(seed)
        p = np.full(self.n_classes, 1 / self.n_classes) if balanced else self.class_p
        y = rng.choice(self.n_classes, size=n, p=p)
        state = rng.integers(0, self.states_per_class, n)
        z = (self.states[y, state] + rng.normal(size=(n, self.latent))).astype(np.float32)
        blocks = {}
        for m, d in self.dims.items():
            x = z @ self.maps[m]
            x += (rng.standard_normal(size=(n, self.noise_rank), dtype=np.float32) * np.float32(self.noise)) \
                @ self.nuisance[m]
            x += rng.standard_normal(size=(n, d), dtype=np.float32) * np.float32(self.floor)
            if m in self.relu:
                np.maximum(x, 0, out=x)
            x *= np.float32(self.scales[m])
            blocks[m] = x
        return blocks, y

    def chunks(self, n: int, seed: int, chunk: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The concatenated features of n cells, ``chunk`` rows at a time (seed per chunk, reproducible)."""
        for i, start in enumerate(range(0, n, chunk)):
            blocks, y = self.sample(min(chunk, n - start), seed * 1_000_003 + i)
            yield np.concatenate([blocks[m] for m in self.dims], axis=1), y


def concat(blocks: dict[str, np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate(list(blocks.values()), axis=1), dtype=np.float32)
