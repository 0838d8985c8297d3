"""Measure the exported detector and write its model card.

    python -m tools.detector.card --run runs/det --real ../shared/data/plates-real \
        --manifest node/infer/models/plates.json

Figures, each for the int8 model as the node runs it and for the float model it came from:
AP50 / recall / precision / false positives per image at the manifest's threshold on

- the real validation split (the fixed 20 %, never trained on);
- the same photos shrunk so plates are 12-30 px wide, pasted unscaled at the top-left of a
  grey input-sized canvas (as plates appear in junction footage);
- synthetic validation scenes (a seed range training never draws), with recall per plate
  layout and colour;

and latency: mean invoke at the model's input size on 1 and 2 threads, and the whole detector
time for a 1920x1080 frame (letterbox, invoke, decode, NMS).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from node.infer.detector import Detection, PlateDetector
from node.infer.evaluate import Evaluation, evaluate
from node.infer.letterbox import PAD, Letterbox, input_table
from node.infer.manifest import read_manifest
from tools.plates import realdata, synth

U8 = npt.NDArray[np.uint8]
Detect = Callable[[U8], list[Detection]]
SCORE_FLOOR = 0.01
SYNTH_VAL_SEED = 10**9
_TRAIN = "python -m tools.detector.train --real ../shared/data/plates-real --out runs/det --seed 1"
TRAIN_CMD = "\n".join(  # the bundled model's stages; each resumes the run's last checkpoint
    (
        f"{_TRAIN} --steps 9000",
        f"{_TRAIN} --steps 14000  # cosine schedule restarted to 14000",
        f"{_TRAIN} --steps 28000 --stop-at 18400  # restarted again, stopped early",
        f"{_TRAIN} --steps 28000 --real-fraction 0.4 --small-real 0.5 --box-norm plate",
        f"{_TRAIN} --steps 36000 --real-fraction 0.4 --small-real 0.5 --box-norm plate"
        "  # cosine schedule restarted to 36000",
        f"{_TRAIN} --steps 46000 --real-fraction 0.4 --small-real 0.5 --box-norm plate"
        "  # cosine schedule restarted to 46000",
    )
)
EXPORT_CMD = (
    "python -m tools.detector.export --run runs/det "
    "--real ../shared/data/plates-real --out node/infer/models --version 7 --threshold 0.5\n"
    "python -m tools.detector.threshold  # det-v6: F1 0.750 at 0.5 and 0.55: 0.5 kept (not re-run)"
)
CARD_CMD = (
    "python -m tools.detector.card --run runs/det --real ../shared/data/plates-real "
    "--out node/infer/models/plates-figures.json --card node/infer/models/plates.md"
)  # training draws batches from (seed, step) with small steps


def float_detector(run: Path, manifest_path: Path) -> Detect:
    """The float Keras model behind the export, with the node's own letterbox and decoding."""
    from tools.detector.export import load_weights
    from tools.detector.model import build

    manifest = read_manifest(manifest_path)
    model = build((manifest.input_height, manifest.input_width, 3))
    load_weights(model, run)
    table = input_table(np.dtype(np.float32), 0.0, 0, manifest.input_range)
    box = Letterbox(manifest.input_width, manifest.input_height, table)

    def detect(image: U8) -> list[Detection]:
        found: list[Detection] = []
        for shrink in manifest.pyramid:
            placement = box.place(image, shrink)
            heat, ltrb = model(box.buffer, training=False)
            found += PlateDetector._decode(
                manifest, np.asarray(heat), np.asarray(ltrb), placement, SCORE_FLOOR
            )
        return PlateDetector._merge(found, manifest) if len(manifest.pyramid) > 1 else found

    return detect


def run_set(
    detect: Detect, images: Sequence[U8], truths: Sequence[Any], threshold: float
) -> tuple[Evaluation, list[list[Detection]]]:
    found = [detect(img) for img in images]
    dets = [
        (np.array([d.box for d in f]).reshape(-1, 4), np.array([d.score for d in f])) for f in found
    ]
    return evaluate(dets, truths, threshold), found


