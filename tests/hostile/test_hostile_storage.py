"""Hostile file-system conditions for the project store and the embedding cache: damaged, truncated,
foreign and empty files, read-only and full disks, concurrent readers, moved folders. Every case ends in a
correct result or one clear CellSearchError message: never a traceback, a hang, a silent change to a file
that is not ours, or a healthy cache set aside."""

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from PIL import Image

from cellsearch_gui.cli import main
from cellsearch_gui.core.app.session import Workspace
from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.project import open_project
from cellsearch_gui.core.project.arrays import load_run_arrays, save_run_arrays
from cellsearch_gui.core.types import Cell, FeatureSet

N_CELLS = 40


def make_project(folder, n=N_CELLS, labels=5):
    ws = Workspace()
    ws.save(folder)
    crops = folder / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(crops / f"c{i}.png")
    ws.store.put_cells([Cell(f"c{i}", str(crops / f"c{i % 3}.png"), "field.png", (0, 0, 8, 8), (4.0, 4.0), 64)
                        for i in range(n)])
    ws.set_labels({f"c{i}": "lymphocyte" for i in range(labels)})
    ws.close()
    return folder


def read_everything(folder, readonly=True):
    """Everything a reader asks of a project: a dict, or a CellSearchError (any other error fails the test)."""
    try:
        with open_project(folder, readonly=readonly, lock=False) as store:
            return {"counts": store.counts(), "cells": len(store.cells()), "labels": store.labels(),
                    "runs": store.runs(), "integrity": store.integrity()}
    except CellSearchError as exc:
        assert str(exc) and "Traceback" not in str(exc)
        return exc


def damage(path, offset, data=b"\xde\xad\xbe\xef" * 64):
    raw = bytearray(path.read_bytes())
    offset = offset if offset >= 0 else len(raw) + offset
    raw[offset:offset + len(data)] = data[:max(0, len(raw) - offset)]
    path.write_bytes(bytes(raw))


def checkpointed(folder):
    """The project file alone (WAL folded in), as after a clean close."""
    db = sqlite3.connect(folder / "project.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for suffix in ("-wal", "-shm"):
        (folder / f"project.sqlite{suffix}").unlink(missing_ok=True)
    return folder / "project.sqlite"


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "p")


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs (root only); skipped where mounting is not allowed."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def remount(mount, mode):
    done = subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount {mode}: {done.stderr.decode()}")


def fill(mount):
    """Fill the file system; returns the filler file (delete it to free the space)."""
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


