"""Work cut into shards for an engine that runs them elsewhere (``cellsearch_gui.engine``: Ray actors), with
the core's own functions: a shard of crops is embedded with the job of ``embed_crops`` and classified with
``EWCClassifier``; a shard of images is segmented with ``segment_images``. An engine only schedules
``ShardTask``s onto ``ShardWorker``s and hands each result to the ``ShardStore`` (the driver writes every
shard: exactly once, whatever worker died or ran a shard twice). ``LocalShards`` runs them in this process
(the shard path without a cluster: tests, resume)."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from cellsearch_gui.core.app.segment import segment_images
from cellsearch_gui.core.classify.compressed_ewc import CompressedEWC
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams
from cellsearch_gui.core.crops.prepare import with_device_colour
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedJob, EmbedOptions
from cellsearch_gui.core.embedding.runner import ModelRunner
from cellsearch_gui.core.index.library_index import LibraryIndex
from cellsearch_gui.core.io.dataset import CropSet
from cellsearch_gui.core.io.images import read_rgb
from cellsearch_gui.core.io.shards import ShardStore
from cellsearch_gui.core.jobs import CancelToken, Job, Progress, run_job
from cellsearch_gui.core.types import concat_blocks

PREDICTION_ARRAYS = ("label_ids", "k_used", "entropy", "scores", "neighbour_ids", "distances")


@dataclass
class ShardTask:
    name: str  # the shard's folder in the store, e.g. query-00003
    kind: str  # embed, classify or segment
    payload: dict = field(default_factory=dict)


ShardResult = tuple[dict[str, np.ndarray], dict, dict[str, bytes]]  # arrays, JSON record, raw files


class KeptRunner(ModelRunner):
    """A model runner whose network stays loaded from one shard to the next (the job's release() is a no-op)."""

    def release(self) -> None:
        pass

    def free(self) -> None:
        ModelRunner.release(self)


class ShardEmbedJob(EmbedJob):
    """``embed_crops`` for one shard, with the worker's kept runners (models loaded once per worker) and its
    embedding cache; counts the crop-model embeddings it computed and those it found stored."""

    def __init__(self, crops: CropSet, model_ids: list[str], options: EmbedOptions, kept: dict,
                 cache: EmbeddingCache | None = None):
        super().__init__(crops, model_ids, cache or EmbeddingCache(None), options, CancelToken())
        self.kept = kept
        self.computed = self.stored = 0

    def look_up_cache(self) -> None:
        super().look_up_cache()
        self.computed = sum(len(self.missing(runner)) for runner in self.runners)
        self.stored = len(self.first_path) * len(self.runners) - self.computed

    def build_runners(self) -> None:
        o = self.opts
        self.runners = []
        for model in self.model_ids:
            key = (model, o.weights, o.device, o.batch_size, o.seed, repr(o.prep), o.views, o.precision)
            if key not in self.kept:
                self.kept[key] = KeptRunner(model, o.weights, o.device, o.batch_size, o.seed, o.prep, o.views,
                                            o.precision, o.pin_memory)
            self.kept[key].token = self.token
            self.runners.append(self.kept[key])


class ShardWorker:
    """Runs shard tasks with the core's functions. ``shared`` holds what every shard of a job needs once
    (the library features and labels); the classifier is fitted on first use and kept."""

    def __init__(self, shared: dict | None = None):
        self.shared = shared or {}
        self._classifier: EWCClassifier | None = None
        self.kept: dict[tuple, KeptRunner] = {}  # models stay loaded across this worker's shards
        self.caches: dict[str, EmbeddingCache] = {}  # the driver's embedding cache folder, opened once

    def cache(self, folder: str | None) -> EmbeddingCache | None:
        """The embedding cache at ``folder`` (None: none kept). Every worker process has its own connection to
        the one SQLite file: WAL, one writer at a time (a 30 s busy wait), one short transaction per batch."""
        if folder is None:
            return None
        if folder not in self.caches:
            self.caches[folder] = EmbeddingCache(folder)
        return self.caches[folder]

    def run(self, task: ShardTask) -> ShardResult:
        if cwd := task.payload.get("cwd"):  # relative input paths mean what they meant to the driver
            if os.path.isdir(cwd) and os.getcwd() != cwd:
                os.chdir(cwd)
        return {"embed": self.embed, "classify": self.classify, "segment": self.segment}[task.kind](task.payload)

    def embed(self, payload: dict) -> ShardResult:
        crops = CropSet([Path(p) for p in payload["paths"]], list(payload["labels"]))
        options: EmbedOptions = payload["options"]
        job = ShardEmbedJob(crops, payload["models"], options, self.kept, self.cache(payload.get("cache_dir")))
        feats = run_job(job.run())
        index = {str(p): i for i, p in enumerate(crops.paths)}
        rows = np.array([index[str(p)] for p in feats.paths], dtype=np.int64)
        arrays = {"rows": rows, **{f"model_{m}": v for m, v in feats.per_model.items()}}
        record = {"items": len(crops), "skipped": feats.skipped, "prep_notes": feats.prep_notes,
                  "fingerprints": feats.fingerprints, "prep": feats.prep, "timings_s": feats.timings_s,
                  "pid": os.getpid(), "embedded": job.computed, "from_cache": job.stored,
                  "cache_notes": job.cache.notes}
        return arrays, record, {}

    def classifier(self) -> EWCClassifier:
        if self._classifier is None and "compressed" in self.shared:  # the library's index, loaded once
            library = LibraryIndex.from_payload(self.shared["compressed"])
            self._classifier = CompressedEWC(EWCParams(**self.shared["params"]), library, self.shared["rerank"])
        elif self._classifier is None:
            features, labels, params = self.shared["library"]
            self._classifier = EWCClassifier(EWCParams(**params)).fit(features, labels)
        return self._classifier

    def classify(self, payload: dict) -> ShardResult:
        arrays, record, _ = self.embed(payload)
        models, l2 = payload["models"], payload["options"].per_model_l2
        features = concat_blocks([arrays[f"model_{m}"] for m in models], l2)
        if len(features):
            preds = self.classifier().predict(features)
            lookup = {c: i for i, c in enumerate(preds.classes)}
            arrays.update(label_ids=np.array([lookup[c] for c in preds.labels], np.int64), k_used=preds.k_used,
                          entropy=preds.entropy, scores=preds.scores, neighbour_ids=preds.neighbour_ids,
                          distances=preds.distances)
            record["index_kind"] = preds.index_kind
        return arrays, record, {}

    def segment(self, payload: dict) -> ShardResult:
        with tempfile.TemporaryDirectory(prefix="cellsearch-shard-") as tmp:
            summary = run_job(segment_images([Path(p) for p in payload["images"]], tmp, payload["settings"]))
            out = Path(tmp)
            blobs = {"cells.csv": (out / "cells.csv").read_bytes()}
            blobs.update({f"crops/{p.name}": p.read_bytes() for p in sorted((out / "crops").iterdir())})
        return {}, {"summary": summary.as_dict(), "pid": os.getpid()}, blobs


class ShardEngine(Protocol):
    """Runs tasks and writes each finished shard into the store (the driver is the only writer)."""

    def run(self, tasks: list[ShardTask], shared: dict, store: ShardStore, token: CancelToken) -> Job[None]: ...


class LocalShards:
    """Every shard in this process, one after another."""

    def run(self, tasks: list[ShardTask], shared: dict, store: ShardStore, token: CancelToken) -> Job[None]:
        worker = ShardWorker(shared)
        for number, task in enumerate(tasks):
            token.raise_if_cancelled()
            yield Progress("shards", number, len(tasks), task.name)
            store.write(task.name, *worker.run(task))
        yield Progress("shards", len(tasks), len(tasks))


def options_for(crops: CropSet, options: EmbedOptions, pixel_size: float | None) -> EmbedOptions:
    """Per-set options, measured once on the driver (device colour), so that every shard uses the same."""
    prep = dataclasses.replace(options.prep, pixel_size_um=pixel_size)
    prep = with_device_colour(prep, crops.paths, read_rgb)
    return dataclasses.replace(options, prep=prep)


def shard_names(prefix: str, n_items: int, size: int) -> list[tuple[str, slice]]:
    return [(f"{prefix}-{i:05d}", slice(start, start + size)) for i, start in enumerate(range(0, n_items, size))]


def crop_tasks(prefix: str, kind: str, crops: CropSet, models: list[str], options: EmbedOptions,
               size: int, cache_dir: str | None = None) -> list[tuple[ShardTask, slice]]:
    """``kind`` (embed or classify) tasks of ``size`` crops each, with the slice of ``crops`` each covers."""
    return [(ShardTask(name, kind, {"paths": [str(p) for p in crops.paths[part]], "labels": crops.labels[part],
                                    "models": models, "options": options, "cwd": os.getcwd(),
                                    "cache_dir": cache_dir}), part)
            for name, part in shard_names(prefix, len(crops), size)]


def cache_folder(cache: EmbeddingCache | None) -> str | None:
    """The folder of an on-disk embedding cache, for the workers to open (None: kept in memory)."""
    if cache is None or cache.target == ":memory:":
        return None
    return str(Path(cache.target).parent.absolute())


def run_missing(engine: ShardEngine, tasks: list[ShardTask], shared: dict | Callable[[], dict],
                store: ShardStore, token: CancelToken) -> Job[int]:
    """Run the tasks whose shard the store lacks (a damaged one is computed again); the number run."""
    store.check([t.name for t in tasks])
    todo = [t for t in tasks if not store.done(t.name)]
    if todo:
        yield from engine.run(todo, shared() if callable(shared) else shared, store, token)
    return len(todo)
