"""Hostile input files: each one is read correctly or refused with a message naming it, by every reader
(crops, fields, hashing) and every collector (class folders, query folders, dropped inputs). No traceback,
no hang (each case under a timeout), no unbounded memory."""

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellsearch_gui.core.app.inputs import sort_inputs
from cellsearch_gui.core.errors import BadImageError, DatasetError
from cellsearch_gui.core.io.checksums import content_key
from cellsearch_gui.core.io.dataset import scan_class_folders, scan_query
from cellsearch_gui.core.io.fields import Field
from cellsearch_gui.core.io.images import collect_images, read_rgb

OK = "ok"


def display_path(name: str) -> str:
    """A name as messages show it (bytes that are not UTF-8 as \\xNN)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _rgb(h=32, w=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _save(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buffer, fmt)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bomb(d: Path) -> Path:
    """A valid PNG header declaring 100000 x 100000 pixels over a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) \
        + _png_chunk(b"IEND", b"")
    (d / "bomb.png").write_bytes(raw)
    return d / "bomb.png"


def _tiff_claiming(d: Path, width: int, height: int, name: str) -> Path:
    """A small TIFF whose header is patched to claim ``width`` x ``height`` pixels."""
    path = d / name
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), compression="zlib")
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        for tag, value in (("ImageWidth", width), ("ImageLength", height)):
            offset, fmt = tags[tag].valueoffset, "<I" if tags[tag].dtype == 4 else "<H"
            data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))
    return path