# --- damaged, truncated, empty and foreign project databases ---------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("offset", [0, 16, 28, 100, 4096, 4096 + 200, 8192 + 8, -100])
def test_corrupted_project_bytes(project, offset):
    path = checkpointed(project)
    damage(path, offset)
    result = read_everything(project)
    if isinstance(result, dict):  # the damage missed what is read, or the integrity check names it
        assert result["cells"] in (N_CELLS, 0) or result["integrity"] != "ok"
    else:
        assert any(word in str(result) for word in ("damaged", "not a CellSearch", "schema", "lacks", "newer"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("keep", [1, 50, 99, 100, 4096, 6000])
def test_truncated_project_database(project, keep):
    path = checkpointed(project)
    path.write_bytes(path.read_bytes()[:keep])
    result = read_everything(project)
    assert isinstance(result, CellSearchError) or result["integrity"] != "ok" or result["cells"] == N_CELLS


@pytest.mark.timeout(60)
def test_zero_byte_database_reader_refuses(tmp_path):
    (tmp_path / "project.sqlite").touch()
    result = read_everything(tmp_path)
    assert isinstance(result, CellSearchError) and "0 bytes" in str(result)
    assert (tmp_path / "project.sqlite").stat().st_size == 0


@pytest.mark.timeout(60)
def test_zero_byte_database_writer_says_it_created_a_project(tmp_path):
    (tmp_path / "project.sqlite").touch()
    with open_project(tmp_path) as store:
        assert "0 bytes" in store.note and store.counts()["cells"] == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("readonly", [True, False])
def test_foreign_sqlite_file_is_refused_unchanged(tmp_path, readonly):
    db = sqlite3.connect(tmp_path / "project.sqlite")
    db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO photos VALUES (1, 'x')")
    db.commit()
    db.close()
    before = (tmp_path / "project.sqlite").read_bytes()
    result = read_everything(tmp_path, readonly=readonly)
    assert isinstance(result, CellSearchError) and "another program" in str(result)
    assert (tmp_path / "project.sqlite").read_bytes() == before
    assert not (tmp_path / "project.sqlite-wal").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("content", [b"hello, this is text\n" * 50, bytes(range(256)) * 20])
def test_a_non_database_named_project_sqlite(tmp_path, content):
    (tmp_path / "project.sqlite").write_bytes(content)
    result = read_everything(tmp_path, readonly=False)
    assert isinstance(result, CellSearchError)
    assert (tmp_path / "project.sqlite").read_bytes() == content


@pytest.mark.timeout(60)
def test_project_sqlite_is_a_directory(tmp_path):
    (tmp_path / "project.sqlite").mkdir()
    assert isinstance(read_everything(tmp_path), CellSearchError)


@pytest.mark.timeout(60)
def test_a_newer_schema_is_refused_unchanged(project):
    path = checkpointed(project)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    before = path.read_bytes()
    result = read_everything(project, readonly=False)
    assert isinstance(result, CellSearchError) and "newer" in str(result) and path.read_bytes() == before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("table", ["meta", "sources", "cells", "labels", "runs", "predictions"])
def test_a_dropped_table(project, table):
    db = sqlite3.connect(project / "project.sqlite")
    db.execute(f"DROP TABLE {table}")
    db.commit()
    db.close()
    for readonly in (True, False):
        result = read_everything(project, readonly=readonly)
        assert isinstance(result, CellSearchError) and f"'{table}'" in str(result)


@pytest.mark.timeout(60)
def test_a_dropped_column(project):
    db = sqlite3.connect(project / "project.sqlite")
    db.execute("ALTER TABLE cells DROP COLUMN mask_rle")
    db.commit()
    db.close()
    result = read_everything(project)
    assert isinstance(result, CellSearchError) and "mask_rle" in str(result)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["[1, 2]", "\"text\"", "not json", "null"])
def test_settings_changed_outside_the_app(project, value):
    db = sqlite3.connect(project / "project.sqlite")
    db.execute("INSERT OR REPLACE INTO meta VALUES ('settings', ?)", (value,))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('added_to_reference', ?)", (value,))
    db.commit()
    db.close()
    ws = Workspace.open(project)
    assert ws.settings.models and len(ws.user_labels) == 5
    ws.close()


# --- legacy project.json -----------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", ["[1, 2, 3]", "\"a string\"", "42", "{\"reference_dirs\": \"/r\"}", "{nope",
                                  "\xff\xfe"])
def test_hostile_legacy_project_json(tmp_path, text):
    (tmp_path / "project.json").write_text(text, encoding="latin-1")
    with pytest.raises(CellSearchError):
        Workspace.open(tmp_path)
    assert (tmp_path / "project.json").is_file() and not (tmp_path / "project.sqlite").exists()


