"""How far the calibrated confidence can be trusted (issue 15): PBC (reference) -> PBC held out (80/20) and
-> BCCD crops with 0, 1, 3, 5 and 10 labelled cells per class (5 seeds), the defaults (DEFAULT_PRESET crops,
DEFAULT_EWC, DEVICE_VOTE_DEFAULT), mobilenetv2 + efficientnet_lite0. Prints the expected calibration error
(10 bins), the Brier score, mean confidence against accuracy, and the share and accuracy of the cells at a
confidence of 90 % or more.

Usage: python benchmarks/bench_calibration.py [--json out/bench_calibration.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_new_device import SEEDS, SHARED, features

from cellsearch_gui.core.app.confidence import confidence_summary, with_confidence
from cellsearch_gui.core.app.defaults import DEFAULT_EWC, DEFAULT_PRESET, DEVICE_VOTE_DEFAULT
from cellsearch_gui.core.app.shots import score_with_shots
from cellsearch_gui.core.classify.ewc import EWCClassifier

SHOTS = (1, 3, 5, 10)


def zero_shot(ref, query) -> dict:
    preds = EWCClassifier(DEFAULT_EWC).fit(ref.features, ref.labels).predict(query.features)
    preds, calibration = with_confidence(DEFAULT_EWC, ref, preds)
    return confidence_summary(preds, query.labels, calibration)


def line(name: str, c: dict) -> str:
    top = c["at_least"]["0.9"]
    return (f"{name:<22}{c['ece']:>7.3f}{c['brier']:>8.3f}{c['mean_confidence']:>11.3f}{c['accuracy']:>10.3f}"
            f"{top['share']:>11.2f}{top['accuracy']:>10.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path, default=Path("out/bench_calibration.json"))
    out = ap.parse_args().json
    print(f"{'':<22}{'ECE':>7}{'Brier':>8}{'mean conf':>11}{'accuracy':>10}{'>=90 %':>11}{'its acc':>10}")
    results = {}
    ref, held = features(SHARED / "pbc_barcelona", None, DEFAULT_PRESET, split=0.2)
    results["pbc 80/20"] = zero_shot(ref, held)
    print(line("PBC 80/20", results["pbc 80/20"]), flush=True)
    ref, bccd = features(SHARED / "pbc_barcelona", SHARED / "bccd_wbc", DEFAULT_PRESET)
    results["bccd 0 shots"] = zero_shot(ref, bccd)
    print(line("BCCD 0 shots", results["bccd 0 shots"]), flush=True)
    for shots in SHOTS:
        scored = score_with_shots(ref, bccd, DEFAULT_EWC, shots, SEEDS, device_vote=DEVICE_VOTE_DEFAULT)
        results[f"bccd {shots} shots"] = scored["calibration"]
        print(line(f"BCCD {shots} shots (5 seeds)", scored["calibration"]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
