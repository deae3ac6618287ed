"""Crop decoding and preparation in worker processes: a window of crops prepared ahead, in order.

The processes come from a ``forkserver`` (``spawn`` where there is none): a clean interpreter that never saw
Qt or torch, so nothing of the app's threads is forked. A worker that dies (a crash inside a decoder) breaks
the pool; the crops it held are then prepared again one at a time in a separate one-worker pool, so the file
that kills a worker is found and reported, and the run goes on with a new pool for the others."""

from __future__ import annotations

import json
import multiprocessing
import sys
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
    """forkserver where the platform has it (Linux, macOS), else spawn (Windows, and a packaged app, whose
    launcher calls freeze_support); the server loads only this module and OpenCV."""
    if "forkserver" in multiprocessing.get_all_start_methods() and not getattr(sys, "frozen", False):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


def prepare_many(task: Callable[[Path, CropPrep], PreparedCrop], paths: list[Path],
                 prep: CropPrep) -> list[PreparedCrop]:
    """One task of a worker: a few crops, so a busy parent process does not leave the workers waiting."""
    return [task(path, prep) for path in paths]


class PrepWorkers:
    """``workers`` processes preparing crop files; ``plan`` queues the crops of a pass in order, ``take``
    returns one crop's result (preparing it now when it was not planned), keeping ``window`` crops in
    flight, ``chunk`` crops to a task. ``task`` is the module-level function run in the workers (``read_crop``)."""

    def __init__(self, workers: int, prep: CropPrep, token: CancelToken | None = None, window: int = 0,
                 task: Callable[[Path, CropPrep], PreparedCrop] | None = None):
        self.workers, self.prep, self.token = max(1, workers), prep, token or CancelToken()
        self.window = window or 16 * self.workers
        self.chunk = max(1, min(8, self.window // (2 * self.workers)))
        self.task = task or read_crop
        self.queue: deque[tuple[str, Path]] = deque()
        self.futures: dict[str, tuple[Future, int, int]] = {}  # key: (future, position in it, pool number)
        self.crashes: list[str] = []  # paths that stopped a worker
        self._pool: ProcessPoolExecutor | None = None
        self._pool_number = 0
        self._quarantine: ProcessPoolExecutor | None = None
        self.succeeded = False  # a worker has returned a crop: the processes work here
        self.in_process = False  # they do not: crops prepared in this process

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=process_context(), initializer=worker_setup)

    def plan(self, items: list[tuple[str, Path]]) -> None:
        """Queue (key, path) pairs to be prepared in this order, and start the first ones."""
        self.queue.extend(items)
        self._top_up()

    def _top_up(self) -> None:
        while self.queue and len(self.futures) < self.window:
            items = []
            while self.queue and len(items) < self.chunk:
                key, path = self.queue.popleft()
                if key not in self.futures and key not in dict(items):
                    items.append((key, path))
            self._submit(items)

    def _submit(self, items: list[tuple[str, Path]]) -> None:
        if not items:
            return
        paths = [path for _, path in items]
        if self._pool is None:
            self._pool, self._pool_number = self._new_pool(self.workers), self._pool_number + 1
        try:
            future = self._pool.submit(prepare_many, self.task, paths, self.prep)
        except BrokenProcessPool:  # broken by an earlier crash: a new pool for the crops still to come
            self._drop_pool()
            self._pool, self._pool_number = self._new_pool(self.workers), self._pool_number + 1
            future = self._pool.submit(prepare_many, self.task, paths, self.prep)
        for position, (key, _) in enumerate(items):
            self.futures[key] = (future, position, self._pool_number)

    def take(self, key: str, path: Path) -> PreparedCrop:
        """The prepared crop of ``key``: waits for it (Cancel is honoured within POLL_S)."""
        if self.in_process:
            return self.task(path, self.prep)
        if key not in self.futures:
            self.queue = deque(item for item in self.queue if item[0] != key)
            self._submit([(key, path)])
        future, position, pool_number = self.futures.pop(key)
        try:
            result = self._wait(future)[position]
            self.succeeded = True
        except BrokenProcessPool:  # every crop of the broken pool is prepared again, alone
            if pool_number == self._pool_number:
                self._drop_pool()
            result = self._alone(path)
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
        """A crop that was in a pool when a worker died: prepared alone, so a second death names it. Where no
        worker process can run at all, this crop and the rest are prepared in this process instead (as with
        ``prep_workers=0``)."""
        if self.in_process:
            return self.task(path, self.prep)
        if self._quarantine is None:
            self._quarantine = self._new_pool(1)
        try:
            result = self._wait(self._quarantine.submit(self.task, path, self.prep))
            self.succeeded = True
            return result
        except BrokenProcessPool:
            self._quarantine.shutdown(wait=False, cancel_futures=True)
            self._quarantine = None
        if not self.succeeded and not self._processes_work():
            self.close()
            self.in_process = True
            return self.task(path, self.prep)
        self.crashes.append(str(path))
        return None, CRASH_PROBLEM, None

    def _processes_work(self) -> bool:
        """Whether a worker process can run anything at all here (a frozen app, a sandbox...)."""
        pool = self._new_pool(1)
        try:
            self.succeeded = self._wait(pool.submit(len, ())) == 0
        except BrokenProcessPool:
            return False
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return self.succeeded

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Stop the workers without waiting for crops still queued (a crop being prepared finishes)."""
        self.queue.clear()
        self.futures.clear()
        self._drop_pool()
        if self._quarantine is not None:
            self._quarantine.shutdown(wait=False, cancel_futures=True)
            self._quarantine = None

