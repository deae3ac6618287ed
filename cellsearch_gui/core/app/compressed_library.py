"""A reference library larger than memory: build its compressed index once (``build_compressed_job``:
embed the library shard by shard with the embedding cache, keep each shard's fp32 features on disk, train
PCA + IVF-PQ on a sample of shards, add the shards one by one, save next to the library) and classify
against it (``compressed_classify_job``: classify_job's result, EWC over the compressed neighbours).
Library index files: core/index/library_index.py."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from cellsearch_gui import __version__
from cellsearch_gui.core.app.experiments import Inputs
from cellsearch_gui.core.app.sharded import ShardEngine, cache_folder, crop_tasks, options_for, run_missing, shard_names
from cellsearch_gui.core.classify.compressed_ewc import CompressedEWC
from cellsearch_gui.core.classify.ewc import EWCParams, Predictions, encode_labels
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
from cellsearch_gui.core.embedding.runner import ModelRunner
from cellsearch_gui.core.errors import DatasetError
from cellsearch_gui.core.index.compressed import DEFAULT_RERANK, PQ_CODES, CompressedIndex
from cellsearch_gui.core.index.library_index import (
    INDEX_DIR,
    META_FILE,
    VECTORS_DIR,
    LibraryIndex,
    LibraryIndexError,
    index_folder,
    index_key,
    listing_digest,
    read_meta,
    save_index,
    vectors_store,
)
from cellsearch_gui.core.io.dataset import CropSet, scan_class_folders
from cellsearch_gui.core.io.shards import ShardError
from cellsearch_gui.core.jobs import CancelToken, Job, Progress
from cellsearch_gui.core.models.registry import get_spec
from cellsearch_gui.core.types import FeatureSet, concat_blocks

BUILD_SHARD_CROPS = 4096  # library crops embedded, written and added at a time
TRAIN_SHARDS = 8  # evenly spaced shards whose cells train the PCA and the lists
BUILD_HINT = "'cellsearch library compress LIBRARY --models ...' with this command's crop options and --metric"


def model_fingerprints(models: list[str], options: EmbedOptions) -> dict[str, str]:
    """What decides each model's vectors (weights, crop recipe, views, precision): the cache's keys."""
    o = options
    return {m: ModelRunner(m, o.weights, o.device, o.batch_size, o.seed, o.prep, o.views, o.precision).fingerprint
            for m in models}


def _description(library: Path, reference: CropSet, models: list[str], options: EmbedOptions, metric: str) -> dict:
    fingerprints = model_fingerprints(models, options)
    return {"key": index_key(fingerprints, options.per_model_l2, metric), "models": list(models),
            "fingerprints": fingerprints, "per_model_l2": options.per_model_l2, "metric": metric,
            "listing": listing_digest(library, reference.paths, reference.labels), "prep": options.prep.as_dict(),
            "app_version": __version__}


def build_compressed_job(library: str | Path, models: list[str], cache: EmbeddingCache, options: EmbedOptions,
                         metric: str = "l2", pca: int = 256, pq_bytes: int = 64, nlist: int = 0,
                         pixel_size: float | None = None, shard_size: int = BUILD_SHARD_CROPS,
                         token: CancelToken | None = None, engine: ShardEngine | None = None) -> Job[dict]:
    """Build (or finish building: finished shards are kept) the library's compressed index; its description.
    ``engine`` (e.g. Ray actors) embeds the shards elsewhere; None: in this process."""
    token, library = token or CancelToken(), Path(library)
    reference = scan_class_folders(library)
    options = options_for(reference, options, pixel_size)
    meta = _description(library, reference, models, options, metric)
    folder = index_folder(library, meta["key"])
    try:
        store = vectors_store(folder, meta)
    except ShardError:  # the shards of an older listing of the library: start again
        shutil.rmtree(folder / VECTORS_DIR)
        store = vectors_store(folder, meta)
    t0, notes = time.perf_counter(), []
    if engine is None:
        names = yield from _embed_here(reference, models, cache, options, store, shard_size, token)
    else:
        parts = crop_tasks("cells", "embed", reference, models, options, shard_size, cache_folder(cache))
        writer = VectorShardWriter(store, models, options.per_model_l2, {t.name: part.start for t, part in parts})
        ran = yield from run_missing(engine, [task for task, _ in parts], {}, writer, token)
        names = [task.name for task, _ in parts]
        notes.append(f"{ran} of {len(parts)} shards embedded on the workers ({writer.embedded} crop-model "
                     f"embeddings computed, {writer.from_cache} found in the embedding cache); the others were "
                     "already built" if ran < len(parts) else
                     f"{ran} shards embedded on the workers ({writer.embedded} crop-model embeddings computed, "
                     f"{writer.from_cache} found in the embedding cache)")
    kept = np.concatenate([store.read(name, "rows") for name in names]) if names else np.zeros(0, np.int64)
    if len(kept) < PQ_CODES:
        raise DatasetError(f"{library}: {len(kept)} readable cells; a compressed index needs at least {PQ_CODES} "
                           "(search a library this small exactly: leave out --index compressed)")
    classes, label_ids, _ = encode_labels([reference.labels[i] for i in kept])
    sizes = [int(store.read(name, "rows").shape[0]) for name in names]
    meta.update(classes=classes, label_ids=label_ids.tolist(), vector_shards=names,
                shard_offsets=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist(),
                skipped_rows=sorted(set(range(len(reference))) - set(kept.tolist())), embed_s=time.perf_counter() - t0)
    index = yield from _train_and_fill(store, names, sizes, metric, pca, pq_bytes, nlist, len(kept), token)
    meta["build_s"] = time.perf_counter() - t0
    return {**save_index(folder, index, meta), "folder": str(folder), "notes": store.notes + notes}


def _embed_here(reference: CropSet, models: list[str], cache: EmbeddingCache, options: EmbedOptions, store,
                shard_size: int, token: CancelToken) -> Job[list[str]]:
    """Embed the library shard by shard in this process, skipping the shards the store holds."""
    parts = shard_names("cells", len(reference), shard_size)
    store.check([name for name, _ in parts])
    for number, (name, part) in enumerate(parts):
        yield Progress("library shards", number, len(parts), name)
        if not store.done(name):
            crops = reference.subset(list(range(len(reference)))[part])
            feats = yield from embed_crops(crops, models, cache, options, token)
            where = {str(p): i for i, p in enumerate(crops.paths)}
            rows = np.array([where[str(p)] + part.start for p in feats.paths], dtype=np.int64)
            store.write(name, {"features": feats.features, "rows": rows}, {"skipped": feats.skipped})
    return [name for name, _ in parts]


class VectorShardWriter:
    """The library's vector store as an engine's shard store: an embed shard's per-model blocks are written
    as the one feature matrix (and library rows) the local build writes."""

    def __init__(self, store, models: list[str], per_model_l2: bool, starts: dict[str, int]):
        self.store, self.models, self.per_model_l2, self.starts = store, models, per_model_l2, starts
        self.embedded = self.from_cache = 0

    def __getattr__(self, name):  # check, done, notes, ...: the store's own
        return getattr(self.store, name)

    def write(self, name: str, arrays: dict, record: dict | None = None, blobs: dict | None = None) -> None:
        record = record or {}
        self.embedded += record.get("embedded", 0)
        self.from_cache += record.get("from_cache", 0)
        features = concat_blocks([arrays[f"model_{m}"] for m in self.models], self.per_model_l2)
        self.store.write(name, {"features": features, "rows": arrays["rows"] + self.starts[name]},
                         {"skipped": record.get("skipped", [])})


def _train_and_fill(store, names: list[str], sizes: list[int], metric: str, pca: int, pq_bytes: int, nlist: int,
                    n: int, token: CancelToken) -> Job[CompressedIndex]:
    yield Progress("training the compressed index", 0, 1)
    filled = [name for name, size in zip(names, sizes) if size]
    chosen = filled[:: max(1, len(filled) // TRAIN_SHARDS)][:TRAIN_SHARDS]
    sample = np.concatenate([store.read(name, "features") for name in chosen])
    index = CompressedIndex(metric=metric, pca=pca, pq_bytes=pq_bytes, nlist=nlist).train(sample, n)
    del sample
    for number, name in enumerate(filled):
        token.raise_if_cancelled()
        yield Progress("adding shards to the index", number, len(filled), name)
        index.add(np.asarray(store.read(name, "features", mmap=True)))
    yield Progress("adding shards to the index", len(filled), len(filled))
    return index


def _missing_message(library: Path, models: list[str], metric: str) -> str:
    found = []
    for meta_path in sorted((library / INDEX_DIR).glob(f"compressed-*/{META_FILE}")):
        try:
            meta = read_meta(meta_path.parent)
            same = meta["models"] == list(models) and meta["metric"] == metric
            found.append(f"{','.join(meta['models'])}, metric {meta['metric']}, per-model L2 "
                         f"{meta['per_model_l2']}" + (" (other crop options or weights)" if same else ""))
        except LibraryIndexError as exc:
            found.append(str(exc))
    others = f"; it holds compressed indexes for other settings: {'; '.join(found)}" if found else ""
    return (f"{library} has no compressed index for {','.join(models)} with this command's crop options, weights "
            f"and metric {metric}: build it once with {BUILD_HINT}{others}")


def open_library_index(library: str | Path, reference: CropSet, models: list[str], options: EmbedOptions,
                       metric: str, pixel_size: float | None = None) -> tuple[LibraryIndex, FeatureSet]:
    """The library's compressed index for these models and options, checked against the library as it is
    now, and the reference as a FeatureSet without features (paths, labels and ids of the index's cells)."""
    library = Path(library)
    options = options_for(reference, options, pixel_size)
    meta = _description(library, reference, models, options, metric)
    folder = index_folder(library, meta["key"])
    if not (folder / META_FILE).exists():
        raise LibraryIndexError(_missing_message(library, models, metric))
    opened = LibraryIndex.open(folder)
    if opened.meta["listing"] != meta["listing"]:
        raise LibraryIndexError(f"{folder} was built from another listing of {library} ({opened.meta['n_cells']} "
                                f"cells; the reference now has {len(reference)}: files added, removed or renamed, "
                                f"or --classes/--split chose part of it); build it again with {BUILD_HINT}")
    skipped = set(opened.meta["skipped_rows"])
    kept = [i for i in range(len(reference)) if i not in skipped]
    ids, dims = reference.ids(), [get_spec(m).dim for m in models]
    ref = FeatureSet(paths=[reference.paths[i] for i in kept], labels=[reference.labels[i] for i in kept],
                     features=np.zeros((len(kept), 0), np.float32), model_ids=list(models), dims=dims,
                     per_model_l2=options.per_model_l2, fingerprints=meta["fingerprints"],
                     prep=options.prep.as_dict(), cell_ids=[ids[i] for i in kept],
                     notes=[f"neighbours from the compressed index {folder}"])
    return opened, ref


def compressed_classify_job(inputs: Inputs, library: str | Path, models: list[str], params: EWCParams,
                            cache: EmbeddingCache, options: EmbedOptions, rerank: int = DEFAULT_RERANK,
                            token: CancelToken | None = None
                            ) -> Job[tuple[FeatureSet, FeatureSet, Predictions | None, dict]]:
    """``classify_job`` against the library's compressed index: only the queries are embedded."""
    token = token or CancelToken()
    t0 = time.perf_counter()
    opened, ref = open_library_index(library, inputs.reference, models, options, params.metric,
                                     inputs.reference_pixel_size)
    timings = {"index_open": time.perf_counter() - t0}
    query = yield from embed_crops(inputs.query, models, cache, options_for(inputs.query, options,
                                                                            inputs.query_pixel_size), token)
    timings.update({f"query_{k}": v for k, v in query.timings_s.items()})
    t0 = time.perf_counter()
    classifier = CompressedEWC(params, opened, rerank)
    preds = classifier.predict(query.features) if len(query.paths) else None
    timings["classify"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = classifier.calibrated(preds) if preds is not None else None
    timings["calibrate"] = time.perf_counter() - t0
    return ref, query, preds, timings
