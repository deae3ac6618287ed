"""Crop reading for the embedding job: take each batch's prepared crops from the run's CropSource (prepared.py),
build each model's input, and read the next batch ahead while the models run on this one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellsearch_gui.core.embedding.prepared import CropSource
from cellsearch_gui.core.embedding.runner import ModelRunner
from cellsearch_gui.core.embedding.staging import Staging


def prefetched(chunks: list, read: Callable) -> Iterator:
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
class Batch:
    """One batch of crops as read: images, their content keys, the crops found unreadable (path: problem),
    the prep records (key: JSON) and each model's input for the crops it still needs (positions in the
    batch, input tensor or None when the runner builds its own views)."""

    images: list[np.ndarray] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    records: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, tuple[list[int], object]] = field(default_factory=dict)


class CropReader:
    """Reads crops by content key from the run's ``source`` (each crop prepared once per run). It looks at
    the job's ``vectors`` (what each model still needs) and ``skipped`` (crops an earlier model found
    unreadable) but never writes them: ``read`` runs on a reader thread, and the job merges each batch's
    findings on its own thread."""

    def __init__(self, first_path: dict[str, Path], source: CropSource, vectors: dict[str, dict],
                 skipped: dict[str, str], prefetch: bool = True):
        self.first_path, self.source = first_path, source
        self.vectors, self.skipped = vectors, skipped
        self.prefetch = prefetch
        self.staging = Staging()  # CUDA: inputs resized into reused pinned buffers

    def begin_pass(self, keys: list[str], later: set[str]) -> None:
        """Called on the job's thread before a pass: its crops in order, and those a later pass needs."""
        readable = [k for k in keys if str(self.first_path[k]) not in self.skipped]
        self.source.begin_pass(readable, later)

    def read(self, chunk: list[str], active: list[ModelRunner]) -> Batch:
        chunk = [k for k in chunk if str(self.first_path[k]) not in self.skipped]  # unreadable to an earlier model
        results = self.source.take(chunk)
        batch = Batch()
        for key, (image, problem, record) in zip(chunk, results):
            if image is None:
                batch.skipped[str(self.first_path[key])] = problem
                continue
            if record is not None:
                batch.records[key] = record
            batch.images.append(image)
            batch.keys.append(key)
        for runner in active:
            need = [i for i, k in enumerate(batch.keys) if k not in self.vectors[runner.spec.id]]
            if need and runner.views == 1:
                batch.inputs[runner.spec.id] = (need, self.staging.input_batch(runner, [batch.images[i] for i in need]))
            elif need:
                batch.inputs[runner.spec.id] = (need, None)  # several views: embed_arrays builds them
        return batch

    def batches(self, chunks: list[list[str]], active: list[ModelRunner]) -> Iterable[Batch]:
        """The chunks read in order, the next one read ahead when ``prefetch`` is on."""
        reader = (lambda chunk: self.read(chunk, active))
        return prefetched(chunks, reader) if self.prefetch else map(reader, chunks)
