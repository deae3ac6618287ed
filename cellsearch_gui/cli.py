"""The `cellsearch` command line: models, evaluate, classify, search-combinations, segment, analyse-models."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cellsearch_gui.core.errors import CellSearchError

DEFAULT_SEARCH_THRESHOLDS = "0.1,0.3,0.5"


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _pixel_size(text: str) -> float:
    from cellsearch_gui.core.io.fields import parse_pixel_size

    try:
        value = parse_pixel_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not value or value <= 0:
        raise argparse.ArgumentTypeError(f"pixel size must be positive, got '{text}'")
    return value


def _words(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


class ProgressPrinter:
    """One tqdm bar per stage on stderr (nested stages stack); silent with --quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bars = {}

    def __call__(self, progress) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        bar = self.bars.get(progress.stage)
        if bar is None:
            bar = self.bars[progress.stage] = tqdm(total=progress.total, desc=progress.stage, file=sys.stderr,
                                                   position=len(self.bars), leave=False, dynamic_ncols=True)
        bar.total = progress.total
        bar.n = progress.done
        if progress.message:
            bar.set_postfix_str(progress.message, refresh=False)
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _add_offline_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--offline", action="store_true",
                   help="never download weights: use imported ones or the hub cache (also CELLSEARCH_OFFLINE=1)")


