"""Train the detector on a GPU (optional; the CPU trainer is `tools.detector.train`).

    python -m tools.detector.torchtrain --real DIR --out DIR --seed 1 --minutes 7 --workers 14

The same network (`tools.detector.torchmodel`), the same batches (`train.make_batch`, made by
`--workers` processes), the same losses; the learning rate follows a cosine over the time
budget, so the run ends on time whatever the data rate. Writes `keras.weights.npz` (the
weights in Keras layout, per layer name) that `tools.detector.export --run DIR` loads.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tools.detector.torchmodel import Detector, keras_weights
from tools.detector.train import batches


def heat_loss(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    pred = pred.clamp(1e-4, 1 - 1e-4)
    pos = (target == 1.0).float()
    pos_loss = -torch.log(pred) * (1 - pred) ** 2 * pos
    neg_loss = -torch.log(1 - pred) * pred**2 * (1 - target) ** 4 * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def box_loss(target: torch.Tensor, weight: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    l1 = (pred - target).abs().sum(dim=1, keepdim=True) * weight
    return l1.sum() / weight.sum().clamp(min=1.0)


def to_device(batch: tuple[Any, ...], dev: torch.device) -> list[torch.Tensor]:
    x, th, tb, tw = (torch.from_numpy(np.ascontiguousarray(a)) for a in batch)
    x = x.to(dev, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0
    return [x, *(t.to(dev, non_blocking=True).permute(0, 3, 1, 2).float() for t in (th, tb, tw))]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--real", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--minutes", type=float, default=7.0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--real-fraction", type=float, default=0.3)
    p.add_argument("--workers", type=int, default=14)
    a = p.parse_args(argv)
    a.steps = 10**7  # bounded by time, not steps
    a.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(a.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = Detector().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    budget = a.minutes * 60
    t0 = time.monotonic()
    log = (a.out / "torchtrain.log").open("w")
    step = 0
    for step, batch in batches(a, 0):
        elapsed = time.monotonic() - t0
        if elapsed >= budget:
            break
        for group in opt.param_groups:
            group["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
        x, th, tb, tw = to_device(batch, dev)
        heat, box = model(x)
        lh, lb = heat_loss(th, heat), box_loss(tb, tw, box)
        opt.zero_grad(set_to_none=True)
        (lh + lb).backward()
        opt.step()
        if step % 2000 == 0 and step:
            save(model, a, step, f"torchtrain on {dev}, stopped at {elapsed:.0f} s")
            model.train()
        if step % 100 == 0:
            line = {
                "step": step,
                "s": round(elapsed, 1),
                "heat": round(lh.item(), 4),
                "box": round(lb.item(), 4),
            }
            print(json.dumps(line), file=log, flush=True)
            print(json.dumps(line), flush=True)
    save(model, a, step, f"torchtrain on {dev}, {a.minutes} min")
    print(f"done: {step} steps in {time.monotonic() - t0:.0f} s", flush=True)


def save(model: Detector, a: argparse.Namespace, step: int, trainer: str) -> None:
    """Weights in Keras layout (written often, so a run cut short still leaves a model)."""
    model.eval()
    weights = keras_weights(model)
    tmp = a.out / "keras.weights.tmp.npz"
    np.savez(tmp, **{f"{name}/{k}": w for name, ws in weights.items() for k, w in enumerate(ws)})
    tmp.replace(a.out / "keras.weights.npz")
    (a.out / "args.json").write_text(
        json.dumps(
            {
                "steps": step,
                "batch": a.batch,
                "size": a.size,
                "real_fraction": a.real_fraction,
                "seed": a.seed,
                "trainer": trainer,
            }
        )
    )


if __name__ == "__main__":
    main()
