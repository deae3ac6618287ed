"""Blocking work runs on the worker thread, never on the GUI thread: importing weights, voting again after
cells join the library, exporting, restoring a project. Each test records the thread the work ran on and
waits for the result to arrive; the window keeps answering meanwhile."""

from __future__ import annotations

import csv
import threading
import time

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QTimer

from cellsearch_gui.core.app.run import AnalysisResult, AnalysisSettings, pca_2d
from cellsearch_gui.core.app.session import Workspace
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams
from cellsearch_gui.core.project.arrays import save_run_arrays
from cellsearch_gui.core.types import Cell, FeatureSet


def synthetic_result(tmp_path, n_ref: int = 60, n: int = 40) -> AnalysisResult:
    """A classified result without any model: random features, four classes, crops that are never read."""
    rng = np.random.default_rng(0)
    ref_x, query_x = rng.normal(size=(n_ref, 8)).astype(np.float32), rng.normal(size=(n, 8)).astype(np.float32)
    ref_labels = [f"class{i % 4}" for i in range(n_ref)]
    cells = [Cell(f"c{i}", str(tmp_path / "crops" / f"c{i}.png"), str(tmp_path / "crops" / f"c{i}.png"))
             for i in range(n)]

    def features(x, paths, labels):
        return FeatureSet(list(paths), labels, x, ["m"], [8], False, {"m": "m|0"}, per_model={"m": x})

    params = {**AnalysisSettings().params, "k_max": 20, "index": "flat"}  # the app's defaults, as saved_project
    classifier = EWCClassifier(EWCParams(**params)).fit(ref_x, ref_labels)
    mean, axes = pca_2d(ref_x)
    return AnalysisResult(cells, features(ref_x, [tmp_path / f"r{i}.png" for i in range(n_ref)], ref_labels),
                          features(query_x, [c.crop_path for c in cells], [None] * n), classifier,
                          classifier.predict(query_x, keep_neighbours=12), mean, axes, [], {}, ["m"])


def show(window, result) -> None:
    window.controller.workspace.apply(result)  # as a finished analysis would
    window.controller.result_changed.emit()


class Ticks:
    """Counts the GUI thread's timer ticks: they stop when something blocks the event loop."""

    def __init__(self, interval_ms: int = 10):
        self.count = 0
        self.timer = QTimer()
        self.timer.timeout.connect(self.tick)
        self.timer.start(interval_ms)

    def tick(self) -> None:
        self.count += 1


def test_import_of_a_weights_folder_hashes_on_the_worker(window, qtbot, tmp_path, monkeypatch):
    from cellsearch_gui.core.models import install

    folder = tmp_path / "usb"
    folder.mkdir()
    (folder / "notes.bin").write_bytes(b"x" * 4096)  # hashed, matches no checkpoint
    threads = []
    hash_file = install.sha256_of
    monkeypatch.setattr(install, "sha256_of", lambda path: (threads.append(threading.get_ident()), hash_file(path))[1])
    c = window.controller
    with qtbot.waitSignal(c.weights_changed, timeout=30_000) as signal:
        assert c.import_weights_folder(folder)
    assert signal.args == [f"no known checkpoint in {folder}"]
    assert threads and threading.get_ident() not in threads
    assert not c.runner.busy


