"""`library compress --engine ray --ray-workers 2` against the build in one process, on a real library.

The library is ``--per-class`` crops of each pbc_barcelona class, copied twice into a scratch folder (each
copy gets its own index). Both builds run the `library compress` command in this process with
mobilenetv2,efficientnet_lite0 on the CPU and the default crops, without the embedding cache, so each
embeds every crop. Reported: both build times, the largest difference between the two builds' fp32
vectors, and whether `classify --index compressed` against each gives the same predictions for every
BCCD white cell.

Usage: python benchmarks/ray_compress.py [--per-class 100] [--workers 2] [--json out/ray_compress.json]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import REPO, Timer, write_json  # noqa: I001

from cellsearch_gui.cli import main as cli
from cellsearch_gui.core.index.library_index import INDEX_DIR, LibraryIndex

SHARED = REPO.parent / "shared" / "data"
MODELS = "mobilenetv2,efficientnet_lite0"
BUILD = ["--models", MODELS, "--device", "cpu", "--no-cache", "--quiet", "--pca", "128", "--pq-bytes", "32",
         "--shard-size", "128"]


def copy_library(dest: Path, per_class: int) -> Path:
    for cls in sorted(p.name for p in (SHARED / "pbc_barcelona").iterdir() if p.is_dir()):
        (dest / cls).mkdir(parents=True)
        for f in sorted((SHARED / "pbc_barcelona" / cls).iterdir())[:per_class]:
            shutil.copy(f, dest / cls / f.name)
    return dest


def opened(library: Path) -> LibraryIndex:
    (folder,) = sorted((library / INDEX_DIR).glob("compressed-*"))
    return LibraryIndex.open(folder)


def predictions(library: Path, out: Path) -> list[str]:
    assert cli(["classify", "--reference", str(library), "--query", str(SHARED / "bccd_wbc"), "--out", str(out),
                "--models", MODELS, "--device", "cpu", "--quiet", "--index", "compressed", "--rerank", "0"]) == 0
    with open(out, newline="", encoding="utf-8") as handle:
        return [row["predicted_label"] for row in csv.DictReader(handle)]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ray-compress-"))
    try:
        here, there = copy_library(root / "here", args.per_class), copy_library(root / "there", args.per_class)
        with Timer() as local_t:
            assert cli(["library", "compress", str(here), *BUILD]) == 0
        try:
            with Timer() as ray_t:
                assert cli(["library", "compress", str(there), *BUILD, "--engine", "ray", "--ray-workers",
                            str(args.workers)]) == 0
        finally:
            subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
        a, b = opened(here), opened(there)
        ids = np.arange(a.meta["n_cells"])
        diff = float(np.abs(a.vectors()(ids) - b.vectors()(ids)).max())
        same = sum(x == y for x, y in zip(predictions(here, root / "a.csv"), predictions(there, root / "b.csv")))
        result = {"cells": int(a.meta["n_cells"]), "workers": args.workers, "local_s": local_t.s, "ray_s": ray_t.s,
                  "max_abs_vector_difference": diff, "same_labels_as_classes": a.meta["label_ids"] == b.meta["label_ids"],
                  "bccd_queries": 351, "identical_predictions": same}
        print(result)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
