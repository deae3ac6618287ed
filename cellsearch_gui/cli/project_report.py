"""`cellsearch project report|export|differential|sample`: what a project's last run hands on, per sample."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellsearch_gui.cli.common import output_file, output_folder
from cellsearch_gui.core.classify.differential import Interval
from cellsearch_gui.core.export import export_project_csv
from cellsearch_gui.core.export.samples import set_sample_name
from cellsearch_gui.core.export.table import table_from_project
from cellsearch_gui.core.options import values
from cellsearch_gui.core.project import open_project
from cellsearch_gui.core.project.paths import absolute

FORMATS = ("csv", "geojson", "h5ad", "ome-zarr")


def add_parsers(psub) -> None:
    export = psub.add_parser("export", help="the last run's cells: csv (with provenance), geojson (QuPath), "
                                            "h5ad (scanpy/AnnData) or ome-zarr (napari label images)")
    export.add_argument("folder", type=Path)
    export.add_argument("out", type=Path, help="a file for csv and h5ad, a folder for geojson and ome-zarr")
    export.add_argument("--format", choices=FORMATS, default=None,
                        help="default: from OUT's extension (.csv, .h5ad), else csv")
    export.add_argument("--with-crops", action="store_true", help="csv: copy the crops, filed by label")
    report = psub.add_parser("report", help="the per-sample differential count report (HTML or PDF)")
    report.add_argument("folder", type=Path)
    report.add_argument("--out", type=output_file, required=True, help="FILE.html or FILE.pdf")
    report.add_argument("--interval", choices=values(Interval), default=Interval.WILSON.value,
                        help="95 %% interval: wilson, or exact (Clopper-Pearson, as Rümke's table)")
    report.add_argument("--gallery", type=int, default=16, metavar="N", help="crops shown per class and sample")
    diff = psub.add_parser("differential", help="print the per-sample differential count")
    diff.add_argument("folder", type=Path)
    diff.add_argument("--interval", choices=values(Interval), default=Interval.WILSON.value)
    sample = psub.add_parser("sample", help="name the sample of an added query folder (or several)")
    sample.add_argument("folder", type=Path)
    sample.add_argument("name", help="the sample name ('' gives the folder its own name back)")
    sample.add_argument("items", type=Path, nargs="+", help="query folders or images already added")


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    return {".h5ad": "h5ad", ".geojson": "geojson", ".zarr": "ome-zarr"}.get(args.out.suffix.lower(), "csv")


def cmd_export(args: argparse.Namespace) -> int:
    kind = _format(args)
    try:
        (output_folder if kind in ("geojson", "ome-zarr") else output_file)(str(args.out))
    except argparse.ArgumentTypeError as exc:
        print(f"error: argument out: {exc}", file=sys.stderr)  # as argparse words it
        return 2
    with open_project(args.folder, readonly=True, lock=False) as store:
        if kind == "csv":
            print(f"{export_project_csv(store, args.out, args.with_crops)} cells -> {args.out}")
            return 0
        table = table_from_project(store, with_features=kind == "h5ad")
    if kind == "h5ad":
        from cellsearch_gui.core.export.anndata_h5ad import write_h5ad

        print(f"{write_h5ad(table, args.out)} cells x {table.features.shape[1]} features -> {args.out}")
        return 0
    if kind == "geojson":
        from cellsearch_gui.core.export.geojson import write_geojson as write
    else:
        from cellsearch_gui.core.export.omezarr import write_ome_zarr as write
    summary = write(table, args.out)
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{summary.cells} cells in {len(summary.files)} field file(s) -> {args.out}")
    return 0


def _library(store) -> list[str]:
    return [s["path"] + (f" ({s['device']})" if s.get("device") else "") for s in store.sources("reference")]


def cmd_report(args: argparse.Namespace) -> int:
    from cellsearch_gui.core.export.report import write_report

    with open_project(args.folder, readonly=True, lock=False) as store:
        table = table_from_project(store)
        library = _library(store)
    write_report(table, args.out, library, args.interval, max(0, args.gallery))
    diffs = table.differential(args.interval)
    print(f"report of {len(diffs)} sample(s), {sum(d.counted for d in diffs)} cells counted -> {args.out}")
    return 0


def cmd_differential(args: argparse.Namespace) -> int:
    with open_project(args.folder, readonly=True, lock=False) as store:
        table = table_from_project(store)
    for d in table.differential(args.interval):
        print(f"sample {d.sample}: {d.counted} counted, {d.uncertain} uncertain, {d.reviewed} reviewed, "
              f"{d.corrected} corrected" + (f", {d.unclassified} without a prediction" if d.unclassified else ""))
        for c in d.classes:
            print(f"  {c.name:<24}{c.count:>6}{c.percent:>7.1f}%   95% {c.low:5.1f} - {c.high:5.1f}")
        for note in d.notes:
            print(f"  note: {note}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    with open_project(args.folder, purpose="'cellsearch project sample'") as store:
        added = {str(absolute(s["path"])) for s in store.sources("query")}
        unknown = [str(i) for i in args.items if str(absolute(i)) not in added]
        if unknown:
            print(f"error: not added to the project as query items: {', '.join(unknown)} "
                  "(add them with 'cellsearch project add --query')", file=sys.stderr)
            return 2
        for item in args.items:
            set_sample_name(store, item, args.name or None)
    print(f"{len(args.items)} item(s) -> sample '{args.name}'" if args.name else "sample names reset")
    return 0
