"""Hostile ids, labels and file names (issue 16, finding 1 and the safe-path rule): every file the app writes
from data lands inside its output folder, nothing outside it changes, and no two files overwrite each other."""

import csv
import tempfile
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import file_snapshot, write_crop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cellsearch_gui.core.app.segment import segment_images
from cellsearch_gui.core.export import write_cells_csv
from cellsearch_gui.core.io.safe_paths import (
    MAX_COMPONENT_BYTES,
    RESERVED_NAMES,
    SafeWriter,
    UnsafePathError,
    inside,
    safe_component,
)
from cellsearch_gui.core.io.spreadsheet import spreadsheet_safe
from cellsearch_gui.core.jobs import run_job
from cellsearch_gui.core.project.library import LIBRARY_FILE, export_library, read_library_info
from cellsearch_gui.core.segmentation.settings import SegmentSettings
from cellsearch_gui.core.types import Cell

HOSTILE = [
    "../..", "..", ".", "../../sentinel/x", "../../../sentinel/passwd", "{sentinel}/passwd", "{sentinel}/x",
    "{sentinel}", "a/b", "a\\b", "..\\..\\x", "C:\\x",
    "CON", "con.txt", "NUL", "COM1", "LPT9.png", "x" * 300, "é" * 200, "\x00", "a\x00b", "line\nbreak", "cr\rx",
    "\t", " ", "", "...", ". .", "_hidden", ".hidden", "-", "=HYPERLINK(\"http://x\",\"y\")", "@SUM(1)",
    "+cmd|' /C calc'!A0", "\u202etxt.exe", "e\u0301", "\u00e9", "🧫🦠", "zero\u200bwidth", "\udcff",
    "library.json", "a:b*c?d\"e<f>g|h", "~", "$HOME", "%TEMP%", "a/../../b",
]
pytestmark = pytest.mark.timeout(60)
# "{sentinel}" becomes the absolute path of the sentinel folder, so a regression damages it, not the system


def _aimed(text: str, sentinel: Path) -> str:
    return text.replace("{sentinel}", str(sentinel))






def _world(base: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """A sentinel folder beside the output, and the crop every cell points at."""
    sentinel = base / "sentinel"
    for name in ("passwd", "x.png", "victim.png", "b.png"):
        (sentinel / name).parent.mkdir(parents=True, exist_ok=True)
        (sentinel / name).write_bytes(b"do not touch " + name.encode())
    crop = write_crop(base / "input" / "crop.png", 100)
    return sentinel, crop, file_snapshot(base)


def _assert_inside(folder: Path, paths) -> None:
    root = folder.resolve()
    for path in paths:
        assert Path(path).resolve().is_relative_to(root), path
        assert Path(path).is_file(), path


def _export(base: Path, pairs: list[tuple[str, str]]) -> tuple[Path, list[Path]]:
    """write_cells_csv with crops: one cell per (cell id, label)."""
    crop = base / "input" / "crop.png"
    rows = [(Cell(uid, str(crop), "src"), "predicted", 0.0, 1, label or None) for uid, label in pairs]
    out = base / "out" / "cells.csv"
    assert write_cells_csv(out, rows, {}, with_crops=True) == len(pairs)
    with open(out, newline="", encoding="utf-8") as handle:
        written = [Path(r["crop_path"]) for r in csv.DictReader(handle)]
    return out.parent, written


@pytest.mark.parametrize("text", HOSTILE)
def test_safe_component_is_one_harmless_name(text):
    name = safe_component(text)
    assert name and name not in (".", "..")
    assert not set(name) & set('/\\<>:"|?*\x00\n\r\t')
    assert not name.startswith((".", "_", " ")) and not name.endswith((".", " "))
    assert name.split(".")[0].upper() not in RESERVED_NAMES
    assert len(name.encode("utf-8")) <= MAX_COMPONENT_BYTES
    assert name == unicodedata.normalize("NFC", name)
    assert safe_component(name) == name  # stable: a safe name is left as it is


@pytest.mark.parametrize("text", HOSTILE)
def test_export_with_crops_keeps_hostile_ids_and_labels_inside(tmp_path, text):
    sentinel, _, before = _world(tmp_path)
    text = _aimed(text, sentinel)
    out, written = _export(tmp_path, [(text, "fine"), ("fine", text), (text, text), (text, text)])
    _assert_inside(out / "cells_crops", written)
    assert len(set(written)) == 4  # the repeated (id, label) got a suffix, not an overwrite
    after = file_snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("out")} == before


@pytest.mark.parametrize("label", HOSTILE)
def test_export_library_keeps_hostile_labels_inside(tmp_path, label):
    sentinel, crop, before = _world(tmp_path)
    label = _aimed(label, sentinel)
    cells = [Cell("c1", str(crop), str(crop)), Cell("c2", str(crop), str(crop))]
    workspace = SimpleNamespace(reference_dirs=[], store=None, cells=cells, user_labels={"c1": label, "c2": "ok"},
                                settings=SimpleNamespace(reference_pixel_size_um=None))
    out = tmp_path / "library"
    info = export_library(workspace, out)
    files = [p for p in out.rglob("*") if p.is_file()]
    _assert_inside(out, files)
    assert len(files) == 3 and sum(info["classes"].values()) == 2
    assert read_library_info(out)["classes"] == info["classes"]  # library.json is still the description
    assert {k: v for k, v in file_snapshot(tmp_path).items() if not k.startswith("library")} == before


def test_distinct_labels_get_distinct_folders_and_unicode_forms_one(tmp_path):
    labels = ["a/b", "a_b", "a\\b", "A_B", "e\u0301", "\u00e9"]
    names = [safe_component(label) for label in labels]
    assert len(set(names[:3])) == 3 and names[4] == names[5]


