"""Adaptive k from one k_max fetch against re-searching the index for every k of the schedule.

EWCClassifier.predict fetches the k_max neighbours once and evaluates every k of the schedule
(k_min, 2 k_min, ..., k_max) on that list. The baselines search again for each k:
  * every k:     all queries are searched at every k of the schedule (the loop the paper describes);
  * undecided:   at each k only the queries whose entropy has not yet fallen below the threshold.
Both baselines vote with the same rule, so the predictions (label and k used) must be identical.

Usage: python benchmarks/bench_adaptive_k.py [--quick] [--json out/bench_adaptive_k.json]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import Timer, figure, write_json  # noqa: I001  (puts the checkout on sys.path)

from cellsearch_gui.core.classify.ewc import (
    EWCClassifier,
    EWCParams,
    adaptive_vote,
    k_schedule,
)
from synthetic import SyntheticWorld, concat


def research_every_k(clf: EWCClassifier, queries: np.ndarray, undecided_only: bool):
    p = clf.params
    n = len(queries)
    ks = k_schedule(min(p.k_min, min(p.k_max, clf.index.size)), min(p.k_max, clf.index.size), p.growth)
    label = np.zeros(n, np.int64)
    k_used = np.zeros(n, np.int64)
    open_rows = np.ones(n, bool)
    searches = 0
    for k in ks:
        rows = np.flatnonzero(open_rows) if undecided_only else np.arange(n)
        if rows.size == 0:
            break
        _, ids = clf.index.search(queries[rows], k)
        searches += 1
        vote = adaptive_vote(clf.label_ids[ids], clf.weights, k, k, p.entropy_threshold, p.growth, p.entropy_norm)
        stop = open_rows[rows] & ((vote.entropy < p.entropy_threshold) | (k == ks[-1]))
        label[rows[stop]] = vote.label_ids[stop]
        k_used[rows[stop]] = k
        open_rows[rows[stop]] = False
    return label, k_used, searches


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="out/bench_adaptive_k.json")
    ap.add_argument("--refs", type=int, default=None)
    ap.add_argument("--queries", type=int, default=None)
    args = ap.parse_args(argv)
    n_ref = args.refs or (10_000 if args.quick else 20_000)
    n_q = args.queries or (2_000 if args.quick else 10_000)
    world = SyntheticWorld(dims={"dinov2": 768, "clip": 512})
    ref_b, ref_y = world.sample(n_ref, 1)
    q_b, _ = world.sample(n_q, 2)
    ref, queries = concat(ref_b), concat(q_b)
    params = EWCParams(k_min=3, k_max=1000, entropy_threshold=0.3, index="flat")
    clf = EWCClassifier(params).fit(ref, world.labels_for(ref_y))
    clf.predict(queries[:50])  # warm up threads and BLAS
    with Timer() as fast:
        pred = clf.predict(queries)
    with Timer() as every:
        base_label, base_k, n_every = research_every_k(clf, queries, undecided_only=False)
    with Timer() as undecided:
        und_label, und_k, n_und = research_every_k(clf, queries, undecided_only=True)
    fast_label = np.array([clf.classes.index(c) for c in pred.labels])
    same_every = bool(np.array_equal(fast_label, base_label) and np.array_equal(pred.k_used, base_k))
    same_und = bool(np.array_equal(fast_label, und_label) and np.array_equal(pred.k_used, und_k))
    setting = f"{n_q:,} queries, {n_ref:,} x {ref.shape[1]} refs, flat, k 3..1000"
    print(f"adaptive k ({setting}): one k_max fetch {fast.s:.2f} s; mean k used {pred.k_used.mean():.0f}")
    print(f"  re-search every k ({n_every} searches): {every.s:.2f} s -> {every.s / fast.s:.1f}x; "
          f"identical predictions: {same_every}")
    print(f"  re-search undecided queries only ({n_und} searches): {undecided.s:.2f} s -> "
          f"{undecided.s / fast.s:.1f}x; identical predictions: {same_und}")
    result = {
        "setting": setting, "seconds_one_fetch": fast.s, "seconds_every_k": every.s,
        "seconds_undecided_only": undecided.s, "identical_every_k": same_every,
        "identical_undecided_only": same_und, "mean_k_used": float(pred.k_used.mean()),
        "figures": [
            figure(f"classify {n_q:,} queries, adaptive k (one k_max fetch)", fast.s, "s", every.s,
                   f"re-search all queries at each of {n_every} k", goal=">= 5x",
                   note=f"identical predictions: {same_every}; {setting}"),
            figure("  same, against re-searching only undecided queries", fast.s, "s", undecided.s,
                   "re-search undecided queries at each k", note=f"identical predictions: {same_und}"),
        ],
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