def _add_embed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", required=True, help="comma-separated model ids, e.g. mobilenetv2,efficientnet_lite0")
    p.add_argument("--per-model-l2", action="store_true",
                   help="L2-normalise each model's embedding before concatenating")
    p.add_argument("--random-init", action="store_true",
                   help="use random-initialised networks instead of pretrained weights (a control)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    p.add_argument("--batch-size", type=int, default=None,
                   help="crops per forward pass (default: 16 on the CPU, 256 on a GPU; halved automatically "
                        "when the GPU runs out of memory)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="auto: fp16 on CUDA, fp32 on CPU/MPS; bf16 also speeds up recent CPUs")
    p.add_argument("--sequential-models", action=argparse.BooleanOptionalAction, default=None,
                   help="load one model at a time, embed all crops with it, free it, then the next "
                        "(default: on for GPUs, off for the CPU)")
    _add_offline_option(p)
    p.add_argument("--cache-dir", type=Path, default=None, help="embedding cache folder")
    p.add_argument("--no-cache", action="store_true", help="keep embeddings in memory only")
    p.add_argument("--classes", type=_words, default=None, help="only these classes (comma-separated)")
    p.add_argument("--shared-classes", action="store_true",
                   help="keep only classes present in both the reference and the query set")
    p.add_argument("--split", type=float, default=None,
                   help="without --query: hold out this stratified fraction of the reference as queries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("crop preprocessing (device invariance)")
    g.add_argument("--centre", action="store_true", help="find the cell in each crop and centre on it")
    g.add_argument("--scale", default="none", choices=["none", "physical", "cell_size"],
                   help="physical: by pixel sizes; cell_size: the cell's own diameter sets the scale")
    g.add_argument("--mask", action="store_true", help="blank the background and neighbouring cells")
    g.add_argument("--colour", default="none",
                   choices=["none", "clahe", "reinhard", "device_reinhard", "macenko", "grayscale"])
    g.add_argument("--reference-pixel-size", type=_pixel_size, default=None, help="um/px of the reference crops")
    g.add_argument("--query-pixel-size", type=_pixel_size, default=None, help="um/px of the query crops")
    g.add_argument("--crop-target-pixel-size", type=_pixel_size, default=0.3,
                   help="um/px that crops are brought to with --scale physical")
    g.add_argument("--views", type=int, default=1, choices=[1, 4, 8],
                   help="embed each crop in 4 rotations (8: and flips) and average: orientation-invariant")
    g.add_argument("--detail", type=float, default=0.0,
                   help="blur crops to a common level of detail (Gaussian sigma in crop pixels, e.g. 2)")
    g.add_argument("--find-cell", default="nucleated", choices=["nucleated", "all"],
                   help="which object is the cell: one with a stained nucleus, or any")


def _add_ewc_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", default="l2", choices=["l2", "cosine", "canberra"])
    p.add_argument("--k-min", type=int, default=3)
    p.add_argument("--k-max", type=int, default=1000)
    p.add_argument("--entropy", type=float, default=0.3, help="normalised-entropy stopping threshold")
    p.add_argument("--entropy-norm", default="log_k", choices=["log_k", "log_min_kc"],
                   help="log_k: the paper's H/log k; log_min_kc: H/log min(k, classes), robust under device shift")
    p.add_argument("--index", default="auto", choices=["auto", "flat", "hnsw", "ivf"],
                   help="exact (flat), HNSW or IVF; auto: exact while the vectors fit in 4 GiB, IVF above")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cellsearch", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    gui = sub.add_parser("gui", help="open the CellSearch window (the default without a command)")
    gui.add_argument("paths", nargs="*", type=Path, help="images or folders of cells to classify")
    gui.add_argument("--reference", type=Path, help="reference library: one sub-folder of cell images per class")
    gui.add_argument("--project", type=Path, help="open a saved project folder")

    from cellsearch_gui.cli_project import add_project_parser

    add_project_parser(sub)
    models = sub.add_parser("models", help="list, import, download or verify model weights")
    msub = models.add_subparsers(dest="models_command", required=True)
    mlist = msub.add_parser("list", help="each model, whether its weights are present, its licence")
    mlist.add_argument("--long", action="store_true", help="also the layer embedded and the weights source")
    verify = msub.add_parser("verify", help="check the sha256 of every present checkpoint")
    verify.add_argument("ids", nargs="*")
    imp = msub.add_parser("import", help="copy a checkpoint into the weights folder after checking it")
    imp.add_argument("id", nargs="?", help="model id; without it, FILE is a folder of pinned checkpoints")
    imp.add_argument("file", type=Path, help="checkpoint file (.pth/.pt/.bin/.safetensors) or a saved model "
                                             "folder (transformers save_pretrained, hub snapshot)")
    imp.add_argument("--allow-unpinned", action="store_true",
                     help="accept a file whose sha256 differs from the pinned one")
    down = msub.add_parser("download", help="download a model's pinned checkpoint")
    down.add_argument("ids", nargs="+")

    ev = sub.add_parser("evaluate", help="score predictions on a labelled query set")
    ev.add_argument("--reference", required=True, type=Path, help="DIR/<class>/<image>")
    ev.add_argument("--query", type=Path, default=None, help="labelled query folder")
    _add_embed_options(ev)
    _add_ewc_options(ev)
    ev.add_argument("--baselines", action="store_true",
                    help="also score unweighted 5-NN and a logistic-regression probe on the same features")
    ev.add_argument("--json", type=Path, default=None)

    cl = sub.add_parser("classify", help="predict a label for every query crop")
    cl.add_argument("--reference", required=True, type=Path)
    cl.add_argument("--query", required=True, type=Path, help="folder of crops (flat or class folders)")
    cl.add_argument("--out", required=True, type=Path, help="predictions CSV")
    cl.add_argument("--top", type=int, default=5, help="neighbours listed per crop")
    _add_embed_options(cl)
    _add_ewc_options(cl)

    sg = sub.add_parser("segment", help="segment microscope images into cell crops and a cells.csv")
    sg.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    sg.add_argument("--out", required=True, type=Path)
    sg.add_argument("--segmenter", default="classical",
                    help="classical (CPU, fast), mobilesam, sam_vit_b, sam_vit_l or sam_vit_h")
    sg.add_argument("--objects", default="all", choices=["all", "nucleated"],
                    help="all cells, or only cells with a stained nucleus (white cells in a blood smear)")
    sg.add_argument("--pixel-size", type=_pixel_size, default=None,
                    help="um per pixel of the images (overrides metadata), e.g. 0.322 or 322nm")
    sg.add_argument("--target-pixel-size", type=_pixel_size, default=None,
                    help="rescale to this um per pixel before segmenting and cropping")
    sg.add_argument("--clahe", action="store_true", help="CLAHE contrast normalisation of the crops")
    sg.add_argument("--cell-diameter", type=float, default=None, help="typical cell diameter in um")
    sg.add_argument("--cell-diameter-px", type=float, default=None,
                    help="typical cell diameter in working pixels (when the pixel size is unknown)")
    sg.add_argument("--crop-size", type=int, default=224)
    sg.add_argument("--mask-background", action="store_true", help="blank everything outside the cell mask")
    sg.add_argument("--keep-border-cells", action="store_true", help="keep cells cut by the image border")
    sg.add_argument("--tile-size", type=int, default=1024)
    sg.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default 1.5 diameters)")
    sg.add_argument("--device", default="cpu")
    sg.add_argument("--checkpoint", type=Path, default=None, help="SAM checkpoint file to use directly")
    _add_offline_option(sg)
    sg.add_argument("--quiet", action="store_true")

    sc = sub.add_parser("search-combinations", help="rank model subsets and hyper-parameters on a validation set")
    sc.add_argument("--reference", required=True, type=Path)
    sc.add_argument("--validation", type=Path, default=None)
    _add_embed_options(sc)
    sc.add_argument("--metrics", type=_words, default=["l2", "cosine", "canberra"])
    sc.add_argument("--k-min", type=_ints, default=[3])
    sc.add_argument("--k-max", type=_ints, default=[1000])
    sc.add_argument("--thresholds", type=_floats, default=_floats(DEFAULT_SEARCH_THRESHOLDS))
    sc.add_argument("--entropy-norms", type=_words, default=["log_k"], help="log_k,log_min_kc")
    sc.add_argument("--preps", type=_words, default=None,
                    help="also rank crop preprocessing presets: " + ",".join(
                        ["raw", "centred", "centred_scaled", "cell", "cell_device_colour", "cell_grayscale",
                         "cell_clahe"]) + " or 'all'")
    sc.add_argument("--top", type=int, default=15, help="rows of the ranking to print")
    sc.add_argument("--json", type=Path, default=None)
    an = sub.add_parser("analyse-models", help="class separation per model and CKA between models")
    an.add_argument("--reference", required=True, type=Path, help="labelled library DIR/<class>/<image>")
    an.add_argument("--out", required=True, type=Path, help="folder for analysis.json and analysis.png")
    _add_embed_options(an)
    an.add_argument("--pca-dims", type=int, default=100, help="PCA dimensions before the cosine similarities")
    an.add_argument("--sigma-frac", type=float, default=0.8,
                    help="RBF CKA bandwidth as a fraction of the median pairwise distance")
    an.add_argument("--max-cells", type=int, default=2000, help="stratified sample of the library (CKA is n^2)")
    return parser


def _embed_setup(args):
    from cellsearch_gui.core.embedding.cache import EmbeddingCache, default_cache_dir
    from cellsearch_gui.core.embedding.job import EmbedOptions
    from cellsearch_gui.core.models.registry import parse_model_list

    models = parse_model_list(args.models, role="embed")
    cache = EmbeddingCache(None if args.no_cache else (args.cache_dir or default_cache_dir()))
    from cellsearch_gui.core.crops.prepare import CropPrep

    prep = CropPrep(centre=args.centre, scale=args.scale, mask=args.mask, colour=args.colour,
                    target_pixel_size_um=args.crop_target_pixel_size, objects=args.find_cell, detail=args.detail)
    options = EmbedOptions(weights="random" if args.random_init else "pretrained", device=args.device,
                           batch_size=args.batch_size, per_model_l2=args.per_model_l2, seed=args.seed, prep=prep,
                           views=args.views, precision=args.precision, sequential_models=args.sequential_models)
    return models, cache, options


def _load_inputs(args, query_dir, needs_labels: bool):
    from cellsearch_gui.core.app.experiments import load_inputs

    inputs = load_inputs(args.reference, query_dir, args.split, args.seed, args.classes, args.shared_classes,
                         query_needs_labels=needs_labels)
    inputs.reference_pixel_size = args.reference_pixel_size
    inputs.query_pixel_size = args.query_pixel_size or (None if query_dir else args.reference_pixel_size)
    return inputs


def _params(args):
    from cellsearch_gui.core.classify.ewc import EWCParams

    return EWCParams(metric=args.metric, k_min=args.k_min, k_max=args.k_max,
                     entropy_threshold=args.entropy, index=args.index,
                     entropy_norm=args.entropy_norm).validate()


def _report_problems(result_skipped, notes) -> None:
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for item in result_skipped:
        path, problem = (item["path"], item["problem"]) if isinstance(item, dict) else item
        print(f"skipped: {path}: {problem}", file=sys.stderr)


def _write_json(path: Path, data: dict) -> None:
    from cellsearch_gui.core.io.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=1, default=str))


