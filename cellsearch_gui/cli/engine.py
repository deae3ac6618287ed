"""`--engine local|ray` for the batch commands (segment, classify, evaluate): the options, and the engine
they ask for. The local engine is the commands' own jobs; the Ray engine runs the same core functions shard
by shard on Ray actors (cellsearch_gui.engine.ray_engine, imported only when asked for)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from cellsearch_gui.cli.common import arg, output_folder
from cellsearch_gui.core import validation
from cellsearch_gui.core.app.compressed_library import compressed_classify_job
from cellsearch_gui.core.app.experiments import classify_job, embed_both
from cellsearch_gui.core.app.sharded_jobs import sharded_classify_job, sharded_embed_job
from cellsearch_gui.core.errors import CellSearchError
from cellsearch_gui.core.index.compressed import DEFAULT_RERANK
from cellsearch_gui.core.options import IndexKind

ENGINES = ("local", "ray")


def add_engine_options(p: argparse.ArgumentParser, shard_size: int, unit: str, work_dir: bool = True) -> None:
    """``work_dir`` False: the command keeps its shards in a place of its own (library compress: the library)."""
    g = p.add_argument_group("engine (docs/cluster.md)")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process; ray: shards on Ray workers (pip install 'cellsearch_gui[cluster]')")
    g.add_argument("--ray-address", default=None,
                   help="HOST:PORT of a running Ray cluster ('ray start --head'), ray://HOST:PORT or auto "
                        "(default: start Ray on this machine)")
    g.add_argument("--ray-workers", type=arg(validation.RAY_WORKERS), default=None,
                   help="Ray workers (actors), default 2")
    if work_dir:
        g.add_argument("--work-dir", type=output_folder, default=None,
                       help="folder of the shards and their manifest (a re-run resumes there); default: in the "
                            "cache folder, named after the job" if unit == "crops" else
                            "folder of the shards and their manifest (default: OUT/shards; a re-run resumes)")
    g.add_argument("--shard-size", type=arg(validation.SHARD_SIZE), default=shard_size,
                   help=f"{unit} per shard (default {shard_size})")


def check_engine_options(args: argparse.Namespace) -> None:
    if args.engine == "local":
        given = [name for name, value in (("--ray-address", args.ray_address), ("--ray-workers", args.ray_workers),
                                          ("--work-dir", getattr(args, "work_dir", None))) if value is not None]
        if given:
            raise CellSearchError(f"{', '.join(given)} only apply with --engine ray")


@contextlib.contextmanager
def ray_engine(args: argparse.Namespace) -> Iterator[object]:
    from cellsearch_gui.engine.ray_engine import RayShards

    engine = RayShards(args.ray_address, args.ray_workers or 2)
    try:
        engine.connect()
        yield engine
    finally:
        engine.close()


def compressed_index(args: argparse.Namespace) -> tuple[Path, int] | None:
    """(library, rerank) when the command asks for the library's compressed index, else None."""
    if args.index != IndexKind.COMPRESSED:
        if args.rerank is not None:
            raise CellSearchError("--rerank only applies with --index compressed")
        return None
    for name, given in (("--shots", getattr(args, "shots", 0)), ("--baselines", getattr(args, "baselines", False))):
        if given:
            raise CellSearchError(f"{name} needs the library's fp32 features; leave out --index compressed")
    return args.reference, DEFAULT_RERANK if args.rerank is None else args.rerank


@contextlib.contextmanager
def engine_jobs(args: argparse.Namespace):
    """(classify, embed): functions with ``classify_job``'s and ``embed_both``'s signatures that run on the
    engine and index the options ask for."""
    check_engine_options(args)
    compressed = compressed_index(args)
    if args.engine == "local" and compressed is None:
        yield classify_job, embed_both
        return
    if args.engine == "local":
        def on_index(inputs, models, params, cache, options, token=None):
            return compressed_classify_job(inputs, compressed[0], models, params, cache, options, compressed[1],
                                           token)

        yield on_index, embed_both
        return
    with ray_engine(args) as engine:
        def on_ray(inputs, models, params, cache, options, token=None):
            return sharded_classify_job(inputs, models, params, options, engine, args.work_dir, args.shard_size,
                                        token, cache, compressed)

        def embed_on_ray(inputs, models, cache, options, token=None):
            return sharded_embed_job(inputs, models, options, engine, args.work_dir, args.shard_size, token, cache)

        yield on_ray, embed_on_ray


@contextlib.contextmanager
def classify_runner(args: argparse.Namespace):
    """A function with ``classify_job``'s signature that runs on the engine and index the options ask for."""
    with engine_jobs(args) as (classify, _):
        yield classify


def segment_work_dir(args: argparse.Namespace) -> Path:
    return args.work_dir or Path(args.out) / "shards"
