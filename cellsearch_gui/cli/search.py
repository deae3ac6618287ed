"""`cellsearch search-combinations`: rank model subsets x hyper-parameters (x crop preparations)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cellsearch_gui.cli.common import (
    add_embed_options,
    arg,
    arg_list,
    check_overlap,
    embed_setup,
    inputs_from_args,
    output_file,
    report_problems,
    run,
    warn_overlap,
    write_json,
)
from cellsearch_gui.core import validation
from cellsearch_gui.core.app.experiments import search_job
from cellsearch_gui.core.app.results import SearchResult
from cellsearch_gui.core.classify.combinations import Grid
from cellsearch_gui.core.classify.ewc import EWCParams
from cellsearch_gui.core.crops.prepare import PRESETS, CropPrep, preset
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.options import EntropyNorm, Preset, ScaleMode, StoppingRule, values


def add_parser(sub) -> None:
    sc = sub.add_parser("search-combinations", help="rank model subsets and hyper-parameters on a validation set")
    sc.set_defaults(handler=cmd_search)
    grid = Grid()  # the defaults
    sc.add_argument("--reference", required=True, type=Path)
    sc.add_argument("--validation", type=Path, default=None)
    add_embed_options(sc)
    sc.add_argument("--metrics", type=arg_list(validation.METRIC), default=grid.metrics)
    sc.add_argument("--k-min", type=arg_list(validation.K_MIN), default=grid.k_mins)
    sc.add_argument("--k-max", type=arg_list(validation.K_MAX), default=grid.k_maxs)
    sc.add_argument("--thresholds", type=arg_list(validation.ENTROPY_THRESHOLD), default=grid.thresholds)
    sc.add_argument("--entropy-norms", type=arg_list(validation.ENTROPY_NORM), default=grid.entropy_norms,
                    help=",".join(values(EntropyNorm)))
    sc.add_argument("--stoppings", type=arg_list(validation.STOPPING), default=grid.stoppings,
                    help="stopping rules to rank: " + ",".join(values(StoppingRule)))
    sc.add_argument("--preps", type=arg_list(validation.PRESET, also=("all",)), default=None,
                    help="also rank crop preprocessing presets: " + ",".join(values(Preset)) + " or 'all'")
    sc.add_argument("--top", type=arg(validation.TOP), default=15, help="rows of the ranking to print")
    sc.add_argument("--json", type=output_file, default=None)


def _preps(args: argparse.Namespace) -> dict[str, CropPrep] | None:
    """The crop preparations to rank (--preps), or None: only the one the crop options give."""
    if not args.preps:
        return None
    names = list(PRESETS) if "all" in args.preps else args.preps
    try:
        return {n: preset(n, physical=args.scale == ScaleMode.PHYSICAL, **_objects(args),
                          target_pixel_size_um=args.crop_target_pixel_size) for n in names}
    except ValueError as exc:
        raise CellSearchError(str(exc)) from None


def _objects(args: argparse.Namespace) -> dict:
    return {"objects": args.find_cell} if args.find_cell else {}


def cmd_search(args: argparse.Namespace) -> int:
    grid = Grid(metrics=args.metrics, k_mins=args.k_min, k_maxs=args.k_max, thresholds=args.thresholds,
                entropy_norms=args.entropy_norms, stoppings=args.stoppings)  # refuses a grid with no valid setting, before any work
    models, cache, options = embed_setup(args)
    preps = _preps(args)
    inputs = inputs_from_args(args, args.validation, needs_labels=True)
    overlap = check_overlap(inputs)
    result = run(search_job(inputs, models, grid, cache, options, preps=preps), args.quiet)
    report_problems(result.skipped, result.notes)
    _print_ranking(result, args.top)
    data = warn_overlap(overlap, result.as_dict())
    if args.json:
        write_json(args.json, data)
    return 0


def _print_ranking(result: SearchResult, top: int) -> None:
    print(f"{len(result.ranking)} settings on {result.n_validation} validation cells "
          f"({result.n_reference} references):")
    print(f"{'rank':>4}  {'macro acc':>9}  {'macro prec':>10}  {'metric':<9}{'k':>10}{'H<':>5} {'H norm':<11}"
          f"{'preprocessing':<20}models")
    for rank, row in enumerate(result.ranking[:top], 1):
        print(f"{rank:>4}  {100 * row['balanced_accuracy']:>8.1f}%  {100 * row['macro_precision']:>9.1f}%  "
              f"{row['metric']:<9}{row['k_min']:>4}..{row['k_max']:<5}{row['entropy_threshold']:>5} "
              f"{row['entropy_norm']:<11}{row['preprocessing']:<20}{','.join(row['models'])}")
    if result.ranking:
        best = result.ranking[0]
        EWCParams(metric=best["metric"], k_min=best["k_min"], k_max=best["k_max"],  # a valid setting, always
                  entropy_threshold=best["entropy_threshold"], entropy_norm=best["entropy_norm"],
                  stopping=best["stopping"])
        prep = result.preprocessing[best["preprocessing"]]
        flags = " ".join(f for f, on in (("--centre", prep["centre"]), ("--mask", prep["mask"]),
                                          (f"--detail {prep.get('detail', 0)}", prep.get("detail"))) if on)
        print(f"suggested: --models {','.join(best['models'])} --metric {best['metric']} --k-min {best['k_min']} "
              f"--k-max {best['k_max']} --entropy {best['entropy_threshold']} --entropy-norm {best['entropy_norm']} "
              f"--stopping {best['stopping']} --prep raw "  # every step of the crop preparation follows
              f"--scale {prep['scale']} --colour {prep['colour']} {flags}".rstrip())
