"""Calibrate the detector's default score threshold (the manifest's `score_threshold`).

    python -m tools.detector.threshold --manifest node/infer/models/plates.json

Runs the int8 model through its whole pyramid (as `roadnode detect` does) on synthetic
calibration scenes drawn from a seed range that neither training (seeds from `--seed`) nor
the model card's validation (10**9) uses, and prints recall, precision, F1 and false plates
per image at each candidate threshold; the best F1 is the suggestion. The live node does not
use this threshold: `detector.score_threshold` (0.35) feeds the tracker, which starts tracks
only at `tracker.high_score` and extends them with weaker detections.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from node.infer.detector import PlateDetector
from node.infer.evaluate import evaluate
from tools.detector.card import synth_set

CALIBRATION_SEED = 7 * 10**8
CANDIDATES = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


def calibrate(manifest: Path, scenes: int) -> list[dict[str, float]]:
    det = PlateDetector(manifest, threads=2)
    w, h = det.manifest.input_width, det.manifest.input_height
    images, truths, _ = synth_set(scenes, w, h, seed=CALIBRATION_SEED)
    dets = []
    for image in images:
        found = det.detect(image, threshold=min(CANDIDATES) / 2)
        dets.append((np.array([d.box for d in found]).reshape(-1, 4), [d.score for d in found]))
    rows = []
    for t in CANDIDATES:
        e = evaluate(dets, truths, t)
        r, p = e.recall or 0.0, e.precision or 0.0
        f1 = 2 * r * p / (r + p) if r + p else 0.0
        rows.append({"threshold": t, "recall": r, "precision": p, "f1": f1,
                     "fp_per_image": e.fp_per_image or 0.0})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--manifest", type=Path, default=Path("node/infer/models/plates.json"))
    p.add_argument("--scenes", type=int, default=150)
    a = p.parse_args(argv)
    rows = calibrate(a.manifest, a.scenes)
    for row in rows:
        print(json.dumps({k: round(v, 3) for k, v in row.items()}))
    best = max(rows, key=lambda row: row["f1"])
    print(f"best F1 {best['f1']:.3f} at threshold {best['threshold']}")


if __name__ == "__main__":
    main()
