"""`cellsearch project ...`: create, fill, classify and export a project folder (the app opens the same)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellsearch_gui.cli import project_report
from cellsearch_gui.cli.common import (
    EMBED_DEFAULTS,
    arg,
    check_device_available,
    device,
    output_folder,
    run,
)
from cellsearch_gui.cli.segment import add_border_options
from cellsearch_gui.core import validation
from cellsearch_gui.core.app.run import DEFAULT_MODELS, AnalysisSettings, pipeline_job
from cellsearch_gui.core.app.session import Workspace
from cellsearch_gui.core.export.samples import clean_sample_name, set_sample_name
from cellsearch_gui.core.io.dataset import scan_class_folders
from cellsearch_gui.core.io.labels_csv import read_labels_csv
from cellsearch_gui.core.models.registry import parse_model_list
from cellsearch_gui.core.options import Preset, Weights, values
from cellsearch_gui.core.project import open_project
from cellsearch_gui.core.project.library import export_library, read_library_info


def add_parser(sub) -> None:
    project = sub.add_parser("project", help="a project folder: new, info, add, classify, label, report, export")
    project.set_defaults(handler=cmd_project)
    psub = project.add_subparsers(dest="project_command", required=True)
    new = psub.add_parser("new", help="create a project folder")
    new.add_argument("folder", type=output_folder)
    new.add_argument("--models", default=",".join(DEFAULT_MODELS))
    new.add_argument("--preprocessing", default=None, choices=values(Preset),
                     help="crop preparation preset, e.g. cell_device_colour")
    new.add_argument("--cell-diameter-px", type=arg(validation.DIAMETER_PX), default=None,
                     help="typical cell diameter in pixels (default: measured on each field)")
    add_border_options(new, AnalysisSettings().drop_border_cells)
    new.add_argument("--random-init", action="store_true", help="random-initialised networks (a control)")
    info = psub.add_parser("info", help="what the project holds (opens it read-only)")
    info.add_argument("folder", type=Path)
    add = psub.add_parser("add", help="add a reference library or images to classify")
    add.add_argument("folder", type=Path)
    add.add_argument("--reference", type=Path, action="append", default=[],
                     help="class-per-folder library (an exported library's device and pixel size are read)")
    add.add_argument("--query", type=Path, nargs="+", default=[], help="images or folders to classify")
    add.add_argument("--sample", default=None, help="the sample these --query items form (default: each "
                                                    "folder is a sample named after it)")
    classify = psub.add_parser("classify", help="segment, embed and classify (resumes an interrupted run)")
    classify.add_argument("folder", type=Path)
    classify.add_argument("--device", type=device, default=EMBED_DEFAULTS.device)
    classify.add_argument("--cell-diameter-px", type=arg(validation.DIAMETER_PX), default=None,
                          help="typical cell diameter in pixels, saved in the project (default: the "
                               "project's setting; none there: measured on each field)")
    add_border_options(classify, None, "keep cells touching the image border, flagged (the default)")
    classify.add_argument("--quiet", action="store_true")
    label = psub.add_parser("label", help="import labels from a CSV with cell_id and label columns")
    label.add_argument("folder", type=Path)
    label.add_argument("csv", type=Path)
    project_report.add_parsers(psub)
    library = psub.add_parser("export-library", help="the reference library plus labelled cells, portable")
    library.add_argument("folder", type=Path)
    library.add_argument("out", type=output_folder)
    library.add_argument("--device-name", default=None, help="the microscope the library comes from")


def cmd_project(args: argparse.Namespace) -> int:
    return {"new": _new, "info": _info, "add": _add, "classify": _classify, "label": _label,
            "export": project_report.cmd_export, "report": project_report.cmd_report,
            "differential": project_report.cmd_differential, "sample": project_report.cmd_sample,
            "export-library": _export_library}[args.project_command](args)


def _open(folder: Path, purpose: str) -> Workspace:
    ws = Workspace.open(folder, purpose=purpose)
    _say_note(ws.store)
    return ws


def _say_note(store) -> None:
    if store is not None and store.note:
        print(f"note: {store.note}", file=sys.stderr)


def _new(args: argparse.Namespace) -> int:
    database = args.folder / "project.sqlite"
    if database.exists() and not (database.is_file() and database.stat().st_size == 0):
        print(f"error: {args.folder} already holds a project", file=sys.stderr)
        return 2
    ws = Workspace()
    ws.settings.models = parse_model_list(args.models, role="embed")
    if args.preprocessing:
        ws.settings.preprocessing = args.preprocessing
    ws.settings.cell_diameter_px = args.cell_diameter_px
    ws.settings.drop_border_cells = args.drop_border_cells
    ws.settings.weights = (Weights.RANDOM if args.random_init else Weights.PRETRAINED).value
    ws.save(args.folder)
    ws.close()
    print(f"project created: {args.folder}")
    return 0


def _info(args: argparse.Namespace) -> int:
    with open_project(args.folder, readonly=True, lock=False) as store:
        _say_note(store)
        for key, value in store.counts().items():
            print(f"{key:<18}{value}")
        for source in store.sources("reference") + store.sources("query"):
            print(f"source            {source['path']}")
        for run_row in store.runs()[-5:]:
            print(f"run {run_row['id']:<14}{run_row['kind']}: {run_row['status']} "
                  f"({run_row['started_at']} -> {run_row['finished_at']})")
        print(f"{'integrity':<18}{store.integrity()}")
        _print_settings_notes(store.get_meta("settings", {}))
    return 0


def _add(args: argparse.Namespace) -> int:
    ws = _open(args.folder, "'cellsearch project add'")
    try:
        for ref in args.reference:
            scan_class_folders(ref)  # a clear error now rather than at classification time
            info = read_library_info(ref)
            ws.add_reference_dir(ref)
            ws.save()
            ws.store.add_source("reference", ref, info.get("pixel_size_um"), info.get("device"))
        ws.add_query_paths([str(p) for p in args.query])
        ws.save()
        for item in args.query if args.sample else []:
            set_sample_name(ws.store, item, clean_sample_name(args.sample))
        print(f"{len(ws.reference_dirs)} reference folder(s), {len(ws.query_paths)} query item(s)")
    finally:
        ws.close()
    return 0


def _classify(args: argparse.Namespace) -> int:
    check_device_available(args.device)
    ws = _open(args.folder, "'cellsearch project classify'")
    try:
        _print_settings_notes(ws.store.get_meta("settings", {}))
        if args.cell_diameter_px is not None:
            ws.settings.cell_diameter_px = args.cell_diameter_px
        if args.drop_border_cells is not None:
            ws.settings.drop_border_cells = args.drop_border_cells
        if args.cell_diameter_px is not None or args.drop_border_cells is not None:
            ws.save()  # the project's settings now, for the window and later runs
        result = run(pipeline_job(ws.plan(args.device)), args.quiet)
    finally:
        ws.close()
    counts = {c: result.predictions.labels.count(c) for c in sorted(set(result.predictions.labels))}
    print(f"{len(result.cells)} cells classified: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _print_settings_notes(saved: dict) -> None:
    """Saved settings outside their domain (an older or edited project): which default replaces each."""
    for note in AnalysisSettings.load(saved)[1]:
        print(f"note: {note}", file=sys.stderr)


def _label(args: argparse.Namespace) -> int:
    ws = _open(args.folder, "'cellsearch project label'")
    try:
        known = {c.cell_id for c in ws.store.cells()}
        labels, problems = read_labels_csv(args.csv, known)
        for problem in problems:
            print(f"skipped: {problem}", file=sys.stderr)
        ws.set_labels(labels)
        print(f"{len(labels)} label(s) stored from {args.csv}")
    finally:
        ws.close()
    return 0


def _export_library(args: argparse.Namespace) -> int:
    ws = _open(args.folder, "'cellsearch project export-library'")
    try:
        info = export_library(ws, args.out, args.device_name)
    finally:
        ws.close()
    print(f"library of {sum(info['classes'].values())} cells in {len(info['classes'])} classes -> {args.out}")
    return 0
