"""What the commands share: value parsers, the embedding / crop / EWC option groups (choices from the core's
vocabulary, defaults from its dataclasses), turning those options into core settings, and running a job."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cellsearch_gui.core import validation
from cellsearch_gui.core.app.defaults import DEFAULT_EWC, DEFAULT_PRESET
from cellsearch_gui.core.app.experiments import Inputs, load_inputs
from cellsearch_gui.core.app.overlap import overlap_warning, query_reference_overlap
from cellsearch_gui.core.classify.ewc import EWCParams
from cellsearch_gui.core.index.compressed import DEFAULT_RERANK
from cellsearch_gui.core.crops.prepare import CropPrep, preset
from cellsearch_gui.core.embedding.cache import EmbeddingCache, default_cache_dir
from cellsearch_gui.core.embedding.job import EmbedOptions
from cellsearch_gui.core.io.atomic import write_text_atomic
from cellsearch_gui.core.io.fields import parse_pixel_size
from cellsearch_gui.core.jobs import Job, Progress, run_job
from cellsearch_gui.core.models.devices import check_device_available
from cellsearch_gui.core.models.registry import parse_model_list
from cellsearch_gui.core.options import (
    VIEWS,
    CellObjects,
    ColourMode,
    EntropyNorm,
    IndexKind,
    Metric,
    Precision,
    Preset,
    ScaleMode,
    StoppingRule,
    Weights,
    values,
)

EWC_DEFAULTS = DEFAULT_EWC  # the window's defaults too
PREP_DEFAULTS = CropPrep()
EMBED_DEFAULTS = EmbedOptions()


def words(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``prog: error: argument --x: ...``), exit status 2, no usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def arg(domain: validation.Range | validation.Choice):
    """An argparse ``type`` that checks the value against its domain (core/validation.py)."""

    def parse(text: str):
        try:
            return domain.parse(text)
        except validation.InvalidSetting as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = domain.name
    return parse


def arg_list(domain: validation.Range | validation.Choice, also: tuple[str, ...] = ()):
    """A comma-separated list whose every item is in the domain (or one of ``also``); never empty."""

    def parse(text: str) -> list:
        items = words(text)
        if not items:
            raise argparse.ArgumentTypeError(f"needs at least one value, got {text!r}")
        try:
            return [item if item in also else domain.parse(item) for item in items]
        except validation.InvalidSetting as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = f"list of {domain.name}"
    return parse


def device(text: str) -> str:
    if (problem := validation.device_problem(text)) is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def pixel_size(text: str) -> float:
    try:
        value = parse_pixel_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if (problem := validation.PIXEL_SIZE.problem(value)) is not None or value is None:
        raise argparse.ArgumentTypeError(f"pixel size {problem or 'missing'} ('{text}')")
    return value


def _blocked_parent(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is not a folder (nothing can be made below it)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def output_file(text: str) -> Path:
    """A file to write: not an existing folder, and below a folder (missing parents are created)."""
    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' is a folder; give a file name")
    if (blocked := _blocked_parent(path)) is not None:
        raise argparse.ArgumentTypeError(f"cannot write '{text}': '{blocked}' is a file, not a folder")
    return path


def output_folder(text: str) -> Path:
    """A folder to write into: not an existing file (it and missing parents are created)."""
    path = Path(text)
    if not text or (path.exists() and not path.is_dir()):
        raise argparse.ArgumentTypeError(f"'{text}' is a file; give a folder")
    if (blocked := _blocked_parent(path)) is not None:
        raise argparse.ArgumentTypeError(f"cannot write into '{text}': '{blocked}' is a file, not a folder")
    return path


class ProgressPrinter:
    """One tqdm bar per stage on stderr (nested stages stack); silent with --quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bars = {}

    def __call__(self, progress: Progress) -> None:
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


def run(job: Job, quiet: bool):
    """Drive a core job to its result, with progress bars unless ``quiet``."""
    printer = ProgressPrinter(quiet)
    try:
        return run_job(job, printer)
    finally:
        printer.close()


def add_offline_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--offline", action="store_true",
                   help="never download weights: use imported ones or the hub cache (also CELLSEARCH_OFFLINE=1)")


