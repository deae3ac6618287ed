"""classify / evaluate / segment through shards: plan the shards, let an engine run the missing ones, and
merge them into the very values and files the local jobs give (FeatureSets and Predictions in input
order; cells.csv, crops/ and segment.json). A re-run with the same inputs and settings finds its shards
in the same folder and skips them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from cellsearch_gui import __version__
from cellsearch_gui.core.app.experiments import Inputs
from cellsearch_gui.core.app.results import SegmentSummary
from cellsearch_gui.core.app.sharded import (
    PREDICTION_ARRAYS,
    ShardEngine,
    ShardTask,
    cache_folder,
    crop_tasks,
    options_for,
    run_missing,
    shard_names,
)
from cellsearch_gui.core.classify.compressed_ewc import CompressedEWC
from cellsearch_gui.core.classify.ewc import EWCParams, Predictions, encode_labels
from cellsearch_gui.core.crops.records import CSV_COLUMNS
from cellsearch_gui.core.app.compressed_library import open_library_index
from cellsearch_gui.core.embedding.cache import EmbeddingCache, default_cache_dir
from cellsearch_gui.core.embedding.job import EmbedOptions
from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.io.atomic import disk_errors
from cellsearch_gui.core.io.dataset import CropSet
from cellsearch_gui.core.io.images import collect_images
from cellsearch_gui.core.io.shards import ShardStore
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.models.registry import get_spec
from cellsearch_gui.core.segmentation.fields import ImageResult
from cellsearch_gui.core.segmentation.settings import SegmentSettings
from cellsearch_gui.core.types import FeatureSet, concat_blocks

DEFAULT_SHARD_CROPS = 256
DEFAULT_SHARD_IMAGES = 4


def job_key(job: dict) -> str:
    """A short name for a job description (the default work folder of its shards)."""
    text = json.dumps(job, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _listing(crops: CropSet) -> str:
    text = "\n".join(f"{p}\t{label}" for p, label in zip(crops.paths, crops.labels))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def classify_job_description(inputs: Inputs, models: list[str], params: EWCParams, options: EmbedOptions,
                             shard_size: int) -> dict:
    return {"kind": "classify", "app_version": __version__, "models": list(models),
            "reference": _listing(inputs.reference), "query": _listing(inputs.query),
            "pixel_sizes": [inputs.reference_pixel_size, inputs.query_pixel_size],
            "options": dataclasses.asdict(options), "params": params.as_dict(), "shard_size": shard_size}


def embedding_counts(store: ShardStore, parts: list[tuple[ShardTask, slice]]) -> tuple[int, int]:
    """Crop-model embeddings the workers computed and found in the embedding cache, over the shards of
    ``parts`` run now (shards reused from the work folder computed nothing)."""
    records = [store.record(task.name) for task, _ in parts if task.name in store.written]
    return sum(r.get("embedded", 0) for r in records), sum(r.get("from_cache", 0) for r in records)


def merge_features(store: ShardStore, parts: list[tuple[ShardTask, slice]], crops: CropSet,
                   models: list[str], options: EmbedOptions) -> FeatureSet:
    """The shards' features as one FeatureSet, rows in input order, as ``embed_crops`` gives them."""
    keep, blocks, skipped, notes, timings = [], {m: [] for m in models}, [], [], {}
    records = []
    for task, part in parts:
        keep += (store.read(task.name, "rows") + part.start).tolist()
        for m in models:
            blocks[m].append(store.read(task.name, f"model_{m}"))
        record = store.record(task.name)
        records.append(record)
        skipped += [tuple(item) for item in record["skipped"]]
        notes += [tuple(item) for item in record["prep_notes"]]
        for key, value in record["timings_s"].items():
            timings[key] = timings.get(key, 0.0) + value
    dims = [get_spec(m).dim for m in models]
    per_model = {m: np.concatenate(blocks[m]).astype(np.float32) if blocks[m] else np.zeros((0, d), np.float32)
                 for m, d in zip(models, dims)}
    ids = crops.ids()
    return FeatureSet(
        paths=[crops.paths[i] for i in keep], labels=[crops.labels[i] for i in keep],
        features=concat_blocks(list(per_model.values()), options.per_model_l2) if keep
        else np.zeros((0, sum(dims)), np.float32),
        model_ids=list(models), dims=dims, per_model_l2=options.per_model_l2,
        fingerprints=records[0]["fingerprints"] if records else {}, skipped=sorted(skipped), timings_s=timings,
        per_model=per_model, prep=records[0]["prep"] if records else options.prep.as_dict(), prep_notes=notes,
        cell_ids=[ids[i] for i in keep])


