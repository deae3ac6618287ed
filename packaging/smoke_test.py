"""Start the built app, open a sample project, and quit; checks the exit code and what the app printed.

    python packaging/smoke_test.py dist/CellSearch/cellsearch
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(exe: str) -> int:
    work = Path(tempfile.mkdtemp(prefix="cellsearch-smoke-"))
    env = {**os.environ, "CELLSEARCH_CONFIG_DIR": str(work / "config"), "HF_HUB_OFFLINE": "1"}
    # the CLI of the bundle: version of the stack, the model table, a sample project
    for args in (["--help"], ["models", "list"]):
        subprocess.run([exe, *args], check=True, env=env, capture_output=True, timeout=300)
    project = work / "sample_project"
    subprocess.run([exe, "project", "new", str(project)], check=True, env=env, timeout=300)
    sample = ROOT.parent / "shared" / "data" / "pbc_barcelona"
    if sample.is_dir():
        ref = work / "ref"
        for name in ("lymphocyte", "neutrophil"):
            (ref / name).mkdir(parents=True)
            for f in sorted((sample / name).iterdir())[:3]:
                shutil.copy(f, ref / name / f.name)
        subprocess.run([exe, "project", "add", str(project), "--reference", str(ref)], check=True, env=env,
                       timeout=300)
    # the window: open the project, show it, quit after 3 s
    command = [exe, "gui", "--project", str(project)]
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        command = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", *command]
        env["QT_QPA_PLATFORM"] = "xcb"
    env["CELLSEARCH_QUIT_AFTER"] = "3"
    t0 = time.monotonic()
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    print(f"window run: exit {run.returncode} after {time.monotonic() - t0:.1f} s")
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-3000:])
        return 1
    print("smoke test passed")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
