"""Project store: one writer at a time (clear message), disk full and read-only keep the last good state."""

import subprocess
import sys
import textwrap

import pytest

from cellsearch_gui.core.app.session import Workspace
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.project import open_project
from cellsearch_gui.core.project.schema import SCHEMA_VERSION
from cellsearch_gui.core.types import Cell


@pytest.fixture
def project(tmp_path):
    ws = Workspace()
    ws.save(tmp_path / "p")
    ws.store.put_cells([Cell(f"c{i}", f"{i}.png", f"{i}.png") for i in range(3)])
    ws.set_labels({"c0": "lymphocyte"})
    ws.close()
    return tmp_path / "p"


def test_a_second_process_gets_a_clear_message_and_can_still_read(project):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from cellsearch_gui.core.project import open_project
        store = open_project({str(project)!r}, purpose="'cellsearch project classify'")
        print("locked", flush=True)
        time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CellSearchError, match=r"in use by 'cellsearch project classify' \(process \d+"):
            Workspace.open(project)
        with open_project(project, readonly=True, lock=False) as reader:  # `project info` still works
            assert reader.labels() == {"c0": "lymphocyte"}
    finally:
        holder.kill()
        holder.wait()
    ws = Workspace.open(project)  # the lock goes with the process, even when it is killed
    assert ws.user_labels == {"c0": "lymphocyte"}
    ws.close()


def test_gui_reports_a_locked_project(project, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSEARCH_CONFIG_DIR", str(tmp_path / "config"))
    from cellsearch_gui.gui.app import create_window

    other = Workspace.open(project, purpose="'cellsearch project classify'")
    try:
        window = create_window()
        qtbot.addWidget(window)
        window.show_dialogs = False
        monkeypatch.setattr("PySide6.QtWidgets.QFileDialog.getExistingDirectory", lambda *a, **k: str(project))
        window.open_project()
        assert "in use by 'cellsearch project classify'" in window.last_error[0]
    finally:
        other.close()


def test_disk_full_keeps_the_last_saved_state(project):
    ws = Workspace.open(project)
    pages = ws.store.db.execute("PRAGMA page_count").fetchone()[0]
    ws.store.db.execute(f"PRAGMA max_page_count = {pages + 1}")  # the disk fills up now
    many = [Cell(f"n{i}", "x" * 200, "y" * 200) for i in range(5000)]
    with pytest.raises(CellSearchError, match="disk is full .* keeps its last saved state"):
        ws.store.put_cells(many)
    with pytest.raises(CellSearchError, match="disk is full"):
        ws.set_labels({f"c{i % 3}": "x" * 500 for i in range(3)} | {f"n{i}": "y" * 500 for i in range(3000)})
    assert ws.user_labels == {"c0": "lymphocyte"}  # not applied in memory either
    ws.close()
    with open_project(project, readonly=True, lock=False) as store:
        assert store.integrity() == "ok"
        assert store.counts()["cells"] == 3 and store.labels() == {"c0": "lymphocyte"}


def test_read_only_folder_opens_read_only(project, monkeypatch):
    import cellsearch_gui.core.project.store as store_module

    monkeypatch.setattr(store_module.os, "access", lambda path, mode: False)  # e.g. a write-protected share
    ws = Workspace.open(project)
    assert ws.store.readonly and ws.user_labels == {"c0": "lymphocyte"}
    with pytest.raises(CellSearchError, match="opened read-only, cannot save"):
        ws.set_labels({"c1": "monocyte"})
    ws.close()


def test_schema_migrates_from_an_empty_database(tmp_path):
    import sqlite3

    folder = tmp_path / "old"
    folder.mkdir()
    sqlite3.connect(folder / "project.sqlite").close()  # version 0
    with open_project(folder) as store:
        assert store.counts()["schema"] == SCHEMA_VERSION


def test_labels_keep_their_history(project):
    ws = Workspace.open(project)
    ws.set_labels({"c0": "monocyte"})
    ws.set_labels({"c0": None})
    assert [h[0] for h in ws.store.label_history("c0")] == ["lymphocyte", "monocyte", None]
    assert "c0" not in ws.store.labels()
    assert all(h[1] and h[2] for h in ws.store.label_history("c0"))  # who and when
    ws.close()


def test_a_border_cell_stays_flagged_when_the_project_is_reopened(tmp_path):
    with open_project(tmp_path / "q", create=True) as store:
        store.put_cells([Cell("edge", "e.png", "f.png", touches_border=True), Cell("inner", "i.png", "f.png",
                                                                                  touches_border=False),
                         Cell("crop", "c.png", "c.png")])
    with open_project(tmp_path / "q", readonly=True, lock=False) as store:
        flags = {c.cell_id: c.touches_border for c in store.cells()}
    assert flags == {"edge": True, "inner": False, "crop": None}


def test_a_version_1_project_gains_the_border_column(tmp_path):
    import sqlite3

    from cellsearch_gui.core.project.schema import V1

    folder = tmp_path / "old"
    folder.mkdir()
    db = sqlite3.connect(folder / "project.sqlite")
    db.executescript(V1 + "PRAGMA user_version = 1;")
    db.execute("INSERT INTO cells (uid, crop_path) VALUES ('c0', 'c0.png')")
    db.commit()
    db.close()
    with open_project(folder) as store:
        assert [(c.cell_id, c.touches_border) for c in store.cells()] == [("c0", None)]
        assert store.counts()["schema"] == SCHEMA_VERSION == 3


def test_a_version_2_project_keeps_its_predictions_and_gains_their_confidence(tmp_path):
    import sqlite3

    from cellsearch_gui.core.project.schema import V1, V2

    folder = tmp_path / "old"
    folder.mkdir()
    db = sqlite3.connect(folder / "project.sqlite")
    db.executescript(V1 + V2 + "PRAGMA user_version = 2;")
    db.execute("INSERT INTO runs (kind, started_at, status, app_version) VALUES ('classify', 'x', 'finished', '0')")
    db.execute("INSERT INTO predictions VALUES (1, 'c0', 'a', 0.5, 8)")
    db.commit()
    db.close()
    with open_project(folder) as store:
        assert store.predictions(1) == {"c0": ("a", 0.5, 8)} and store.confidences(1) == {}
        run = store.start_run("classify", {})
        store.finish_run(run, "finished", {}, [], [("c0", "b", 0.1, 4, 0.875), ("c1", "a", 0.2, 4, None)])
        assert store.confidences(run) == {"c0": 0.875}
        assert store.predictions(run)["c1"] == ("a", 0.2, 4)
