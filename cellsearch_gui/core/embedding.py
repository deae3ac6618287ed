"""Frozen-model embedding of crops: batched, cached per model, concatenated over a model combination."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellsearch_gui.core.backends import RANDOM_INIT, build_model
from cellsearch_gui.core.dataset import CropSet
from cellsearch_gui.core.embed_cache import EmbeddingCache
from cellsearch_gui.core.errors import BadImageError
from cellsearch_gui.core.images import read_rgb
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.registry import ModelSpec, get_spec
from cellsearch_gui.core.weights import recorded_sha256, require_weights, sha256_of

PREPROCESS_VERSION = "resize-square-v1"


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def preprocess(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xSxS, resized to the model's input size and normalised."""
    import cv2

    size = spec.input_size
    shrink = image.shape[0] > size or image.shape[1] > size
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    x = resized.astype(np.float32) / 255.0
    x = (x - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    return x.transpose(2, 0, 1)


class ModelRunner:
    """One loaded model. ``weights='pretrained'`` uses the imported checkpoint; 'random' is explicit."""

    def __init__(self, model_id: str, weights: str = "pretrained", device: str = "auto",
                 batch_size: int = 32, seed: int = 0):
        self.spec = get_spec(model_id)
        self.random_init = weights == "random"
        if self.random_init:
            self.weights_id = f"random-seed{seed}"
        else:
            path = require_weights(self.spec)
            self.weights_id = recorded_sha256(self.spec) or sha256_of(path)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.seed = seed
        self._model = None

    @property
    def fingerprint(self) -> str:
        return f"{self.spec.id}|{self.weights_id}|{self.spec.input_size}|{PREPROCESS_VERSION}"

    def load(self):
        if self._model is None:
            ckpt = RANDOM_INIT if self.random_init else None
            self._model = build_model(self.spec, checkpoint=ckpt, seed=self.seed).to(self.device)
        return self._model

    def embed_arrays(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        model = self.load()
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = np.stack([preprocess(im, self.spec) for im in images[start : start + self.batch_size]])
                feats = model(torch.from_numpy(batch).to(self.device))
                out.append(feats.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.spec.dim), np.float32)
        return np.concatenate(out).astype(np.float32)


def content_key(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class FeatureSet:
    """Concatenated features for the crops that could be read; ``skipped`` says which could not and why."""

    paths: list[Path]
    labels: list[str | None]
    features: np.ndarray
    model_ids: list[str]
    dims: list[int]
    per_model_l2: bool
    fingerprints: dict[str, str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    per_model: dict[str, np.ndarray] = field(default_factory=dict)

    def select(self, model_ids: list[str], per_model_l2: bool | None = None) -> np.ndarray:
        """Concatenate a sub-combination from the per-model blocks without re-embedding."""
        l2 = self.per_model_l2 if per_model_l2 is None else per_model_l2
        return concat_blocks([self.per_model[m] for m in model_ids], l2)


def concat_blocks(blocks: list[np.ndarray], per_model_l2: bool) -> np.ndarray:
    if per_model_l2:
        blocks = [b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12) for b in blocks]
    return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)


@dataclass
class EmbedOptions:
    weights: str = "pretrained"
    device: str = "auto"
    batch_size: int = 32
    per_model_l2: bool = False
    seed: int = 0


def embed_crops(crops: CropSet, model_ids: list[str], cache: EmbeddingCache,
                options: EmbedOptions | None = None, token: CancelToken | None = None) -> Job[FeatureSet]:
    """Embed every crop with every model (cache first), skip unreadable crops, concatenate."""
    opts = options or EmbedOptions()
    token = token or CancelToken()
    runners = [ModelRunner(m, opts.weights, opts.device, opts.batch_size, opts.seed) for m in model_ids]
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    keys: list[str | None] = []
    t0 = time.perf_counter()
    for i, path in enumerate(crops.paths):
        try:
            keys.append(content_key(path))
        except OSError as exc:
            keys.append(None)
            skipped[str(path)] = f"cannot read ({exc.strerror or exc})"
        if i % 200 == 0:
            token.raise_if_cancelled()
            yield Progress("hashing", i, len(crops))
    timings["hash"] = time.perf_counter() - t0

    vectors: dict[str, dict[str, np.ndarray]] = {}
    for runner in runners:
        t0 = time.perf_counter()
        fp = runner.fingerprint
        wanted = sorted({k for k in keys if k is not None})
        have = cache.get_many(fp, wanted)
        todo = [(p, k) for p, k in zip(crops.paths, keys)
                if k is not None and k not in have and str(p) not in skipped]
        todo = list({k: (p, k) for p, k in todo}.values())  # identical files embed once
        for start in range(0, len(todo), runner.batch_size):
            token.raise_if_cancelled()
            yield Progress(f"embedding {runner.spec.id}", start, len(todo))
            images, batch_keys = [], []
            for path, key in todo[start : start + runner.batch_size]:
                try:
                    images.append(read_rgb(path))
                    batch_keys.append(key)
                except BadImageError as exc:
                    skipped[str(path)] = exc.problem
            if images:
                new = dict(zip(batch_keys, runner.embed_arrays(images)))
                cache.put_many(fp, new)
                have.update(new)
        yield Progress(f"embedding {runner.spec.id}", len(todo), len(todo))
        vectors[runner.spec.id] = have
        timings[f"embed_{runner.spec.id}"] = time.perf_counter() - t0

    keep = [i for i, (p, k) in enumerate(zip(crops.paths, keys))
            if k is not None and str(p) not in skipped and all(k in vectors[m] for m in model_ids)]
    per_model = {m: np.stack([vectors[m][keys[i]] for i in keep]) if keep
                 else np.zeros((0, get_spec(m).dim), np.float32) for m in model_ids}
    features = concat_blocks(list(per_model.values()), opts.per_model_l2) if keep else \
        np.zeros((0, sum(get_spec(m).dim for m in model_ids)), np.float32)
    return FeatureSet(
        paths=[crops.paths[i] for i in keep],
        labels=[crops.labels[i] for i in keep],
        features=features,
        model_ids=list(model_ids),
        dims=[get_spec(m).dim for m in model_ids],
        per_model_l2=opts.per_model_l2,
        fingerprints={r.spec.id: r.fingerprint for r in runners},
        skipped=sorted(skipped.items()),
        timings_s=timings,
        per_model=per_model,
    )
