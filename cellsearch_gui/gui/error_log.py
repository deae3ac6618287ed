"""Errors reach the user and a log file: a rotating log under the user's data folder, and hooks that turn an
uncaught exception (in a slot, in a thread) into a logged error dialog instead of a crash."""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from cellsearch_gui.core.io.user_dirs import user_dir

LOG_ENV = "CELLSEARCH_LOG_DIR"  # the folder of the log files (tests point it at a temporary folder)
LOG_NAME = "cellsearch.log"
MAX_BYTES, BACKUPS = 1_000_000, 3

log = logging.getLogger("cellsearch")
log.addHandler(logging.NullHandler())  # nothing on stderr until the app opens its log file


def log_dir() -> Path:
    """``$CELLSEARCH_LOG_DIR``, else ``<user data folder>/logs``."""
    folder = user_dir(LOG_ENV, "data")
    return folder if os.environ.get(LOG_ENV) else folder / "logs"


def start_log_file(folder: Path | None = None, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> Path:
    """Log to ``cellsearch.log`` in ``folder`` (default ``log_dir()``), rotated at ``max_bytes`` with
    ``backups`` older files kept; replaces a log file started before."""
    folder = Path(folder) if folder else log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stop_log_file()
    handler = RotatingFileHandler(folder / LOG_NAME, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(threadName)s] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return folder / LOG_NAME


def stop_log_file() -> None:
    for handler in list(log.handlers):
        if isinstance(handler, RotatingFileHandler):
            log.removeHandler(handler)
            handler.close()


def log_error(text: str, details: str = "") -> None:
    """An error shown to the user: with details (a traceback) as an error, else as a warning."""
    if details:
        log.error("%s\n%s", text, details.rstrip())
    else:
        log.warning("%s", text)


class ErrorRelay(QObject):
    """Carries an error from any thread to the GUI thread (a queued signal)."""

    raised = Signal(str, str)


def install_exception_hooks(show: Callable[[str, str], None]) -> Callable[[], None]:
    """``sys.excepthook`` (PySide6 calls it for an exception in a slot) and ``threading.excepthook`` log the
    error and pass it to ``show`` on the GUI thread; returns a function that puts the previous hooks back."""
    relay = ErrorRelay()
    relay.raised.connect(show)
    previous_sys, previous_thread = sys.excepthook, threading.excepthook

    def report(where: str, exc_type, exc, tb) -> None:
        details = "".join(traceback.format_exception(exc_type, exc, tb))
        text = f"unexpected error{where}: {exc_type.__name__}: {exc}"
        log_error(text, details)
        relay.raised.emit(text, details)

    def sys_hook(exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            previous_sys(exc_type, exc, tb)
            return
        report("", exc_type, exc, tb)

    def thread_hook(args) -> None:
        if issubclass(args.exc_type, SystemExit):
            return
        name = args.thread.name if args.thread is not None else "?"
        report(f" in thread '{name}'", args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook, threading.excepthook = sys_hook, thread_hook

    def restore() -> None:
        sys.excepthook, threading.excepthook = previous_sys, previous_thread
        relay.deleteLater()

    return restore
