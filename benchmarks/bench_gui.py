"""GUI responsiveness: event-loop pauses while a job runs, time for Cancel to stop it, start-up time.

    .venv/bin/python benchmarks/bench_gui.py            (offscreen; or under xvfb-run with QT_QPA_PLATFORM=xcb)

Uses real PBC crops and the imported weights (./setup.sh). Prints figures; asserts nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
PBC = REPO.parent / "shared" / "data" / "pbc_barcelona"
CLASSES = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def subset(dest: Path, per_class: int, offset: int) -> Path:
    for name in CLASSES:
        (dest / name).mkdir(parents=True)
        for f in sorted((PBC / name).iterdir())[offset : offset + per_class]:
            shutil.copy(f, dest / name / f.name)
    return dest


def startup_seconds(runs: int = 3) -> list[float]:
    """From launching `cellsearch` to the window shown and the app quitting (CELLSEARCH_QUIT_AFTER=0)."""
    exe = Path(sys.executable).with_name("cellsearch")
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([str(exe)], env={**os.environ, "CELLSEARCH_QUIT_AFTER": "0"}, check=True,
                       capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    work = Path(tempfile.mkdtemp(prefix="cellsearch-bench-gui-"))
    os.environ["CELLSEARCH_CONFIG_DIR"] = str(work / "config")
    os.environ["CELLSEARCH_CACHE_DIR"] = str(work / "cache")
    print("start-up (launch -> window shown -> quit), s:", ", ".join(f"{t:.2f}" for t in startup_seconds()))

    app = QApplication(sys.argv[:1])
    from cellsearch_gui.gui.app import create_window

    window = create_window()
    window.show_dialogs = False
    window.show()
    c = window.controller
    from cellsearch_gui.gui.workers import HEAVY_IMPORTS_DONE

    t0 = time.perf_counter()
    while not HEAVY_IMPORTS_DONE.is_set():
        app.processEvents()
        time.sleep(0.005)
    print(f"device found and model libraries imported {time.perf_counter() - t0:.1f} s after the window "
          f"was shown: {window.device_label.text()}")
    c.add_reference(subset(work / "ref", 30, 0))
    c.add_queries([subset(work / "query", 30, 30)])
    clock = QElapsedTimer()
    gaps: list[float] = []
    last = [0.0]

    stage = ["starting"]
    worst = {}

    def tick() -> None:
        now = clock.nsecsElapsed() / 1e9
        gaps.append(now - last[0])
        if gaps[-1] >= max(gaps):
            worst["at"] = (now, stage[0])
        last[0] = now

    c.runner.progress.connect(lambda p, _: stage.__setitem__(0, p.stage))
    c.result_changed.connect(lambda: stage.__setitem__(0, "showing the result"))

    ticker = QTimer()
    ticker.setInterval(5)
    ticker.timeout.connect(tick)

    def run_and_measure(cancel_after: float | None) -> dict:
        gaps.clear()
        done = {}
        c.runner.succeeded.connect(lambda *_: done.setdefault("end", time.perf_counter()))
        c.runner.cancelled.connect(lambda *_: done.setdefault("end", time.perf_counter()))
        c.runner.failed.connect(lambda name, exc: done.setdefault("error", exc))
        t0 = time.perf_counter()
        clock.start()
        last[0] = 0.0
        ticker.start()
        c.run_analysis()
        if cancel_after is not None:
            def cancel():
                done["cancel_at"] = time.perf_counter()
                window.cancel_button.click()
            QTimer.singleShot(int(cancel_after * 1000), cancel)
        while "end" not in done and "error" not in done:
            app.processEvents()
            time.sleep(0.001)
        ticker.stop()
        while c.runner.busy:
            app.processEvents()
        for signal in (c.runner.succeeded, c.runner.cancelled, c.runner.failed):
            signal.disconnect()
        if "error" in done:
            raise done["error"]
        pauses = sorted(gaps)
        print(f"  longest pause at {worst['at'][0]:.1f} s, after stage '{worst['at'][1]}'")
        return {"seconds": done["end"] - t0, "longest_pause_ms": 1000 * pauses[-1],
                "p99_pause_ms": 1000 * pauses[int(0.99 * (len(pauses) - 1))],
                "cancel_s": done["end"] - done["cancel_at"] if "cancel_at" in done else None}

    full = run_and_measure(None)
    print(f"embedding job ({len(c.workspace.cells)} queries + 150 references, "
          f"{'+'.join(c.workspace.settings.models)}): {full['seconds']:.1f} s; event loop longest pause "
          f"{full['longest_pause_ms']:.0f} ms, p99 {full['p99_pause_ms']:.0f} ms (timer every 5 ms)")
    c.workspace.settings.views = 8  # new fingerprint: everything is embedded again
    cancelled = run_and_measure(cancel_after=4.0)
    print(f"cancel during embedding: stopped {cancelled['cancel_s']:.2f} s after the click; longest pause "
          f"{cancelled['longest_pause_ms']:.0f} ms")
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
