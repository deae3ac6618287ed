"""Issue 16, findings 3-7 in the project store and the embedding cache: each test here failed on the main of
the day (readers ignoring the WAL, a full disk taken for damage, paths tied to the working directory,
lost library metadata, foreign files migrated, tracebacks on malformed stores)."""

import errno
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from cellsearch_gui.cli import main
from cellsearch_gui.core.app.session import Workspace
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.project import open_project
from cellsearch_gui.core.types import Cell


def make_project(folder, n=3):
    ws = Workspace()
    ws.save(folder)
    crops = folder / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(crops / f"c{i}.png")
    ws.store.put_cells([Cell(f"c{i}", str(crops / f"c{i}.png"), "field.png") for i in range(n)])
    ws.close()
    return folder


def kill_writer_after(folder, code: str) -> None:
    """Run ``code`` with ``store`` open on ``folder`` in another process, then SIGKILL it."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from cellsearch_gui.core.project import open_project
        from cellsearch_gui.core.types import Cell
        store = open_project({str(folder)!r}, create=True)
        {code}
        print("ready", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


# --- finding 3: readers see committed data ----------------------------------------------------------------
def test_a_reader_sees_labels_the_open_app_saved(tmp_path):
    folder = make_project(tmp_path / "p")
    app = Workspace.open(folder)
    app.set_labels({"c0": "monocyte", "c1": "neutrophil"})  # in the WAL while the app is open
    try:
        with open_project(folder, readonly=True, lock=False) as reader:
            assert reader.labels() == {"c0": "monocyte", "c1": "neutrophil"}
    finally:
        app.close()


def test_info_after_a_sigkill_counts_every_cell(tmp_path, capsys):
    folder = tmp_path / "p"
    kill_writer_after(folder, "store.put_cells([Cell(f'c{i}', f'x{i}.png', 'f.png') for i in range(157)])")
    assert (folder / "project.sqlite-wal").is_file()
    assert main(["project", "info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "cells             157" in out and "integrity         ok" in out


def test_a_disk_error_is_not_called_damage(tmp_path, monkeypatch):
    folder = make_project(tmp_path / "p")
    real = sqlite3.connect

    def failing(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite3, "connect", failing)
    with pytest.raises(CellSearchError) as caught:
        open_project(folder, readonly=True, lock=False)
    assert "backup" not in str(caught.value) and "disk I/O error" in str(caught.value)
    monkeypatch.setattr(sqlite3, "connect", real)
    with open_project(folder, readonly=True, lock=False) as store:
        assert store.integrity() == "ok" and store.counts()["cells"] == 3


# --- finding 4: full and read-only disks --------------------------------------------------------------------
def test_a_full_disk_does_not_set_a_healthy_cache_aside(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path / "cache")
    cache.put_many("m", {"k": np.ones(4, np.float32)})
    cache.close()
    before = sorted(p.name for p in (tmp_path / "cache").iterdir())
    real = sqlite3.connect

    def full(target, *args, **kwargs):
        if "embeddings.sqlite" in str(target):
            raise sqlite3.OperationalError("database or disk is full")
        return real(target, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", full)
    degraded = EmbeddingCache(tmp_path / "cache")
    assert degraded.recovered_from is None and any("full" in note for note in degraded.notes)
    degraded.put_many("m", {"j": np.ones(4, np.float32)})  # works on, from memory
    degraded.close()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == before  # nothing set aside
    monkeypatch.setattr(sqlite3, "connect", real)
    again = EmbeddingCache(tmp_path / "cache")
    assert again.count() == 1 and again.integrity() == "ok"
    again.close()


def test_export_on_a_full_disk_is_a_message_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    folder = make_project(tmp_path / "p")
    with open_project(folder) as store:
        run = store.start_run("classify", {})
        store.finish_run(run, "finished", {}, predictions=[("c0", "a", 0.1, 3)])

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    out = tmp_path / "out" / "cells.csv"
    assert main(["project", "export", str(folder), str(out)]) == 2
    assert "the disk is full" in capsys.readouterr().err
    assert not out.exists() and not out.with_name("cells.csv.part").exists()


def test_project_new_on_a_full_disk_is_a_message(tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sqlite3, "connect", full)
    assert main(["project", "new", str(tmp_path / "p")]) == 2
    assert "the disk is full" in capsys.readouterr().err


def test_project_label_on_a_full_disk_is_a_message(tmp_path, capsys):
    mount = tmp_path / "fs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        folder = make_project(mount / "p")
        labels = tmp_path / "labels.csv"
        labels.write_text("cell_id,label\n" + "".join(f"c{i % 3},{'x' * 200}{i}\n" for i in range(20000)))
        with open(mount / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
        assert main(["project", "label", str(folder), str(labels)]) == 2
        assert "the disk is full" in capsys.readouterr().err
        (mount / "filler").unlink()
        with open_project(folder, readonly=True, lock=False) as store:
            assert store.integrity() == "ok" and store.labels() == {}
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def test_segment_on_a_full_disk_is_a_message(tmp_path, monkeypatch):
    from cellsearch_gui.core.app import segment
    from cellsearch_gui.core.jobs import run_job
    from cellsearch_gui.core.segmentation.settings import SegmentSettings

    image = tmp_path / "field.png"
    Image.new("RGB", (64, 64), (200, 200, 200)).save(image)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segment, "open", full, raising=False)
    with pytest.raises(CellSearchError, match="the disk is full"):
        run_job(segment.segment_images([image], tmp_path / "seg", SegmentSettings(segmenter="classical")))


# --- finding 5: project-relative paths ----------------------------------------------------------------------
def test_a_project_opened_from_elsewhere_and_moved_finds_its_crops(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    make_project_relative = Workspace()
    make_project_relative.save("proj")  # typed relative, as on the command line
    (work / "proj" / "crops").mkdir()
    Image.new("RGB", (8, 8)).save(work / "proj" / "crops" / "a.png")
    make_project_relative.store.put_cells([Cell("a", "proj/crops/a.png", "f.png")])
    make_project_relative.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with open_project(work / "proj") as store:
        assert (work / "proj" / "crops" / "a.png").samefile(store.cells()[0].crop_path)
    (work / "proj").rename(tmp_path / "moved")
    with open_project(tmp_path / "moved", readonly=True, lock=False) as store:
        assert (tmp_path / "moved" / "crops" / "a.png").samefile(store.cells()[0].crop_path)


def test_an_older_project_with_cwd_relative_paths_still_opens_after_a_move(tmp_path, monkeypatch):
    folder = make_project(tmp_path / "old")
    with sqlite3.connect(folder / "project.sqlite") as db:  # as the code of the day wrote it
        db.execute("DELETE FROM meta WHERE key='paths'")
        db.execute("UPDATE cells SET crop_path='old/crops/' || uid || '.png'")
    db.close()
    (tmp_path / "old").rename(tmp_path / "new")
    monkeypatch.chdir(tmp_path / "new")
    with open_project(tmp_path / "new") as store:  # migrated on open
        assert all((tmp_path / "new" / "crops" / f"{c.cell_id}.png").samefile(c.crop_path) for c in store.cells())
        assert store.get_meta("paths") == "project-relative"


# --- finding 6 (storage): library metadata kept, foreign files refused ------------------------------------
def test_project_add_keeps_the_library_device_and_pixel_size(tmp_path, capsys):
    lib = tmp_path / "lib"
    for label in ("a", "b"):
        (lib / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i, 9, 9)).save(lib / label / f"{i}.png")
    (lib / "library.json").write_text(json.dumps({"format": 1, "device": "scope A", "pixel_size_um": 0.5}))
    folder = tmp_path / "p"
    assert main(["project", "new", str(folder)]) == 0
    assert main(["project", "add", str(folder), "--reference", str(lib)]) == 0
    assert main(["project", "add", str(folder), "--query", str(lib / "a")]) == 0
    with open_project(folder, readonly=True, lock=False) as store:
        [source] = store.sources("reference")
    assert source["device"] == "scope A" and source["pixel_size_um"] == 0.5


def test_a_foreign_sqlite_file_is_refused_and_left_unchanged(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    with sqlite3.connect(folder / "project.sqlite") as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    db.close()
    before = (folder / "project.sqlite").read_bytes()
    with pytest.raises(CellSearchError, match="another program"):
        Workspace.open(folder)
    assert (folder / "project.sqlite").read_bytes() == before


def test_a_zero_byte_database_is_not_a_project_to_a_reader(tmp_path, capsys):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "project.sqlite").touch()
    assert main(["project", "info", str(folder)]) == 2
    assert "empty (0 bytes)" in capsys.readouterr().err
    assert (folder / "project.sqlite").stat().st_size == 0


# --- finding 7 (storage): malformed stores are messages ---------------------------------------------------
def test_a_dropped_cells_table_is_a_message(tmp_path):
    folder = make_project(tmp_path / "p")
    with sqlite3.connect(folder / "project.sqlite") as db:
        db.execute("DROP TABLE cells")
    db.close()
    with pytest.raises(CellSearchError, match="no 'cells' table"):
        open_project(folder, readonly=True, lock=False)


def test_a_wrong_schema_cache_is_set_aside(tmp_path):
    (tmp_path / "cache").mkdir()
    with sqlite3.connect(tmp_path / "cache" / "embeddings.sqlite") as db:
        db.execute("CREATE TABLE emb (x TEXT)")
    db.close()
    cache = EmbeddingCache(tmp_path / "cache")
    cache.put_many("m", {"k": np.ones(3, np.float32)})
    assert cache.count() == 1 and cache.recovered_from is not None and cache.recovered_from.is_file()
    cache.close()


def test_a_legacy_project_json_holding_a_list_is_a_message(tmp_path):
    (tmp_path / "project.json").write_text("[1, 2, 3]")
    with pytest.raises(CellSearchError, match="not a CellSearch project file"):
        Workspace.open(tmp_path)
    assert (tmp_path / "project.json").read_text() == "[1, 2, 3]"


@pytest.mark.parametrize("row", ["c1,crops/c.png,f.png,0,,1,1,1,1,1,", "c1,crops/c.png,f.png,0,a,b,c,d,1,1,4,"])
def test_a_malformed_cells_csv_is_a_message(tmp_path, row):
    from cellsearch_gui.core.app.inputs import cells_from_csv

    (tmp_path / "crops").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "crops" / "c.png")
    (tmp_path / "cells.csv").write_text("cell_id,crop_path,source_image,tile,bbox_x0,bbox_y0,bbox_x1,bbox_y1,"
                                        "centroid_x,centroid_y,area_px,mask_rle\n" + row + "\n")
    with pytest.raises(CellSearchError, match="cells.csv"):
        cells_from_csv(tmp_path / "cells.csv")
