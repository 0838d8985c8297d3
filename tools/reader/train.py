"""Train the plate reader: one reproducible, resumable command.

    python -m tools.reader.train --out /root/roadnode-runs/reader --seed 1 --steps 6000

Training rows come from a bank of plates rendered once per seed (`tools.reader.data`,
cached in the run folder as bank-<seed>-<n>.npz), each drawn with fresh augmentation; batch k
comes from a generator seeded by (seed, k), so a resumed run sees exactly the batches an
uninterrupted one would. A checkpoint (weights, optimizer, step) is written every
`--checkpoint-every` steps and at exit; rerunning the same command resumes from it.
Loss: CTC (blank = class 0) on the per-step logits.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt

from node.plates.grammar import ALPHABET
from tools.reader import data

MAX_LABEL = 10
Batch = tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32], npt.NDArray[np.int32]]


def load_bank(out: Path, seed: int, size: int) -> list[data.Plate]:
    """The run's plate bank: rendered once, then read from its cache file."""
    path = out / f"bank-{seed}-{size}.pkl"
    if path.exists():
        with path.open("rb") as f:
            bank: list[data.Plate] = pickle.load(f)
        return bank
    t0 = time.monotonic()
    bank = [data.bank_plate(i, seed) for i in range(size)]
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(bank, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    print(f"bank of {size} plates rendered in {time.monotonic() - t0:.0f} s", flush=True)
    return bank


def encode(text: str) -> list[int]:
    return [ALPHABET.index(ch) + 1 for ch in text]


def make_batch(
    bank: list[data.Plate], seed: int, step: int, batch: int, legible: float = 0.0
) -> Batch:
    """Batch `step`: `batch` rows, deterministic from (seed, step); a share `legible` of the
    plates drawn from the acceptance set's sizes and degradations (`data.validation_set`)."""
    rng = np.random.default_rng([seed, step])
    images: list[npt.NDArray[np.uint8]] = []
    labels = np.zeros((batch, MAX_LABEL), np.int32)
    lengths = np.zeros(batch, np.int32)
    while len(images) < batch:
        plate = bank[int(rng.integers(len(bank)))]
        easy = bool(legible and rng.random() < legible)
        low = data.legible_width(data.glyph_share(plate)) if easy else data.MIN_W * 0.9
        width = data.log_uniform(rng, low, data.MAX_W)
        for row, text in data.row_samples(plate, rng, width, legible=easy):
            if len(images) == batch or len(text) > MAX_LABEL:
                break
            labels[len(images), : len(text)] = encode(text)
            lengths[len(images)] = len(text)
            images.append(row)
    return np.stack(images)[..., None], labels, lengths


def batches(
    bank: list[data.Plate], a: argparse.Namespace, start: int
) -> Iterator[tuple[int, Batch]]:
    """Batches from `start` on, made one ahead by a background thread."""
    q: queue.Queue[tuple[int, Batch]] = queue.Queue(maxsize=4)

    def produce() -> None:
        for step in range(start, a.steps):
            q.put((step, make_batch(bank, a.seed, step, a.batch, a.legible)))

    threading.Thread(target=produce, daemon=True).start()
    for _ in range(start, a.steps):
        yield q.get()


def train(a: argparse.Namespace) -> None:
    import keras
    import tensorflow as tf

    from tools.reader.model import build

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(a.seed)
    bank = load_bank(a.out, a.seed, a.bank)
    model = build(softmax=False)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, a.steps - a.warmup, alpha=0.02, warmup_target=a.lr, warmup_steps=a.warmup
    )
    optimizer = keras.optimizers.Adam(schedule, clipnorm=5.0)
    step_var = tf.Variable(0, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var)
    manager = tf.train.CheckpointManager(ckpt, str(a.out / "ckpt"), max_to_keep=2)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
        print(f"resumed from {manager.latest_checkpoint} at step {int(step_var)}", flush=True)

    @tf.function  # type: ignore[misc]
    def train_step(x: Any, labels: Any, lengths: Any) -> Any:
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            steps = tf.fill([tf.shape(logits)[0]], tf.shape(logits)[1])
            loss = tf.reduce_mean(
                tf.nn.ctc_loss(
                    labels, logits, lengths, steps, logits_time_major=False, blank_index=0
                )
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return loss, pred

    log = (a.out / "train.log").open("a")
    t0, first = time.monotonic(), int(step_var)
    seen = correct = 0
    for step, (x, labels, lengths) in batches(bank, a, first):
        loss, pred = train_step(x.astype(np.float32) / 255.0, labels, lengths)
        step_var.assign(step + 1)
        for p, lab, n in zip(pred.numpy(), labels, lengths, strict=True):
            text = [int(c) for k, c in enumerate(p) if c and (k == 0 or c != p[k - 1])]
            correct += text == lab[:n].tolist()
            seen += 1
        if (step + 1) % 50 == 0:
            rate = (step + 1 - first) / (time.monotonic() - t0)
            line = {
                "step": step + 1,
                "loss": round(float(loss), 4),
                "row_acc": round(correct / max(1, seen), 4),
                "steps_per_s": round(rate, 3),
            }
            seen = correct = 0
            print(json.dumps(line), file=log, flush=True)
            print(json.dumps(line), flush=True)
        if (step + 1) % a.checkpoint_every == 0:
            manager.save(checkpoint_number=step + 1)
    manager.save(checkpoint_number=int(step_var))
    model.save_weights(a.out / "final.weights.h5")
    print(f"done: {int(step_var)} steps, weights in {a.out / 'final.weights.h5'}", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=48, help="rows per batch")
    p.add_argument("--bank", type=int, default=6000, help="plates rendered for training")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument(
        "--legible",
        type=float,
        default=0.0,
        help="share of plates drawn legible (the acceptance set's sizes and degradations)",
    )
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    p.add_argument("--checkpoint-every", type=int, default=200)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(a).items()}))
    train(a)


if __name__ == "__main__":
    main()