# --- the embedding cache -----------------------------------------------------------------------------------
def make_cache(folder, n=50):
    cache = EmbeddingCache(folder)
    cache.put_many("m", {f"k{i}": np.full(64, i, np.float32) for i in range(n)})
    cache.close()
    db = sqlite3.connect(folder / "embeddings.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return folder / "embeddings.sqlite"


def use_cache(folder):
    """Open, read and write: must work (possibly from a fresh or in-memory cache) without raising."""
    cache = EmbeddingCache(folder)
    found = cache.get_many("m", [f"k{i}" for i in range(50)])
    assert all(np.all(v == int(k[1:])) for k, v in found.items())  # what is read is right
    cache.put_many("m", {"new": np.ones(64, np.float32)})
    assert "new" in cache.get_many("m", ["new"])
    notes, recovered = list(cache.notes), cache.recovered_from
    cache.close()
    return found, notes, recovered


@pytest.mark.timeout(60)
@pytest.mark.parametrize("offset", [0, 20, 100, 4096 + 50, -200])
def test_corrupted_cache_bytes(tmp_path, offset):
    damage(make_cache(tmp_path / "c"), offset)
    use_cache(tmp_path / "c")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("keep", [0, 10, 100, 5000])
def test_truncated_cache(tmp_path, keep):
    path = make_cache(tmp_path / "c")
    path.write_bytes(path.read_bytes()[:keep])
    use_cache(tmp_path / "c")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sql", ["CREATE TABLE emb (model TEXT, content TEXT, dim INTEGER, vec BLOB, extra TEXT)",
                                 "CREATE TABLE meta (a TEXT)", "CREATE VIEW emb AS SELECT 1 AS x"])
def test_wrong_schema_cache_is_set_aside_not_deleted(tmp_path, sql):
    (tmp_path / "c").mkdir()
    db = sqlite3.connect(tmp_path / "c" / "embeddings.sqlite")
    db.execute(sql)
    db.close()
    _, notes, recovered = use_cache(tmp_path / "c")
    assert recovered is not None and recovered.is_file() and notes


@pytest.mark.timeout(60)
def test_cache_path_is_a_directory(tmp_path):
    (tmp_path / "c" / "embeddings.sqlite").mkdir(parents=True)
    _, notes, recovered = use_cache(tmp_path / "c")
    assert notes and recovered is None and (tmp_path / "c" / "embeddings.sqlite").is_dir()


@pytest.mark.timeout(60)
def test_cache_on_a_full_disk_mid_write_keeps_its_rows(tmp_path, monkeypatch):
    make_cache(tmp_path / "c")
    cache = EmbeddingCache(tmp_path / "c")
    real_executemany = None

    class Full:
        def __init__(self, db):
            self.db = db

        def __getattr__(self, name):
            return getattr(self.db, name)

        def __enter__(self):
            return self.db.__enter__()

        def __exit__(self, *exc):
            return self.db.__exit__(*exc)

        def executemany(self, *args):
            raise sqlite3.OperationalError("database or disk is full")

    real_executemany = cache._db
    cache._db = Full(real_executemany)
    cache.put_many("m", {"x": np.ones(64, np.float32)})
    assert any("full" in n for n in cache.notes) and cache.recovered_from is None
    cache.close()
    again = EmbeddingCache(tmp_path / "c")
    assert again.count() == 50 and again.integrity() == "ok"
    again.close()


@pytest.mark.timeout(60)
def test_cache_on_a_real_full_disk(small_fs):
    make_cache(small_fs / "c")
    filler = fill(small_fs)
    cache = EmbeddingCache(small_fs / "c")
    cache.put_many("m", {f"big{i}": np.ones(4096, np.float32) for i in range(64)})  # does not fit
    cache.close()
    assert not list((small_fs / "c").glob("*.damaged-*"))
    filler.unlink()
    again = EmbeddingCache(small_fs / "c")
    assert again.count() in (50, 50 + 64) and again.integrity() == "ok" and again.recovered_from is None
    again.close()


@pytest.mark.timeout(60)
def test_cache_on_a_read_only_disk(small_fs):
    make_cache(small_fs / "c")
    remount(small_fs, "ro")
    try:
        cache = EmbeddingCache(small_fs / "c")
        assert len(cache.get_many("m", [f"k{i}" for i in range(50)])) == 50  # still read
        cache.put_many("m", {"new": np.ones(64, np.float32)})  # not kept, said once
        assert cache.recovered_from is None and cache.notes and not list((small_fs / "c").glob("*.damaged-*"))
        cache.close()
    finally:
        remount(small_fs, "rw")


