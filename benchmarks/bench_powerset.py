"""Power-set search: 63 subsets of six models x 3 metrics x 3 entropy thresholds on cached embeddings.

Fast path (search_combinations, engine "blocks"): per-model distance matrices once per chunk of
validation rows, summed per subset. Baseline: the previous path, one exact FAISS index + search per
(subset, metric) (search_combinations_faiss). The baseline is run in full in --quick mode (narrower
blocks); at full size it is timed on a sample of subsets per metric and extrapolated to all 63 with a
least-squares fit of time against the subset's width (the baseline's cost is linear in the width), unless
--full-baseline. The rows of every subset the baseline ran are compared with the fast rows.

Usage: python benchmarks/bench_powerset.py [--quick] [--full-baseline] [--json out/bench_powerset.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import Timer, figure, peak_rss_mb, write_json  # noqa: I001

from cellsearch_gui.core.classify.combinations import (
    Grid,
    _grid_points,
    power_set,
    search_combinations,
)
from cellsearch_gui.core.classify.evaluation import evaluate_predictions
from cellsearch_gui.core.classify.ewc import adaptive_vote, encode_labels
from cellsearch_gui.core.index.knn import KnnIndex
from cellsearch_gui.core.jobs import run_job
from synthetic import SIX_MODELS, SyntheticWorld
from cellsearch_gui.core.types import FeatureSet

KEYS = ("balanced_accuracy", "macro_precision", "mean_k")


def feature_set(world: SyntheticWorld, n: int, seed: int) -> FeatureSet:
    blocks, y = world.sample(n, seed)
    models = list(blocks)
    return FeatureSet(paths=[f"{i}" for i in range(n)], labels=world.labels_for(y),
                      features=np.zeros((n, 0), np.float32), model_ids=models, dims=[world.dims[m] for m in models],
                      per_model_l2=False, fingerprints={}, per_model=blocks)


def baseline_rows(ref: FeatureSet, val: FeatureSet, subset, metric: str, grid: Grid) -> tuple[list[dict], float]:
    """The per-(subset, metric) FAISS path of search_combinations_faiss, for one subset."""
    classes, ref_ids, weights = encode_labels(ref.labels)
    t0 = time.perf_counter()
    _, nn = KnnIndex(metric=metric, kind="flat").build(ref.select(list(subset))).search(
        val.select(list(subset)), min(max(grid.k_maxs), len(ref_ids)))
    rows = []
    for k_min, k_max, thr, norm, stop in _grid_points(grid):
        vote = adaptive_vote(ref_ids[nn], weights, k_min, k_max, thr, grid.growth, norm, stop)
        scores = evaluate_predictions(val.labels, [classes[i] for i in vote.label_ids])
        rows.append({"balanced_accuracy": scores["balanced_accuracy"],
                     "macro_precision": scores["macro_precision"], "mean_k": float(vote.k_used.mean())})
    return rows, time.perf_counter() - t0


def only_ties(ref, val, models, subset, metric, k) -> bool:
    """True when the fast and FAISS neighbour lists differ only where distances tie to float32 rounding."""
    from cellsearch_gui.core.index.subsets import subset_search

    idx = tuple(models.index(m) for m in subset)
    d_f, i_f = subset_search([ref.select([m]) for m in models], [val.select([m]) for m in models], [idx],
                             metric, k)[idx]
    d_b, i_b = KnnIndex(metric=metric, kind="flat").build(ref.select(list(subset))).search(
        val.select(list(subset)), k)
    r, c = np.nonzero(i_f != i_b)
    return bool((np.abs(d_f[r, c] - d_b[r, c]) <= 1e-5 * np.maximum(np.abs(d_b[r, c]), 1e-3)).all())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--full-baseline", action="store_true", help="run the FAISS path on all 63 subsets")
    ap.add_argument("--json", default="out/bench_powerset.json")
    args = ap.parse_args(argv)
    if args.quick:
        dims = {m: d // 8 for m, d in SIX_MODELS.items()}
        n_ref, n_val = 3_000, 300
    else:
        dims, n_ref, n_val = dict(SIX_MODELS), 10_000, 1_000
    world = SyntheticWorld(dims=dims)
    ref, val = feature_set(world, n_ref, 1), feature_set(world, n_val, 2)
    models = list(dims)
    grid = Grid(metrics=["l2", "cosine", "canberra"], k_mins=[3], k_maxs=[1000], thresholds=[0.1, 0.3, 0.5])
    run_job(search_combinations(feature_set(world, 200, 5), feature_set(world, 20, 6), models[:2], grid))  # JIT
    with Timer() as fast:
        rows = run_job(search_combinations(ref, val, models, grid))
    fast_rss = peak_rss_mb()
    by_key = {(tuple(r["models"]), r["metric"], r["entropy_threshold"]): r for r in rows}
    subsets = power_set(models)
    if args.quick or args.full_baseline:
        sample = subsets
    else:  # singletons, a few pairs and triples, and the full set: widths from 256 to 4,352
        sample = subsets[:6] + [subsets[6], subsets[12], subsets[30], subsets[45], subsets[-1]]
    measured: dict[str, list[tuple[int, float]]] = {m: [] for m in grid.metrics}
    mismatches, compared, unexplained = 0, 0, 0
    for subset in sample:
        width = sum(dims[m] for m in subset)
        for metric in grid.metrics:
            base, seconds = baseline_rows(ref, val, subset, metric, grid)
            measured[metric].append((width, seconds))
            differs = False
            for point, b in zip(_grid_points(grid), base):
                f = by_key[(subset, metric, point[2])]
                compared += 1
                if any(abs(f[k] - b[k]) > 1e-12 for k in KEYS):
                    mismatches += 1
                    differs = True
            if differs and not only_ties(ref, val, models, subset, metric, max(grid.k_maxs)):
                unexplained += 1
    baseline_total, fits = 0.0, {}
    total_width = {s: sum(dims[m] for m in s) for s in subsets}
    for metric, pts in measured.items():
        w, t = np.array(pts, dtype=float).T
        if len(sample) == len(subsets):
            baseline_total += t.sum()
            continue
        slope, intercept = np.polyfit(w, t, 1)
        fits[metric] = {"seconds_per_dim": slope, "intercept_s": intercept}
        baseline_total += sum(max(intercept + slope * total_width[s], 0.0) for s in subsets)
    how = "measured on all 63 subsets" if len(sample) == len(subsets) else \
        f"extrapolated from {len(sample)} measured subsets per metric (linear in width)"
    setting = (f"63 subsets x 3 metrics x 3 thresholds, {n_ref:,} refs x {n_val:,} validation cells, "
               f"blocks {'/'.join(str(d) for d in dims.values())} ({sum(dims.values())} dims)")
    print(f"power-set sweep ({setting}): {fast.s:.1f} s, {len(rows)} rows, peak RSS {fast_rss:.0f} MB")
    print(f"  FAISS per-subset baseline: {baseline_total:.0f} s ({how}) -> {baseline_total / fast.s:.0f}x")
    print(f"  rows compared with the baseline: {compared}, differing: {mismatches} "
          f"({'all from float32 distance near-ties' if not unexplained else f'{unexplained} NOT from ties'})")
    best = rows[0]
    print(f"  best: {'+'.join(best['models'])} / {best['metric']} / thr {best['entropy_threshold']}: "
          f"balanced accuracy {best['balanced_accuracy']:.3f}")
    result = {
        "setting": setting, "seconds_fast": fast.s, "seconds_baseline": baseline_total, "baseline_how": how,
        "baseline_fits": fits, "rows_compared": compared, "rows_differing": mismatches,
        "subsets_differing_not_by_ties": unexplained,
        "peak_rss_mb_after_fast": fast_rss, "best": best,
        "figures": [figure("power-set sweep (63 subsets x 3 metrics x 3 thresholds)", fast.s, "s", baseline_total,
                           f"FAISS index per subset x metric ({how})", goal="< 60 s",
                           note=f"{setting}; {compared} rows compared with the baseline, {mismatches} differ "
                                f"({'all by distance near-ties' if not unexplained else 'NOT only ties'})")],
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
