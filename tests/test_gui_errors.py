"""Errors reach the user and the log file: a failed job (an export), an exception in a slot or in a thread
shows a dialog with the traceback under its details and writes to a rotating log; the app stays up."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFileDialog, QMessageBox
from test_gui_threads import show, synthetic_result

from cellsearch_gui.gui import error_log


@pytest.fixture
def log_file(tmp_path, monkeypatch):
    monkeypatch.setenv(error_log.LOG_ENV, str(tmp_path / "logs"))
    path = error_log.start_log_file()
    yield path
    error_log.stop_log_file()




def test_the_log_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(error_log.LOG_ENV, str(tmp_path / "elsewhere"))
    assert error_log.log_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(error_log.LOG_ENV)
    monkeypatch.setattr("platformdirs.user_data_dir", lambda *a, **k: str(tmp_path / "data"))
    assert error_log.log_dir() == tmp_path / "data" / "logs"


def test_a_failed_export_is_shown_and_logged(window, qtbot, tmp_path, monkeypatch, log_file):
    from cellsearch_gui.gui import jobs

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jobs, "write_cells_csv", full_disk)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "cells.csv"), "CSV"))
    shown = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: shown.append((box.text(), box.detailedText()))
                        or QMessageBox.StandardButton.No)
    show(window, synthetic_result(tmp_path))
    window.show_dialogs = True
    with qtbot.waitSignal(window.controller.error, timeout=30_000):
        window.export_action.trigger()
    text, details = window.last_error
    assert text == "export failed: OSError: [Errno 28] No space left on device"
    assert "Traceback" in details and "full_disk" in details
    assert shown[-1] == (text, details)  # the dialog: the short message, the traceback under its details
    logged = log_file.read_text(encoding="utf-8")
    assert "ERROR" in logged and text in logged and "full_disk" in logged
    assert not window.controller.runner.busy and window.export_action.isEnabled()


def test_a_failed_job_is_logged_with_its_traceback(window, qtbot, tmp_path, log_file):
    c = window.controller
    with qtbot.waitSignal(c.error, timeout=30_000):
        assert c.import_weights("mobilenetv2", tmp_path / "missing.pth")
    assert window.last_error[0].startswith("import of mobilenetv2 failed:") and "no such checkpoint" in window.last_error[0]
    assert "import of mobilenetv2 failed" in log_file.read_text(encoding="utf-8")


def test_an_exception_in_a_slot_is_shown_not_fatal(window, qtbot, log_file):
    def broken_slot():
        raise ZeroDivisionError("a bug in a slot")

    restore = error_log.install_exception_hooks(window.show_error)
    try:
        QTimer.singleShot(0, broken_slot)
        qtbot.waitUntil(lambda: window.last_error is not None, timeout=5000)
    finally:
        restore()
    text, details = window.last_error
    assert text == "unexpected error: ZeroDivisionError: a bug in a slot" and "broken_slot" in details
    assert "a bug in a slot" in log_file.read_text(encoding="utf-8")
    assert window.isVisible()


def test_an_exception_in_a_thread_reaches_the_window(window, qtbot, log_file):
    def broken_thread():
        raise RuntimeError("a bug in a thread")

    restore = error_log.install_exception_hooks(window.show_error)
    try:
        worker = threading.Thread(target=broken_thread, name="helper")
        worker.start()
        worker.join()
        qtbot.waitUntil(lambda: window.last_error is not None, timeout=5000)  # queued onto the GUI thread
    finally:
        restore()
    assert window.last_error[0] == "unexpected error in thread 'helper': RuntimeError: a bug in a thread"
    assert "a bug in a thread" in log_file.read_text(encoding="utf-8")


def test_the_log_rotates_at_one_megabyte_keeping_three(tmp_path, monkeypatch):
    monkeypatch.setenv(error_log.LOG_ENV, str(tmp_path / "logs"))
    path = error_log.start_log_file()
    try:
        line = "x" * 1000
        for _ in range(4500):  # about 4.5 MB
            error_log.log.warning(line)
    finally:
        error_log.stop_log_file()
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["cellsearch.log", "cellsearch.log.1", "cellsearch.log.2", "cellsearch.log.3"]
    assert all(p.stat().st_size <= error_log.MAX_BYTES for p in path.parent.iterdir())
    assert error_log.MAX_BYTES == 1_000_000 and error_log.BACKUPS == 3
