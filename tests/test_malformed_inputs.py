"""A corpus of malformed or unusual inputs: each gives a clear message naming the file and the problem,
valid oddities are read, and nothing already stored in a project is lost."""

import hashlib
import io
import json
import sqlite3

import numpy as np
import pytest
from PIL import Image

from cellsearch_gui.core.app.session import Workspace
from cellsearch_gui.core.errors import BadImageError, CellSearchError
from cellsearch_gui.core.io.images import read_rgb
from cellsearch_gui.core.io.labels_csv import read_labels_csv
from cellsearch_gui.core.project import open_project
from cellsearch_gui.core.project.library import read_library_info
from cellsearch_gui.core.types import Cell


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _tiff(array, **kwargs) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, array, **kwargs)
    return buf.getvalue()


RGB = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)


def _bomb_png() -> bytes:
    import zlib

    data = bytearray(_png(RGB))
    data[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width and height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # a valid chunk checksum
    return bytes(data)


def _cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RGB).convert("CMYK").save(buf, format="JPEG")
    return buf.getvalue()


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RGB).convert("P").save(buf, format="GIF")
    return buf.getvalue()


def _multipage_tiff() -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.stack([RGB, RGB]))
    return buf.getvalue()


# name, bytes, expected: None = read fine, else a fragment of the message
IMAGES = [
    ("empty.png", b"", "empty file"),
    ("text.png", b"just some notes, not an image\n", "not an image file"),
    ("truncated.png", _png(RGB)[:100], "corrupt or truncated"),
    ("truncated.jpg", Image.fromarray(RGB).tobytes()[:10], "not an image file"),
    ("html.tif", b"<html><body>404 not found</body></html>", "not an image file"),
    ("bomb.png", _bomb_png(), "pixel"),
    ("one_pixel.png", _png(RGB[:1, :1]), "only 1x1 pixels"),
    ("all_nan.tif", _tiff(np.full((8, 8), np.nan, np.float32)), "no finite pixel values"),
    ("five_channels.tif", _tiff(np.zeros((8, 8, 5), np.uint8), photometric="minisblack", planarconfig="contig"), "5 channels"),
    ("png_named.jpg", _png(RGB), None),
    ("gray16.png", _png((np.arange(400, dtype=np.uint16).reshape(20, 20) * 150)), None),
    ("rgba.png", _png(np.dstack([RGB, np.full(RGB.shape[:2], 128, np.uint8)])), None),
    ("palette.gif", _gif(), None),
    ("cmyk.jpg", _cmyk_jpeg(), None),
    ("float_with_nan.tif", _tiff(np.where(np.eye(8, dtype=bool), np.nan, 1.0).astype(np.float32) * np.arange(8)), None),
    ("multipage.tif", _multipage_tiff(), None),
]


@pytest.mark.parametrize("name,data,problem", IMAGES, ids=[i[0] for i in IMAGES])
def test_image_corpus(tmp_path, name, data, problem):
    path = tmp_path / name
    path.write_bytes(data)
    if problem is None:
        rgb = read_rgb(path)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    else:
        with pytest.raises(BadImageError) as err:
            read_rgb(path)
        assert name in str(err.value) and problem in str(err.value)


KNOWN = {"cell_a", "cell_b"}
LABEL_FILES = [
    ("empty.csv", b"", "the file is empty", None),
    ("header_only.csv", b"cell_id,label\n", None, {}),
    ("no_label_column.csv", b"cell_id,class\ncell_a,x\n", "needs 'cell_id' and 'label'", None),
    ("formula.csv", b"cell_id,label\ncell_a,=HYPERLINK(\"http://x\")\ncell_b,lymphocyte\n", None,
     {"cell_b": "lymphocyte"}),
    ("unknown.csv", b"cell_id,label\nnobody,x\ncell_a,monocyte\n", None, {"cell_a": "monocyte"}),
    ("twice.csv", b"cell_id,label\ncell_a,x\ncell_a,y\n", None, {"cell_a": "x"}),
    ("binary.csv", bytes(range(256)) * 4, "not a text CSV", None),
    ("semicolons.csv", b"cell_id;label\ncell_a;eosinophil\n", None, {"cell_a": "eosinophil"}),
    ("bom_windows.csv", "\ufeffcell_id,label\r\ncell_b,basophil\r\n".encode("utf-8"), None, {"cell_b": "basophil"}),
    ("newline_label.csv", b'cell_id,label\ncell_a,"two\nlines"\n', None, {}),
]