def cmd_models(args) -> int:
    from cellsearch_gui.core.models import checkpoints, install
    from cellsearch_gui.core.models.hub import offline_mode
    from cellsearch_gui.core.models.registry import REGISTRY, parse_model_list

    if args.models_command in ("list", "verify"):
        ids = parse_model_list(",".join(args.ids)) if getattr(args, "ids", None) else sorted(REGISTRY)
        verify = args.models_command == "verify"
        print(f"weights folder: {checkpoints.weights_dir()}" + ("   (offline mode)" if offline_mode() else ""))
        print(f"{'id':<23}{'dim':>6}{'input':>7}  {'roles':<15}{'weights':<19}{'licence'}")
        bad = 0
        for model_id in ids:
            st = checkpoints.status(REGISTRY[model_id], verify=verify)
            bad += st.verified is False
            spec = st.spec
            print(f"{spec.id:<23}{spec.dim:>6}{spec.input_size:>7}  {','.join(spec.roles):<15}{st.state:<19}"
                  f"{spec.licence}")
            if getattr(args, "long", False):
                print(f"{'':<6}layer:   {spec.layer}\n{'':<6}weights: {spec.weights_source}"
                      + (f"\n{'':<6}file:    {st.path}" if st.path else ""))
        return 1 if bad else 0
    if args.models_command == "import":
        if args.id is None:  # a folder of checkpoints (USB stick): each file recognised by its sha256
            folder = args.file
            done = install.import_folder(folder)
            for model_id, path in done:
                print(f"imported {model_id} -> {path}")
            if not done:
                raise CellSearchError(f"{folder}: no file matches a pinned checkpoint")
            return 0
        path = install.import_weights(args.id, args.file, allow_unpinned=args.allow_unpinned)
        print(f"imported {args.id} -> {path}")
        return 0
    if args.models_command == "download":
        for model_id in parse_model_list(",".join(args.ids)):
            print(f"downloaded {model_id} -> {checkpoints.download_weights(model_id)}")
        return 0
    return 2


