"""Shared helpers of the speed benchmarks: timing, peak memory, figure rows, JSON output."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))
if str(REPO / "tests") not in sys.path:  # test-only helpers (synthetic feature worlds)
    sys.path.append(str(REPO / "tests"))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0


def figure(name: str, value: float, unit: str, baseline: float | None = None, baseline_name: str = "",
           higher_is_better: bool = False, goal: str = "", note: str = "") -> dict:
    """One row of the summary table: a figure next to its same-run baseline, and their ratio
    (baseline / value for times, value / baseline for higher-is-better figures)."""
    ratio = None
    if baseline is not None and value:
        ratio = (value / baseline) if higher_is_better else (baseline / value)
    return {"figure": name, "value": value, "unit": unit, "baseline": baseline, "baseline_name": baseline_name,
            "ratio": ratio, "goal": goal, "note": note}


def write_json(path: str | Path | None, payload: dict) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "_machine": {"cpus": os.cpu_count(), "peak_rss_mb": peak_rss_mb(),
                                       "load_average": os.getloadavg()}}
    path.write_text(json.dumps(payload, indent=1, default=float))


def recall(exact_ids, approx_ids) -> float:
    import numpy as np

    return float(np.mean([len(np.intersect1d(a, b, assume_unique=True)) / len(a)
                          for a, b in zip(exact_ids, approx_ids)]))