def merge_predictions(store: ShardStore, parts: list[tuple[ShardTask, slice]], classes: list[str]) -> Predictions:
    found = [task.name for task, _ in parts if "label_ids.npy" in store.shards[task.name]["files"]]
    arrays = {key: np.concatenate([store.read(name, key) for name in found]) for key in PREDICTION_ARRAYS}
    kinds = {store.record(name).get("index_kind", "flat") for name in found}
    return Predictions([classes[i] for i in arrays["label_ids"]], arrays["k_used"], arrays["entropy"],
                       arrays["scores"], list(classes), arrays["neighbour_ids"], arrays["distances"],
                       kinds.pop() if len(kinds) == 1 else "mixed")


def sharded_classify_job(inputs: Inputs, models: list[str], params: EWCParams, options: EmbedOptions,
                         engine: ShardEngine, work_dir: str | Path | None = None,
                         shard_size: int = DEFAULT_SHARD_CROPS, token: CancelToken | None = None,
                         cache: EmbeddingCache | None = None, compressed: tuple[str | Path, int] | None = None
                         ) -> Job[tuple[FeatureSet, FeatureSet, Predictions, dict]]:
    """``classify_job`` through shards: the library is embedded shard by shard, its features and labels go to
    the workers once, and every query shard is embedded and classified where it runs. ``work_dir`` None:
    a folder named after the job in the cache folder (the same inputs and settings resume there). ``cache``:
    the embedding cache the workers use too. ``compressed`` (library folder, rerank): the library's
    compressed index instead, shipped to the workers once; the library is not embedded."""
    token = token or CancelToken()
    description = classify_job_description(inputs, models, params, options, shard_size)
    opened = None
    if compressed is not None:
        opened, ref = open_library_index(compressed[0], inputs.reference, models, options, params.metric,
                                         inputs.reference_pixel_size)
        description.update(index=opened.meta["files"], rerank=compressed[1])
    work_dir = work_dir or default_cache_dir() / "shards" / job_key(description)
    store, folder = ShardStore(Path(work_dir), description), cache_folder(cache)
    t0 = time.perf_counter()
    ref_parts = []
    if opened is None:
        ref, ref_parts = yield from _embed_reference(inputs, models, options, engine, store, shard_size, token, folder)
        shared = {"library": (ref.features, ref.labels, params.as_dict())}
    else:
        shared = {"compressed": opened.payload(), "rerank": compressed[1], "params": params.as_dict()}
    t_ref = time.perf_counter()
    query_opts = options_for(inputs.query, options, inputs.query_pixel_size)
    query_parts = crop_tasks("query", "classify", inputs.query, models, query_opts, shard_size, folder)
    yield from run_missing(engine, [t for t, _ in query_parts], shared, store, token)
    query = merge_features(store, query_parts, inputs.query, models, query_opts)
    classes = opened.classes if opened is not None else encode_labels(ref.labels)[0]
    preds = merge_predictions(store, query_parts, classes) if len(query.paths) else None
    if opened is not None and preds is not None:  # calibrated on the driver, as the local engine does
        preds = CompressedEWC(params, opened, compressed[1]).calibrated(preds)
    return ref, query, preds, _finish(inputs, store, ref_parts + query_parts, t_ref - t0,
                                      time.perf_counter() - t_ref)


def _embed_reference(inputs: Inputs, models: list[str], options: EmbedOptions, engine: ShardEngine,
                     store: ShardStore, shard_size: int, token: CancelToken, folder: str | None
                     ) -> Job[tuple[FeatureSet, list[tuple[ShardTask, slice]]]]:
    ref_opts = options_for(inputs.reference, options, inputs.reference_pixel_size)
    ref_parts = crop_tasks("reference", "embed", inputs.reference, models, ref_opts, shard_size, folder)
    yield from run_missing(engine, [t for t, _ in ref_parts], {}, store, token)
    ref = merge_features(store, ref_parts, inputs.reference, models, ref_opts)
    if len(ref.paths) == 0:
        raise DatasetError("none of the reference images could be read: " + "; ".join(
            f"{p}: {why}" for p, why in ref.skipped[:5]))
    return ref, ref_parts


