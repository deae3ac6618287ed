"""Reduced storage and approximate indexes on real cell embeddings: the accuracy change of each option.

bench_index.py measures speed and memory at scale on synthetic embeddings; this checks the same options
on real ones. Each labelled set in ../shared/data (PBC blood cells, 8 classes; Jurkat cell cycle, 7
classes) is embedded with real pretrained models (default mobilenetv2+efficientnet_lite0, 2,560-d;
cached under out/), split 80/20 stratified, and classified with EWC (k 3..k_max, default 1000; L2, threshold 0.3) over
each storage option; recall@k_max and prediction agreement are against exact fp32 search.

Usage: python benchmarks/bench_storage_real.py [--models a,b] [--sets pbc_barcelona,jurkat_cellcycle_ifc]
                                               [--json out/bench_storage_real.json]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from _common import REPO, Timer, write_json  # noqa: I001
from bench_index import STORAGE_OPTIONS, storage_table

from cellsearch_gui.core.embedding.cache import EmbeddingCache
from cellsearch_gui.core.embedding.job import EmbedOptions, embed_crops
from cellsearch_gui.core.io.dataset import scan_class_folders, stratified_split
from cellsearch_gui.core.jobs import run_job

SHARED = Path(os.environ.get("CELLSEARCH_SHARED", REPO.parent / "shared"))
OPTIONS = STORAGE_OPTIONS + (("pca64", "flat"), ("fp32", "ivf"), ("fp32", "hnsw"))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilenetv2,efficientnet_lite0")
    ap.add_argument("--sets", default="pbc_barcelona,jurkat_cellcycle_ifc")
    ap.add_argument("--single", type=int, default=10)
    ap.add_argument("--k-max", type=int, default=1000)
    ap.add_argument("--cache-dir", default=str(REPO / "out" / "embedding-cache"))
    ap.add_argument("--json", default="out/bench_storage_real.json")
    args = ap.parse_args(argv)
    models = args.models.split(",")
    result = {"models": models, "sets": {}}
    for name in args.sets.split(","):
        crops = scan_class_folders(SHARED / "data" / name)
        with Timer() as t:
            feats = run_job(embed_crops(crops, models, EmbeddingCache(args.cache_dir), EmbedOptions(device="cpu")))
        ref_rows, query_rows = stratified_split(feats.labels, 0.2, seed=0)
        refs, queries = feats.features[ref_rows], feats.features[query_rows]
        labels = [feats.labels[i] for i in ref_rows]
        truth = [feats.labels[i] for i in query_rows]
        print(f"{name}: {len(feats.paths):,} crops, {len(set(labels))} classes, embedded or read from the cache "
              f"in {t.s:.0f} s; {len(refs):,} references x {refs.shape[1]}, {len(queries):,} queries")
        result["sets"][name] = storage_table(refs, labels, queries, truth, args.single, OPTIONS,
                                              args.k_max)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
