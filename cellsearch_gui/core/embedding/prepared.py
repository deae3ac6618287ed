"""Each crop prepared once per run: the prepared uint8 crops kept while a later model still needs them (in
memory up to a budget, then in a temporary file), and the counted preparation of the others, on reader threads
or in worker processes (prep_workers.py)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cellsearch_gui.core.crops.prepare import CropPrep
from cellsearch_gui.core.embedding.prep_workers import PreparedCrop, PrepWorkers, read_crop

MEMORY_BUDGET = 1 << 30  # bytes of prepared crops kept in memory; the rest go to a temporary file


class PreparedStore:
    """Prepared crops by content key: arrays in memory up to ``budget`` bytes, then appended to an anonymous
    temporary file (gone when closed) and read back on demand."""

    def __init__(self, budget: int | None = None):
        self.budget, self.in_memory = MEMORY_BUDGET if budget is None else budget, 0
        self.memory: dict[str, np.ndarray] = {}
        self.on_disk: dict[str, tuple[int, tuple[int, ...]]] = {}  # key: (offset, shape)
        self._file = None
        self._end = 0

    def __contains__(self, key: str) -> bool:
        return key in self.memory or key in self.on_disk

    def __len__(self) -> int:
        return len(self.memory) + len(self.on_disk)

    def put(self, key: str, image: np.ndarray) -> None:
        if key in self:
            return
        image = np.ascontiguousarray(image, np.uint8)
        if self.in_memory + image.nbytes <= self.budget:
            self.memory[key] = image
            self.in_memory += image.nbytes
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="cellsearch-crops-")
        os.pwrite(self._file.fileno(), image.tobytes(), self._end)
        self.on_disk[key] = (self._end, image.shape)
        self._end += image.nbytes

    def get(self, key: str) -> np.ndarray:
        if key in self.memory:
            return self.memory[key]
        offset, shape = self.on_disk[key]
        data = bytearray(os.pread(self._file.fileno(), int(np.prod(shape)), offset))
        return np.frombuffer(data, np.uint8).reshape(shape)

    def discard(self, key: str) -> None:
        image = self.memory.pop(key, None)
        if image is not None:
            self.in_memory -= image.nbytes
        self.on_disk.pop(key, None)  # its bytes stay in the file until the run ends

    def close(self) -> None:
        self.memory.clear()
        self.on_disk.clear()
        self.in_memory = 0
        if self._file is not None:
            self._file.close()
            self._file = None


class CropSource:
    """The crops of a run's passes (one pass per model in turn, or one for all models together): a crop is
    prepared the first time a pass asks for it and kept only while a later pass still needs it.
    ``prepared`` counts preparations (each crop once per run)."""

    def __init__(self, first_path: dict[str, Path], prep: CropPrep, map_crops: Callable = map,
                 workers: PrepWorkers | None = None, store: PreparedStore | None = None):
        self.first_path, self.prep, self.map_crops, self.workers = first_path, prep, map_crops, workers
        self.store = store or PreparedStore()
        self.keep: set[str] = set()  # keys a later pass needs
        self.prepared = 0

    def begin_pass(self, keys: list[str], later: set[str]) -> None:
        """A pass over ``keys`` in this order; crops of ``later`` are kept for the passes after it."""
        self.keep, wanted = set(later), set(keys) | set(later)
        for key in [k for k in [*self.store.memory, *self.store.on_disk] if k not in wanted]:
            self.store.discard(key)
        if self.workers is not None:
            self.workers.plan([(k, self.first_path[k]) for k in keys if k not in self.store])

    def take(self, keys: list[str]) -> list[PreparedCrop]:
        """The crops of ``keys`` in order: kept ones as they are, the others prepared now."""
        fresh_keys = [k for k in keys if k not in self.store]
        if self.workers is not None:
            fresh = [self.workers.take(k, self.first_path[k]) for k in fresh_keys]
        else:
            fresh = list(self.map_crops(lambda key: read_crop(self.first_path[key], self.prep), fresh_keys))
        self.prepared += len(fresh_keys)
        made = dict(zip(fresh_keys, fresh))
        results = []
        for key in keys:
            if key in made:
                results.append(made[key])
                if made[key][0] is not None and key in self.keep:
                    self.store.put(key, made[key][0])
            else:
                results.append((self.store.get(key), None, None))  # its record was taken the first time
                if key not in self.keep:
                    self.store.discard(key)
        return results

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
        self.store.close()