def _run(job, quiet: bool):
    from cellsearch_gui.core.jobs import run_job

    printer = ProgressPrinter(quiet)
    try:
        return run_job(job, printer)
    finally:
        printer.close()


def cmd_evaluate(args) -> int:
    from cellsearch_gui.core.app.experiments import evaluate_job
    from cellsearch_gui.core.classify.evaluation import format_confusion

    models, cache, options = _embed_setup(args)
    params = _params(args)
    inputs = _load_inputs(args, args.query, needs_labels=True)
    result = _run(evaluate_job(inputs, models, params, cache, options, args.baselines), args.quiet)
    _report_problems(result["skipped"], result["notes"])
    print(f"models: {','.join(models)}   metric: {params.metric}   k: {params.k_min}..{params.k_max}   "
          f"entropy < {params.entropy_threshold}   references: {result['n_reference']}   "
          f"queries: {result['n_query']}")
    print(f"macro accuracy (balanced): {100 * result['balanced_accuracy']:.1f} %")
    print(f"macro precision:           {100 * result['macro_precision']:.1f} %")
    print(f"mean k used: {result['mean_k']:.1f}   mean entropy: {result['mean_entropy']:.3f}")
    if result["preprocessing_notes"]:
        print(f"preprocessing notes for {len(result['preprocessing_notes'])} crops (see --json)")
    print(format_confusion(result))
    for name, base in result.get("baselines", {}).items():
        print(f"baseline {name}: macro accuracy {100 * base['balanced_accuracy']:.1f} %, "
              f"macro precision {100 * base['macro_precision']:.1f} %")
    if args.json:
        _write_json(args.json, result)
    return 0


