"""The differential report and the exports on real data, end to end through the CLI.

    .venv/bin/python benchmarks/bench_report.py [--samples 3] [--fields 20] [--per-class 40]
        [--work /tmp/cellsearch-report] [--json out/bench_report.json]

BCCD fields of view (``../shared/data/bccd_fov``), one sample per folder of ``--fields`` fields (folders of
links), classified against a PBC library (``--per-class`` crops of each white-cell class) with the offline
ImageNet CNNs mobilenetv2,efficientnet_lite0, the default cell preparation and a 160 px cell diameter
(BCCD white cells at 640x480, as docs/make_screenshots.py). Then
``project report`` (HTML and PDF), ``project export`` in every format, and checks: the report's counts per
sample and class equal the CSV's; the GeoJSON outlines rasterised match the masks (IoU); the .h5ad reopens
with anndata; the OME-Zarr label images reopened with ome-zarr-py hold each cell of cells.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
from _common import REPO, write_json

SHARED = Path(os.environ.get("CELLSEARCH_SHARED", REPO.parent / "shared"))
FOV = SHARED / "data" / "bccd_fov" / "JPEGImages"
PBC = SHARED / "data" / "pbc_barcelona"
WBC = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def build_inputs(work: Path, samples: int, fields: int, per_class: int) -> tuple[list[Path], Path]:
    images = sorted(FOV.glob("*.jpg"))
    folders = []
    for number in range(samples):
        folder = work / "fields" / f"sample_{number + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for image in images[number * fields : (number + 1) * fields]:
            if not (folder / image.name).exists():
                (folder / image.name).symlink_to(image)
        folders.append(folder)
    library = work / "library"
    shutil.rmtree(library, ignore_errors=True)
    for name in WBC:
        (library / name).mkdir(parents=True, exist_ok=True)
        for crop in sorted((PBC / name).iterdir())[:per_class]:
            if not (library / name / crop.name).exists():  # copies: a library's links may not leave it
                shutil.copy(crop, library / name / crop.name)
    return folders, library


def cli(*argv: str) -> None:
    from cellsearch_gui.cli import main

    code = main([str(a) for a in argv])
    if code:
        raise SystemExit(f"cellsearch {' '.join(map(str, argv))}: exit {code}")


def report_counts(html_text: str) -> dict[str, dict[str, int]]:
    """{sample: {class: cells}} read back from the report's differential tables."""
    counts = {}
    sections = re.findall(r'<h2>Sample: (.*?)</h2>(.*?)</section>', html_text, re.S)
    for sample, body in sections:
        rows = re.findall(r'<tr><td class="name">(.*?)</td><td>(\d+)</td>', body)
        counts[sample] = {name: int(n) for name, n in rows if int(n)}
    return counts


def csv_counts(path: Path) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            counts.setdefault(row["sample"], Counter())[row["user_label"] or row["predicted_label"]] += 1
    return {s: dict(c) for s, c in counts.items()}


def geojson_iou(folder: Path, cells_by_id: dict) -> list[float]:
    from shapely import covers, points
    from shapely.geometry import shape

    from cellsearch_gui.core.export.outlines import cell_mask

    ious = []
    for file in folder.rglob("*.geojson"):
        for feature in json.loads(file.read_text())["features"]:
            cell = cells_by_id[feature["properties"]["cell_id"]]
            x0, y0, x1, y1 = cell.bbox
            yy, xx = np.mgrid[y0:y1, x0:x1]
            centres = points(xx.ravel() + 0.5, yy.ravel() + 0.5)
            drawn = covers(shape(feature["geometry"]), centres).reshape(xx.shape)
            mask = cell_mask(cell)
            ious.append(float((drawn & mask).sum() / max(1, (drawn | mask).sum())))
    return ious


def zarr_agreement(folder: Path, csv_rows: list[dict]) -> tuple[int, int]:
    """(cells of cells.csv whose centroid pixel in its field's label image carries its own cell id, cells)."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    by_image: dict[str, tuple] = {}
    for store in folder.rglob("*.ome.zarr"):
        for node in Reader(parse_url(str(store / "labels" / "cells")))():
            if node.load(Label):
                table = node.metadata["properties"]
                by_image[str(store)] = (np.asarray(node.data[0]), {v["cell_id"]: k for k, v in table.items()})
    agree = total = 0
    for labels, ids in by_image.values():
        for row in csv_rows:
            if row["cell_id"] in ids:
                total += 1
                x, y = int(float(row["centroid_x"])), int(float(row["centroid_y"]))
                agree += int(labels[y, x] == ids[row["cell_id"]])
    return agree, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cellsearch-report"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("CELLSEARCH_WEIGHTS_DIR", str(args.work / "weights"))
    from cellsearch_gui.core.models import install

    install.import_folder(SHARED / "models")
    folders, library = build_inputs(args.work, args.samples, args.fields, args.per_class)
    project, out = args.work / "project", args.work / "out"
    shutil.rmtree(project, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    timings = {}
    t0 = time.perf_counter()
    cli("project", "new", project, "--models", "mobilenetv2,efficientnet_lite0", "--cell-diameter-px", 160)
    cli("project", "add", project, "--reference", library, "--query", *folders)
    cli("project", "classify", project, "--device", "cpu", "--quiet")
    timings["classify_s"] = time.perf_counter() - t0
    for name, argv in {"report_html_s": ("report", project, "--out", out / "report.html"),
                       "report_pdf_s": ("report", project, "--out", out / "report.pdf"),
                       "csv_s": ("export", project, out / "cells.csv"),
                       "geojson_s": ("export", project, out / "qupath", "--format", "geojson"),
                       "h5ad_s": ("export", project, out / "cells.h5ad"),
                       "ome_zarr_s": ("export", project, out / "napari", "--format", "ome-zarr")}.items():
        t0 = time.perf_counter()
        cli("project", *argv)
        timings[name] = time.perf_counter() - t0
    checks = run_checks(project, out)
    result = {"samples": args.samples, "fields_per_sample": args.fields, "library_per_class": args.per_class,
              **checks, "timings_s": {k: round(v, 2) for k, v in timings.items()}}
    print(json.dumps(result, indent=1))
    if args.json:
        write_json(args.json, result)


def run_checks(project: Path, out: Path) -> dict:
    import anndata

    from cellsearch_gui.core.project import open_project

    in_report = report_counts((out / "report.html").read_text(encoding="utf-8"))
    in_csv = csv_counts(out / "cells.csv")
    rows = list(csv.DictReader(open(out / "cells.csv", encoding="utf-8", newline="")))
    with open_project(project, readonly=True, lock=False) as store:
        cells = {c.cell_id: c for c in store.cells()}
    ious = geojson_iou(out / "qupath", cells)
    adata = anndata.read_h5ad(out / "cells.h5ad")
    agree, total = zarr_agreement(out / "napari", rows)
    return {"cells": len(rows), "report_counts": in_report, "csv_counts": in_csv,
            "report_equals_csv": in_report == in_csv,
            "geojson_features": len(ious), "geojson_iou_min": round(min(ious), 4) if ious else None,
            "geojson_iou_mean": round(float(np.mean(ious)), 4) if ious else None,
            "h5ad_shape": list(adata.shape), "h5ad_obs": list(adata.obs.columns),
            "h5ad_models": str(adata.uns["model_combination"]),
            "ome_zarr_cells_matching": agree, "ome_zarr_cells": total,
            "pdf_bytes": (out / "report.pdf").stat().st_size, "html_bytes": (out / "report.html").stat().st_size}


if __name__ == "__main__":
    main()
