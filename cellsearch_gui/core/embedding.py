"""Frozen-model embedding of crops: batched, cached per model, concatenated over a model combination."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cellsearch_gui.core.backends import RANDOM_INIT, build_model
from cellsearch_gui.core.cellcrop import CropPrep, prepare_crop, with_device_colour
from cellsearch_gui.core.dataset import CropSet
from cellsearch_gui.core.embed_cache import EmbeddingCache
from cellsearch_gui.core.errors import BadImageError, Cancelled, CellSearchError, OutOfMemoryError
from cellsearch_gui.core.images import read_rgb
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.registry import ModelSpec, get_spec
from cellsearch_gui.core.weights import require_weights, weights_sha256

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


PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def pick_precision(requested: str, device: str) -> str:
    """``auto``: fp16 on CUDA (autocast; features within the tolerance tested in test_devices.py), else fp32."""
    if requested not in PRECISIONS:
        raise CellSearchError(f"precision '{requested}' is not one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    return "fp16" if device.startswith("cuda") else "fp32"


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def free_device_memory(device: str) -> None:
    """Return a released model's GPU memory. Nothing to do on the CPU: a full gc.collect() there would
    hold Python's lock for a quarter of a second and pause the window, for no gain."""
    import torch

    if device == "cpu":
        return
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and getattr(torch, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def resize_for_model(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 HxWx3 -> uint8 SxSx3 at the model's input size (area-averaged when shrinking)."""
    import cv2

    size = spec.input_size
    shrink = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def preprocess(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xSxS, resized to the model's input size and normalised."""
    x = resize_for_model(image, spec).astype(np.float32) / 255.0
    x = (x - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    return x.transpose(2, 0, 1)


CPU_BATCH, GPU_BATCH = 16, 256


def auto_batch_size(device: str, spec: ModelSpec) -> int:
    """Crops per forward pass for this device: 16 on the CPU (measured on 2 cores: 8-16 beat 32 by 20-50 %,
    the activations staying in cache), 256 on a GPU (out-of-memory halving then finds what fits); models with
    large activations keep their cap, x8 on a GPU."""
    if device == "cpu":
        return min(CPU_BATCH, spec.max_batch or CPU_BATCH)
    return min(GPU_BATCH, 8 * spec.max_batch) if spec.max_batch else GPU_BATCH


class ModelRunner:
    """One loaded model. ``weights='pretrained'`` uses the model's checkpoint (imported, hub cache, or
    downloaded unless offline); 'random' is explicit.

    ``precision``: autocast dtype (``auto``: fp16 on CUDA, fp32 elsewhere). The batch is capped by the
    model's ``max_batch`` and halved on out-of-memory errors until it fits (``batch_size`` then holds the
    size that worked); ``release()`` frees the model.
    """

    def __init__(self, model_id: str, weights: str = "pretrained", device: str = "auto",
                 batch_size: int | None = None, seed: int = 0, prep: CropPrep | None = None, views: int = 1,
                 precision: str = "auto", pin_memory: bool = True):
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
        self.prep = prep or CropPrep()
        if views not in (1, 4, 8):
            raise ValueError(f"views must be 1, 4 (rotations) or 8 (rotations and flips), got {views}")
        self.views = views
        self._model = None
        self._norm = None  # mean and std on the device, shaped for NCHW batches
        self.load_seconds = 0.0  # time spent building the model (and reading its weights)

    @property
    def fingerprint(self) -> str:
        views = "" if self.views == 1 else f"|views={self.views}"
        precision = "" if self.precision == "fp32" else f"|{self.precision}"
        return (f"{self.spec.id}|{self.weights_id}|{self.spec.input_size}|{PREPROCESS_VERSION}|"
                f"{self.prep.tag()}{views}{precision}")

    def load(self):
        if self._model is None:
            t0 = time.perf_counter()
            ckpt = RANDOM_INIT if self.random_init else None
            self._model = build_model(self.spec, checkpoint=ckpt, seed=self.seed).to(self.device)
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

        batch = torch.from_numpy(np.stack([resize_for_model(im, self.spec) for im in images]))
        return batch.pin_memory() if self.pin_memory else batch

    def _forward(self, batch):
        """Features of an input batch, left on the device (a GPU runs this asynchronously)."""
        import torch

        model = self.load()
        if self._norm is None:
            self._norm = tuple(torch.tensor(v, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
                               for v in (self.spec.mean, self.spec.std))
        mean, std = self._norm
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=self.pin_memory).permute(0, 3, 1, 2).float()
            x = x.div_(255.0).sub_(mean).div_(std)  # normalised on the device, left channels-last
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
    prep: dict = field(default_factory=dict)
    prep_notes: list[tuple[str, str]] = field(default_factory=list)

    def append_rows(self, other: "FeatureSet", rows: list[int], labels: list[str]) -> None:
        """Take ``other``'s crops at ``rows`` in, with these labels (query cells joining a reference library)."""
        self.paths += [other.paths[i] for i in rows]
        self.labels += list(labels)
        self.features = np.concatenate([self.features, other.features[rows]])
        for model in self.per_model:
            self.per_model[model] = np.concatenate([self.per_model[model], other.per_model[model][rows]])

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
    batch_size: int | None = None  # None: sized to the device (auto_batch_size)
    per_model_l2: bool = False
    seed: int = 0
    prep: CropPrep = field(default_factory=CropPrep)
    views: int = 1  # 4: mean over rotations; 8: rotations and flips
    precision: str = "auto"  # auto (fp16 on CUDA, fp32 elsewhere), fp32, fp16, bf16
    # True: each model is loaded, run over all crops and released before the next one (only one model in
    # memory; crops are read once per model). False: every batch goes through all models (crops read once,
    # all models in memory). None: sequential on a GPU, interleaved on the CPU.
    sequential_models: bool | None = None
    prefetch: bool = True  # read and prepare the next batch while the models run on this one
    read_workers: int | None = None  # threads reading and preparing crops; None: 1 on the CPU, more on a GPU
    pin_memory: bool = True  # CUDA: model inputs in page-locked memory, copied to the GPU asynchronously


def use_read_workers(option: int | None, device: str) -> int:
    """The option when given; else one reader on the CPU (its cores run the models), and on a GPU up to 8,
    leaving two cores for the job thread and the driver."""
    import os

    if option is not None:
        return max(1, option)
    return 1 if device == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 2))


def use_sequential_models(option: bool | None, device: str, n_models: int) -> bool:
    """The option when given; else one model at a time on a GPU (its memory is the scarce resource)."""
    if option is not None:
        return option
    return device != "cpu" and n_models > 1


def _read_one(path: Path, prep: CropPrep):
    """(image, None, prep record) for a readable crop, else (None, problem, None)."""
    try:
        image = read_rgb(path)
    except BadImageError as exc:
        return None, exc.problem, None
    if not prep.active:
        return image, None, None
    image, record = prepare_crop(image, prep)
    return image, None, json.dumps(asdict(record))


def _prefetched(chunks: list, read):
    """read(chunk) for each chunk in order, the next chunk read on a worker thread while the caller runs
    the models on the current one (decoding and crop preparation release Python's lock for the most part)."""
    if not chunks:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="cellsearch-read") as pool:
        future = pool.submit(read, chunks[0])
        for number in range(len(chunks)):
            result = future.result()
            if number + 1 < len(chunks):
                future = pool.submit(read, chunks[number + 1])
            yield result


@dataclass
class _Batch:
    """One batch of crops as read: images, their content keys, and each model's input for the crops it
    still needs (positions in the batch, input tensor)."""

    images: list
    keys: list
    skipped: dict
    records: dict
    inputs: dict


def embed_crops(crops: CropSet, model_ids: list[str], cache: EmbeddingCache,
                options: EmbedOptions | None = None, token: CancelToken | None = None) -> Job[FeatureSet]:
    """Embed every crop with every model (cache first), skip unreadable crops, concatenate.

    Progress: stage "hashing", then stage "embedding" counting crops (interleaved) or crop-model pairs
    (sequential), ending at done == total. Models are released when the job ends (sequential: as soon as
    each one is done).
    """
    opts = options or EmbedOptions()
    token = token or CancelToken()
    if opts.prep.colour == "device_reinhard" and opts.prep.device_colour is None:
        import dataclasses

        yield Progress("measuring device colour", 0, 1)
        opts = dataclasses.replace(opts, prep=with_device_colour(opts.prep, crops.paths, read_rgb))
    runners = [ModelRunner(m, opts.weights, opts.device, opts.batch_size, opts.seed, opts.prep, opts.views,
                           opts.precision, opts.pin_memory) for m in model_ids]
    for runner in runners:
        runner.token = token
    prep_tag = opts.prep.tag()
    prep_records: dict[str, str] = {}
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

    wanted = sorted({k for k in keys if k is not None})
    vectors = {r.spec.id: cache.get_many(r.fingerprint, wanted) for r in runners}
    first_path = {}
    for path, key in zip(crops.paths, keys):
        if key is not None and str(path) not in skipped:
            first_path.setdefault(key, path)  # identical files are read and embedded once

    def store(runner: ModelRunner, batch_keys: list, launched, t_model: float) -> None:
        new = dict(zip(batch_keys, runner.collect(launched)))
        cache.put_many(runner.fingerprint, new)
        vectors[runner.spec.id].update(new)
        name = f"embed_{runner.spec.id}"
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t_model

    def save_prep_records() -> None:
        if prep_records:
            cache.put_meta(prep_tag, prep_records)
            prep_records.clear()

    def read(chunk, active: list[ModelRunner]) -> _Batch:  # runs on reader threads
        chunk = [k for k in chunk if str(first_path[k]) not in skipped]  # found unreadable by an earlier model
        results = list(map_crops(lambda key: _read_one(first_path[key], opts.prep), chunk))
        batch = _Batch([], [], {}, {}, {})
        for key, (image, problem, record) in zip(chunk, results):
            if image is None:
                batch.skipped[str(first_path[key])] = problem
                continue
            if record is not None:
                batch.records[key] = record
            batch.images.append(image)
            batch.keys.append(key)
        for runner in active:
            need = [i for i, k in enumerate(batch.keys) if k not in vectors[runner.spec.id]]
            if need and runner.views == 1:
                batch.inputs[runner.spec.id] = (need, runner.input_batch([batch.images[i] for i in need]))
            elif need:
                batch.inputs[runner.spec.id] = (need, None)  # several views: embed_arrays builds them
        return batch

    def batches(chunks, active):
        reader = (lambda chunk: read(chunk, active))
        source = _prefetched(chunks, reader) if opts.prefetch else map(reader, chunks)
        for batch in source:
            skipped.update(batch.skipped)
            prep_records.update(batch.records)
            yield batch

    def run_models(chunks, active, message, done, total):
        """Each batch through the active models; a batch's features are collected while the device runs
        the next one (on the CPU this is plain sequential work)."""
        pending = []
        try:
            for chunk, batch in zip(chunks, batches(chunks, active)):
                token.raise_if_cancelled()
                yield Progress("embedding", done, total, message)
                launched = []
                for runner in active:
                    if runner.spec.id not in batch.inputs:
                        continue
                    need, tensor = batch.inputs[runner.spec.id]
                    t_model = time.perf_counter()
                    images = [batch.images[i] for i in need]
                    result = runner.launch(tensor, images) if tensor is not None else runner.embed_arrays(images)
                    launched.append((runner, [batch.keys[i] for i in need], result, t_model))
                for item in pending:
                    store(*item)
                pending = launched
                save_prep_records()
                done += len(chunk)
        except Cancelled:
            for item in pending:  # finished work is kept
                store(*item)
            raise
        for item in pending:
            store(*item)

    workers = use_read_workers(opts.read_workers, runners[0].device if runners else "cpu")
    sequential = use_sequential_models(opts.sequential_models, runners[0].device if runners else "cpu",
                                       len(runners))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers, thread_name_prefix="cellsearch-crop") as crop_pool:
        map_crops = crop_pool.map if workers > 1 else map
        try:
            if sequential:
                plan = [(r, [k for k in first_path if k not in vectors[r.spec.id]]) for r in runners]
                total, done = sum(len(todo) for _, todo in plan), 0
                for n, (runner, todo) in enumerate(plan, 1):
                    chunks = [todo[i : i + runner.batch_size] for i in range(0, len(todo), runner.batch_size)]
                    yield from run_models(chunks, [runner], f"{runner.spec.id} (model {n} of {len(plan)})", done,
                                          total)
                    done += len(todo)
                    runner.release()
            else:
                todo = [k for k in first_path if any(k not in vectors[r.spec.id] for r in runners)]
                total = len(todo)
                batch_size = max(r.batch_size for r in runners)
                chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
                yield from run_models(chunks, runners, "+".join(model_ids), 0, total)
            yield Progress("embedding", total, total, "+".join(model_ids))
        finally:
            for runner in runners:
                runner.release()
    timings["embed_total"] = time.perf_counter() - t0
    timings.update({f"load_{r.spec.id}": r.load_seconds for r in runners if r.load_seconds})

    keep = [i for i, (p, k) in enumerate(zip(crops.paths, keys))
            if k is not None and str(p) not in skipped and all(k in vectors[m] for m in model_ids)]
    per_model = {m: np.stack([vectors[m][keys[i]] for i in keep]) if keep
                 else np.zeros((0, get_spec(m).dim), np.float32) for m in model_ids}
    features = concat_blocks(list(per_model.values()), opts.per_model_l2) if keep else \
        np.zeros((0, sum(get_spec(m).dim for m in model_ids)), np.float32)
    notes = []
    if opts.prep.active:
        stored = cache.get_meta(prep_tag, [keys[i] for i in keep])
        for i in keep:
            note = json.loads(stored[keys[i]])["note"] if keys[i] in stored else ""
            if note:
                notes.append((str(crops.paths[i]), note))
    return FeatureSet(
        prep=opts.prep.as_dict(),
        prep_notes=notes,
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
