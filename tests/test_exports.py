"""Exports reopened by the libraries that define them (shapely for GeoJSON, anndata, ome-zarr-py), the report
through the CLI, and bad input: sample names with path characters, a project with no run, a full or
read-only disk."""

import csv
import errno
import json
import os

import numpy as np
import pytest
from report_helpers import CLASSES, make_project

from cellsearch_gui.cli import main
from cellsearch_gui.core.export import EXPORT_COLUMNS, write_cells_csv
from cellsearch_gui.core.export.outlines import cell_mask
from cellsearch_gui.core.export.samples import set_sample_name
from cellsearch_gui.core.export.table import table_from_project
from cellsearch_gui.core.io.atomic import DiskError
from cellsearch_gui.core.project import open_project
from cellsearch_gui.core.types import Cell


@pytest.fixture
def project(tmp_path):
    folder, cells = make_project(tmp_path)
    return folder, {c.cell_id: c for c in cells}


def _table(folder, features=False):
    with open_project(folder, readonly=True, lock=False) as store:
        return table_from_project(store, with_features=features)


def _rasterise(geometry: dict, cell: Cell) -> np.ndarray:
    """Pixels of the cell's box whose centre the outline covers (inside or on it)."""
    from shapely import covers, points
    from shapely.geometry import shape

    x0, y0, x1, y1 = cell.bbox
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return covers(shape(geometry), points(xx.ravel() + 0.5, yy.ravel() + 0.5)).reshape(xx.shape)


def test_geojson_loads_in_shapely_one_feature_per_cell_matching_the_masks(project, tmp_path):
    pytest.importorskip("shapely")
    from shapely.geometry import shape

    folder, cells = project
    assert main(["project", "export", str(folder), str(tmp_path / "qupath"), "--format", "geojson"]) == 0
    files = sorted((tmp_path / "qupath").rglob("*.geojson"))
    assert [f.relative_to(tmp_path / "qupath").as_posix() for f in files] == [
        "slide_A/field1.png.geojson", "slide_B/field2.png.geojson"]
    features = []
    for file in files:
        collection = json.loads(file.read_text(encoding="utf-8"))
        assert collection["type"] == "FeatureCollection"
        features += collection["features"]
    assert sorted(f["properties"]["cell_id"] for f in features) == sorted(cells)
    for feature in features:
        assert feature["type"] == "Feature" and shape(feature["geometry"]).is_valid
        classification = feature["properties"]["classification"]
        assert classification["name"] in CLASSES and len(classification["color"]) == 3
        cell = cells[feature["properties"]["cell_id"]]
        drawn, mask = _rasterise(feature["geometry"], cell), cell_mask(cell)
        assert (drawn & mask).sum() / (drawn | mask).sum() > 0.95
    uncertain = {f["properties"]["cell_id"] for f in features if f["properties"]["uncertain"]}
    assert uncertain == {"field1_x40_y20", "field2_x50_y30"}  # entropy 0.5 and 0.9, threshold 0.3


def test_h5ad_reopens_with_anndata(project, tmp_path):
    anndata = pytest.importorskip("anndata")
    folder, cells = project
    assert main(["project", "export", str(folder), str(tmp_path / "cells.h5ad")]) == 0
    adata = anndata.read_h5ad(tmp_path / "cells.h5ad")
    assert adata.shape == (5, 7)  # 5 cells, m1 (4) + m2 (3) features
    assert list(adata.obs_names) == list(cells)
    assert {"sample", "predicted", "entropy", "user_label", "label", "uncertain"} <= set(adata.obs.columns)
    assert list(adata.obs["sample"]) == ["slide_A"] * 3 + ["slide_B"] * 2
    assert adata.uns["model_combination"] == "m1+m2" and list(adata.uns["classes"]) == CLASSES
    assert list(adata.var_names[:2]) == ["m1_0", "m1_1"] and adata.obsm["spatial"].shape == (5, 2)
    table = _table(folder, features=True)
    assert np.allclose(adata.X, table.features)


def test_ome_zarr_opens_with_ome_zarr_py_and_its_labels_match_cells_csv(project, tmp_path):
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    folder, cells = project
    assert main(["project", "export", str(folder), str(tmp_path / "cells.csv")]) == 0
    assert main(["project", "export", str(folder), str(tmp_path / "napari"), "--format", "ome-zarr"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "cells.csv", encoding="utf-8", newline="")))
    stores = sorted((tmp_path / "napari").rglob("*.ome.zarr"))
    assert len(stores) == 2
    found = {}
    for store in stores:
        nodes = list(Reader(parse_url(str(store)))())
        image = nodes[0].data[0]
        label_node = next(n for n in nodes if n.load(Label))
        labels = np.asarray(label_node.data[0])
        assert labels.shape == tuple(image.shape[-2:])
        for value, entry in label_node.metadata["properties"].items():
            found[entry["cell_id"]] = (labels == value, entry["class"])
    assert sorted(found) == sorted(r["cell_id"] for r in rows)
    for row in rows:
        painted, name = found[row["cell_id"]]
        cell = cells[row["cell_id"]]
        x0, y0, x1, y1 = cell.bbox
        assert name == (row["user_label"] or row["predicted_label"])
        assert painted.sum() == int(row["area_px"]) and np.array_equal(painted[y0:y1, x0:x1], cell_mask(cell))