# --- full and read-only disks for the project ------------------------------------------------------------
SAVES = {
    "cells": lambda s: s.put_cells([Cell(f"n{i}", f"/x/{i}.png", "f.png", mask_rle="x" * 4000) for i in range(400)]),
    "labels": lambda s: s.set_labels({f"c{i}": "x" * 3000 for i in range(N_CELLS)}),
    "settings": lambda s: s.set_meta("settings", {"blob": "y" * 400000}),
    "run": lambda s: s.finish_run(s.start_run("classify", {"b": "z" * 300000}), "finished", {},
                                  predictions=[(f"c{i}", "a" * 5000, 0.1, 3) for i in range(N_CELLS)]),
    "source": lambda s: [s.add_source("query", f"/q/{i}" + "q" * 2000) for i in range(300)],
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("what", sorted(SAVES))
def test_disk_full_during_a_save_keeps_the_last_state(small_fs, what):
    folder = make_project(small_fs / "p")
    before = read_everything(folder)
    filler = fill(small_fs)
    store = open_project(folder)
    try:
        SAVES[what](store)
        saved = True
    except CellSearchError as exc:
        assert "full" in str(exc)
        saved = False
    finally:
        store.close()
    filler.unlink()
    after = read_everything(folder)
    assert after["integrity"] == "ok"
    if not saved:
        assert after["counts"] == before["counts"] and after["labels"] == before["labels"]


@pytest.mark.timeout(60)
def test_atomic_arrays_on_a_full_disk(tmp_path, monkeypatch):
    feats = FeatureSet(paths=[tmp_path / "a.png"], labels=["x"], features=np.ones((1, 4), np.float32),
                       model_ids=["m"], dims=[4], per_model_l2=[True], fingerprints={"m": "m|abc"},
                       per_model={"m": np.ones((1, 4), np.float32)}, prep={}, cell_ids=["a"])
    save_run_arrays(tmp_path, 1, feats, feats)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(CellSearchError, match="the disk is full"):
        save_run_arrays(tmp_path, 1, feats, feats)
    monkeypatch.undo()
    assert not list(tmp_path.rglob("*.part"))
    ref, _ = load_run_arrays(tmp_path, 1)
    assert ref.paths == [tmp_path / "a.png"]


@pytest.mark.timeout(60)
def test_project_on_read_only_medium_after_a_sigkill(small_fs):
    folder = small_fs / "p"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from cellsearch_gui.core.project import open_project
        from cellsearch_gui.core.types import Cell
        store = open_project({str(folder)!r}, create=True)
        store.put_cells([Cell(f"c{{i}}", f"/x/{{i}}.png", "f.png") for i in range(157)])
        store.set_labels({{"c1": "a"}})
        print("ready", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGKILL)
    child.wait()
    remount(small_fs, "ro")
    try:
        result = read_everything(folder)
        assert result["counts"]["cells"] == 157 and result["labels"] == {"c1": "a"}
        ws = Workspace.open(folder)  # a read-only medium opens read-only
        assert ws.store.readonly
        with pytest.raises(CellSearchError, match="read-only"):
            ws.set_labels({"c2": "b"})
        ws.close()
    finally:
        remount(small_fs, "rw")


@pytest.mark.timeout(60)
def test_read_only_medium_without_the_wal_index_opens_as_a_snapshot(small_fs):
    folder = make_project(small_fs / "p")
    (folder / "project.sqlite-shm").unlink(missing_ok=True)
    (folder / "project.sqlite-wal").write_bytes(b"")  # an empty WAL: nothing newer than the file
    remount(small_fs, "ro")
    try:
        result = read_everything(folder)
        assert result["counts"]["cells"] == N_CELLS
    finally:
        remount(small_fs, "rw")


@pytest.mark.timeout(60)
def test_new_project_on_a_read_only_medium(small_fs, capsys):
    remount(small_fs, "ro")
    try:
        assert main(["project", "new", str(small_fs / "p")]) == 2
        assert "read-only" in capsys.readouterr().err
    finally:
        remount(small_fs, "rw")


@pytest.mark.timeout(60)
def test_project_new_on_a_real_full_disk(small_fs, capsys):
    filler = fill(small_fs)
    code = main(["project", "new", str(small_fs / "p")])
    err = capsys.readouterr().err
    assert code == 0 or ("full" in err or "space" in err)
    filler.unlink()


# --- concurrency -------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_reader_during_writes_sees_whole_transactions(project):
    writer = open_project(project)
    seen, errors = [], []

    def read():
        try:
            for _ in range(40):
                with open_project(project, readonly=True, lock=False) as reader:
                    seen.append(reader.counts()["cells"])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    for batch in range(20):
        writer.put_cells([Cell(f"b{batch}_{i}", f"/x/{i}.png", "f.png") for i in range(10)])
    thread.join()
    writer.close()
    assert not errors and seen and all((n - N_CELLS) % 10 == 0 for n in seen) and seen == sorted(seen)


# --- moved, copied, opened from elsewhere ----------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["moved", "copied"])
def test_moved_or_copied_project(project, tmp_path, how):
    target = tmp_path / "elsewhere" / "q"
    target.parent.mkdir()
    (shutil.move if how == "moved" else shutil.copytree)(project, target)
    with open_project(target, readonly=True, lock=False) as store:
        assert all(c.crop_path.startswith(str(target)) and os.path.isfile(c.crop_path) for c in store.cells())


@pytest.mark.timeout(60)
def test_export_with_crops_from_another_directory(project, tmp_path, monkeypatch, capsys):
    with open_project(project) as store:
        run = store.start_run("classify", {})
        store.finish_run(run, "finished", {}, predictions=[(f"c{i}", "lymphocyte", 0.1, 3) for i in range(3)])
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    assert main(["project", "export", str(project), "out.csv", "--with-crops"]) == 0
    assert len(list((other / "out_crops").rglob("*.png"))) == 3


@pytest.mark.timeout(60)
def test_a_folder_name_with_uri_characters(tmp_path):
    folder = make_project(tmp_path / "a?b#c%20d&e")
    result = read_everything(folder)
    assert result["counts"]["cells"] == N_CELLS and result["integrity"] == "ok"


@pytest.mark.timeout(60)
def test_sources_added_twice_under_two_spellings_are_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib").mkdir()
    with open_project(tmp_path / "p", create=True) as store:
        store.add_source("reference", "lib", 0.5, "scope")
        store.add_source("reference", str(tmp_path / "lib"))
        store.add_source("reference", "./lib/")
        assert store.sources("reference") == [{"path": str(tmp_path / "lib"), "pixel_size_um": 0.5,
                                               "device": "scope"}]


# --- cells.csv of a segmented folder ----------------------------------------------------------------------
CSV_HEAD = "cell_id,crop_path,source_image,tile,bbox_x0,bbox_y0,bbox_x1,bbox_y1,centroid_x,centroid_y,area_px,mask_rle\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("body", [b"", b"cell_id\nc1\n", (CSV_HEAD + "c1,c.png,f.png,,0,0,x,1,1,1,1,\n").encode(),
                                  b"\x00\xff\xfe garbage \x80\x81", (CSV_HEAD + "c1,c.png\n").encode(),
                                  (CSV_HEAD + "c1,c.png,f.png,,0,0,1,1,nan,1,1.5,\n").encode()])
def test_hostile_cells_csv(tmp_path, body):
    from cellsearch_gui.core.app.inputs import cells_from_csv

    Image.new("RGB", (8, 8)).save(tmp_path / "c.png")
    (tmp_path / "cells.csv").write_bytes(body)
    try:
        cells = cells_from_csv(tmp_path / "cells.csv")
    except CellSearchError as exc:
        assert "cells.csv" in str(exc)
    else:
        assert all(isinstance(c, Cell) for c in cells)
