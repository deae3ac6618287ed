"""`cellsearch library ...`: store a reference library's features in it, build the demo library."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from cellsearch_gui.cli.common import (
    EMBED_DEFAULTS,
    EWC_DEFAULTS,
    add_embed_options,
    arg,
    check_device_available,
    device,
    embed_setup,
    output_folder,
    run,
)
from cellsearch_gui.cli.engine import add_engine_options, check_engine_options, ray_engine
from cellsearch_gui.core import validation
from cellsearch_gui.core.app.compressed_library import BUILD_SHARD_CROPS, build_compressed_job
from cellsearch_gui.core.app.demo import DEMO_FIELDS, DEMO_PER_CLASS, build_demo_job, find_sample_data
from cellsearch_gui.core.app.libraries import embed_library_job
from cellsearch_gui.core.app.run import DEFAULT_MODELS, AnalysisSettings
from cellsearch_gui.core.models.registry import parse_model_list
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.options import Metric, Preset, Weights, values

SETTINGS_DEFAULTS = AnalysisSettings()


def add_parser(sub) -> None:
    library = sub.add_parser("library", help="a reference library folder: store its features, build the demo")
    library.set_defaults(handler=cmd_library)
    lsub = library.add_subparsers(dest="library_command", required=True)
    embed = lsub.add_parser("embed", help="embed a library once and keep its features in it (DIR/_features), "
                                          "so loading it with these settings embeds nothing")
    embed.add_argument("folder", type=Path, help="the library, DIR/<class>/<image>")
    embed.add_argument("--models", default=",".join(DEFAULT_MODELS),
                       help="comma-separated model ids (default: %(default)s, the window's)")
    embed.add_argument("--preprocessing", default=SETTINGS_DEFAULTS.preprocessing, choices=values(Preset),
                       help="crop preparation preset, as the window's setting (default: %(default)s)")
    embed.add_argument("--pixel-size", type=arg(validation.PIXEL_SIZE), default=None,
                       help="the library's um/px, as the window's reference pixel size (default: none)")
    embed.add_argument("--device", type=device, default=EMBED_DEFAULTS.device,
                       help="auto, cpu, cuda...: features made on a GPU (fp16) match runs on a GPU")
    embed.add_argument("--random-init", action="store_true", help="random-initialised networks (a control)")
    embed.add_argument("--quiet", action="store_true")
    add_compress_parser(lsub)
    demo = lsub.add_parser("demo", help="build the demo: a PBC white-cell library with its features, and "
                                        "BCCD fields to classify (from the sample data, once)")
    demo.add_argument("out", type=output_folder, help="folder to build it in, e.g. demo")
    demo.add_argument("--data", type=Path, default=None,
                      help="sample data folder holding pbc_barcelona and bccd_fov (default: found next to the "
                           "checkout, or CELLSEARCH_SAMPLE_DATA)")
    demo.add_argument("--per-class", type=int, default=DEMO_PER_CLASS, help="library cells per class "
                                                                            "(default: %(default)s)")
    demo.add_argument("--fields", type=int, default=DEMO_FIELDS, help="fields to classify (default: %(default)s)")
    demo.add_argument("--device", type=device, default=EMBED_DEFAULTS.device)
    demo.add_argument("--quiet", action="store_true")


def add_compress_parser(lsub) -> None:
    p = lsub.add_parser("compress", help="build the library's compressed index (PCA + IVF-PQ) once, for libraries "
                                         "larger than memory: classify/evaluate --index compressed search it")
    p.add_argument("folder", type=Path, help="the library, DIR/<class>/<image>; the index goes in DIR/_index")
    add_embed_options(p)
    p.add_argument("--metric", default=EWC_DEFAULTS.metric, choices=[Metric.L2.value, Metric.COSINE.value],
                   help="the metric classify will use (default: %(default)s)")
    p.add_argument("--pca", type=arg(validation.PCA_DIMS), default=256, help="PCA dimensions (default: 256)")
    p.add_argument("--pq-bytes", type=arg(validation.PQ_BYTES), default=64,
                   help="bytes of code per cell, a divisor of --pca (default: 64)")
    p.add_argument("--nlist", type=arg(validation.NLIST), default=0,
                   help="inverted lists (default 0: about 2 sqrt(cells))")
    add_engine_options(p, BUILD_SHARD_CROPS, "crops", work_dir=False)  # the shards stay in LIB/_index


def cmd_library(args: argparse.Namespace) -> int:
    if args.library_command == "compress":
        return _compress(args)
    check_device_available(args.device)
    if args.library_command == "embed":
        return _embed(args)
    return _demo(args)


def _compress(args: argparse.Namespace) -> int:
    given = [name for name, value in (("--classes", args.classes), ("--split", args.split),
                                      ("--shared-classes", args.shared_classes),
                                      ("--query-pixel-size", args.query_pixel_size)) if value]
    if given:
        raise CellSearchError(f"{', '.join(given)}: the compressed index holds the whole library")
    check_engine_options(args)
    models, cache, options = embed_setup(args)
    try:
        with contextlib.ExitStack() as stack:
            engine = stack.enter_context(ray_engine(args)) if args.engine == "ray" else None
            meta = run(build_compressed_job(args.folder, models, cache, options, args.metric, args.pca,
                                            args.pq_bytes, args.nlist, args.reference_pixel_size, args.shard_size,
                                            engine=engine), args.quiet)
    finally:
        cache.close()
    for note in meta["notes"]:
        print(f"note: {note}")
    print(f"compressed index of {meta['n_cells']} cells ({','.join(models)}, {args.metric}, PCA {meta['pca']}, "
          f"{meta['pq_bytes']} bytes per cell, {meta['nlist']} lists) -> {meta['folder']} "
          f"({meta['build_s']:.1f} s)")
    return 0


def _embed(args: argparse.Namespace) -> int:
    settings = AnalysisSettings(models=parse_model_list(args.models, role="embed"), preprocessing=args.preprocessing,
                                reference_pixel_size_um=args.pixel_size,
                                weights=(Weights.RANDOM if args.random_init else Weights.PRETRAINED).value)
    info = run(embed_library_job(args.folder, settings, args.device), args.quiet)
    for entry in info["features"]:
        print(f"{entry['model']}: {entry['cells']} cells -> {args.folder / entry['file']}")
    for note in info.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    data = args.data or find_sample_data()
    if data is None or not all((Path(data) / name).is_dir() for name in ("pbc_barcelona", "bccd_fov")):
        print(f"error: no sample data (pbc_barcelona, bccd_fov) {f'in {data}' if data else 'found'}: pass "
              "--data DIR or set CELLSEARCH_SAMPLE_DATA", file=sys.stderr)
        return 2
    reference, fields = run(build_demo_job(args.out, args.per_class, args.fields, Path(data), args.device),
                            args.quiet)
    print(f"demo library: {reference}\ndemo fields:  {fields}")
    return 0