def cmd_classify(args) -> int:
    from cellsearch_gui.core.app.experiments import classify_job
    from cellsearch_gui.core.export import write_predictions_csv

    models, cache, options = _embed_setup(args)
    args.split = None
    inputs = _load_inputs(args, args.query, needs_labels=False)
    ref, query, preds, _ = _run(classify_job(inputs, models, _params(args), cache, options), args.quiet)
    _report_problems(ref.skipped + query.skipped, inputs.notes)
    if preds is None:
        raise CellSearchError("none of the query images could be read")
    write_predictions_csv(args.out, query, preds, ref, args.top)
    counts = {c: preds.labels.count(c) for c in preds.classes}
    print(f"{len(query.paths)} crops classified -> {args.out}")
    print("  " + ", ".join(f"{c}: {n}" for c, n in counts.items()))
    return 0


def cmd_search(args) -> int:
    from cellsearch_gui.core.app.experiments import search_job
    from cellsearch_gui.core.classify.combinations import Grid

    models, cache, options = _embed_setup(args)
    grid = Grid(metrics=args.metrics, k_mins=args.k_min, k_maxs=args.k_max, thresholds=args.thresholds,
                entropy_norms=args.entropy_norms)
    preps = None
    if args.preps:
        from cellsearch_gui.core.crops.prepare import PRESETS, preset

        names = list(PRESETS) if args.preps == ["all"] else args.preps
        try:
            preps = {n: preset(n, physical=args.scale == "physical", objects=args.find_cell,
                               target_pixel_size_um=args.crop_target_pixel_size) for n in names}
        except ValueError as exc:
            raise CellSearchError(str(exc)) from None
    from cellsearch_gui.core.index.knn import KnnIndex

    for metric in grid.metrics:
        KnnIndex(metric=metric)  # validates the name before any embedding work
    inputs = _load_inputs(args, args.validation, needs_labels=True)
    result = _run(search_job(inputs, models, grid, cache, options, preps=preps), args.quiet)
    _report_problems(result["skipped"], result["notes"])
    print(f"{len(result['ranking'])} settings on {result['n_validation']} validation cells "
          f"({result['n_reference']} references):")
    print(f"{'rank':>4}  {'macro acc':>9}  {'macro prec':>10}  {'metric':<9}{'k':>10}{'H<':>5} {'H norm':<11}"
          f"{'preprocessing':<20}models")
    for rank, row in enumerate(result["ranking"][: args.top], 1):
        print(f"{rank:>4}  {100 * row['balanced_accuracy']:>8.1f}%  {100 * row['macro_precision']:>9.1f}%  "
              f"{row['metric']:<9}{row['k_min']:>4}..{row['k_max']:<5}{row['entropy_threshold']:>5} "
              f"{row['entropy_norm']:<11}{row['preprocessing']:<20}{','.join(row['models'])}")
    if result["ranking"]:
        best = result["ranking"][0]
        prep = result["preprocessing"][best["preprocessing"]]
        flags = " ".join(f for f, on in (("--centre", prep["centre"]), ("--mask", prep["mask"])) if on)
        print(f"suggested: --models {','.join(best['models'])} --metric {best['metric']} --k-min {best['k_min']} "
              f"--k-max {best['k_max']} --entropy {best['entropy_threshold']} --entropy-norm {best['entropy_norm']} "
              f"--scale {prep['scale']} --colour {prep['colour']} {flags}".rstrip())
    if args.json:
        _write_json(args.json, result)
    return 0


