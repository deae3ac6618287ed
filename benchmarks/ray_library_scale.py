"""A 1,000,000-cell library through the shard path: shards -> PCA + IVF-PQ -> recall and EWC agreement.

Phase ``write``: a synthetic-but-realistic library (tests/synthetic.py: imbalanced classes made of cell
states, two CNN-like 1,280-d blocks with exact zeros, as mobilenetv2 + efficientnet_lite0) is written as
the Ray engine writes embeddings: 20,000-cell shards of per-model ``.npy`` arrays with a manifest.
Phase ``build`` (a fresh process, so its peak memory is the build's): the compressed index (core/index/
compressed.py) is trained on a sample and filled shard by shard; exact fp32 L2 neighbours of the query
cells are computed over the same shards (a running top-k) as ground truth. Reported: build time, peak
RSS, single and batched query latency, recall@k_max (1000) and EWC agreement against exact search, and
the memory plan for 10M and 100M cells.

Usage: python benchmarks/ray_library_scale.py write|build [--n 1000000] [--dir /tmp/lib1m] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import Timer, peak_rss_mb, recall, write_json  # noqa: I001

from bench_scale import RunningTopK
from cellsearch_gui.core.classify.ewc import adaptive_vote, class_weights
from cellsearch_gui.core.index.compressed import CompressedIndex, memory_plan
from cellsearch_gui.core.io.shards import ShardStore
from synthetic import SyntheticWorld

K = 1000
SHARD = 20_000
DIMS = {"mobilenetv2": 1280, "efficientnet_lite0": 1280}


def world() -> SyntheticWorld:
    return SyntheticWorld(dims=dict(DIMS), relu=tuple(DIMS))


def store_for(root: Path, n: int) -> ShardStore:
    return ShardStore(root, {"kind": "synthetic library", "n": n, "shard": SHARD, "dims": DIMS})


def write(root: Path, n: int) -> dict:
    store, w = store_for(root, n), world()
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, n, SHARD)):
        name = f"library-{i:05d}"
        if store.done(name):
            continue
        blocks, y = w.sample(min(SHARD, n - start), 1_000_003 + i)
        store.write(name, {**blocks, "labels": y.astype(np.int8)}, {"rows": len(y), "start": start})
    return {"write_s": time.perf_counter() - t0}


def shard_features(store: ShardStore, names: list[str]):
    for name in names:
        yield np.concatenate([store.read(name, m) for m in DIMS], axis=1)


def build(root: Path, n: int, queries: int, rerank: int = 4) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)  # a shared 2-core machine: OpenMP spinning across busy cores costs minutes
    store = store_for(root, n)
    names = sorted(store.shards)
    w = world()
    q_blocks, q_y = w.sample(queries, 2)
    q = np.concatenate([q_blocks[m] for m in DIMS], axis=1)
    index = CompressedIndex(pca=256, pq_bytes=64)
    with Timer() as fit:
        sample = np.concatenate(list(shard_features(store, names[:: max(1, len(names) // 8)][:8])))
        index.train(sample, expected_size=n)
        del sample
    labels, truth, add_s, exact_s = [], RunningTopK(q, K), 0.0, 0.0
    for name, x in zip(names, shard_features(store, names)):
        with Timer() as a:
            index.add(x)
        with Timer() as e:
            truth.update(x)
        labels.append(store.read(name, "labels"))
        add_s, exact_s = add_s + a.s, exact_s + e.s
    rss = peak_rss_mb()
    labels = np.concatenate(labels).astype(np.int64)
    weights = class_weights(labels, w.n_classes)
    exact_ids = truth.i.numpy()
    exact_pred = adaptive_vote(labels[exact_ids], weights, 3, K, 0.3).label_ids
    maps = [[store.read(name, m, mmap=True, verify=False) for m in DIMS] for name in names]

    def vectors(ids: np.ndarray) -> np.ndarray:
        """fp32 rows of these cells, read from the memory-mapped shards on disk."""
        out = np.empty((len(ids), q.shape[1]), np.float32)
        shard, row = ids // SHARD, ids % SHARD
        for s in np.unique(shard):
            at = shard == s
            out[at] = np.concatenate([block[np.sort(row[at])] for block in maps[s]], axis=1)[
                np.argsort(np.argsort(row[at]))]
        return out

    rows = []
    for label, source in (("IVF-PQ codes only", None), (f"IVF-PQ + exact re-rank of {rerank}k candidates from shards",
                                                        vectors)):
        index.search(q[:2], K, vectors=source, rerank=rerank)
        single = []
        for i in range(20):
            with Timer() as t:
                index.search(q[i:i + 1], K, vectors=source, rerank=rerank)
            single.append(t.s)
        with Timer() as batch:
            _, ids = index.search(q, K, vectors=source, rerank=rerank)
        pred = adaptive_vote(labels[ids], weights, 3, K, 0.3).label_ids
        rows.append({"search": label, "nprobe": index.probes(K * (rerank if source else 1)), "nlist": index.lists(),
                     "single_ms": 1e3 * float(np.median(single)),
                     "batch_ms_per_query": 1e3 * batch.s / len(q), "recall_at_1000": recall(exact_ids, ids),
                     "ewc_agreement": float(np.mean(pred == exact_pred)),
                     "true_class_accuracy": float(np.mean(pred == q_y)),
                     "exact_true_class_accuracy": float(np.mean(exact_pred == q_y))})
        print(rows[-1])
    result = {"n": n, "dim": q.shape[1], "shards": len(names), "fit_s": fit.s, "add_s": add_s,
              "build_s": fit.s + add_s, "exact_truth_s": exact_s, "peak_rss_gib": rss / 1024,
              "index_gib": index.memory_bytes() / 2**30, "sweep": rows,
              "plan": [memory_plan(m, q.shape[1]) for m in (1_000_000, 10_000_000, 100_000_000)]}
    print({k: v for k, v in result.items() if k not in ("sweep", "plan")})
    for plan in result["plan"]:
        print(plan)
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["write", "build"])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/cellsearch-lib1m"))
    ap.add_argument("--rerank", type=int, default=4, help="candidates re-ranked from the shards: this many x k_max")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    result = write(args.dir, args.n) if args.phase == "write" else build(args.dir, args.n, args.queries, args.rerank)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