def test_report_html_and_pdf(project, tmp_path, capsys):
    folder, _ = project
    out = tmp_path / "report.html"
    assert main(["project", "report", str(folder), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "report of 2 sample(s), 5 cells counted" in capsys.readouterr().out
    assert text.count('<section class="sample">') == 2 and "Sample: slide_A" in text
    assert "<script" not in text and "<link" not in text and 'src="http' not in text  # self-contained
    assert text.count("data:image/jpeg;base64,") == 5 and 'class="uncertain"' in text
    assert "@page { size: A4" in text and "m1 + m2" in text
    from cellsearch_gui.core.export.pdf import find_browser

    if find_browser() is None:
        pytest.skip("no Chromium-family browser to print the PDF")
    assert main(["project", "report", str(folder), "--out", str(tmp_path / "report.pdf")]) == 0
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")


def test_a_sample_name_with_path_characters_stays_inside_the_output_folder(project, tmp_path):
    folder, _ = project
    with open_project(folder) as store:
        set_sample_name(store, tmp_path / "slide_A", "../../escaped/..")
    out = tmp_path / "deep" / "qupath"
    assert main(["project", "export", str(folder), str(out), "--format", "geojson"]) == 0
    assert main(["project", "export", str(folder), str(tmp_path / "deep" / "napari"), "--format", "ome-zarr"]) == 0
    written = [p for p in tmp_path.rglob("*") if p.suffix in (".geojson", ".zarr")]
    assert len(written) == 4 and all(p.resolve().is_relative_to(tmp_path / "deep") for p in written)
    assert not (tmp_path / "escaped").exists()
    report = tmp_path / "r.html"
    assert main(["project", "report", str(folder), "--out", str(report)]) == 0
    assert "Sample: ../../escaped/.." in report.read_text(encoding="utf-8")


def test_a_project_with_no_run_is_one_clear_message(tmp_path, capsys):
    assert main(["project", "new", str(tmp_path / "p")]) == 0
    for argv in (["report", str(tmp_path / "p"), "--out", str(tmp_path / "r.html")],
                 ["export", str(tmp_path / "p"), str(tmp_path / "x.h5ad")],
                 ["export", str(tmp_path / "p"), str(tmp_path / "g"), "--format", "geojson"],
                 ["differential", str(tmp_path / "p")]):
        assert main(["project", *argv]) == 2
        err = capsys.readouterr().err
        assert "no finished classification yet" in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "x.h5ad").exists()


def test_exports_to_a_full_or_read_only_disk_are_one_clear_message(project, tmp_path, monkeypatch, capsys):
    import anndata

    folder, _ = project
    full = OSError(errno.ENOSPC, "No space left on device")

    def no_space(*args, **kwargs):
        raise full

    monkeypatch.setattr(anndata.AnnData, "write_h5ad", no_space)
    assert main(["project", "export", str(folder), str(tmp_path / "x.h5ad")]) == 2
    assert "the disk is full" in capsys.readouterr().err
    assert not list(tmp_path.glob("x.h5ad*"))
    monkeypatch.setattr("cellsearch_gui.core.io.atomic.os.fsync", no_space)
    assert main(["project", "report", str(folder), "--out", str(tmp_path / "r.html")]) == 2
    assert "the disk is full" in capsys.readouterr().err
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # a read-only folder (root ignores chmod)
    for argv in ([str(tmp_path / "g"), "--format", "geojson"], [str(tmp_path / "z"), "--format", "ome-zarr"],
                 [str(tmp_path / "y.h5ad")]):
        assert main(["project", "export", str(folder), *argv]) == 2
        assert "permission denied" in capsys.readouterr().err
    table = _table(folder)
    from cellsearch_gui.core.export.report import write_report

    with pytest.raises(DiskError, match="permission denied.*Choose a writable folder"):
        write_report(table, tmp_path / "r2.html")


def test_cells_csv_paths_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    """Issue 17: the image column was relative to the folder the app was started from."""
    monkeypatch.chdir(tmp_path)
    cell = Cell("c1", "crops/c1.png", "fields/f1.png", (0, 0, 2, 2), (1.0, 1.0), 4)
    out = tmp_path / "out" / "cells.csv"
    write_cells_csv(out, [(cell, "neutrophil", 0.1, 3, None)], {})
    row = next(csv.DictReader(open(out, encoding="utf-8", newline="")))
    assert list(row) == EXPORT_COLUMNS
    assert row["image"] == str(tmp_path / "fields" / "f1.png")
    assert row["crop_path"] == str(tmp_path / "crops" / "c1.png")


def test_the_csv_and_the_report_count_the_same_cells(project, tmp_path):
    folder, cells = project
    with open_project(folder) as store:
        store.set_labels({"field2_x15_y30": "lymphocyte"})
    assert main(["project", "export", str(folder), str(tmp_path / "c.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "c.csv", encoding="utf-8", newline="")))
    by_csv = {}
    for row in rows:
        key = (row["sample"], row["user_label"] or row["predicted_label"])
        by_csv[key] = by_csv.get(key, 0) + 1
    by_table = {(d.sample, c.name): c.count for d in _table(folder).differential() for c in d.classes if c.count}
    assert by_csv == by_table == {("slide_A", "lymphocyte"): 2, ("slide_A", "neutrophil"): 1,
                                  ("slide_B", "lymphocyte"): 1, ("slide_B", "neutrophil"): 1}


def test_a_pdf_without_a_browser_is_one_clear_message(project, tmp_path, monkeypatch, capsys):
    folder, _ = project
    monkeypatch.setenv("CELLSEARCH_BROWSER", str(tmp_path / "no-such-browser"))
    assert main(["project", "report", str(folder), "--out", str(tmp_path / "r.pdf")]) == 2
    err = capsys.readouterr().err
    assert "none was found" in err and "write the report as .html" in err and not (tmp_path / "r.pdf").exists()
