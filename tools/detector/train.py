"""Train the plate detector: one reproducible, resumable command.

    python -m tools.detector.train --real ../shared/data/plates-real --out runs/det \
        --seed 1 --steps 9000

Batches mix synthetic Vietnamese plates (tools.plates.synth) with the TRAIN split of the real
photos (tools.plates.realdata; the fixed 20 % validation split is never seen here). Batch k
is drawn from a generator seeded by (seed, k), so a resumed run sees exactly the batches an
uninterrupted one would. A checkpoint (weights, optimizer, step) is written every
`--checkpoint-every` steps and at exit; rerunning the same command resumes from it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt

from tools.detector.targets import encode
from tools.plates import synth

_PHOTOS: dict[str, Any] = {}
Batch = tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]


def make_batch(
    seed: int,
    step: int,
    size: int,
    batch: int,
    real_fraction: float,
    real_items: list[Any],
    small_real: float = 0.0,
    per_plate: bool = False,
) -> Batch:
    """Batch `step`: deterministic from (seed, step) and the options."""
    rng = np.random.default_rng([seed, step])
    images, heats, boxes, weights = [], [], [], []
    for _ in range(batch):
        if real_items and rng.random() < real_fraction:
            item = real_items[int(rng.integers(len(real_items)))]
            from tools.plates import realdata

            if item.name not in _PHOTOS:  # decoded once per worker (~230 photos, ~100 MB)
                _PHOTOS[item.name] = realdata.load_image(item)
            small = small_real > 0 and bool(rng.random() < small_real)
            image, gt = realdata.real_sample(
                rng, item, (size, size), image=_PHOTOS[item.name], small=small
            )
        else:
            image, gt = synth.make_sample(rng, (size, size))[:2]
        gt_boxes = np.asarray(gt, np.float32).reshape(-1, 4)
        heat, box, weight = encode(gt_boxes, size, size, per_plate)
        images.append(image)
        heats.append(heat)
        boxes.append(box)
        weights.append(weight)
    return (np.stack(images), np.stack(heats), np.stack(boxes), np.stack(weights))


def _train_items(real_path: str | None) -> list[Any]:
    if not real_path:
        return []
    from tools.plates import realdata

    train, _ = realdata.split(realdata.load_labels(Path(real_path)))
    return list(train)


def batches(a: argparse.Namespace, start: int) -> Iterator[tuple[int, Batch]]:
    """Batches from `start` on, made by `--workers` background processes."""
    ctx = mp.get_context("spawn")
    queue: Any = ctx.Queue(maxsize=8)
    procs = []
    for w in range(a.workers):  # worker w makes steps w, w + workers, ... in order
        p = ctx.Process(
            target=_strided_producer,
            daemon=True,
            args=(
                (
                    a.seed,
                    start + w,
                    a.steps,
                    a.size,
                    a.batch,
                    a.real_fraction,
                    a.real and str(a.real),
                    a.small_real,
                    a.box_norm == "plate",
                ),
                a.workers,
                queue,
            ),
        )
        p.start()
        procs.append(p)
    pending: dict[int, Batch] = {}
    for step in range(start, min(a.steps, a.stop_at or a.steps)):
        while step not in pending:
            got_step, got = queue.get()
            pending[got_step] = got
        yield step, pending.pop(step)
    for p in procs:
        p.terminate()


def _strided_producer(
    args: tuple[int, int, int, int, int, float, str | None, float, bool], stride: int, out: Any
) -> None:
    seed, first, steps, size, batch, real_fraction, real_path, small_real, per_plate = args
    real_items = _train_items(real_path)
    for step in range(first, steps, stride):
        made = make_batch(seed, step, size, batch, real_fraction, real_items, small_real, per_plate)
        out.put((step, made))


def train(a: argparse.Namespace) -> None:
    import keras
    import tensorflow as tf

    from tools.detector.loss import box_loss, heat_loss
    from tools.detector.model import build

    keras.utils.set_random_seed(a.seed)
    model = build()
    schedule = keras.optimizers.schedules.CosineDecay(a.lr, a.steps, warmup_target=None)
    optimizer = keras.optimizers.Adam(schedule)
    step_var = tf.Variable(0, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var)
    manager = tf.train.CheckpointManager(ckpt, str(a.out / "ckpt"), max_to_keep=2)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
        print(f"resumed from {manager.latest_checkpoint} at step {int(step_var)}", flush=True)
    (a.out / "final.weights.h5").unlink(missing_ok=True)  # stale once training goes on

    @tf.function  # type: ignore[misc]
    def train_step(x: Any, th: Any, tb: Any, tw: Any) -> Any:
        with tf.GradientTape() as tape:
            heat, box = model(x, training=True)
            lh, lb = heat_loss(th, heat), box_loss(tb, tw, box)
            loss = lh + a.box_weight * lb
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return lh, lb

    log = (a.out / "train.log").open("a")
    t0, first = time.monotonic(), int(step_var)
    for step, (x, th, tb, tw) in batches(a, first):
        lh, lb = train_step(x.astype(np.float32) / 255.0, th, tb, tw)
        step_var.assign(step + 1)
        if (step + 1) % 50 == 0:
            rate = (step + 1 - first) / (time.monotonic() - t0)
            line = {
                "step": step + 1,
                "heat": round(float(lh), 4),
                "box": round(float(lb), 4),
                "steps_per_s": round(rate, 3),
            }
            print(json.dumps(line), file=log, flush=True)
            print(json.dumps(line), flush=True)
        if (step + 1) % a.checkpoint_every == 0:
            manager.save(checkpoint_number=step + 1)
    manager.save(checkpoint_number=int(step_var))
    model.save_weights(a.out / "final.weights.h5")
    print(f"done: {int(step_var)} steps, weights in {a.out / 'final.weights.h5'}", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--real", type=Path, help="folder with labels.jsonl (real photos)")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=9000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=256, help="square training crop, pixels")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--box-weight", type=float, default=1.0)
    p.add_argument("--real-fraction", type=float, default=0.3)
    p.add_argument(
        "--small-real",
        type=float,
        default=0.0,
        help="share of real crops whose plates are drawn 10-40 px wide (junction sizes)",
    )
    p.add_argument(
        "--box-norm",
        choices=("area", "plate"),
        default="area",
        help="box-loss weight per cell by Gaussian (area: big plates weigh more) or per plate",
    )
    p.add_argument("--workers", type=int, default=1, help="data-making processes")
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument(
        "--stop-at",
        type=int,
        default=0,
        help="stop (with a checkpoint) at this step; the schedule still runs to --steps",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(a).items()}))
    train(a)


if __name__ == "__main__":
    main()