def test_a_linked_label_folder_leading_outside_is_refused(tmp_path):
    sentinel, crop, before = _world(tmp_path)
    (tmp_path / "out" / "cells_crops").mkdir(parents=True)
    (tmp_path / "out" / "cells_crops" / "evil").symlink_to(sentinel, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside"):
        _export(tmp_path, [("victim", "evil")])
    assert file_snapshot(sentinel) == {k[len("sentinel/"):]: v for k, v in before.items() if k.startswith("sentinel")}
    assert not (tmp_path / "out" / "cells.csv").exists()  # the export is all or nothing


def test_a_planted_link_at_the_target_is_replaced_not_followed(tmp_path):
    sentinel, crop, before = _world(tmp_path)
    folder = tmp_path / "out" / "cells_crops" / "fine"
    folder.mkdir(parents=True)
    (folder / "victim.png").symlink_to(sentinel / "victim.png")
    out, written = _export(tmp_path, [("victim", "fine")])
    assert (sentinel / "victim.png").read_bytes() == b"do not touch victim.png"
    assert not written[0].is_symlink() and written[0].read_bytes() == crop.read_bytes()


def test_names_differing_only_in_case_never_share_a_file(tmp_path):
    _world(tmp_path)
    out, written = _export(tmp_path, [("Cell", "x"), ("cell", "x"), ("CELL", "x")])
    assert len({str(p).casefold() for p in written}) == 3


def test_inside_refuses_a_link_out_and_allows_plain_names(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "out").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        inside(tmp_path / "root", "out", "x.png")
    assert inside(tmp_path / "root", "../..", "x.png") == tmp_path / "root" / safe_component("../..") / "x.png"


def test_the_writer_cleans_up_when_a_copy_fails(tmp_path):
    writer = SafeWriter(tmp_path / "out")
    with pytest.raises(OSError):
        writer.copy(tmp_path / "missing.png", ("a",), "x", ".png")
    assert [p.name for p in (tmp_path / "out" / "a").iterdir()] == []


@pytest.mark.parametrize("value, expected", [
    ("-0.0000", "-0.0000"), ("-1e-05", "-1e-05"), ("+3", "+3"), ("-.5", "-.5"), (-0.0, "-0.0"), (None, ""),
    ("=1+1", "'=1+1"), ("-cmd", "'-cmd"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("-inf", "'-inf"), ("-nan", "'-nan"), ("+1+1", "'+1+1"), ("- 1", "'- 1"), ("plain", "plain"),
])
def test_spreadsheet_safe_neutralises_formulas_and_keeps_numbers(value, expected):
    assert spreadsheet_safe(value) == expected


def test_segment_bounds_crop_names_of_long_and_hostile_file_names(tmp_path):
    import cv2

    image = np.full((300, 300, 3), 235, np.uint8)
    cv2.circle(image, (150, 150), 30, (120, 60, 150), -1)
    folder = tmp_path / ("=x" * 60)
    folder.mkdir()
    names = ["y" * 240 + ".png", "-@=" + "é" * 50 + ".png", "line\nbreak.png"]
    for name in names:
        Image.fromarray(image).save(folder / name)
    out = tmp_path / "out"
    summary = run_job(segment_images([folder], out, SegmentSettings(cell_diameter_px=60)))
    assert summary.cells == 3 and not summary.problems
    with open(out / "cells.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    crops = [out / r["crop_path"] for r in rows]
    _assert_inside(out / "crops", crops)
    assert len(set(crops)) == 3 and all(len(p.name.encode()) <= 120 for p in crops)
    assert all(r["source_image"].startswith(str(tmp_path)) for r in rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=st.lists(st.tuples(st.text(max_size=40), st.text(max_size=40)), min_size=1, max_size=6))
def test_any_generated_ids_and_labels_stay_inside(pairs):
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        _, _, before = _world(base)
        out, written = _export(base, pairs)
        _assert_inside(out / "cells_crops", written)
        assert len(set(written)) == len(pairs)
        assert {k: v for k, v in file_snapshot(base).items() if not k.startswith("out")} == before


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_any_generated_text_becomes_one_safe_component(text):
    name = safe_component(text)
    assert name and name not in (".", "..") and "/" not in name and "\x00" not in name
    assert len(name.encode("utf-8")) <= MAX_COMPONENT_BYTES
    assert inside("/srv/out", text).parent == Path("/srv/out")


def test_library_file_name_cannot_be_taken_by_a_class(tmp_path):
    assert safe_component(LIBRARY_FILE) == LIBRARY_FILE  # so export_library renames that class's folder


@pytest.mark.parametrize("value, expected", [("caf\udce9.png", "caf\\xe9.png"), ("\ud800x", "\\ud800x")])
def test_undecodable_file_names_are_written_not_raised(value, expected):
    assert spreadsheet_safe(value) == expected


def test_segment_replaces_a_planted_link_in_its_crops_folder(tmp_path):
    import cv2

    sentinel, _, before = _world(tmp_path)
    image = np.full((300, 300, 3), 235, np.uint8)
    cv2.circle(image, (150, 150), 30, (120, 60, 150), -1)
    Image.fromarray(image).save(tmp_path / "input" / "field.png")
    settings = SegmentSettings(cell_diameter_px=60)
    out = tmp_path / "out"
    run_job(segment_images([tmp_path / "input" / "field.png"], out, settings))
    crop = next((out / "crops").iterdir())
    crop.unlink()
    crop.symlink_to(sentinel / "victim.png")
    run_job(segment_images([tmp_path / "input" / "field.png"], out, settings))
    assert not crop.is_symlink() and crop.is_file()
    assert file_snapshot(sentinel) == {k[len("sentinel/"):]: v for k, v in before.items() if k.startswith("sentinel")}