def test_welcome_import_runs_as_a_job(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSEARCH_CONFIG_DIR", str(tmp_path / "config"))
    from cellsearch_gui.core.models import install
    from cellsearch_gui.gui.app import create_window

    threads = []

    def fake_job(folder, token=None):
        threads.append(threading.get_ident())
        yield from ()
        return []

    monkeypatch.setattr(install, "import_folder_job", fake_job)
    window = create_window(welcome=True)
    qtbot.addWidget(window)
    window.show_dialogs = False
    with qtbot.waitSignal(window.controller.weights_changed, timeout=30_000):
        window.welcome.import_folder(str(tmp_path))
    assert threads and threads[0] != threading.get_ident()
    assert window.welcome.message.text() == "no known checkpoint in " + str(tmp_path)
    window.controller.shutdown()


def test_adding_labelled_cells_votes_again_on_the_worker(window, qtbot, tmp_path, monkeypatch):
    c = window.controller
    show(window, synthetic_result(tmp_path))
    n_ref = len(c.workspace.result.reference.labels)
    c.set_label(5, "class9")  # a new class, typed in
    threads, ticks_during = [], []
    predict = EWCClassifier.predict
    ticks = Ticks()

    def slow_predict(self, features, keep_neighbours=None):
        threads.append(threading.get_ident())
        before = ticks.count
        time.sleep(0.3)
        ticks_during.append(ticks.count - before)
        return predict(self, features, keep_neighbours)

    monkeypatch.setattr(EWCClassifier, "predict", slow_predict)
    with qtbot.waitSignal(c.predictions_changed, timeout=30_000):
        assert c.add_labelled_to_reference()
        assert len(c.workspace.result.reference.labels) == n_ref + 1  # in the library at once
    assert threads and threading.get_ident() not in threads
    assert min(ticks_during) >= 5  # the event loop kept running while the cells were voted
    assert c.workspace.neighbours(5)[0].reference_index == n_ref  # its nearest reference is itself now
    assert c.workspace.result.predictions.labels[5] in c.workspace.classes()
    assert not c.runner.busy


def test_export_writes_on_the_worker(window, qtbot, tmp_path, monkeypatch):
    from cellsearch_gui.gui import jobs

    c = window.controller
    show(window, synthetic_result(tmp_path))
    c.set_label(0, "class2")
    threads = []
    write = jobs.write_cells_csv
    monkeypatch.setattr(jobs, "write_cells_csv",
                        lambda *a, **k: (threads.append(threading.get_ident()), write(*a, **k))[1])
    out = tmp_path / "cells.csv"
    with qtbot.waitSignal(c.exported, timeout=30_000) as signal:
        assert c.export(out, with_crops=False)
    assert signal.args == [str(out), 40]
    assert threads and threads[0] != threading.get_ident()
    with open(out, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40 and rows[0]["user_label"] == "class2"


def test_a_cancelled_export_leaves_no_file(window, qtbot, tmp_path):
    c = window.controller
    result = synthetic_result(tmp_path, n=3000)
    (tmp_path / "crops").mkdir()
    for cell in result.cells:
        open(cell.crop_path, "wb").close()
    show(window, result)
    out = tmp_path / "cells.csv"
    with qtbot.waitSignal(c.runner.cancelled, timeout=30_000):
        assert c.export(out, with_crops=True)
        c.cancel()
    assert not out.exists() and window.last_error is None


def saved_project(tmp_path, result: AnalysisResult):
    """A project folder whose last finished classification is ``result`` (cells, arrays, predictions)."""
    folder = tmp_path / "project"
    ws = Workspace()
    ws.settings = AnalysisSettings()
    ws.settings.params = {**ws.settings.params, "k_max": 20, "index": "flat"}
    ws.save(folder)
    ws.store.put_cells(result.cells)
    run = ws.store.start_run("classify", ws.settings.as_dict())
    save_run_arrays(folder, run, result.reference, result.query)
    p = result.predictions
    ws.store.finish_run(run, "finished", {"models": ["m"]}, [], [
        (c.cell_id, p.labels[i], float(p.entropy[i]), int(p.k_used[i])) for i, c in enumerate(result.cells)])
    ws.close()
    return folder


def test_a_project_is_restored_on_the_worker(window, qtbot, tmp_path, monkeypatch):
    result = synthetic_result(tmp_path)
    folder = saved_project(tmp_path, result)
    threads = []
    rebuild = Workspace.restored_result
    monkeypatch.setattr(Workspace, "restored_result",
                        lambda self: (threads.append(threading.get_ident()), rebuild(self))[1])
    c = window.controller
    assert c.open_project(folder)
    assert c.workspace.folder == folder and c.workspace.result is None  # opened at once, rebuilt on the worker
    qtbot.waitUntil(lambda: c.workspace.result is not None and not c.runner.busy, timeout=30_000)
    assert threads and threads[0] != threading.get_ident()
    assert [cell.cell_id for cell in c.workspace.cells] == [cell.cell_id for cell in result.cells]
    assert c.workspace.result.predictions.labels == result.predictions.labels
    assert window.cells_table.model().rowCount() == len(result.cells)
    assert window.last_error is None


def test_a_locked_project_is_refused_at_once(window, tmp_path):
    folder = saved_project(tmp_path, synthetic_result(tmp_path))
    holder = Workspace.open(folder, purpose="'cellsearch project classify'")
    try:
        assert not window.controller.open_project(folder)
        assert "in use by 'cellsearch project classify'" in window.last_error[0]
        assert window.controller.workspace.folder is None  # the current one stays
    finally:
        holder.close()
