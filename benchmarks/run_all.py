"""Run every speed benchmark, each in its own process, and print one table: each figure next to its
baseline measured in the same run, and their ratio. Writes the table and every benchmark's own JSON.

    python benchmarks/run_all.py --quick      # a few minutes: smaller sizes, same code paths
    python benchmarks/run_all.py              # the issue's sizes: 100k x 4,352 index, 10k x 1k power set,
                                              # 10k queries adaptive k, 1M-cell library (~20-30 min on 2 cores)
    python benchmarks/run_all.py --only powerset,index --with engine,transfer

Model-heavy benchmarks that need the shared data and imported weights are opt-in (--with): engine,
transfer, imbalance, segmentation, stitched, gui, pipeline, models; they print their own figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SPEED = {  # name: (script, extra arguments for a full run)
    "adaptive_k": ("bench_adaptive_k.py", []),
    "powerset": ("bench_powerset.py", []),
    "index": ("bench_index.py", []),
    "scale": ("bench_scale.py", []),
}
OPT_IN = {"engine": "bench_engine.py", "transfer": "bench_transfer.py", "imbalance": "bench_imbalance.py",
          "segmentation": "bench_segmentation.py", "stitched": "bench_stitched.py", "gui": "bench_gui.py",
          "pipeline": "bench_pipeline.py", "models": "bench_models.py"}


def fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:,.1f} s"
    if unit in ("MB", "GiB"):
        return f"{value:,.2f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    return f"{value:,.3g} {unit}".strip()


def table(figures: list[dict]) -> str:
    head = ("figure", "value", "baseline (same run)", "ratio", "goal")
    rows = [head]
    notes = []
    for f in figures:
        base = "-" if f["baseline"] is None else f"{fmt(f['baseline'], f['unit'])}: {f['baseline_name']}"
        ratio = "-" if f["ratio"] is None else f"{f['ratio']:,.1f}x"
        rows.append((f["figure"], fmt(f["value"], f["unit"]), base, ratio, f.get("goal", "")))
        notes.append(f.get("note", ""))
    widths = [min(max(len(r[i]) for r in rows), 70) for i in range(len(head))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c[:70].ljust(w) for c, w in zip(r, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
        elif notes[n - 1]:
            lines.append(" " * 4 + notes[n - 1])
    return "\n".join(lines)


def run(script: str, args: list[str], log: Path) -> tuple[int, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(HERE / script), *args], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            sys.stdout.write("    " + line)
            sys.stdout.flush()
            out.write(line)
        rc = proc.wait()
    return rc, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes in all")
    ap.add_argument("--only", default="", help=f"comma list of {', '.join(SPEED)}")
    ap.add_argument("--with", dest="opt_in", default="", help=f"also run: {', '.join(OPT_IN)}")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "bench")
    ap.add_argument("--hnsw-full", action="store_true", help="index: build the HNSW baseline on all 100k")
    ap.add_argument("--full-baseline", action="store_true", help="powerset: FAISS baseline on all 63 subsets")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SPEED)
    for n in names:
        if n not in SPEED:
            ap.error(f"unknown benchmark '{n}'; choose from {', '.join(SPEED)}")
    extra = [n for n in args.opt_in.split(",") if n]
    for n in extra:
        if n not in OPT_IN:
            ap.error(f"unknown opt-in benchmark '{n}'; choose from {', '.join(OPT_IN)}")
    args.out.mkdir(parents=True, exist_ok=True)
    figures, status = [], {}
    for name in names:
        script, more = SPEED[name]
        json_path = args.out / f"{name}.json"
        flags = ["--json", str(json_path), *more]
        if args.quick:
            flags.append("--quick")
        if name == "index" and args.hnsw_full:
            flags.append("--hnsw-full")
        if name == "powerset" and args.full_baseline:
            flags.append("--full-baseline")
        print(f"== {name}: {script} {' '.join(flags)}", flush=True)
        rc, seconds = run(script, flags, args.out / f"{name}.log")
        status[name] = {"exit": rc, "seconds": seconds}
        if rc == 0 and json_path.exists():
            figures += json.loads(json_path.read_text()).get("figures", [])
    for name in extra:
        print(f"== {name} (opt-in): {OPT_IN[name]}", flush=True)
        rc, seconds = run(OPT_IN[name], ["--json", str(args.out / f"{name}.json")] if name != "gui" else [],
                          args.out / f"{name}.log")
        status[name] = {"exit": rc, "seconds": seconds}
    text = table(figures)
    print("\nSpeed and scale" + (" (--quick sizes)" if args.quick else "") +
          f", {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}:\n")
    print(text)
    failed = {n: s for n, s in status.items() if s["exit"] != 0}
    for n, s in status.items():
        print(f"{n}: {'ok' if s['exit'] == 0 else 'FAILED (exit %d)' % s['exit']} in {s['seconds']:.0f} s")
    (args.out / "summary.json").write_text(json.dumps({"quick": args.quick, "figures": figures, "status": status,
                                                        "cpus": os.cpu_count()}, indent=1))
    (args.out / "summary.txt").write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