def add_embed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", required=True, help="comma-separated model ids, e.g. mobilenetv2,efficientnet_lite0")
    p.add_argument("--per-model-l2", action="store_true",
                   help="L2-normalise each model's embedding before concatenating")
    p.add_argument("--random-init", action="store_true",
                   help="use random-initialised networks instead of pretrained weights (a control)")
    p.add_argument("--device", type=device, default=EMBED_DEFAULTS.device, help="auto, cpu, cuda, cuda:1 or mps")
    p.add_argument("--batch-size", type=arg(validation.BATCH_SIZE), default=EMBED_DEFAULTS.batch_size,
                   help="crops per forward pass (default: 16 on the CPU, 256 on a GPU; halved automatically "
                        "when the GPU runs out of memory)")
    p.add_argument("--precision", default=EMBED_DEFAULTS.precision, choices=values(Precision),
                   help="auto: fp16 on CUDA, fp32 on CPU/MPS; bf16 also speeds up recent CPUs")
    p.add_argument("--sequential-models", action=argparse.BooleanOptionalAction,
                   default=EMBED_DEFAULTS.sequential_models,
                   help="load one model at a time, embed all crops with it, free it, then the next "
                        "(default: on for GPUs, off for the CPU)")
    p.add_argument("--prep-workers", type=arg(validation.PREP_WORKERS), default=EMBED_DEFAULTS.prep_workers,
                   help="processes decoding and preparing crops, each crop once per run; 0: on a reader "
                        "thread (default: 1 on the CPU, up to 16 with a GPU; none for fewer than 64 crops)")
    add_offline_option(p)
    p.add_argument("--cache-dir", type=output_folder, default=None, help="embedding cache folder")
    p.add_argument("--no-cache", action="store_true", help="keep embeddings in memory only")
    p.add_argument("--classes", type=words, default=None, help="only these classes (comma-separated)")
    p.add_argument("--shared-classes", action="store_true",
                   help="keep only classes present in both the reference and the query set")
    p.add_argument("--split", type=arg(validation.SPLIT), default=None,
                   help="without --query: hold out this stratified fraction of the reference as queries")
    p.add_argument("--seed", type=arg(validation.SEED), default=EMBED_DEFAULTS.seed)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_crop_options(p.add_argument_group("crop preprocessing (device invariance)"))


def _add_crop_options(g) -> None:
    g.add_argument("--prep", default=DEFAULT_PRESET, choices=values(Preset),
                   help="crop preparation preset, the window's too (raw: the paper's crops as they are); the "
                        "options below change single steps of it")
    g.add_argument("--centre", action="store_true", default=None, help="find the cell in each crop and centre on it")
    g.add_argument("--scale", default=None, choices=values(ScaleMode),
                   help="physical: by pixel sizes; cell_size: the cell's own diameter sets the scale")
    g.add_argument("--mask", action="store_true", default=None, help="blank the background and neighbouring cells")
    g.add_argument("--colour", default=None, choices=values(ColourMode))
    g.add_argument("--reference-pixel-size", type=pixel_size, default=None, help="um/px of the reference crops")
    g.add_argument("--query-pixel-size", type=pixel_size, default=None, help="um/px of the query crops")
    g.add_argument("--crop-target-pixel-size", type=pixel_size, default=PREP_DEFAULTS.target_pixel_size_um,
                   help="um/px that crops are brought to with --scale physical")
    g.add_argument("--views", type=int, default=EMBED_DEFAULTS.views, choices=list(VIEWS),
                   help="embed each crop in 4 rotations (8: and flips) and average: orientation-invariant")
    g.add_argument("--detail", type=arg(validation.DETAIL), default=None,
                   help="blur crops to a common level of detail (Gaussian sigma in crop pixels, e.g. 2)")
    # the default first, as the help has always listed them
    g.add_argument("--find-cell", default=None,
                   choices=[CellObjects.NUCLEATED.value, CellObjects.ALL.value],
                   help="which object is the cell: one with a stained nucleus, or any")