def real_sets(real: Path, width: int, height: int) -> dict[str, tuple[list[U8], list[Any]]]:
    _, val = realdata.split(realdata.load_labels(real))
    photos = [realdata.load_image(item) for item in val]
    small_images, small_boxes = [], []
    for k, (item, photo) in enumerate(zip(val, photos, strict=True)):
        target = 12 + (k % 10) * 2.0  # median plate 12..30 px across the set
        image, boxes = realdata.downscale_for_small_plates(item, target, photo)
        canvas = np.full((height, width, 3), PAD, np.uint8)
        h, w = min(height, image.shape[0]), min(width, image.shape[1])
        canvas[:h, :w] = image[:h, :w]
        small_images.append(canvas)
        small_boxes.append(boxes)
    return {
        "real_val": (photos, [item.boxes for item in val]),
        "real_val_small": (small_images, small_boxes),
    }


def synth_set(
    n: int, width: int, height: int, seed: int = SYNTH_VAL_SEED
) -> tuple[list[U8], list[Any], list[Any]]:
    """`n` synthetic scenes drawn from seeds (seed, k): images, plate boxes, (layout, colour)s."""
    images, boxes, specs = [], [], []
    for k in range(n):
        s = synth.synth_sample(np.random.default_rng([seed, k]), (height, width))
        images.append(s.image)
        boxes.append(s.boxes)
        specs.append(list(zip(s.layouts, s.colors, strict=True)))
    return images, boxes, specs


def recall_by_format(
    found: list[list[Detection]], boxes: list[Any], specs: list[Any], threshold: float
) -> dict[str, dict[str, float]]:
    from node.infer.decode import iou_matrix

    hits: dict[str, list[int]] = {}
    for dets, gts, spec in zip(found, boxes, specs, strict=True):
        kept = np.array([d.box for d in dets if d.score >= threshold]).reshape(-1, 4)
        ious = iou_matrix(np.asarray(gts, np.float32).reshape(-1, 4), kept.astype(np.float32))
        for g, (layout, color) in enumerate(spec):
            hit = int(ious.shape[1] > 0 and ious[g].max() >= 0.5)
            for key in (f"layout {layout}", f"colour {color}"):
                hits.setdefault(key, []).append(hit)
    return {
        k: {"recall": round(float(np.mean(v)), 4), "plates": len(v)}
        for k, v in sorted(hits.items())
    }


def latency(manifest: Path) -> dict[str, Any]:
    """Milliseconds on 1 and 2 threads: one invoke at the input size; the live stage's work
    for one 1920x1080 frame as it runs on the sim (`DetectorStage` with the sim's lores area
    and zoom window: the lores pass on the frame's 960x544 lores stream, the zoom pass at full
    resolution; letterbox, invoke, decode and NMS each, and the merge); and a 1920x1080 still
    image through the manifest's whole pyramid (`roadnode detect`)."""
    from node.capture.frame import ArrayRef, Frame
    from node.config import CaptureConfig
    from node.infer.detector import DetectorStage, box_of, input_size
    from node.rules.simzones import sim_area, sim_zoom_window

    out: dict[str, Any] = {}
    cap = CaptureConfig()
    frame = synth.make_sample(np.random.default_rng(7), (cap.main_height, cap.main_width))[0]
    lores = np.asarray(PILImage.fromarray(frame).resize((cap.lores_width, cap.lores_height)))
    live = Frame(0, 0, 0, lores, ArrayRef(frame))
    for threads in (1, 2):
        det = PlateDetector(manifest, threads=threads)
        w, h = det.manifest.input_width, det.manifest.input_height
        full = np.ascontiguousarray(frame[:h, :w])
        zoom, area = box_of(sim_zoom_window(cap)), box_of(sim_area(cap))
        stage = DetectorStage(det, zoom_window=zoom, area=area)
        one = (1.0,)
        for _ in range(3):
            det.detect(full, pyramid=one)
            stage.process(live)
        invokes, lives, stills = [], [], []
        for _ in range(30):
            det.detect(full, pyramid=one)
            invokes.append(det.timing.invoke_ms)
        for _ in range(20):
            t0 = time.perf_counter()
            stage.process(live)
            t1 = time.perf_counter()
            det.detect(frame)
            t2 = time.perf_counter()
            lives.append((t1 - t0) * 1e3)
            stills.append((t2 - t1) * 1e3)
        out[f"invoke_ms_{threads}t"] = round(float(np.mean(invokes)), 2)
        out[f"frame_1080p_ms_{threads}t"] = round(float(np.mean(lives)), 2)
        out[f"still_pyramid_ms_{threads}t"] = round(float(np.mean(stills)), 2)
        out["backend"] = det.backend
    assert zoom is not None
    assert area is not None
    band = (area[3] - area[1]) * cap.lores_height // cap.main_height
    sizes = [
        input_size(det.manifest, cap.lores_width, band),
        input_size(det.manifest, zoom[2] - zoom[0], zoom[3] - zoom[1]),
    ]
    out["live_passes"] = (
        f"the lores pass on rows {area[1]}-{area[3]} of the frame, input "
        f"{sizes[0][0]}x{sizes[0][1]}; the zoom pass on the main image's {zoom}, input "
        f"{sizes[1][0]}x{sizes[1][1]}"
    )
    return out


