"""Crop decoding and preparation in worker processes: a window of crops prepared ahead, in order.

The processes come from a ``forkserver`` (``spawn`` where there is none): a clean interpreter that never saw
Qt or torch, so nothing of the app's threads is forked. A worker that dies (a crash inside a decoder) breaks
the pool; the crops it held are then prepared again one at a time in a separate one-worker pool, so the file
that kills a worker is found and reported, and the run goes on with a new pool for the others."""

from __future__ import annotations

import json
import multiprocessing
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cellsearch_gui.core.crops.prepare import CropPrep, prepare_crop
from cellsearch_gui.core.errors import BadImageError
from cellsearch_gui.core.io.images import read_rgb
from cellsearch_gui.core.jobs import CancelToken

PreparedCrop = tuple[np.ndarray | None, str | None, str | None]  # image, problem, prep record (JSON)
CRASH_PROBLEM = "the crop preparation process stopped on this file (a crash while decoding or preparing it)"
POLL_S = 0.05  # how often a wait for a crop looks at the cancel token
PRELOAD = ["cellsearch_gui.core.embedding.prep_workers", "cv2"]  # loaded once, in the server


def read_crop(path: Path, prep: CropPrep) -> PreparedCrop:
    """(image, None, prep record) for a readable crop, else (None, problem, None)."""
    try:
        image = read_rgb(path)
    except BadImageError as exc:
        return None, exc.problem, None
    if not prep.active:
        return image, None, None
    image, record = prepare_crop(image, prep)
    return image, None, json.dumps(asdict(record))


def worker_setup() -> None:
    """Each worker process: OpenCV on one thread (the processes are the parallelism)."""
    import cv2

    cv2.setNumThreads(1)


def process_context():
    """forkserver where the platform has it (Linux, macOS), else spawn; its server loads only this module."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


class PrepWorkers:
    """``workers`` processes preparing crop files; ``plan`` queues the crops of a pass in order, ``take``
    returns one crop's result (preparing it now when it was not planned), keeping ``window`` crops in
    flight. ``task`` is the module-level function run in the workers (``read_crop``)."""

    def __init__(self, workers: int, prep: CropPrep, token: CancelToken | None = None, window: int = 0,
                 task: Callable[[Path, CropPrep], PreparedCrop] | None = None):
        self.workers, self.prep, self.token = max(1, workers), prep, token or CancelToken()
        self.window = window or 4 * self.workers
        self.task = task or read_crop
        self.queue: deque[tuple[str, Path]] = deque()
        self.futures: dict[str, Future] = {}
        self.crashes: list[str] = []  # paths that stopped a worker
        self._pool: ProcessPoolExecutor | None = None
        self._quarantine: ProcessPoolExecutor | None = None
        self._pool_futures: set[Future] = set()  # futures of the current main pool

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=process_context(), initializer=worker_setup)

    def plan(self, items: list[tuple[str, Path]]) -> None:
        """Queue (key, path) pairs to be prepared in this order, and start the first ones."""
        self.queue.extend(items)
        self._top_up()

    def _top_up(self) -> None:
        while self.queue and len(self.futures) < self.window:
            key, path = self.queue.popleft()
            if key not in self.futures:
                self.futures[key] = self._submit(path)

    def _submit(self, path: Path) -> Future:
        if self._pool is None:
            self._pool = self._new_pool(self.workers)
        try:
            future = self._pool.submit(self.task, path, self.prep)
        except BrokenProcessPool:  # broken by an earlier crash: a new pool for the crops still to come
            self._drop_pool()
            self._pool = self._new_pool(self.workers)
            future = self._pool.submit(self.task, path, self.prep)
        self._pool_futures.add(future)
        return future

    def take(self, key: str, path: Path) -> PreparedCrop:
        """The prepared crop of ``key``: waits for it (Cancel is honoured within POLL_S)."""
        future = self.futures.pop(key, None)
        if future is None:
            self.queue = deque(item for item in self.queue if item[0] != key)
            future = self._submit(path)
        try:
            result = self._wait(future)
        except BrokenProcessPool:  # every crop of the broken pool is prepared again, alone
            if future in self._pool_futures:
                self._drop_pool()
            result = self._alone(path)
        self._pool_futures.discard(future)
        self._top_up()
        return result

    def _wait(self, future: Future):
        while True:
            self.token.raise_if_cancelled()
            try:
                return future.result(timeout=POLL_S)
            except TimeoutError:
                continue

    def _alone(self, path: Path) -> PreparedCrop:
        """A crop that was in a pool when a worker died: prepared alone, so a second death names it."""
        if self._quarantine is None:
            self._quarantine = self._new_pool(1)
        try:
            return self._wait(self._quarantine.submit(self.task, path, self.prep))
        except BrokenProcessPool:
            self._quarantine.shutdown(wait=False, cancel_futures=True)
            self._quarantine = None
        self.crashes.append(str(path))
        return None, CRASH_PROBLEM, None

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool, self._pool_futures = None, set()

    def close(self) -> None:
        """Stop the workers without waiting for crops still queued (a crop being prepared finishes)."""
        self.queue.clear()
        self.futures.clear()
        self._drop_pool()
        if self._quarantine is not None:
            self._quarantine.shutdown(wait=False, cancel_futures=True)
            self._quarantine = None

