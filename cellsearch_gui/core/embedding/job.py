"""Frozen-model embedding of crops: batched, cached per model, concatenated over a model combination."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellsearch_gui.core import validation
from cellsearch_gui.core.crops.prepare import CropPrep, with_device_colour
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.library_features import LibraryFeatures
from cellsearch_gui.core.embedding.prep_workers import PrepWorkers
from cellsearch_gui.core.embedding.prepared import CropSource
from cellsearch_gui.core.embedding.reading import Batch, CropReader
from cellsearch_gui.core.embedding.runner import ModelRunner
from cellsearch_gui.core.errors import Cancelled
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
    read_workers: int | None = None  # threads reading crops and building model inputs; None: 1 on the CPU, more on a GPU
    # processes decoding and preparing crops (each crop once per run); 0: on the reader threads instead;
    # None: sized to the cores (use_prep_workers)
    prep_workers: int | None = None
    pin_memory: bool = True  # CUDA: model inputs in page-locked memory, copied to the GPU asynchronously

    def __post_init__(self) -> None:
        """Every field checked against its domain (core/validation.py): a zero batch size never ends."""
        validation.WEIGHTS.check(self.weights)
        validation.check_device(self.device)
        validation.BATCH_SIZE.check(self.batch_size)
        validation.SEED.check(self.seed)
        validation.check_views(self.views)
        validation.PRECISION.check(self.precision)
        validation.READ_WORKERS.check(self.read_workers)
        validation.PREP_WORKERS.check(self.prep_workers)


def use_read_workers(option: int | None, device: str) -> int:
    """The option when given; else one reader on the CPU (its cores run the models), and on a GPU up to 8,
    leaving two cores for the job thread and the driver."""

    if option is not None:
        return max(1, option)
    return 1 if device == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 2))


def use_prep_workers(option: int | None, device: str, n_crops: int) -> int:
    """The option when given (0: no processes, crops prepared on the reader threads); else none for fewer
    than PROCESS_MIN_CROPS crops (starting processes would cost more than they save), CPU_PREP_WORKERS on
    the CPU (its cores run the models) and, beside a GPU, one per core but two, up to 16."""
    if option is not None:
        return option
    if n_crops < PROCESS_MIN_CROPS:
        return 0
    return CPU_PREP_WORKERS if device == "cpu" else max(1, min(16, (os.cpu_count() or 2) - 2))


def use_sequential_models(option: bool | None, device: str, n_models: int) -> bool:
    """The option when given; else one model at a time on a GPU (its memory is the scarce resource)."""
    if option is not None:
        return option
    return device != "cpu" and n_models > 1


PROCESS_MIN_CROPS = 64  # fewer crops than this are prepared on the reader threads
CPU_PREP_WORKERS = 1  # on the CPU the cores run the models: one process, like the one reader thread before

Launched = tuple[ModelRunner, list[str], object, float]  # runner, content keys, launch result, start time


class EmbedJob:
    """One embedding run, phase by phase: measure the device colour (device_reinhard), hash the crops, look
    them up in the cache, compute what is missing (crops read on reader threads, each batch launched on the
    device while the previous one is collected, every finished batch stored at once, so Cancel keeps it) and
    assemble the FeatureSet. ``run()`` is the generator job."""

    def __init__(self, crops: CropSet, model_ids: list[str], cache: EmbeddingCache, options: EmbedOptions,
                 token: CancelToken):
        self.crops, self.model_ids, self.cache = crops, list(model_ids), cache
        self.opts, self.token = options, token
        self.runners: list[ModelRunner] = []
        self.keys: list[str | None] = []  # content key of each crop, None when it cannot be read
        self.skipped: dict[str, str] = {}  # path: why it was left out
        self.vectors: dict[str, dict[str, np.ndarray]] = {}  # model: {content key: vector}
        self.first_path: dict[str, Path] = {}  # content key: the one file read for it
        self.prep_records: dict[str, str] = {}  # content key: prep record (JSON) not yet stored
        self.reader: CropReader | None = None  # set while the crops are being computed
        self.source: CropSource | None = None  # the run's prepared crops (counts preparations)
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []  # what the job decided for the user (library features not used...)

    def run(self) -> Job[FeatureSet]:
        yield from self.measure_device_colour()
        self.build_runners()
        yield from self.hash_crops()
        self.look_up_cache()
        yield from self.compute_missing()
        return self.assemble()

    # --- plan: which crops, which models, what the cache already holds ---------------------------------
    def measure_device_colour(self) -> Job[None]:
        prep = self.opts.prep
        if prep.colour == "device_reinhard" and prep.device_colour is None:
            yield Progress("measuring device colour", 0, 1)
            measured = with_device_colour(prep, self.crops.paths, read_rgb)
            self.opts = dataclasses.replace(self.opts, prep=measured)

    def build_runners(self) -> None:
        o = self.opts
        self.runners = [ModelRunner(m, o.weights, o.device, o.batch_size, o.seed, o.prep, o.views, o.precision,
                                    o.pin_memory) for m in self.model_ids]
        for runner in self.runners:
            runner.token = self.token

    def hash_crops(self) -> Job[None]:
        t0 = time.perf_counter()
        paths = self.crops.paths
        for i, path in enumerate(paths):
            try:
                self.keys.append(content_key(path))
            except OSError as exc:
                self.keys.append(None)
                self.skipped[str(path)] = f"cannot read ({exc.strerror or exc})"
            if i % 200 == 0:
                self.token.raise_if_cancelled()
                yield Progress("hashing", i, len(paths))
        self.timings["hash"] = time.perf_counter() - t0

    def look_up_cache(self) -> None:
        """The cache first, then the features stored with the crops' library (library_features)."""
        wanted = sorted({k for k in self.keys if k is not None})
        self.vectors = {r.spec.id: self.cache.get_many(r.fingerprint, wanted) for r in self.runners}
        stored = LibraryFeatures(self.crops.paths)
        for runner in self.runners if stored.libraries else []:
            stored.fill(runner.fingerprint, wanted, self.vectors[runner.spec.id])
        self.notes += stored.notes
        for path, key in zip(self.crops.paths, self.keys):
            if key is not None and str(path) not in self.skipped:
                self.first_path.setdefault(key, path)  # identical files are read and embedded once

    @property
    def crops_prepared(self) -> int:
        """Crops decoded and prepared in this run (each at most once, whatever the number of models)."""
        return self.source.prepared if self.source is not None else 0

    def missing(self, runner: ModelRunner) -> list[str]:
        return [k for k in self.first_path if k not in self.vectors[runner.spec.id]]

    # --- compute: batches through the models -----------------------------------------------------------
    def compute_missing(self) -> Job[None]:
        device = self.runners[0].device if self.runners else "cpu"
        workers = use_read_workers(self.opts.read_workers, device)
        sequential = use_sequential_models(self.opts.sequential_models, device, len(self.runners))
        t0 = time.perf_counter()
        to_prepare = sum(any(k not in self.vectors[r.spec.id] for r in self.runners) for k in self.first_path)
        processes = use_prep_workers(self.opts.prep_workers, device, to_prepare)
        window = max([16 * processes] + [2 * r.batch_size for r in self.runners])
        with ThreadPoolExecutor(workers, thread_name_prefix="cellsearch-crop") as crop_pool:
            map_crops = crop_pool.map if workers > 1 else map
            pool = PrepWorkers(processes, self.opts.prep, self.token, window) if processes else None
            self.source = CropSource(self.first_path, self.opts.prep, map_crops, pool)
            self.reader = CropReader(self.first_path, self.source, self.vectors, self.skipped, self.opts.prefetch)
            try:
                total = yield from (self.models_in_turn() if sequential else self.models_together())
                yield Progress("embedding", total, total, "+".join(self.model_ids))
            finally:
                self.source.close()
                for runner in self.runners:
                    runner.release()
        self.timings["embed_total"] = time.perf_counter() - t0
        self.timings.update({f"load_{r.spec.id}": r.load_seconds for r in self.runners if r.load_seconds})

    def models_in_turn(self) -> Job[int]:
        """One model at a time over the crops it lacks, released when done; progress counts crop-model pairs."""
        plan = [(runner, self.missing(runner)) for runner in self.runners]
        total, done = sum(len(todo) for _, todo in plan), 0
        for number, (runner, todo) in enumerate(plan, 1):
            self.reader.begin_pass(todo, set().union(*(later for _, later in plan[number:])))
            message = f"{runner.spec.id} (model {number} of {len(plan)})"
            yield from self.run_models(chunked(todo, runner.batch_size), [runner], message, done, total)
            done += len(todo)
            runner.release()
        return total

    def models_together(self) -> Job[int]:
        """Every batch through all models; progress counts crops."""
        todo = [k for k in self.first_path if any(k not in self.vectors[r.spec.id] for r in self.runners)]
        batch_size = max(r.batch_size for r in self.runners)
        self.reader.begin_pass(todo, set())
        yield from self.run_models(chunked(todo, batch_size), self.runners, "+".join(self.model_ids), 0, len(todo))
        return len(todo)

    def run_models(self, chunks: list[list[str]], active: list[ModelRunner], message: str, done: int,
                   total: int) -> Job[None]:
        """Each batch through the active models; a batch's features are collected while the device runs
        the next one (on the CPU this is plain sequential work)."""
        pending: list[Launched] = []
        try:
            for chunk, batch in zip(chunks, self.batches(chunks, active)):
                self.token.raise_if_cancelled()
                yield Progress("embedding", done, total, message)
                launched = self.launch(batch, active)
                for item in pending:
                    self.store(*item)
                pending = launched
                self.save_prep_records()
                done += len(chunk)
        except Cancelled:
            for item in pending:  # finished work is kept
                self.store(*item)
            raise
        for item in pending:
            self.store(*item)

    def batches(self, chunks: list[list[str]], active: list[ModelRunner]) -> Iterator[Batch]:
        """The batches as read, their unreadable crops and prep records taken in on the job's thread."""
        for batch in self.reader.batches(chunks, active):
            self.skipped.update(batch.skipped)
            self.prep_records.update(batch.records)
            yield batch

    def launch(self, batch: Batch, active: list[ModelRunner]) -> list[Launched]:
        """Start each model on the crops it needs (asynchronous on a GPU); several views run at once."""
        launched = []
        for runner in active:
            if runner.spec.id not in batch.inputs:
                continue
            need, tensor = batch.inputs[runner.spec.id]
            t_model = time.perf_counter()
            images = [batch.images[i] for i in need]
            result = runner.launch(tensor, images) if tensor is not None else runner.embed_arrays(images)
            launched.append((runner, [batch.keys[i] for i in need], result, t_model))
        return launched

    # --- store: into the cache as each batch finishes --------------------------------------------------
    def store(self, runner: ModelRunner, batch_keys: list[str], launched, t_model: float) -> None:
        new = dict(zip(batch_keys, runner.collect(launched)))
        self.cache.put_many(runner.fingerprint, new)
        self.vectors[runner.spec.id].update(new)
        name = f"embed_{runner.spec.id}"
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t_model

    def save_prep_records(self) -> None:
        if self.prep_records:
            self.cache.put_meta(self.opts.prep.tag(), self.prep_records)
            self.prep_records.clear()

    # --- assemble: the crops every model embedded, in input order ---------------------------------------
    def kept_rows(self) -> list[int]:
        return [i for i, (p, k) in enumerate(zip(self.crops.paths, self.keys))
                if k is not None and str(p) not in self.skipped and all(k in self.vectors[m] for m in self.model_ids)]

    def prep_notes(self, keep: list[int]) -> list[tuple[str, str]]:
        if not self.opts.prep.active:
            return []
        stored = self.cache.get_meta(self.opts.prep.tag(), [self.keys[i] for i in keep])
        notes = []
        for i in keep:
            note = json.loads(stored[self.keys[i]])["note"] if self.keys[i] in stored else ""
            if note:
                notes.append((str(self.crops.paths[i]), note))
        return notes

    def assemble(self) -> FeatureSet:
        keep, dims = self.kept_rows(), [get_spec(m).dim for m in self.model_ids]
        per_model = {m: np.stack([self.vectors[m][self.keys[i]] for i in keep]) if keep
                     else np.zeros((0, dim), np.float32) for m, dim in zip(self.model_ids, dims)}
        features = concat_blocks(list(per_model.values()), self.opts.per_model_l2) if keep else \
            np.zeros((0, sum(dims)), np.float32)
        cell_ids = self.crops.ids()
        return FeatureSet(
            prep=self.opts.prep.as_dict(),
            prep_notes=self.prep_notes(keep),
            paths=[self.crops.paths[i] for i in keep],
            cell_ids=[cell_ids[i] for i in keep],
            labels=[self.crops.labels[i] for i in keep],
            features=features,
            model_ids=list(self.model_ids),
            dims=dims,
            per_model_l2=self.opts.per_model_l2,
            fingerprints={r.spec.id: r.fingerprint for r in self.runners},
            skipped=sorted(self.skipped.items()),
            timings_s=self.timings,
            per_model=per_model,
            notes=list(self.notes),
        )


def chunked(keys: list[str], size: int) -> list[list[str]]:
    return [keys[i : i + size] for i in range(0, len(keys), size)]


def embed_crops(crops: CropSet, model_ids: list[str], cache: EmbeddingCache,
                options: EmbedOptions | None = None, token: CancelToken | None = None) -> Job[FeatureSet]:
    """Embed every crop with every model (cache first), skip unreadable crops, concatenate.

    Progress: stage "hashing", then stage "embedding" counting crops (interleaved) or crop-model pairs
    (sequential), ending at done == total. Models are released when the job ends (sequential: as soon as
    each one is done).
    """
    job = EmbedJob(crops, model_ids, cache, options or EmbedOptions(), token or CancelToken())
    return (yield from job.run())
