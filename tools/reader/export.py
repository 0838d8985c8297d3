"""Export a trained reader as a full-integer int8 TFLite model with its manifest.

    python -m tools.reader.export --run /root/roadnode-runs/reader --out node/infer/models

The network is rebuilt with its softmax, the run's weights are loaded (final weights, else
the latest checkpoint), and the TFLite converter quantizes weights and activations to int8
with a representative dataset of training rows (never the validation set). Input uint8
(pixel / 255: scale 1/255, zero point 0), output int8 probabilities. Writes `<name>.tflite`
and `<name>.json` (the manifest the node loads: sha256, input size, alphabet, row split).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt

from node.infer.reader import READER_FORMAT
from node.plates.grammar import ALPHABET
from tools.reader import data
from tools.reader.train import load_bank, make_batch

REPRESENTATIVE_SEED = 77_777


def load_weights(model: Any, run: Path) -> None:
    final = run / "final.weights.h5"
    if final.exists():
        model.load_weights(final)
        return
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(run / "ckpt"))
    if latest is None:
        raise SystemExit(f"{run}: no final.weights.h5 and no checkpoint")
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    print(f"weights from {latest}", flush=True)


def representative(a: argparse.Namespace) -> Iterator[list[npt.NDArray[Any]]]:
    bank = load_bank(a.run, a.seed, a.bank)
    for k in range(a.calibration // 16):
        rows = make_batch(bank, REPRESENTATIVE_SEED, k, 16)[0]
        for row in rows:
            yield [row[None].astype(np.float32) / 255.0]


def convert(model: Any, a: argparse.Namespace) -> bytes:
    from tools.detector.export import int8_tflite

    return int8_tflite(model, lambda: representative(a))


def write(blob: bytes, a: argparse.Namespace) -> Path:
    from tools.detector.export import write_model

    return write_model(
        a.out,
        a.name,
        a.version,
        READER_FORMAT,
        blob,
        input_width=data.INPUT_W,
        input_height=data.INPUT_H,
        alphabet=ALPHABET,
        blank_index=0,
        two_row_below_aspect=data.TWO_ROW_BELOW_ASPECT,
        min_confidence=a.min_confidence,
        training={"run": a.run.name, "seed": a.seed, "bank": a.bank},
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="training run folder")
    p.add_argument("--out", type=Path, default=Path("node/infer/models"))
    p.add_argument("--name", default="reader")
    p.add_argument("--version", default="1")
    p.add_argument("--seed", type=int, help="the run's seed (default: its args.json)")
    p.add_argument("--bank", type=int, help="the run's bank size (default: its args.json)")
    p.add_argument("--calibration", type=int, default=400, help="representative rows")
    p.add_argument("--min-confidence", type=float, default=0.6)
    a = p.parse_args(argv)
    trained = (
        json.loads((a.run / "args.json").read_text()) if (a.run / "args.json").exists() else {}
    )
    a.seed = a.seed if a.seed is not None else int(trained.get("seed", 1))
    a.bank = a.bank if a.bank is not None else int(trained.get("bank", 4000))
    from tools.reader.model import build

    model = build(data.INPUT_H, data.INPUT_W, softmax=True)
    load_weights(model, a.run)
    path = write(convert(model, a), a)
    print(f"wrote {path} ({(a.out / (a.name + '.tflite')).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
