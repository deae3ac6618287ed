"""`cellsearch evaluate` (score predictions on labelled queries) and `cellsearch classify` (a predictions CSV)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellsearch_gui.cli.common import (
    add_embed_options,
    add_ewc_options,
    arg,
    check_overlap,
    embed_setup,
    ewc_params,
    inputs_from_args,
    output_file,
    report_problems,
    run,
    warn_overlap,
    write_json,
)
from cellsearch_gui.cli.engine import add_engine_options, classify_runner, engine_jobs
from cellsearch_gui.core import validation
from cellsearch_gui.core.app.defaults import DEVICE_VOTE_DEFAULT
from cellsearch_gui.core.app.confidence import with_confidence
from cellsearch_gui.core.app.experiments import evaluate_job
from cellsearch_gui.core.app.results import EvaluateResult
from cellsearch_gui.core.app.sharded_jobs import DEFAULT_SHARD_CROPS
from cellsearch_gui.core.classify.evaluation import format_confusion
from cellsearch_gui.core.classify.ewc import EWCParams
from cellsearch_gui.core.classify.vote_checks import near_even_warning
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.options import DeviceVote, values
from cellsearch_gui.core.export import write_predictions_csv


def add_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="score predictions on a labelled query set")
    ev.set_defaults(handler=cmd_evaluate)
    ev.add_argument("--reference", required=True, type=Path, help="DIR/<class>/<image>")
    ev.add_argument("--query", type=Path, default=None, help="labelled query folder")
    add_embed_options(ev)
    add_ewc_options(ev)
    ev.add_argument("--baselines", action="store_true",
                    help="also score unweighted 5-NN and a logistic-regression probe on the same features")
    ev.add_argument("--shots", type=arg(validation.SHOTS), default=0,
                    help="N labelled cells per query class join the library as the new device's labelled cells "
                         "(as 'Add labelled cells to reference'); the rest are scored (0: plain evaluation)")
    ev.add_argument("--shot-seeds", type=arg(validation.SHOT_SEEDS), default=5,
                    help="with --shots: repeat with this many random draws (seeds --seed .. --seed+S-1)")
    ev.add_argument("--device-vote", default=DEVICE_VOTE_DEFAULT, choices=values(DeviceVote),
                    help="with --shots or --query-device: library: the device's labelled cells join the library; "
                         "loo_mix: they also vote alone, mixed by a weight chosen by leave-one-out on them")
    ev.add_argument("--query-device", default="", metavar="NAME",
                    help="the microscope the query cells come from, as library.json names devices: library cells "
                         "from it vote as cells labelled on it (see --device-vote); default: a new device")
    ev.add_argument("--json", type=output_file, default=None)
    add_engine_options(ev, DEFAULT_SHARD_CROPS, "crops")

    cl = sub.add_parser("classify", help="predict a label for every query crop")
    cl.set_defaults(handler=cmd_classify)
    cl.add_argument("--reference", required=True, type=Path)
    cl.add_argument("--query", required=True, type=Path, help="folder of crops (flat or class folders)")
    cl.add_argument("--out", required=True, type=output_file, help="predictions CSV")
    cl.add_argument("--top", type=arg(validation.TOP), default=5, help="neighbours listed per crop")
    add_embed_options(cl)
    add_ewc_options(cl)
    add_engine_options(cl, DEFAULT_SHARD_CROPS, "crops")


def cmd_evaluate(args: argparse.Namespace) -> int:
    models, cache, options = embed_setup(args)
    params = ewc_params(args)
    inputs = inputs_from_args(args, args.query, needs_labels=True)
    overlap = check_overlap(inputs)
    if args.shots and args.shot_seeds < 1:
        raise CellSearchError("--shot-seeds must be at least 1 with --shots")
    seeds = [args.seed + i for i in range(args.shot_seeds)]
    with engine_jobs(args) as (classify, embed):
        result = run(evaluate_job(inputs, models, params, cache, options, args.baselines, shots=args.shots,
                                  shot_seeds=seeds, device_vote=args.device_vote, classify=classify, embed=embed,
                                  query_device=args.query_device), args.quiet)
    report_problems(result.skipped, result.notes)
    _print_scores(result, models, params)
    data = warn_overlap(overlap, result.as_dict())
    if args.json:
        write_json(args.json, data)
    return 0


def _print_scores(result: EvaluateResult, models: list[str], params: EWCParams) -> None:
    print(f"models: {','.join(models)}   metric: {params.metric}   k: {params.k_min}..{params.k_max}   "
          f"entropy < {params.entropy_threshold}   references: {result.n_reference}   "
          f"queries: {result.n_query}")
    if result.shots:
        print(f"few-shot: {result.shots} labelled cells per class joined the library, {result.n_query} scored, "
              f"mean over {len(result.shot_seeds)} seeds: "
              + ", ".join(f"{100 * s['balanced_accuracy']:.1f}" for s in result.per_seed))
    print(f"macro accuracy (balanced): {100 * result.balanced_accuracy:.1f} %")
    print(f"macro precision:           {100 * result.macro_precision:.1f} %")
    print(f"mean k used: {result.mean_k:.1f}   mean entropy: {result.mean_entropy:.3f}")
    if result.preprocessing_notes:
        print(f"preprocessing notes for {len(result.preprocessing_notes)} crops (see --json)")
    if result.coverage:
        print("accuracy at coverage: " + "   ".join(f"{float(c):.0%}: {100 * v['accuracy']:.1f} %"
                                                    for c, v in result.coverage.items()))
    if result.certainty:
        c = result.certainty
        print(f"uncertain (ambiguity of the deciding weighted vote >= {params.entropy_threshold}): {100 * c['share_uncertain']:.1f} % of "
              f"cells; macro accuracy of the confident ones {100 * c['confident']['balanced_accuracy']:.1f} %, of the "
              f"uncertain ones {100 * c['uncertain']['balanced_accuracy']:.1f} %")
    if result.calibration and result.calibration.get("n_cells"):
        c, top = result.calibration, result.calibration["at_least"]["0.9"]
        print(f"confidence (calibrated): mean {100 * c['mean_confidence']:.1f} % against accuracy "
              f"{100 * c['accuracy']:.1f} %, calibration error {100 * c['ece']:.1f} points; "
              f"{100 * top['share']:.0f} % of cells at >= 90 %, {100 * top['accuracy']:.1f} % of them right")
    print(format_confusion(result.as_dict()))
    for name, base in (result.baselines or {}).items():
        print(f"baseline {name}: macro accuracy {100 * base['balanced_accuracy']:.1f} %, "
              f"macro precision {100 * base['macro_precision']:.1f} %")


def cmd_classify(args: argparse.Namespace) -> int:
    models, cache, options = embed_setup(args)
    args.split = None
    inputs = inputs_from_args(args, args.query, needs_labels=False)
    with classify_runner(args) as classify:
        ref, query, preds, _ = run(classify(inputs, models, params := ewc_params(args), cache, options), args.quiet)
    report_problems(ref.skipped + query.skipped, inputs.notes + ref.notes)
    if preds is None:
        raise CellSearchError("none of the query images could be read")
    preds, calibration = with_confidence(params, ref, preds)
    write_predictions_csv(args.out, query, preds, ref, args.top)
    counts = {c: preds.labels.count(c) for c in preds.classes}
    print(f"{len(query.paths)} crops classified -> {args.out}")
    print("  " + ", ".join(f"{c}: {n}" for c, n in counts.items()))
    if (n_uncertain := int(preds.uncertain.sum())):
        print(f"  {n_uncertain} uncertain (ambiguity of the weighted vote >= {preds.threshold}): check them (column uncertain)")
    print(f"  column confidence: the probability a call is right, calibrated on {calibration.source}; "
          "it is trustworthy on the library's own microscope, optimistic on another")
    if warning := near_even_warning(preds.scores):  # the window's rule and words
        print(f"warning: {warning.replace('Reference library pane', '--classes')}", file=sys.stderr)
    return 0