def add_ewc_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", default=EWC_DEFAULTS.metric, choices=values(Metric))
    p.add_argument("--k-min", type=arg(validation.K_MIN), default=EWC_DEFAULTS.k_min)
    p.add_argument("--k-max", type=arg(validation.K_MAX), default=EWC_DEFAULTS.k_max)
    p.add_argument("--entropy", type=arg(validation.ENTROPY_THRESHOLD), default=EWC_DEFAULTS.entropy_threshold,
                   help="normalised-entropy stopping threshold")
    p.add_argument("--entropy-norm", default=EWC_DEFAULTS.entropy_norm, choices=values(EntropyNorm),
                   help="log_k: the paper's H/log k; log_min_kc: H/log min(k, classes), robust under device shift")
    p.add_argument("--stopping", default=EWC_DEFAULTS.stopping, choices=values(StoppingRule),
                   help="when no k reaches the entropy threshold: paper: vote at the last k (up to the whole "
                        "library, where every class weighs the same); lowest_entropy: the k with the least "
                        "ambiguous weighted vote")
    p.add_argument("--index", default=EWC_DEFAULTS.index, choices=values(IndexKind),
                   help="exact (flat), HNSW or IVF; auto: exact while the vectors fit in 4 GiB, IVF above; "
                        "compressed: the library's saved PCA + IVF-PQ index ('library compress', docs/cluster.md)")
    p.add_argument("--rerank", type=arg(validation.RERANK), default=None,
                   help=f"with --index compressed: re-rank N x k-max candidates by their exact distance, read "
                        f"from the library's stored vectors (default {DEFAULT_RERANK}; 0: the compressed codes only)")


def embed_setup(args: argparse.Namespace) -> tuple[list[str], EmbeddingCache, EmbedOptions]:
    """The models, embedding cache and EmbedOptions that the command's options ask for."""
    models = parse_model_list(args.models, role="embed")
    check_device_available(args.device)  # before any work: a message names the devices found
    cache = EmbeddingCache(None if args.no_cache else (args.cache_dir or default_cache_dir()))
    prep = crop_prep(args)
    weights = Weights.RANDOM if args.random_init else Weights.PRETRAINED
    options = EmbedOptions(weights=weights.value, device=args.device, batch_size=args.batch_size,
                           per_model_l2=args.per_model_l2, seed=args.seed, prep=prep, views=args.views,
                           precision=args.precision, sequential_models=args.sequential_models,
                           prep_workers=args.prep_workers)
    return models, cache, options


def crop_prep(args: argparse.Namespace) -> CropPrep:
    """The preset named by --prep with the single steps the command line gives on top of it."""
    steps = {"centre": args.centre, "scale": args.scale, "mask": args.mask, "colour": args.colour,
             "objects": args.find_cell, "detail": args.detail}
    return preset(args.prep, target_pixel_size_um=args.crop_target_pixel_size,
                  **{name: value for name, value in steps.items() if value is not None})


def inputs_from_args(args: argparse.Namespace, query_dir: Path | None, needs_labels: bool) -> Inputs:
    if query_dir is not None and args.split is not None:
        raise validation.InvalidSetting("--split holds out part of the reference as queries; it cannot be used "
                                        "with a query folder (--query, --validation): give one or the other")
    inputs = load_inputs(args.reference, query_dir, args.split, args.seed, args.classes, args.shared_classes,
                         query_needs_labels=needs_labels)
    inputs.reference_pixel_size = args.reference_pixel_size
    inputs.query_pixel_size = args.query_pixel_size or (None if query_dir else args.reference_pixel_size)
    return inputs


def check_overlap(inputs: Inputs) -> dict:
    """Query crops that are reference crops too (the same file or the same bytes): recorded as a note, and
    returned for ``warn_overlap`` and the JSON."""
    overlap = query_reference_overlap(inputs.reference, inputs.query)
    if (warning := overlap_warning(overlap)) is not None:
        inputs.notes.append(warning.removeprefix("WARNING: "))
    return overlap


def warn_overlap(overlap: dict, data: dict) -> dict:
    """The loud warning on stderr after the scores, and ``data`` (the JSON) with the overlap record added."""
    if (warning := overlap_warning(overlap)) is None:
        return data
    print(warning, file=sys.stderr)
    return {**data, "query_reference_overlap": overlap}


def ewc_params(args: argparse.Namespace) -> EWCParams:
    return EWCParams(metric=args.metric, k_min=args.k_min, k_max=args.k_max,
                     entropy_threshold=args.entropy, index=args.index,
                     entropy_norm=args.entropy_norm, stopping=args.stopping).validate()


def report_problems(skipped: list, notes: list[str]) -> None:
    """Notes, then skipped files ({path, problem} dicts or (path, problem) pairs), on stderr."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for item in skipped:
        path, problem = (item["path"], item["problem"]) if isinstance(item, dict) else item
        print(f"skipped: {path}: {problem}", file=sys.stderr)


def write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, default=str))
