"""`cellsearch segment --engine ray --ray-workers 2` against `--engine local` on 20 BCCD fields: the same
cells (cells.csv byte for byte, every crop byte for byte) and both wall times.

Usage: python benchmarks/ray_segment.py [--fields 20] [--segmenter classical] [--json out/ray_segment.json]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, Timer, write_json  # noqa: I001

from cellsearch_gui.cli import main as cli

FIELDS = REPO.parent / "shared" / "data" / "bccd_fov" / "JPEGImages"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fields", type=int, default=20)
    ap.add_argument("--segmenter", default="classical")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ray-segment-"))
    try:
        (root / "fields").mkdir()
        for f in sorted(FIELDS.glob("*.jpg"))[:args.fields]:
            shutil.copy(f, root / "fields" / f.name)
        common = [str(root / "fields"), "--segmenter", args.segmenter, "--objects", "all",
                  "--cell-diameter-px", "80", "--quiet"]
        with Timer() as local:
            assert cli(["segment", *common, "--out", str(root / "local")]) == 0
        try:
            with Timer() as ray:
                assert cli(["segment", *common, "--out", str(root / "ray"), "--engine", "ray", "--ray-workers", "2",
                            "--shard-size", "2"]) == 0
        finally:
            subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
        a, b = (root / "local" / "cells.csv").read_bytes(), (root / "ray" / "cells.csv").read_bytes()
        crops = sorted(p.name for p in (root / "local" / "crops").iterdir())
        same_crops = sum((root / "local" / "crops" / n).read_bytes() == (root / "ray" / "crops" / n).read_bytes()
                         for n in crops if (root / "ray" / "crops" / n).exists())
        result = {"fields": args.fields, "segmenter": args.segmenter, "cells": a.count(b"\n") - 1,
                  "cells_csv_identical": a == b, "crops": len(crops), "crops_identical": same_crops,
                  "crops_ray": len(list((root / "ray" / "crops").iterdir())), "local_s": local.s, "ray2_s": ray.s}
        print(result)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