def figures(e: Evaluation) -> dict[str, Any]:
    return {
        "ap50": e.ap50,
        "recall": e.recall,
        "precision": e.precision,
        "fp_per_image": e.fp_per_image,
        "images": e.images,
        "plates": e.ground_truths,
    }


def measure(a: argparse.Namespace) -> dict[str, Any]:
    manifest = read_manifest(a.manifest)
    w, h, thr = manifest.input_width, manifest.input_height, manifest.score_threshold
    int8 = PlateDetector(a.manifest, threads=2)

    def quant(image: U8) -> list[Detection]:
        return int8.detect(image, threshold=SCORE_FLOOR)

    floats = float_detector(a.run, a.manifest)
    sets = real_sets(a.real, w, h)
    s_images, s_boxes, s_specs = synth_set(a.synthetic, w, h)
    sets["synthetic_val"] = (s_images, s_boxes)
    result: dict[str, Any] = {"threshold": thr, "sets": {}}
    for name, (images, truths) in sets.items():
        e8, found8 = run_set(quant, images, truths, thr)
        ef, _ = run_set(floats, images, truths, thr)
        result["sets"][name] = {"int8": figures(e8), "float": figures(ef)}
        if name == "synthetic_val":
            result["synthetic_by_format"] = recall_by_format(found8, s_boxes, s_specs, thr)
        print(name, json.dumps(result["sets"][name]), flush=True)
    result["latency"] = latency(a.manifest)
    blob = manifest.model_path.read_bytes()
    result["model"] = {
        "file": manifest.file,
        "bytes": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "input": f"{w}x{h}x3 uint8",
    }
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--real", type=Path, required=True)
    p.add_argument("--manifest", type=Path, default=Path("node/infer/models/plates.json"))
    p.add_argument("--synthetic", type=int, default=300, help="synthetic validation scenes")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    p.add_argument("--card", type=Path, help="write the model card (markdown) here")
    a = p.parse_args(argv)
    result = measure(a)
    text = json.dumps(result, indent=2)
    if a.out:
        a.out.write_text(text + "\n", encoding="utf-8")
    if a.card:
        from tools.detector.cardtext import render

        args = json.loads((a.run / "args.json").read_text())
        training = (
            f"{args['steps']} steps of {args['batch']} crops {args['size']} px, seed "
            f"{args['seed']}, in the stages under Reproduce (the last stage: real fraction "
            f"{args['real_fraction']}, small real {args.get('small_real', '0.0')}, box loss "
            f"per {args.get('box_norm', 'area')})"
        )
        a.card.write_text(render(result, TRAIN_CMD, EXPORT_CMD, CARD_CMD, training))
    print(text)


if __name__ == "__main__":
    main()
