"""Frozen-model embedding of crops: batched, cached per model, concatenated over a model combination."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cellsearch_gui.core.crops.prepare import CropPrep, prepare_crop, with_device_colour
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.runner import ModelRunner
from cellsearch_gui.core.errors import BadImageError, Cancelled
from cellsearch_gui.core.io.checksums import content_key
from cellsearch_gui.core.io.dataset import CropSet
from cellsearch_gui.core.io.images import read_rgb
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.models.registry import get_spec
from cellsearch_gui.core.types import FeatureSet, concat_blocks


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
