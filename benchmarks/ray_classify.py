"""`cellsearch classify --engine ray --ray-workers 2` against `--engine local` on 500+ real crops, and crops/s
with 1 and 2 Ray workers on this machine.

Library: pbc_barcelona (``--per-class`` crops of each class). Queries: every BCCD white-cell crop (another
lab, camera and stain) plus pbc_barcelona crops that are not in the library, as one flat folder of real
crops. Both engines run the `classify` command in this process with mobilenetv2,efficientnet_lite0 on the
CPU, without the embedding cache (every crop is embedded by the engine under test); the two predictions
CSVs are compared row by row. Scaling: the query phase of the sharded job (embed + classify on the
workers) over ``--scaling-crops`` crops with 1 and then 2 workers, in one run.

Usage: python benchmarks/ray_classify.py [--per-class 30] [--extra-per-class 20] [--json out/ray_classify.json]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, Timer, write_json  # noqa: I001

from cellsearch_gui.cli import main as cli
from cellsearch_gui.core.app.experiments import load_inputs
from cellsearch_gui.core.app.sharded_jobs import sharded_classify_job
from cellsearch_gui.core.classify.ewc import EWCParams
from cellsearch_gui.core.embedding.job import EmbedOptions
from cellsearch_gui.core.jobs import run_job

SHARED = REPO.parent / "shared" / "data"
MODELS = "mobilenetv2,efficientnet_lite0"


def make_sets(root: Path, per_class: int, extra: int) -> tuple[Path, Path]:
    ref, query = root / "library", root / "queries"
    for cls in sorted(p.name for p in (SHARED / "pbc_barcelona").iterdir() if p.is_dir()):
        files = sorted((SHARED / "pbc_barcelona" / cls).iterdir())
        (ref / cls).mkdir(parents=True)
        query.mkdir(exist_ok=True)
        for f in files[:per_class]:
            shutil.copy(f, ref / cls / f.name)
        for f in files[per_class:per_class + extra]:
            shutil.copy(f, query / f"pbc_{cls}_{f.name}")
    for f in sorted((SHARED / "bccd_wbc").glob("*/*.jpg")):
        shutil.copy(f, query / f"bccd_{f.parent.name}_{f.name}")
    return ref, query


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def classify(ref: Path, query: Path, out: Path, extra: list[str]) -> float:
    with Timer() as t:
        code = cli(["classify", "--reference", str(ref), "--query", str(query), "--out", str(out), "--models", MODELS,
                    "--device", "cpu", "--no-cache", "--quiet", *extra])
    assert code == 0, code
    return t.s


def scaling(query: Path, ref: Path, n: int, work: Path) -> dict:
    from cellsearch_gui.engine.ray_engine import RayShards

    inputs = load_inputs(ref, query)
    inputs.query = inputs.query.subset(range(min(n, len(inputs.query))))
    inputs.reference = inputs.reference.subset(range(0, len(inputs.reference), 40))
    out = {}
    for workers in (1, 2):
        with RayShards(workers=workers) as engine:
            _, q, _, timings = run_job(sharded_classify_job(
                inputs, MODELS.split(","), EWCParams(k_max=5), EmbedOptions(device="cpu"), engine,
                work / f"w{workers}", shard_size=16))
        out[workers] = len(q.paths) / timings["query_shards_s"]
        print(f"{workers} worker(s): {out[workers]:.2f} crops/s over {len(q.paths)} crops")
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
    return {"crops": len(inputs.query), "crops_per_s_1": out[1], "crops_per_s_2": out[2], "ratio": out[2] / out[1]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--extra-per-class", type=int, default=20)
    ap.add_argument("--scaling-crops", type=int, default=384)
    ap.add_argument("--json", default=None)
    ap.add_argument("--scaling-only", action="store_true", help="only the 1- and 2-worker crops/s")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ray-classify-"))
    try:
        ref, query = make_sets(root, args.per_class, args.extra_per_class)
        if args.scaling_only:
            result = {"scaling": scaling(query, ref, args.scaling_crops, root / "scaling")}
            print(result)
            return result
        n_query = len(list(query.iterdir()))
        local_s = classify(ref, query, root / "local.csv", [])
        try:
            ray_s = classify(ref, query, root / "ray.csv", ["--engine", "ray", "--ray-workers", "2", "--work-dir",
                                                            str(root / "work"), "--shard-size", "64"])
        finally:
            subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
        a, b = rows(root / "local.csv"), rows(root / "ray.csv")
        same_rows = sum(x == y for x, y in zip(a, b))
        same_labels = sum(x["predicted_label"] == y["predicted_label"] and x["path"] == y["path"] for x, y in zip(a, b))
        print(f"{n_query} query crops, {len(list(ref.rglob('*.jpg')))} library crops: local {local_s:.0f} s, "
              f"ray x2 {ray_s:.0f} s; identical predictions {same_labels}/{len(a)}, identical CSV rows "
              f"{same_rows}/{len(a)}")
        result = {"queries": n_query, "rows": len(a), "rows_ray": len(b), "identical_labels": same_labels,
                  "identical_rows": same_rows, "local_s": local_s, "ray2_s": ray_s,
                  "scaling": scaling(query, ref, args.scaling_crops, root / "scaling")}
        print(result["scaling"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
