"""Input hygiene (issue 16): special files, links, Unicode class names, names that are not UTF-8 and
compressed TIFFs read within a memory budget. Each test fails on the code before the fix."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cellsearch_gui
from cellsearch_gui.core.io.dataset import scan_class_folders, scan_query
from cellsearch_gui.core.io.labels_csv import read_labels_csv

CODE = Path(cellsearch_gui.__file__).resolve().parents[1]  # the checkout under test
pytestmark = pytest.mark.timeout(120)


def _png(path: Path, value: int = 120, size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def _run(code: str, limit_mb: int = 0, env: dict | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (this checkout first on the path), its address space capped."""
    head = f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({limit_mb} << 20, {limit_mb} << 20))\n" \
        if limit_mb else ""
    full_env = {**os.environ, "PYTHONPATH": str(CODE), **(env or {})}
    try:
        return subprocess.run([sys.executable, "-c", head + textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {timeout} s")


def test_hashing_a_fifo_is_an_error_not_a_hang(tmp_path):
    fifo = tmp_path / "cell.png"
    os.mkfifo(fifo)
    done = _run(f"""
        from cellsearch_gui.core.io.checksums import content_key
        try:
            content_key({str(fifo)!r})
        except OSError as exc:
            print("refused:", exc.strerror)
    """, timeout=20)
    assert "refused: a FIFO (named pipe), not a regular file" in done.stdout, done.stderr


def test_hashing_a_link_to_dev_zero_is_bounded(tmp_path):
    link = tmp_path / "cell.png"
    link.symlink_to("/dev/zero")
    done = _run(f"""
        from cellsearch_gui.core.io.checksums import content_key
        try:
            content_key({str(link)!r})
        except OSError as exc:
            print("refused:", exc.strerror)
    """, limit_mb=1024, timeout=30)
    assert "refused: a character device, not a regular file" in done.stdout, done.stderr


def test_special_files_in_a_class_folder_are_skipped_with_a_message(tmp_path):
    _png(tmp_path / "lib" / "a" / "good.png")
    os.mkfifo(tmp_path / "lib" / "a" / "pipe.png")
    (tmp_path / "lib" / "a" / "zero.png").symlink_to("/dev/zero")
    crops = scan_class_folders(tmp_path / "lib")
    assert [p.name for p in crops.paths] == ["good.png"]
    text = "\n".join(crops.problems)
    assert "pipe.png: a FIFO (named pipe), not a regular file, skipped" in text
    assert "zero.png: a character device, not a regular file, skipped" in text


def test_a_linked_class_folder_is_not_a_second_class(tmp_path):
    _png(tmp_path / "lib" / "neutrophil" / "n1.png")
    _png(tmp_path / "lib" / "lymphocyte" / "l1.png")
    (tmp_path / "lib" / "neutrophil_alias").symlink_to(tmp_path / "lib" / "neutrophil")
    crops = scan_class_folders(tmp_path / "lib")
    assert crops.classes == ["lymphocyte", "neutrophil"] and len(crops) == 2
    assert any("neutrophil_alias: a link to class folder 'neutrophil'" in p for p in crops.problems)


def test_links_out_of_the_library_are_not_followed(tmp_path):
    _png(tmp_path / "outside" / "secret" / "s.png")
    _png(tmp_path / "outside" / "loose.png")
    _png(tmp_path / "lib" / "a" / "a1.png")
    (tmp_path / "lib" / "secret").symlink_to(tmp_path / "outside" / "secret")
    (tmp_path / "lib" / "a" / "loose.png").symlink_to(tmp_path / "outside" / "loose.png")
    crops = scan_class_folders(tmp_path / "lib")
    assert crops.classes == ["a"] and [p.name for p in crops.paths] == ["a1.png"]
    assert sum("outside the library" in p for p in crops.problems) == 2


def test_nfc_and_nfd_spellings_are_one_class(tmp_path):
    nfc, nfd = "myélocyte", "mye\u0301locyte"
    _png(tmp_path / "lib" / nfc / "x.png")
    _png(tmp_path / "lib" / nfd / "y.png")
    crops = scan_class_folders(tmp_path / "lib")
    assert crops.classes == [nfc] and crops.counts() == {nfc: 2}


def test_label_csv_labels_are_nfc(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("cell_id,label\nc1,mye\u0301locyte\nc2,myélocyte\n", encoding="utf-8")
    labels, problems = read_labels_csv(csv_path, {"c1", "c2"})
    assert labels == {"c1": "myélocyte", "c2": "myélocyte"} and not problems


def test_names_that_are_not_utf8_survive_ids_and_written_files(tmp_path):
    from cellsearch_gui.core.io.atomic import atomic_open

    query = tmp_path / "query"
    _png(query / "plain.png")
    odd = Path(os.fsdecode(os.path.join(os.fsencode(query), b"caf\xe9_\xff.png")))
    _png(odd)
    crops = scan_query(query)
    ids = crops.ids()
    assert len(set(ids)) == 2 and all(i.encode("utf-8") for i in ids)
    with atomic_open(tmp_path / "out.csv") as handle:
        handle.write("\n".join(str(p) for p in crops.paths))
    assert "caf\\xe9_\\xff.png" in (tmp_path / "out.csv").read_text(encoding="utf-8")


def test_segment_survives_a_name_that_is_not_utf8(tmp_path):
    from cellsearch_gui.core.app.segment import segment_images
    from cellsearch_gui.core.jobs import run_job
    from cellsearch_gui.core.segmentation.settings import SegmentSettings

    field = np.full((300, 300, 3), 235, np.uint8)
    yy, xx = np.mgrid[:300, :300]
    for cy, cx in [(80, 80), (200, 150), (100, 220)]:
        field[(yy - cy) ** 2 + (xx - cx) ** 2 < 20 ** 2] = (90, 40, 120)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(field).save(os.path.join(os.fsencode(folder), b"f\xe9ld.png"))
    summary = run_job(segment_images([folder], tmp_path / "out", SegmentSettings(cell_diameter_px=40)))
    text = (tmp_path / "out" / "cells.csv").read_text(encoding="utf-8")
    assert "f\\xe9ld.png" in text and summary is not None


def _zlib_tiff(path: Path, side: int, tile: tuple[int, int] | None = (512, 512)) -> None:
    import tifffile

    def tiles():
        for _ in range((side // 512) ** 2):
            yield np.full((512, 512, 3), 230, np.uint8)

    if tile:
        tifffile.imwrite(path, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=tile, compression="zlib",
                         photometric="rgb")
    else:
        tifffile.imwrite(path, np.full((side, side, 3), 230, np.uint8), compression="zlib", photometric="rgb",
                         rowsperstrip=side)


def test_a_compressed_tiff_field_is_read_by_tiles_within_little_memory(tmp_path):
    path = tmp_path / "big.tif"
    _zlib_tiff(path, 16384)  # 805 MB once decoded, ~1 MB on disk
    done = _run(f"""
        from cellsearch_gui.core.io.fields import Field
        with Field({str(path)!r}) as field:
            tile = field.read(8000, 9024, 3000, 4024)
            overview = field.overview(1024)
        print("read", tile.shape, overview.shape, int(tile.mean()))
    """, limit_mb=900, timeout=110)
    assert "read (1024, 1024, 3) (1024, 1024, 3) 230" in done.stdout, done.stdout + done.stderr


def test_what_cannot_fit_the_memory_budget_is_refused_with_a_message(tmp_path):
    path = tmp_path / "one_strip.tif"
    _zlib_tiff(path, 3000, tile=None)  # one 27 MB strip
    done = _run(f"""
        from cellsearch_gui.core.errors import BadImageError
        from cellsearch_gui.core.io.fields import Field
        from cellsearch_gui.core.io.images import read_rgb
        for reader in (Field, read_rgb):
            try:
                reader({str(path)!r})
                print("read whole")
            except BadImageError as exc:
                print("refused:", exc)
    """, env={"CELLSEARCH_READ_BUDGET_MB": "16"})
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("refused:") and "CELLSEARCH_READ_BUDGET_MB" in line
                                   and "one_strip.tif" in line for line in lines), done.stdout + done.stderr