def _truncated(d: Path, name: str, fmt: str) -> Path:
    data = _encoded(fmt) if fmt != "TIFF" else _tiff_bytes()
    (d / name).write_bytes(data[: len(data) // 2])
    return d / name


def _tiff_bytes() -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, _rgb(64, 64), compression="zlib", photometric="rgb")
    return buffer.getvalue()


def _corrupt_tiles(d: Path) -> Path:
    path = d / "corrupt_tiles.tif"
    tifffile.imwrite(path, _rgb(1024, 1024), tile=(256, 256), compression="zlib", photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages.first.dataoffsets[5]
    data = bytearray(path.read_bytes())
    data[offset:offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    return path


def _gif_animated(d: Path) -> Path:
    frames = [Image.fromarray(_rgb(40, 40, seed)) for seed in range(3)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    return d / "anim.gif"


def _stack(d: Path) -> Path:
    with tifffile.TiffWriter(d / "stack.tif") as tif:
        for value in range(4):
            tif.write(np.full((32, 32), value * 60, np.uint8), photometric="minisblack")
    return d / "stack.tif"


def _link(d: Path, name: str, target) -> Path:
    (d / name).symlink_to(target)
    return d / name


def _odd_name(d: Path, raw: bytes) -> Path:
    path = Path(os.fsdecode(os.path.join(os.fsencode(d), raw)))
    return _save(path, _rgb())


CASES = {
    "fifo named .png": (lambda d: (os.mkfifo(d / "pipe.png"), d / "pipe.png")[1], "FIFO"),
    "fifo named .tif": (lambda d: (os.mkfifo(d / "pipe.tif"), d / "pipe.tif")[1], "FIFO"),
    "link to /dev/zero": (lambda d: _link(d, "zero.png", "/dev/zero"), "character device"),
    "link to /dev/zero as .tif": (lambda d: _link(d, "zero.tif", "/dev/zero"), "character device"),
    "link to /dev/null": (lambda d: _link(d, "null.jpg", "/dev/null"), "character device"),
    "dangling link": (lambda d: _link(d, "gone.png", d / "nowhere.png"), "broken symbolic link"),
    "link loop": (lambda d: (_link(d, "a.png", d / "b.png"), _link(d, "b.png", d / "a.png"))[0], "loop"),
    "link to itself": (lambda d: _link(d, "self.png", d / "self.png"), "loop"),
    "folder named .png": (lambda d: ((d / "dir.png").mkdir(), d / "dir.png")[1], "a folder"),
    "zero-byte png": (lambda d: ((d / "empty.png").touch(), d / "empty.png")[1], "empty file"),
    "zero-byte tiff": (lambda d: ((d / "empty.tif").touch(), d / "empty.tif")[1], "empty file"),
    "truncated png": (lambda d: _truncated(d, "half.png", "PNG"), "corrupt or truncated"),
    "truncated jpeg": (lambda d: _truncated(d, "half.jpg", "JPEG"), "truncated"),
    "truncated tiff": (lambda d: _truncated(d, "half.tif", "TIFF"), "half.tif"),
    "text named .png": (lambda d: ((d / "notes.png").write_text("hello"), d / "notes.png")[1], "not an image"),
    "text named .tif": (lambda d: ((d / "notes.tif").write_text("hello"), d / "notes.tif")[1], "not"),
    "jpeg named .png": (lambda d: ((d / "j.png").write_bytes(_encoded("JPEG")), d / "j.png")[1], OK),
    "png named .tif": (lambda d: ((d / "p.tif").write_bytes(_encoded("PNG")), d / "p.tif")[1], "not"),
    "16-bit gray png": (lambda d: _save(d / "g16.png", np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60), OK),
    "float32 tiff": (lambda d: (tifffile.imwrite(d / "f.tif", np.random.rand(32, 32).astype(np.float32)),
                                d / "f.tif")[1], OK),
    "all-NaN float tiff": (lambda d: (tifffile.imwrite(d / "nan.tif", np.full((32, 32), np.nan, np.float32)),
                                      d / "nan.tif")[1], "no finite"),
    "1-channel png": (lambda d: _save(d / "gray.png", _rgb()[:, :, 0]), OK),
    "4-channel png": (lambda d: _save(d / "rgba.png", np.dstack([_rgb(), np.full((32, 32), 200, np.uint8)])), OK),
    "5-channel tiff": (lambda d: (tifffile.imwrite(d / "c5.tif", np.zeros((32, 32, 5), np.uint8),
                                                   photometric="minisblack", planarconfig="contig"),
                                  d / "c5.tif")[1], "channels"),
    "planar 16-bit RGB tiff": (lambda d: (tifffile.imwrite(d / "p16.tif", np.zeros((3, 32, 32), np.uint16) + 7,
                                                           photometric="rgb", planarconfig="separate"),
                                          d / "p16.tif")[1], OK),
    "animated gif": (_gif_animated, OK),
    "multi-page tiff stack": (_stack, OK),
    "palette png": (lambda d: (Image.fromarray(_rgb()).convert("P").save(d / "pal.png"), d / "pal.png")[1], OK),
    "cmyk jpeg": (lambda d: (Image.fromarray(_rgb()).convert("CMYK").save(d / "cmyk.jpg"), d / "cmyk.jpg")[1], OK),
    "1x1 image": (lambda d: _save(d / "dot.png", _rgb(1, 1)), "1x1"),
    "png bomb (100000 x 100000 declared)": (_png_bomb, "bomb.png"),
    "tiff bomb (100000 x 100000 declared)": (lambda d: _tiff_claiming(d, 100_000, 100_000, "tbomb.tif"),
                                             "tbomb.tif"),
    "tiff claiming 0 x 0": (lambda d: _tiff_claiming(d, 0, 0, "zero_dims.tif"), "zero_dims.tif"),
    "corrupt zlib tiles": (_corrupt_tiles, "corrupt_tiles.tif"),
    "name not UTF-8": (lambda d: _odd_name(d, b"caf\xe9_\xff.png"), OK),
    "240-character name": (lambda d: _save(d / ("n" * 236 + ".png"), _rgb()), OK),
    "NFD name": (lambda d: _save(d / "mye\u0301locyte.png", _rgb()), OK),
    "name with newline and quotes": (lambda d: _save(d / 'a\n"b\'.png', _rgb()), OK),
    "upper-case extension": (lambda d: _save(d / "CELL.PNG", _rgb()), OK),
}


def _read_field(path: Path) -> np.ndarray:
    with Field(path) as field_:
        field_.overview(64)
        return field_.read(0, 64, 0, 64)


def _check_refusal(exc: BaseException, path: Path, expect: str) -> None:
    text = str(exc)
    assert expect != OK, f"expected a good read, got: {text}"
    assert display_path(path.name)[:40] in text, text
    assert expect.lower() in text.lower(), text


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_every_reader_reads_or_refuses_clearly(case, tmp_path):
    build, expect = CASES[case]
    path = build(tmp_path)
    for reader in (read_rgb, _read_field):
        try:
            image = reader(path)
        except BadImageError as exc:
            _check_refusal(exc, path, expect)
            continue
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert expect == OK or reader is _read_field, f"{case}: read although '{expect}' expected"
    try:
        assert len(content_key(path)) == 64
    except OSError as exc:
        assert exc.strerror, exc


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_every_collector_skips_or_keeps_with_a_note(case, tmp_path):
    build, expect = CASES[case]
    library = tmp_path / "library"
    folder = library / "blast"
    folder.mkdir(parents=True)
    good = _save(folder / "good.png", _rgb())
    path = build(folder)
    crops = scan_class_folders(library)
    assert good in crops.paths and crops.classes == ["blast"]
    if path not in crops.paths and path.name != "a.png":
        assert any(display_path(path.name)[:40] in p for p in crops.problems) or path.is_dir()
    images, problems = collect_images([folder])
    assert good in images
    fields, cells, notes = sort_inputs([folder], "crops")
    assert not fields and any(c.crop_path == str(good) for c in cells)
    assert len(scan_query(folder)) >= 1


@pytest.mark.timeout(60)
def test_hidden_files_and_folders_are_ignored(tmp_path):
    _save(tmp_path / "lib" / "a" / "x.png", _rgb())
    _save(tmp_path / "lib" / "a" / ".hidden.png", _rgb())
    (tmp_path / "lib" / ".git").mkdir()
    _save(tmp_path / "lib" / ".git" / "y.png", _rgb())
    _save(tmp_path / "lib" / "_trash" / "z.png", _rgb())
    crops = scan_class_folders(tmp_path / "lib")
    assert crops.classes == ["a"] and [p.name for p in crops.paths] == ["x.png"]
    images, _ = collect_images([tmp_path / "lib"])
    assert [p.name for p in images] == ["x.png"]


@pytest.mark.timeout(60)
def test_empty_class_folders_are_named_in_a_note(tmp_path):
    _save(tmp_path / "lib" / "a" / "x.png", _rgb())
    (tmp_path / "lib" / "empty").mkdir()
    crops = scan_class_folders(tmp_path / "lib")
    assert crops.classes == ["a"] and any("'empty' holds no images" in p for p in crops.problems)


@pytest.mark.timeout(60)
def test_a_library_of_only_special_files_is_a_clear_error(tmp_path):
    (tmp_path / "lib" / "a").mkdir(parents=True)
    os.mkfifo(tmp_path / "lib" / "a" / "p.png")
    with pytest.raises(DatasetError, match="no labelled images"):
        scan_class_folders(tmp_path / "lib")


@pytest.mark.timeout(60)
def test_a_folder_link_loop_in_a_query_folder_ends(tmp_path):
    _save(tmp_path / "q" / "sub" / "x.png", _rgb())
    (tmp_path / "q" / "sub" / "loop").symlink_to(tmp_path / "q")
    images, problems = collect_images([tmp_path / "q"])
    assert [p.name for p in images] == ["x.png"]


@pytest.mark.timeout(60)
def test_the_same_file_through_two_links_is_used_once(tmp_path):
    _save(tmp_path / "q" / "x.png", _rgb())
    (tmp_path / "q" / "alias.png").symlink_to(tmp_path / "q" / "x.png")
    images, _ = collect_images([tmp_path / "q"])
    assert len(images) == 1


@pytest.mark.timeout(60)
def test_a_fifo_given_directly_is_named_not_missing(tmp_path):
    os.mkfifo(tmp_path / "p.png")
    images, problems = collect_images([tmp_path / "p.png"])
    assert not images and "FIFO" in problems[0] and "no such" not in problems[0]
    with pytest.raises(DatasetError, match="FIFO"):
        scan_query(tmp_path / "p.png")


@pytest.mark.timeout(60)
def test_a_class_folder_link_loop_is_skipped(tmp_path):
    _save(tmp_path / "lib" / "a" / "x.png", _rgb())
    (tmp_path / "lib" / "b").symlink_to(tmp_path / "lib" / "c")
    (tmp_path / "lib" / "c").symlink_to(tmp_path / "lib" / "b")
    crops = scan_class_folders(tmp_path / "lib")
    assert crops.classes == ["a"]
