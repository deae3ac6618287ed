"""The compressed library index on a real library: `library compress` then `classify --index compressed`
against exact search, through the core's own jobs (the CLI's).

The library is pbc_barcelona less ``--held-out`` crops per class (copied into a scratch folder, so the
index is written there, not into the shared data); the queries are those held-out PBC crops (the same
device) and the BCCD white cells (another device). Reported: the
build time, the classify time of the queries (embedding excluded: all crops are in the embedding cache
after the first run), recall@k_max of the neighbours and EWC agreement with exact search, and accuracy
against the true labels, for the codes alone and with re-rank 1 and 4 (x k_max candidates).

Usage: python benchmarks/compressed_library.py [--models mobilenetv2,efficientnet_lite0] [--prep raw]
       [--k-max 1000] [--scratch /tmp/cellsearch-compressed] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
from _common import Timer, recall, write_json  # noqa: I001

from cellsearch_gui.core.app.compressed_library import build_compressed_job, compressed_classify_job
from cellsearch_gui.core.app.defaults import DEFAULT_EWC
from cellsearch_gui.core.app.experiments import classify_job, load_inputs
from cellsearch_gui.core.crops.prepare import preset
from cellsearch_gui.core.embedding.cache import EmbeddingCache, default_cache_dir
from cellsearch_gui.core.embedding.job import EmbedOptions
from cellsearch_gui.core.jobs import run_job

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def compare(library: Path, queries: Path, models: list[str], params, cache, options) -> list[dict]:
    """Exact search, then the compressed index with re-rank 0, 1 and 4, on one query set."""
    with Timer() as exact_t:
        _, query, exact, _ = run_job(classify_job(load_inputs(library, queries), models, params, cache, options))
    truth = np.array(query.labels)
    rows = [{"search": "exact (flat)", "queries": len(truth), "classify_s": exact_t.s,
             "accuracy": float(np.mean(np.array(exact.labels) == truth))}]
    for rerank in (0, 1, 4):
        t0 = time.perf_counter()
        _, _, preds, timings = run_job(compressed_classify_job(load_inputs(library, queries), library, models, params,
                                                               cache, options, rerank))
        rows.append({"search": f"compressed, re-rank {rerank}", "classify_s": time.perf_counter() - t0,
                     "search_and_vote_s": timings["classify"], "calibrate_s": timings.get("calibrate", 0.0),
                     "recall_at_k_max": recall(exact.neighbour_ids, preds.neighbour_ids),
                     "ewc_agreement": float(np.mean(np.array(preds.labels) == np.array(exact.labels))),
                     "accuracy": float(np.mean(np.array(preds.labels) == truth))})
    for row in rows:
        print(queries.name, row)
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilenetv2,efficientnet_lite0")
    ap.add_argument("--prep", default="raw")
    ap.add_argument("--k-max", type=int, default=1000)
    ap.add_argument("--held-out", type=int, default=60, help="PBC crops per class kept out of the library")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/cellsearch-compressed"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(1)  # a shared 2-core machine
    models = args.models.split(",")
    library = args.scratch / "pbc_library"
    shutil.rmtree(args.scratch, ignore_errors=True)
    library.mkdir(parents=True)
    held = args.scratch / "pbc_held_out"
    for folder in sorted((args.data / "pbc_barcelona").iterdir()):
        if folder.is_dir():
            files = sorted(folder.iterdir())
            for dest, part in ((library, files[: -args.held_out]), (held, files[-args.held_out:])):
                (dest / folder.name).mkdir(parents=True, exist_ok=True)
                for f in part:
                    shutil.copy(f, dest / folder.name / f.name)
    options = EmbedOptions(device="cpu", prep=preset(args.prep))
    params = dataclasses.replace(DEFAULT_EWC, k_max=args.k_max, index="flat")
    cache = EmbeddingCache(default_cache_dir())
    with Timer() as build:
        meta = run_job(build_compressed_job(library, models, cache, options))
    result = {"library_cells": meta["n_cells"], "models": models, "prep": args.prep, "k_max": args.k_max,
              "nlist": meta["nlist"], "pca": meta["pca"], "pq_bytes": meta["pq_bytes"], "build_s": build.s,
              "build_embed_s": meta["embed_s"]}
    print(result)
    for name, queries in (("PBC held out", held), ("BCCD", args.data / "bccd_wbc")):
        result[name] = compare(library, queries, models, params, cache, options)
    write_json(args.json, result)
    cache.close()
    return result


if __name__ == "__main__":
    main()
