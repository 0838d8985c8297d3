"""Export a trained detector as a full-integer int8 TFLite model with its manifest.

    python -m tools.detector.export --run runs/det --real ../shared/data/plates-real \
        --out node/infer/models --name plates --version 1

The network is rebuilt with a fixed input (default 544x960, the detection stream), the run's
weights are loaded, and the TFLite converter quantizes weights and activations to int8 with a
representative dataset (letterboxed synthetic scenes and real TRAIN photos; never the
validation split). Input uint8 (pixel / 255 with scale 1/255, zero point 0), outputs int8.
Writes `<name>.tflite` and `<name>.json` (the manifest the node loads, with the sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt

from tools.detector.arch import FORMAT, STRIDE
from tools.detector.model import build
from tools.plates import synth

SIZE_MULTIPLE = 32  # the network's coarsest stride: it runs at any input size that divides by it


def load_weights(model: Any, run: Path) -> None:
    """The run's weights: from the GPU trainer (keras.weights.npz), the CPU trainer's final
    weights, else its latest checkpoint."""
    npz = run / "keras.weights.npz"
    if npz.exists():
        _load_npz(model, npz)
        return
    final = run / "final.weights.h5"
    if final.exists():
        model.load_weights(final)
        return
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(run / "ckpt"))
    if latest is None:
        raise SystemExit(f"{run}: no final.weights.h5 and no checkpoint")
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()


def _load_npz(model: Any, path: Path) -> None:
    """Weights saved per Keras layer name as `<layer>/<index>` arrays."""
    groups: dict[str, dict[int, Any]] = {}
    with np.load(path) as data:
        for key in data.files:
            name, index = key.rsplit("/", 1)
            groups.setdefault(name, {})[int(index)] = data[key]
    expected = {layer.name for layer in model.layers if layer.weights}
    if set(groups) != expected:
        raise SystemExit(f"{path}: layers differ from the model: {sorted(set(groups) ^ expected)}")
    for name, weights in groups.items():
        model.get_layer(name).set_weights([weights[k] for k in sorted(weights)])


def letterbox(image: npt.NDArray[Any], height: int, width: int) -> npt.NDArray[Any]:
    from PIL import Image

    from node.infer.letterbox import PAD

    scale = min(width / image.shape[1], height / image.shape[0])
    w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    out = np.full((height, width, 3), PAD, np.uint8)
    out[:h, :w] = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
    return out


def representative(a: argparse.Namespace) -> Iterator[list[npt.NDArray[Any]]]:
    rng = np.random.default_rng([a.seed, 999_999])
    real: list[Any] = []
    if a.real:
        from tools.plates import realdata

        real = list(realdata.split(realdata.load_labels(a.real))[0])
    for k in range(a.calibration):
        if real and k % 2:
            image = realdata.load_image(real[int(rng.integers(len(real)))])
            image = letterbox(image, a.height, a.width)
        else:
            image = synth.make_sample(rng, (a.height, a.width))[0]
        yield [image[None].astype(np.float32) / 255.0]


def int8_tflite(model: Any, samples: Callable[[], Iterator[list[Any]]]) -> bytes:
    """A Keras model as a full-integer TFLite flatbuffer: int8 weights and activations,
    uint8 input, int8 outputs, calibrated on `samples()` (the reader's export uses it too)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.int8
    return bytes(converter.convert())


def convert(model: Any, a: argparse.Namespace) -> bytes:
    return int8_tflite(model, lambda: representative(a))


def write_model(out: Path, name: str, version: str, fmt: str, blob: bytes, **fields: Any) -> Path:
    """`<name>.tflite` and its manifest `<name>.json` (name, version, format, file, sha256, then
    `fields`) in `out`; the manifest's path. The detector's and the reader's export share it."""
    out.mkdir(parents=True, exist_ok=True)
    model_file = out / f"{name}.tflite"
    model_file.write_bytes(blob)
    manifest = {
        "name": name,
        "version": version,
        "format": fmt,
        "file": model_file.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        **fields,
    }
    path = out / f"{name}.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def write(blob: bytes, a: argparse.Namespace) -> Path:
    return write_model(
        a.out,
        a.name,
        a.version,
        FORMAT,
        blob,
        input_width=a.width,
        input_height=a.height,
        stride=STRIDE,
        score_threshold=a.threshold,
        nms_iou=0.5,
        max_detections=100,
        input_range="0-1",
        pyramid=a.pyramid,
        size_multiple=SIZE_MULTIPLE,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="training run folder")
    p.add_argument("--real", type=Path, help="real photo folder (labels.jsonl), for calibration")
    p.add_argument("--out", type=Path, default=Path("node/infer/models"))
    p.add_argument("--name", default="plates")
    p.add_argument("--version", default="1")
    p.add_argument("--width", type=int, default=960)
    p.add_argument("--height", type=int, default=544)
    p.add_argument("--threshold", type=float, default=0.35)
    p.add_argument("--calibration", type=int, default=300, help="representative images")
    p.add_argument(
        "--pyramid",
        type=float,
        nargs="+",
        default=[1.0, 0.5, 0.25],
        help="levels for still images (the live stage runs 1.0 only)",
    )
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    model = build((a.height, a.width, 3))
    load_weights(model, a.run)
    path = write(convert(model, a), a)
    print(f"wrote {path} ({(a.out / (a.name + '.tflite')).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