@pytest.mark.parametrize("name,data,problem,labels", LABEL_FILES, ids=[i[0] for i in LABEL_FILES])
def test_label_csv_corpus(tmp_path, name, data, problem, labels):
    path = tmp_path / name
    path.write_bytes(data)
    if problem:
        with pytest.raises(CellSearchError) as err:
            read_labels_csv(path, KNOWN)
        assert name in str(err.value) and problem in str(err.value)
    else:
        got, problems = read_labels_csv(path, KNOWN)
        assert got == labels
        assert all(name in p for p in problems)


@pytest.fixture
def labelled_project(tmp_path):
    folder = tmp_path / "project"
    ws = Workspace()
    ws.save(folder)
    ws.store.put_cells([Cell("cell_a", "a.png", "a.png"), Cell("cell_b", "b.png", "b.png")])
    ws.set_labels({"cell_a": "neutrophil"})
    ws.close()
    return folder


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_project_of_a_newer_schema_is_refused_unchanged(labelled_project):
    db_path = labelled_project / "project.sqlite"
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    before = _digest(db_path)
    with pytest.raises(CellSearchError, match="newer CellSearch .*schema 99"):
        Workspace.open(labelled_project)
    assert _digest(db_path) == before


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_project_database_gives_a_clear_error(labelled_project, damage):
    db_path = labelled_project / "project.sqlite"
    data = db_path.read_bytes()
    db_path.write_bytes(b"this is not sqlite" * 100 if damage == "garbage" else data[:700])
    for suffix in ("-wal", "-shm"):
        (labelled_project / f"project.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(CellSearchError, match="project.sqlite|not a readable"):
        ws = Workspace.open(labelled_project)
        ws.store.labels()


def test_bad_label_file_loses_nothing(labelled_project, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01binary")
    ws = Workspace.open(labelled_project)
    with pytest.raises(CellSearchError):
        read_labels_csv(bad, {c.cell_id for c in ws.store.cells()})
    ws.close()
    again = Workspace.open(labelled_project)
    assert again.user_labels == {"cell_a": "neutrophil"}
    again.close()


def test_legacy_project_json(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    (good / "project.json").write_text(json.dumps({"version": 1, "settings": {"views": 4, "bogus": 1},
                                                   "reference_dirs": ["/r"], "user_labels": {"c": "x"}}))
    (bad / "project.json").write_text("{ not json")
    ws = Workspace.open(good)
    assert ws.settings.views == 4 and ws.user_labels == {"c": "x"} and ws.reference_dirs == ["/r"]
    assert (good / "project.json.converted").is_file() and (good / "project.sqlite").is_file()
    ws.close()
    with pytest.raises(CellSearchError, match="project.json: unreadable"):
        Workspace.open(bad)


def test_not_a_project_and_newer_library(tmp_path):
    with pytest.raises(CellSearchError, match="is not a CellSearch project"):
        open_project(tmp_path)
    (tmp_path / "library.json").write_text(json.dumps({"format": 7}))
    with pytest.raises(CellSearchError, match="library format"):
        read_library_info(tmp_path)
    (tmp_path / "library.json").write_text("[broken")
    with pytest.raises(CellSearchError, match="library.json: unreadable"):
        read_library_info(tmp_path)


def test_damaged_embedding_cache_is_set_aside_and_rebuilt(tmp_path):
    from cellsearch_gui.core.embedding.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path)
    cache.put_many("m", {"k": np.ones(4, np.float32)})
    cache.close()
    (tmp_path / "embeddings.sqlite").write_bytes(b"\x00" * 5000)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"embeddings.sqlite{suffix}").unlink(missing_ok=True)
    rebuilt = EmbeddingCache(tmp_path)
    assert rebuilt.count() == 0 and rebuilt.recovered_from is not None
    assert rebuilt.recovered_from.is_file()  # the damaged file is kept for inspection
    rebuilt.close()
