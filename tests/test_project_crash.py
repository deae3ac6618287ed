"""Kill -9 a project run at random moments and resume: every crop ends with exactly one embedding, equal
to an uninterrupted run, and both databases pass integrity_check."""

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import PBC, WBC5, make_subset, needs_shared

CLI = [sys.executable, "-m", "cellsearch_gui"]


def _project(tmp: Path, name: str, crops: Path, ref: Path) -> Path:
    folder = tmp / name
    env = _env(tmp)
    subprocess.run([*CLI, "project", "new", str(folder), "--models", "mobilenetv2", "--random-init",
                    "--preprocessing", "cell"], check=True, env=env, capture_output=True)
    subprocess.run([*CLI, "project", "add", str(folder), "--reference", str(ref), "--query", str(crops)],
                   check=True, env=env, capture_output=True)
    return folder


def _env(tmp: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CELLSEARCH_CONFIG_DIR": str(tmp / "config")}


def _classify(folder: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "project", "classify", str(folder), "--device", "cpu", "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _vectors(folder: Path) -> dict[tuple[str, str], bytes]:
    db = sqlite3.connect(folder / "embeddings.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT model, content, vec FROM emb").fetchall()
    db.close()
    return {(m.split("|")[0], c): v for m, c, v in rows}


def crash_and_resume(tmp: Path, n_crops: int, kills: int, seed: int = 0) -> dict:
    crops = tmp / "crops"
    crops.mkdir()
    files = sorted(f for c in WBC5 for f in (PBC / c).iterdir())[:n_crops]
    for f in files:
        shutil.copy(f, crops / f.name)
    ref = make_subset(PBC, tmp / "ref", WBC5, 3, offset=200)
    env = _env(tmp)

    clean = _project(tmp, "clean", crops, ref)
    t0 = time.monotonic()
    done = _classify(clean, env)
    assert done.wait(600) == 0, done.stderr.read().decode()
    full_s = time.monotonic() - t0

    crashed = _project(tmp, "crashed", crops, ref)
    rng = random.Random(seed)
    killed = 0
    for _ in range(kills):
        proc = _classify(crashed, env)
        try:  # kill early enough that work is left for the next runs, late enough that some is done
            proc.wait(timeout=rng.uniform(0.3, 2.0 + full_s / kills * 2))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            killed += 1
            proc.wait()
    final = _classify(crashed, env)
    assert final.wait(600) == 0, final.stderr.read().decode()

    want, got = _vectors(clean), _vectors(crashed)
    query_keys = {k for k in want if k[0] == "mobilenetv2"}
    assert set(got) == set(want)  # exactly one embedding per crop (content key) and model
    diffs = [np.abs(np.frombuffer(got[k], np.float32) - np.frombuffer(want[k], np.float32)).max() for k in want]
    db = sqlite3.connect(crashed / "project.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    statuses = [s for (s,) in db.execute("SELECT status FROM runs ORDER BY id")]
    cells = db.execute("SELECT COUNT(*), COUNT(DISTINCT uid) FROM cells").fetchone()
    db.close()
    return {"kills": killed, "full_run_s": full_s, "embeddings": len(query_keys), "max_abs_diff": float(max(diffs)),
            "identical": sum(d == 0 for d in diffs), "statuses": statuses, "cells": cells}


@needs_shared
def test_killed_runs_resume_to_the_same_embeddings(tmp_path):
    report = crash_and_resume(tmp_path, n_crops=60, kills=3)
    assert report["statuses"][-1] == "finished"
    assert set(report["statuses"][:-1]) <= {"interrupted", "finished"}
    assert report["cells"] == (60, 60)
    assert report["max_abs_diff"] < 1e-4


@pytest.mark.slow
@needs_shared
def test_killed_500_crop_run_twenty_times(tmp_path):
    report = crash_and_resume(tmp_path, n_crops=500, kills=20, seed=1)
    print(report)
    assert report["kills"] >= 15 and report["statuses"][-1] == "finished"
    assert report["cells"] == (500, 500)
    assert report["max_abs_diff"] < 1e-4
