"""Long work as generators: they yield Progress, honour a CancelToken and return their result."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from cellsearch_gui.core.errors import Cancelled

T = TypeVar("T")


@dataclass
class Progress:
    stage: str
    done: int
    total: int
    message: str = ""


Job = Generator[Progress, None, T]


class CancelToken:
    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


def run_job(job: Job[T], on_progress: Callable[[Progress], Any] | None = None) -> T:
    """Drive a job to completion, passing each Progress to ``on_progress``; returns its result."""
    while True:
        try:
            progress = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(progress)
