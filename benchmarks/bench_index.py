"""Index build and search at the library's size: flat (exact) against HNSW (M=32) and IVF, and the
reduced-storage options, on synthetic clustered 4,352-d embeddings (six-model widths), k = 1000.

A. Ready-to-search time for N = 100,000 references (--quick: 20,000): flat "build" (copying the vectors)
   against the HNSW(M=32, efConstruction=40) build. The HNSW baseline is built on a subsample
   (--hnsw-sample, default 10,000) and scaled linearly to N (insertion cost grows with the graph, so on
   an equally loaded machine this understates it), unless --hnsw-full. Search: a batch of queries (per-query time) and single queries.
B. Crossover: flat, IVF (smallest nprobe reaching recall@1000 >= 0.99) and HNSW at several sizes:
   build, batched and single-query time, recall. This sets index="auto" (see knn_index.AUTO_FLAT_BYTES).
C. Storage: fp32, fp16, sq8, pca256, pca256+fp16, pca128 (flat) and pca256 IVF: memory, build, search,
   recall@1000 and EWC prediction agreement with exact fp32 search.

Usage: python benchmarks/bench_index.py [--quick] [--hnsw-full] [--json out/bench_index.json]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import Timer, figure, peak_rss_mb, recall, write_json  # noqa: I001

from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.classify.ewc import EWCClassifier, EWCParams
from cellsearch_gui.core.index.knn import KnnIndex
from synthetic import SyntheticWorld

K = 1000


def generate(world: SyntheticWorld, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.empty((n, world.total_dim), np.float32)
    labels = np.empty(n, np.int64)
    start = 0
    for x, y in world.chunks(n, seed, chunk=10_000):
        out[start:start + len(x)], labels[start:start + len(x)] = x, y
        start += len(x)
    return out, labels


def timed_search(index: KnnIndex, queries: np.ndarray, n_single: int, k: int = K) -> dict:
    index.search(queries[:2], k)  # warm-up
    with Timer() as batch:
        dist, ids = index.search(queries, k)
    index.search(queries[:1], k)  # warm-up for lone queries (after the batch's threads have settled)
    singles = []
    for i in range(n_single):
        with Timer() as single:
            index.search(queries[i:i + 1], k)
        singles.append(single.s)
    return {"ids": ids, "batch_ms_per_query": 1e3 * batch.s / len(queries),
            "single_ms_per_query": 1e3 * float(np.median(singles))}  # median: thread wake-ups spike


def ivf_for_recall(refs, queries, exact_ids, storage="fp32", target=0.99, n_single=10) -> dict:
    with Timer() as build:
        index = KnnIndex(kind="ivf", storage=storage).build(refs)
    nlist = index._faiss_nlist()
    auto = index._nprobe(K)
    tried = []
    for nprobe in sorted({max(1, nlist // 8), max(1, nlist // 4), max(1, nlist // 2), nlist, auto}):
        index.nprobe = nprobe
        res = timed_search(index, queries, n_single)
        rec = recall(exact_ids, res["ids"])
        tried.append({"nprobe": nprobe, "recall": rec, "batch_ms_per_query": res["batch_ms_per_query"],
                      "single_ms_per_query": res["single_ms_per_query"]})
        if rec >= target:
            break
    ok = [t for t in tried if t["recall"] >= target]
    best = ok[0] if ok else tried[-1]
    return {"build_s": build.s, "nlist": nlist, "auto_nprobe": auto, "sweep": tried, **best}


def hnsw_on(refs, queries, exact_ids, n_single=10) -> dict:
    with Timer() as build:
        index = KnnIndex(kind="hnsw", hnsw_m=32, ef_construction=40).build(refs)
    res = timed_search(index, queries, n_single)
    return {"build_s": build.s, "build_ms_per_vector": 1e3 * build.s / len(refs),
            "recall": recall(exact_ids, res["ids"]), "batch_ms_per_query": res["batch_ms_per_query"],
            "single_ms_per_query": res["single_ms_per_query"]}


def part_a(world, refs, queries, args) -> dict:
    n = len(refs)
    with Timer() as flat_build:
        flat = KnnIndex(kind="flat").build(refs)
    res = timed_search(flat, queries, args.single)
    exact_ids = res["ids"]
    n_sub = n if args.hnsw_full else min(n, args.hnsw_sample)
    sub_exact = KnnIndex(kind="flat").build(refs[:n_sub]).search(queries, K)[1]
    hnsw = hnsw_on(refs[:n_sub], queries, sub_exact, args.single)
    hnsw_at_n = hnsw["build_s"] * n / n_sub
    ivf = ivf_for_recall(refs, queries, exact_ids, n_single=args.single)
    out = {"n": n, "dim": refs.shape[1], "flat_build_s": flat_build.s,
           "flat_batch_ms_per_query": res["batch_ms_per_query"], "flat_single_ms_per_query": res["single_ms_per_query"],
           "flat_memory_mb": flat.memory_bytes() / 2**20, "hnsw_sample": n_sub, "hnsw": hnsw,
           "hnsw_build_s_at_n": hnsw_at_n, "hnsw_extrapolated": n_sub < n, "ivf": ivf}
    print(f"A. {n:,} x {refs.shape[1]} references, k={K}, {len(queries)} queries")
    print(f"   flat: ready in {flat_build.s:.2f} s, exact (recall 1.0); {res['batch_ms_per_query']:.1f} ms/query "
          f"batched, {res['single_ms_per_query']:.0f} ms single query; {out['flat_memory_mb']:.0f} MB")
    print(f"   HNSW M=32: {hnsw['build_s']:.1f} s for {n_sub:,} ({hnsw['build_ms_per_vector']:.2f} ms/vector) -> "
          f"{hnsw_at_n:.0f} s at {n:,}{' (scaled linearly)' if n_sub < n else ''}; "
          f"recall@{K} {hnsw['recall']:.3f} at {n_sub:,}; {hnsw['batch_ms_per_query']:.1f} ms/query batched, "
          f"{hnsw['single_ms_per_query']:.1f} ms single")
    print(f"   IVF: built in {ivf['build_s']:.1f} s (nlist {ivf['nlist']}); nprobe {ivf['nprobe']} gives recall "
          f"{ivf['recall']:.3f}, {ivf['batch_ms_per_query']:.1f} ms/query batched, "
          f"{ivf['single_ms_per_query']:.1f} ms single")
    return out


def part_b(world, refs, queries, sizes, args) -> list[dict]:
    rows = []
    print("B. crossover (build + search, k=1000)")
    print(f"   {'N':>8} {'kind':<5} {'build s':>8} {'batch ms/q':>11} {'single ms/q':>12} {'recall':>7}  note")
    for n in sizes:
        sub = refs[:n]
        with Timer() as fb:
            flat = KnnIndex(kind="flat").build(sub)
        fr = timed_search(flat, queries, args.single)
        row = {"n": n, "flat": {"build_s": fb.s, "batch_ms_per_query": fr["batch_ms_per_query"],
                                "single_ms_per_query": fr["single_ms_per_query"], "recall": 1.0}}
        row["ivf"] = ivf_for_recall(sub, queries, fr["ids"], n_single=args.single)
        if n <= args.hnsw_sample:
            row["hnsw"] = hnsw_on(sub, queries, fr["ids"], args.single)
        for kind in ("flat", "ivf", "hnsw"):
            if kind in row:
                r = row[kind]
                note = f"nprobe {r['nprobe']}/{r['nlist']}" if kind == "ivf" else ""
                print(f"   {n:>8,} {kind:<5} {r['build_s']:>8.2f} {r['batch_ms_per_query']:>11.1f} "
                      f"{r['single_ms_per_query']:>12.1f} {r['recall']:>7.3f}  {note}")
        rows.append(row)
    return rows


STORAGE_OPTIONS = (("fp32", "flat"), ("fp16", "flat"), ("sq8", "flat"), ("pca256", "flat"),
                   ("pca256+fp16", "flat"), ("pca128", "flat"), ("pca256", "ivf"))


def part_c(world, refs, ref_y, queries, query_y, args) -> list[dict]:
    print(f"C. storage on {len(refs):,} x {refs.shape[1]} synthetic embeddings")
    return storage_table(refs, world.labels_for(ref_y), queries, world.labels_for(query_y), args.single)


def storage_table(refs, labels, queries, truth, single: int, options=STORAGE_OPTIONS, k_max: int = K) -> list[dict]:
    """Each storage option against exact fp32 search: memory, speed, recall@k_max, EWC agreement, accuracy."""
    params = dict(k_min=3, k_max=k_max, entropy_threshold=0.3)
    base = EWCClassifier(EWCParams(index="flat", **params)).fit(refs, labels)
    exact = base.predict(queries)
    exact_acc = evaluate_predictions(truth, exact.labels)["balanced_accuracy"]
    rows = []
    print(f"   EWC k 3..{k_max}; exact fp32 balanced accuracy {exact_acc:.3f}")
    print(f"   {'storage':<14} {'kind':<5} {'MB':>7} {'build s':>8} {'batch ms/q':>11} {'single ms/q':>12} "
          f"{'recall':>7} {'agree':>6} {'bal.acc':>8}")
    for storage, kind in options:
        with Timer() as build:
            clf = EWCClassifier(EWCParams(index=kind, **params), storage=storage).fit(refs, labels)
        res = timed_search(clf.index, queries, single, k_max)
        pred = clf.predict(queries)
        row = {"storage": storage, "kind": kind, "memory_mb": clf.index.memory_bytes() / 2**20, "build_s": build.s,
               "batch_ms_per_query": res["batch_ms_per_query"], "single_ms_per_query": res["single_ms_per_query"],
               "recall": recall(exact.neighbour_ids, res["ids"]),
               "agreement": float(np.mean(np.array(pred.labels) == np.array(exact.labels))),
               "balanced_accuracy": evaluate_predictions(truth, pred.labels)["balanced_accuracy"]}
        rows.append(row)
        print(f"   {storage:<14} {kind:<5} {row['memory_mb']:>7.0f} {build.s:>8.2f} {row['batch_ms_per_query']:>11.1f} "
              f"{row['single_ms_per_query']:>12.1f} {row['recall']:>7.3f} {row['agreement']:>6.3f} "
              f"{row['balanced_accuracy']:>8.3f}")
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--hnsw-full", action="store_true", help="build the HNSW baseline on all N references")
    ap.add_argument("--hnsw-sample", type=int, default=None)
    ap.add_argument("--single", type=int, default=10, help="single queries timed one at a time")
    ap.add_argument("--parts", default="abc", help="which parts to run (a, b, c)")
    ap.add_argument("--json", default="out/bench_index.json")
    args = ap.parse_args(argv)
    n = 20_000 if args.quick else 100_000
    n_q = 200 if args.quick else 1_000
    args.hnsw_sample = args.hnsw_sample or (5_000 if args.quick else 10_000)
    sizes = [2_000, 5_000, 10_000] if args.quick else [5_000, 10_000, 30_000, 100_000]
    n_storage = 10_000 if args.quick else 30_000
    world = SyntheticWorld()
    with Timer() as gen:
        refs, ref_y = generate(world, n, 1)
        queries, query_y = generate(world, n_q, 2)
    print(f"generated {n:,} + {n_q:,} x {refs.shape[1]} synthetic embeddings in {gen.s:.1f} s")
    a = part_a(world, refs, queries, args)
    b = part_b(world, refs, queries[:min(n_q, 300)], sizes, args) if "b" in args.parts else []
    c = part_c(world, refs[:n_storage], ref_y[:n_storage], queries[:500], query_y[:500], args) \
        if "c" in args.parts else []
    hnsw_note = (f"HNSW built on {a['hnsw_sample']:,} and scaled x{n / a['hnsw_sample']:.0f}"
                 if a["hnsw_extrapolated"] else "HNSW built on all")
    by_storage = {(r["storage"], r["kind"]): r for r in c}
    figures = [
        figure(f"index ready, {n:,} x {refs.shape[1]} (flat, exact: recall@{K} = 1)", a["flat_build_s"], "s",
               a["hnsw_build_s_at_n"], f"HNSW M=32 build ({hnsw_note})", goal=">= 20x, recall >= 0.99",
               note=f"flat search {a['flat_batch_ms_per_query']:.1f} ms/query batched, "
                    f"{a['flat_single_ms_per_query']:.0f} ms single; HNSW recall@{K} {a['hnsw']['recall']:.3f}"),
        figure(f"  IVF alternative, {n:,}: build", a["ivf"]["build_s"], "s", a["hnsw_build_s_at_n"],
               "HNSW M=32 build", note=f"recall@{K} {a['ivf']['recall']:.3f} at nprobe {a['ivf']['nprobe']}/"
                                       f"{a['ivf']['nlist']}; {a['ivf']['single_ms_per_query']:.0f} ms single"),
        figure(f"  flat single-query latency at {n:,}", a["flat_single_ms_per_query"] / 1e3, "s",
               a["ivf"]["single_ms_per_query"] / 1e3, "IVF single query at recall >= 0.99",
               note="ratio < 1: flat is slower for lone queries; batches are one GEMM"),
    ]
    for key in (("fp16", "flat"), ("pca256", "flat"), ("pca256", "ivf")) if c else ():
        r, fp32 = by_storage[key], by_storage[("fp32", "flat")]
        figures.append(figure(f"  storage {key[0]} ({key[1]}): memory", r["memory_mb"], "MB", fp32["memory_mb"],
                              "fp32 flat", note=f"recall@{K} {r['recall']:.3f}, EWC agreement {r['agreement']:.3f}, "
                                                 f"bal. acc {r['balanced_accuracy']:.3f} vs {fp32['balanced_accuracy']:.3f}"))
    result = {"generate_s": gen.s, "ready": a, "crossover": b, "storage": c, "figures": figures,
              "peak_rss_mb": peak_rss_mb()}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
