"""The speed benchmarks run and keep their promises on tiny sizes (figures are printed, never asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


def test_adaptive_k_benchmark_predictions_identical_to_re_searching(tmp_path):
    import bench_adaptive_k

    out = bench_adaptive_k.main(["--refs", "1500", "--queries", "200", "--json", str(tmp_path / "a.json")])
    assert out["identical_every_k"] and out["identical_undecided_only"]
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["figures"][0]["baseline"] > 0 and saved["figures"][0]["ratio"] > 0


def test_summary_table_lists_figure_baseline_and_ratio():
    import run_all
    from _common import figure

    text = run_all.table([figure("sweep", 2.0, "s", 20.0, "per-subset FAISS", goal="< 60 s", note="n=1"),
                          figure("memory", 512.0, "MB", 1024.0, "fp32")])
    assert "sweep" in text and "10.0x" in text and "per-subset FAISS" in text and "2.0x" in text
    assert "< 60 s" in text and "n=1" in text


@pytest.mark.slow
def test_run_all_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"adaptive_k", "powerset", "index", "scale"} <= set(summary["status"])
    assert all(f["value"] is not None for f in summary["figures"])