def sharded_embed_job(inputs: Inputs, models: list[str], options: EmbedOptions, engine: ShardEngine,
                      work_dir: str | Path | None = None, shard_size: int = DEFAULT_SHARD_CROPS,
                      token: CancelToken | None = None, cache: EmbeddingCache | None = None
                      ) -> Job[tuple[FeatureSet, FeatureSet]]:
    """``embed_both`` through shards (what ``evaluate --shots`` embeds on the workers before its protocol)."""
    token = token or CancelToken()
    description = {**classify_job_description(inputs, models, EWCParams(), options, shard_size), "kind": "embed"}
    description.pop("params")
    store = ShardStore(Path(work_dir or default_cache_dir() / "shards" / job_key(description)), description)
    folder = cache_folder(cache)
    t0 = time.perf_counter()
    ref, ref_parts = yield from _embed_reference(inputs, models, options, engine, store, shard_size, token, folder)
    t_ref = time.perf_counter()
    query_opts = options_for(inputs.query, options, inputs.query_pixel_size)
    query_parts = crop_tasks("query", "embed", inputs.query, models, query_opts, shard_size, folder)
    yield from run_missing(engine, [t for t, _ in query_parts], {}, store, token)
    query = merge_features(store, query_parts, inputs.query, models, query_opts)
    timings = _finish(inputs, store, ref_parts + query_parts, t_ref - t0, time.perf_counter() - t_ref)
    ref.timings_s = {**ref.timings_s, **timings}
    return ref, query


def _finish(inputs: Inputs, store: ShardStore, parts: list[tuple[ShardTask, slice]], ref_s: float,
            query_s: float) -> dict:
    """The job's timings and counts; the store's notes and the embedding counts join the inputs' notes."""
    run = sum(1 for task, _ in parts if task.name in store.written)
    computed, cached = embedding_counts(store, parts)
    inputs.notes.extend(store.notes)
    inputs.notes.append(f"embeddings on the workers: {computed} computed, {cached} from the embedding cache "
                        f"({len(parts) - run} of {len(parts)} shards reused from the work folder)")
    return {"reference_shards_s": ref_s, "query_shards_s": query_s, "shards_run": float(run),
            "shards_reused": float(len(parts) - run), "embeddings_computed": float(computed),
            "embeddings_from_cache": float(cached)}


def sharded_segment_job(inputs: list[str | Path], out_dir: str | Path, settings: SegmentSettings,
                        engine: ShardEngine, images_per_shard: int = DEFAULT_SHARD_IMAGES,
                        token: CancelToken | None = None, work_dir: str | Path | None = None) -> Job[SegmentSummary]:
    """``segment_images`` through shards of images; writes the same cells.csv, crops/ and segment.json
    (shards stay in ``work_dir``, default ``out_dir/shards``, for a resumed run)."""
    token = token or CancelToken()
    out = Path(out_dir)
    images, problems = collect_images(inputs)
    description = {"kind": "segment", "app_version": __version__, "images": [str(p) for p in images],
                   "settings": dataclasses.asdict(settings), "shard_size": images_per_shard}
    store = ShardStore(Path(work_dir or out / "shards"), description)
    tasks = [ShardTask(name, "segment", {"images": [str(p) for p in images[part]], "settings": settings,
                                         "cwd": os.getcwd()})
             for name, part in shard_names("images", len(images), images_per_shard)]
    yield from run_missing(engine, tasks, {}, store, token)
    yield Progress("merging shards", 0, 1)
    per_image: list[ImageResult] = []
    with disk_errors(out, "write the segmentation results"):
        (out / "crops").mkdir(parents=True, exist_ok=True)
        with open(out / "cells.csv", "wb") as handle:
            for number, task in enumerate(tasks):
                text = store.blob_path(task.name, "cells.csv").read_bytes()
                handle.write(text if number == 0 else text.split(b"\n", 1)[1])
                for file_name in store.shards[task.name]["files"]:
                    if file_name.startswith("crops/"):
                        shutil.copyfile(store.blob_path(task.name, file_name), out / file_name)
                summary = store.record(task.name)["summary"]
                per_image += [ImageResult(**r) for r in summary["per_image"]]
                problems += summary["problems"]
        if not tasks:
            (out / "cells.csv").write_text(",".join(CSV_COLUMNS) + "\r\n", encoding="utf-8")
        result = SegmentSummary(app_version=__version__,
                                settings={**dataclasses.asdict(settings),
                                          "normalisation": settings.normalisation.as_dict()},
                                images=len(images), cells=sum(r.cells for r in per_image), per_image=per_image,
                                problems=problems + store.notes)
        (out / "segment.json").write_text(json.dumps(result.as_dict(), indent=1, default=str))
    yield Progress("merging shards", 1, 1)
    return result
