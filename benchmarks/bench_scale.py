"""A reference library of 1,000,000 cells with a six-model combination (4,352 dims) in under 8 GB.

At fp32 the library alone would take 17.4 GB, so it never exists in memory: synthetic clustered
embeddings are generated 20,000 rows at a time and streamed into a KnnIndex with PCA-256 storage and an
IVF index (PCA and k-means lists fitted on a sample first). While streaming, the exact fp32 4,352-d
k-nearest neighbours of the query cells are kept (a running top-k over the chunks), so recall and EWC
prediction agreement are measured against exact search on the full library, not on a subset.

Reported: build time (fit + add, generation excluded), index memory, peak RSS of the whole process
(generator, ground truth and Python included), single-query and batched latency at several nprobe,
recall@1000 against exact, EWC agreement and balanced accuracy against the true classes.

Usage: python benchmarks/bench_scale.py [--quick] [--n 1000000] [--storage pca256] [--json out/bench_scale.json]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import Timer, figure, peak_rss_mb, recall, write_json  # noqa: I001

from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.classify.ewc import adaptive_vote, class_weights
from cellsearch_gui.core.index.knn import KnnIndex
from synthetic import SyntheticWorld

K = 1000


class RunningTopK:
    """Exact L2 top-k of fixed queries over a stream of reference chunks."""

    def __init__(self, queries: np.ndarray, k: int):
        import torch

        self.torch = torch
        self.q = torch.from_numpy(queries)
        self.q_sq = (self.q * self.q).sum(1, keepdim=True)
        self.k = k
        self.d = torch.full((len(queries), 0), float("inf"))
        self.i = torch.zeros((len(queries), 0), dtype=torch.int64)
        self.offset = 0

    def update(self, chunk: np.ndarray) -> None:
        torch = self.torch
        x = torch.from_numpy(chunk)
        d = self.q_sq + (x * x).sum(1)[None, :] - 2 * self.q @ x.T
        ids = torch.arange(self.offset, self.offset + len(chunk))[None, :].expand(len(self.q), -1)
        self.offset += len(chunk)
        d, ids = torch.cat([self.d, d], 1), torch.cat([self.i, ids], 1)
        top, pos = torch.topk(d, min(self.k, d.shape[1]), dim=1, largest=False, sorted=True)
        self.d, self.i = top, torch.gather(ids, 1, pos)


def ewc_labels(neighbour_labels, weights):
    return adaptive_vote(neighbour_labels, weights, 3, K, 0.3).label_ids


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--storage", default="pca256")
    ap.add_argument("--train", type=int, default=None, help="rows used to fit PCA and the IVF lists")
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--single", type=int, default=50)
    ap.add_argument("--json", default="out/bench_scale.json")
    args = ap.parse_args(argv)
    n = args.n or (200_000 if args.quick else 1_000_000)
    world = SyntheticWorld()
    q_blocks, q_y = world.sample(args.queries, 2)
    queries = np.concatenate([q_blocks[m] for m in world.dims], axis=1)
    index = KnnIndex(metric="l2", kind="ivf", storage=args.storage)
    n_train = args.train or min(n, 2 * int(np.sqrt(n)) * 40)
    sample = np.concatenate([x for x, _ in world.chunks(n_train, 9, args.chunk)])
    with Timer() as fit:
        index.train(sample, expected_size=n)
    del sample
    truth = RunningTopK(queries, K)
    labels = np.empty(n, np.int8)
    add_s = gen_s = exact_s = 0.0
    start = 0
    chunks = world.chunks(n, 1, args.chunk)
    while start < n:
        with Timer() as g:
            x, y = next(chunks)
        with Timer() as a:
            index.add(x)
        with Timer() as e:
            truth.update(x)
        labels[start:start + len(x)] = y
        start += len(x)
        gen_s, add_s, exact_s = gen_s + g.s, add_s + a.s, exact_s + e.s
        del x
    build_s = fit.s + add_s
    rss = peak_rss_mb()
    exact_ids = truth.i.numpy()
    weights = class_weights(labels.astype(np.int64), world.n_classes)
    exact_pred = ewc_labels(labels[exact_ids].astype(np.int64), weights)
    names = world.labels_for(q_y)
    exact_acc = evaluate_predictions(names, world.labels_for(exact_pred))["balanced_accuracy"]
    nlist = index._faiss_nlist()
    print(f"{n:,} x {world.total_dim} cells, storage {args.storage}, IVF nlist {nlist}: fit {fit.s:.0f} s "
          f"+ add {add_s:.0f} s (generation {gen_s:.0f} s and exact ground truth {exact_s:.0f} s not counted)")
    print(f"  index {index.memory_bytes() / 2**30:.2f} GiB (fp32 would be {n * world.total_dim * 4 / 2**30:.1f} GiB); "
          f"peak RSS of the whole process {rss / 1024:.2f} GiB")
    print(f"  exact fp32 EWC balanced accuracy {exact_acc:.3f}")
    print(f"  {'nprobe':>7} {'single ms':>10} {'p95 ms':>7} {'batch ms/q':>11} {'recall@1000':>12} {'agree':>6} {'bal.acc':>8}")
    sweep = []
    auto = index._nprobe(K)
    for nprobe in sorted({max(1, nlist // 16), max(1, nlist // 8), auto, max(1, nlist // 2)}):
        index.nprobe = nprobe
        index.search(queries[:2], K)
        times = []
        for i in range(min(args.single, len(queries))):
            with Timer() as t:
                index.search(queries[i:i + 1], K)
            times.append(t.s)
        with Timer() as batch:
            _, ids = index.search(queries, K)
        pred = ewc_labels(labels[ids].astype(np.int64), weights)
        row = {"nprobe": nprobe, "auto": nprobe == auto, "single_ms_median": 1e3 * float(np.median(times)),
               "single_ms_p95": 1e3 * float(np.percentile(times, 95)),
               "batch_ms_per_query": 1e3 * batch.s / len(queries), "recall": recall(exact_ids, ids),
               "agreement": float(np.mean(pred == exact_pred)),
               "balanced_accuracy": evaluate_predictions(names, world.labels_for(pred))["balanced_accuracy"]}
        sweep.append(row)
        print(f"  {nprobe:>7}{'*' if row['auto'] else ' '}{row['single_ms_median']:>9.1f} {row['single_ms_p95']:>7.1f} "
              f"{row['batch_ms_per_query']:>11.2f} {row['recall']:>12.3f} {row['agreement']:>6.3f} "
              f"{row['balanced_accuracy']:>8.3f}")
    chosen = next(r for r in sweep if r["auto"])
    fp32_gib = n * world.total_dim * 4 / 2**30
    result = {
        "n": n, "dim": world.total_dim, "storage": args.storage, "nlist": nlist, "train_rows": n_train,
        "fit_s": fit.s, "add_s": add_s, "build_s": build_s, "generate_s": gen_s, "exact_truth_s": exact_s,
        "index_gib": index.memory_bytes() / 2**30, "peak_rss_gib": rss / 1024, "fp32_gib": fp32_gib,
        "exact_balanced_accuracy": exact_acc, "sweep": sweep,
        "figures": [
            figure(f"{n:,}-cell library ({args.storage} + IVF): peak RSS", rss / 1024, "GiB", fp32_gib,
                   "fp32 vectors alone", goal="< 8 GB",
                   note=f"index {index.memory_bytes() / 2**30:.2f} GiB; built in {build_s:.0f} s"),
            figure(f"  query latency (single query, nprobe {chosen['nprobe']}/{nlist})",
                   chosen["single_ms_median"] / 1e3, "s", goal="< 50 ms",
                   note=f"p95 {chosen['single_ms_p95']:.0f} ms; recall@1000 vs exact fp32 {chosen['recall']:.3f}; "
                        f"EWC agreement {chosen['agreement']:.3f}; bal. acc {chosen['balanced_accuracy']:.3f} "
                        f"vs exact {exact_acc:.3f}"),
        ],
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
