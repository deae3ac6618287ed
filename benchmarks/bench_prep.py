"""Crop preparation alone (decode + prepare, no model): worker processes against their count.

    .venv/bin/python benchmarks/bench_prep.py [--crops 240] [--workers 1,2] [--prep cell] [--repeats 3]
        [--json out/bench_prep.json]

Real PBC crops, prepared by the embedding job's PrepWorkers (embedding/prep_workers.py) exactly as in a run:
plan the crops in order, take each result back in the parent. The workers are started before the clock
(their start-up is reported apart); the counts are taken in turn, ``--repeats`` times, so slow drift of a
shared machine falls on all of them. crops/s are medians; ``speedup`` is each count against the first one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from _common import REPO, write_json

PBC = Path(os.environ.get("CELLSEARCH_SHARED", REPO.parent / "shared")) / "data" / "pbc_barcelona"


def pbc_paths(n: int) -> list[Path]:
    classes = sorted(p for p in PBC.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    files = sorted(f for c in classes for f in c.iterdir())
    return files[:: max(1, len(files) // n)][:n]


class InProcess:
    """0 workers: the crops prepared in this process, one after another (the reader-thread path)."""

    def __init__(self, prep):
        self.prep = prep

    def plan(self, items) -> None:
        pass

    def take(self, key, path):
        from cellsearch_gui.core.embedding.prep_workers import read_crop

        return read_crop(path, self.prep)

    def close(self) -> None:
        pass


def prepare_all(workers, paths: list[Path]) -> float:
    """Seconds to prepare every crop through ``workers`` (a PrepWorkers, or InProcess)."""
    t0 = time.perf_counter()
    workers.plan([(str(p), p) for p in paths])
    for p in paths:
        image, problem, _ = workers.take(str(p), p)
        assert problem is None, problem
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crops", type=int, default=240)
    parser.add_argument("--workers", default="1,2", help="worker process counts, comma-separated (0: in this process)")
    parser.add_argument("--prep", default="cell", help="crop preparation preset")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from cellsearch_gui.core.crops.prepare import preset
    from cellsearch_gui.core.embedding.prep_workers import PrepWorkers

    paths, prep = pbc_paths(args.crops), preset(args.prep)
    counts = [int(c) for c in args.workers.split(",")]
    load_before = os.getloadavg()
    pools, start_s = {}, {}
    for n in counts:
        t0 = time.perf_counter()
        pools[n] = PrepWorkers(n, prep) if n else InProcess(prep)  # the job's defaults: 16 crops a worker in flight, 8 a task
        prepare_all(pools[n], paths[: 2 * n])  # starts the processes and warms them up
        start_s[str(n)] = time.perf_counter() - t0
    runs: dict[str, list[float]] = {str(n): [] for n in counts}
    try:
        for _ in range(args.repeats):
            for n in counts:
                runs[str(n)].append(len(paths) / prepare_all(pools[n], paths))
    finally:
        for pool in pools.values():
            pool.close()
    rates = {n: statistics.median(v) for n, v in runs.items()}
    first = str(counts[0])
    speedup = {n: statistics.median(a / b for a, b in zip(v, runs[first])) for n, v in runs.items()}
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"{len(paths)} PBC crops, preparation '{args.prep}', {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.1f} before, {load[0]:.1f} after")
    for n in rates:
        print(f"{n:>3} worker process(es): {rates[n]:7.1f} crops/s  x{speedup[n]:.2f} of {first} "
              f"(start-up {start_s[n]:.2f} s; runs {', '.join(f'{r:.1f}' for r in runs[n])})")
    write_json(args.json, {"crops": len(paths), "prep": args.prep, "crops_per_s": rates, "speedup": speedup,
                           "runs": runs, "start_up_s": start_s, "load_average_before": load_before})


if __name__ == "__main__":
    main()
