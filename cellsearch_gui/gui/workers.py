"""Core generator jobs on a QThread: throttled progress, cooperative cancel, result back on the GUI thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from cellsearch_gui.core.errors import Cancelled
from cellsearch_gui.core.jobs import CancelToken, Progress

# Cleared while the start-up probe imports torch in its own thread; a job waits for it, since two threads
# importing torch at once can register its kernels twice.
HEAVY_IMPORTS_DONE = threading.Event()
HEAVY_IMPORTS_DONE.set()


class JobWorker(QObject):
    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(object)
    cancelled = Signal()

    def __init__(self, make_job: Callable[[CancelToken], object], min_interval_s: float = 0.05):
        super().__init__()
        self.token = CancelToken()
        self._make_job = make_job
        self._min_interval = min_interval_s

    @Slot()
    def run(self) -> None:
        last = 0.0
        HEAVY_IMPORTS_DONE.wait(120)
        try:
            job = self._make_job(self.token)
            while True:
                try:
                    item = next(job)
                except StopIteration as stop:
                    self.finished.emit(stop.value)
                    return
                now = time.monotonic()
                if now - last >= self._min_interval or item.done == item.total:
                    self.progress.emit(item)
                    last = now
        except Cancelled:
            self.cancelled.emit()
        except Exception as exc:  # noqa: BLE001 - shown to the user by the controller, never swallowed
            self.failed.emit(exc)


class Eta:
    """Time remaining from the rate of the current stage."""

    def __init__(self):
        self._stage, self._t0, self._done0 = None, 0.0, 0

    def update(self, p: Progress) -> float | None:
        now = time.monotonic()
        if p.stage != self._stage:
            self._stage, self._t0, self._done0 = p.stage, now, p.done
            return None
        done = p.done - self._done0
        if done <= 0 or p.total <= 0:
            return None
        return (now - self._t0) / done * (p.total - p.done)


class JobRunner(QObject):
    """One model lane: at most one long job at a time. When a job ends its thread is gone first: ``idle``
    comes, then ``succeeded``, ``failed`` or ``cancelled``, so a reaction may start the next job at once."""

    started = Signal(str)
    progress = Signal(object, object)  # Progress, seconds remaining or None
    succeeded = Signal(str, object)
    failed = Signal(str, object)
    cancelled = Signal(str)
    idle = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._thread: QThread | None = None
        self.worker: JobWorker | None = None
        self.name = ""
        self._eta = Eta()
        self.cancel_requested_at: float | None = None
        self._outcome: tuple | None = None  # (signal, arguments) of the job that ends

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, name: str, make_job: Callable[[CancelToken], object]) -> None:
        if self._thread is not None:
            raise RuntimeError(f"'{self.name}' is still running")
        thread, worker = QThread(), JobWorker(make_job)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.progress.connect(self._on_progress)
        # bound methods of this GUI-thread object: queued, so every reaction runs on the GUI thread
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        for signal in (worker.finished, worker.failed, worker.cancelled):
            signal.connect(thread.quit)
        thread.finished.connect(self._cleanup)
        self._thread, self.worker, self.name, self._eta = thread, worker, name, Eta()
        self.cancel_requested_at, self._outcome = None, None
        thread.start()
        self.started.emit(name)

    def _on_progress(self, p: Progress) -> None:
        self.progress.emit(p, self._eta.update(p))

    def _on_finished(self, value) -> None:
        self._outcome = (self.succeeded, (self.name, value))

    def _on_failed(self, exc) -> None:
        self._outcome = (self.failed, (self.name, exc))

    def _on_cancelled(self) -> None:
        self._outcome = (self.cancelled, (self.name,))

    def cancel(self) -> None:
        if self.worker is not None:
            self.cancel_requested_at = time.monotonic()
            self.worker.token.cancel()

    def wait(self, ms: int = 5000) -> bool:
        return self._thread.wait(ms) if self._thread is not None else True

    def _cleanup(self) -> None:
        if self._thread is not None:
            self._thread.deleteLater()
        if self.worker is not None:
            self.worker.deleteLater()
        self._thread, self.worker = None, None
        outcome, self._outcome = self._outcome, None
        self.idle.emit()
        if outcome is not None:
            signal, arguments = outcome
            signal.emit(*arguments)
