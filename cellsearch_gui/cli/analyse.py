"""`cellsearch analyse-models`: class separation per model and CKA between models on a labelled library."""

from __future__ import annotations

import argparse
from pathlib import Path

from cellsearch_gui.cli.common import (
    add_embed_options,
    arg,
    embed_setup,
    output_folder,
    report_problems,
    run,
    write_json,
)
from cellsearch_gui.core import validation
from cellsearch_gui.core.app.experiments import (
    ANALYSIS_MAX_CELLS,
    ANALYSIS_PCA_DIMS,
    ANALYSIS_SIGMA_FRAC,
    analyse_job,
)
from cellsearch_gui.core.classify.analysis import format_table, render_png
from cellsearch_gui.core.io.dataset import scan_class_folders


def add_parser(sub) -> None:
    an = sub.add_parser("analyse-models", help="class separation per model and CKA between models")
    an.set_defaults(handler=cmd_analyse)
    an.add_argument("--reference", required=True, type=Path, help="labelled library DIR/<class>/<image>")
    an.add_argument("--out", required=True, type=output_folder, help="folder for analysis.json and analysis.png")
    add_embed_options(an)
    an.add_argument("--pca-dims", type=arg(validation.PCA_DIMS), default=ANALYSIS_PCA_DIMS,
                    help="PCA dimensions before the cosine similarities")
    an.add_argument("--sigma-frac", type=arg(validation.SIGMA_FRAC), default=ANALYSIS_SIGMA_FRAC,
                    help="RBF CKA bandwidth as a fraction of the median pairwise distance")
    an.add_argument("--max-cells", type=arg(validation.MAX_CELLS), default=ANALYSIS_MAX_CELLS,
                    help="stratified sample of the library (CKA is n^2)")


def cmd_analyse(args: argparse.Namespace) -> int:
    models, cache, options = embed_setup(args)
    reference = scan_class_folders(args.reference)
    if args.classes:
        reference = reference.restrict(args.classes)
    result = run(analyse_job(reference, models, cache, options, args.pca_dims, args.sigma_frac, args.max_cells),
                 args.quiet)
    report_problems(result.skipped, reference.problems)
    data = result.as_dict()
    print(f"{result.n_cells} cells, {len(result.classes)} classes, weights: {options.weights}")
    print(format_table(data))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "analysis.json", data)
    render_png(data, args.out / "analysis.png")
    print(f"-> {args.out / 'analysis.json'}, {args.out / 'analysis.png'}")
    return 0