def cmd_segment(args) -> int:
    from cellsearch_gui.core.app.segment import segment_images
    from cellsearch_gui.core.segmentation.settings import Normalisation, SegmentSettings

    settings = SegmentSettings(
        segmenter=args.segmenter, objects=args.objects, pixel_size_um=args.pixel_size,
        cell_diameter_um=args.cell_diameter, cell_diameter_px=args.cell_diameter_px,
        drop_border_cells=not args.keep_border_cells, tile_size=args.tile_size, overlap=args.overlap,
        crop_size=args.crop_size, mask_background=args.mask_background, device=args.device,
        checkpoint=str(args.checkpoint) if args.checkpoint else None,
        normalisation=Normalisation(clahe=args.clahe, target_pixel_size_um=args.target_pixel_size))
    summary = _run(segment_images(args.inputs, args.out, settings), args.quiet)
    for problem in summary["problems"]:
        print(f"skipped: {problem}", file=sys.stderr)
    for image in summary["per_image"]:
        if image["problem"] is None and not args.quiet:
            dropped = ", ".join(f"{n} {why}" for why, n in image["dropped"].items())
            print(f"{image['path']}: {image['cells']} cells in {image['seconds']:.1f} s"
                  + (f" (dropped: {dropped})" if dropped else ""))
    print(f"{summary['cells']} cells from {summary['images'] - len([i for i in summary['per_image'] if i['problem']])}"
          f" of {summary['images']} images -> {args.out / 'cells.csv'}")
    return 0


def cmd_gui(args) -> int:
    try:
        from cellsearch_gui.gui.app import main as gui_main
    except ImportError as exc:
        print(f"error: the window needs PySide6 and pyqtgraph ({exc}); run ./setup.sh", file=sys.stderr)
        return 2
    return gui_main(args.paths, args.reference, args.project)


def cmd_project(args) -> int:
    from cellsearch_gui.cli_project import cmd_project as run

    return run(args)


def cmd_analyse(args) -> int:
    from cellsearch_gui.core.app.experiments import analyse_job
    from cellsearch_gui.core.classify.analysis import format_table, render_png
    from cellsearch_gui.core.io.dataset import scan_class_folders

    models, cache, options = _embed_setup(args)
    reference = scan_class_folders(args.reference)
    if args.classes:
        reference = reference.restrict(args.classes)
    result = _run(analyse_job(reference, models, cache, options, args.pca_dims, args.sigma_frac, args.max_cells),
                  args.quiet)
    _report_problems(result["skipped"], reference.problems)
    print(f"{result['n_cells']} cells, {len(result['classes'])} classes, weights: {options.weights}")
    print(format_table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    _write_json(args.out / "analysis.json", result)
    render_png(result, args.out / "analysis.png")
    print(f"-> {args.out / 'analysis.json'}, {args.out / 'analysis.png'}")
    return 0


COMMANDS = {"gui": cmd_gui, "project": cmd_project, "segment": cmd_segment, "models": cmd_models,
            "evaluate": cmd_evaluate, "classify": cmd_classify, "search-combinations": cmd_search,
            "analyse-models": cmd_analyse}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv if argv is not None else (sys.argv[1:] or ["gui"]))
    if args.command is None:
        parser.print_help()
        return 0
    saved_offline = os.environ.get("CELLSEARCH_OFFLINE")
    if getattr(args, "offline", False):
        os.environ["CELLSEARCH_OFFLINE"] = "1"
    try:
        return COMMANDS[args.command](args)
    except CellSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if saved_offline is None:
            os.environ.pop("CELLSEARCH_OFFLINE", None)
        else:
            os.environ["CELLSEARCH_OFFLINE"] = saved_offline


if __name__ == "__main__":
    sys.exit(main())
