"""Decoding the detector's two output maps into boxes (contract "centernet-ltrb-log/v1").

At stride s, cell (i, j) has its centre at cx = (j + 0.5)·s, cy = (i + 0.5)·s input pixels.
`heat[i, j]` is the probability that a plate is centred there; `box[i, j]` holds the distances
to the left, top, right and bottom edges as ln(d / s). A cell is a detection when its heat
reaches the threshold and equals the maximum of its 3x3 neighbourhood (a peak); the best
`top_k` peaks become boxes, and class-agnostic NMS removes overlapping ones. All vectorised:
no Python loop runs per cell, and NMS loops only over the (at most `top_k`) candidates.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Boxes = npt.NDArray[np.float32]  # (N, 4): x0, y0, x1, y1
Scores = npt.NDArray[np.float32]  # (N,)
MAX_LOG = 10.0  # ln(d / s) is clipped here, so a wild output cannot overflow exp()


def peak_mask(heat: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Cells equal to the maximum of their 3x3 neighbourhood (edges padded with -inf)."""
    padded = np.pad(heat, 1, mode="constant", constant_values=-np.inf)
    rows = np.maximum(np.maximum(padded[:-2], padded[1:-1]), padded[2:])
    pooled = np.maximum(np.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
    return heat == pooled  # type: ignore[no-any-return]


def decode(
    heat: npt.ArrayLike,
    box: npt.ArrayLike,
    threshold: float,
    stride: int = 4,
    top_k: int = 100,
) -> tuple[Boxes, Scores]:
    """Peaks of `heat` (H, W) at or above `threshold` and their boxes from `box` (H, W, 4).

    Leading/trailing singleton axes are accepted ([1, H, W, 1] and [1, H, W, 4] as the model
    gives them). Returns boxes (N, 4) in input pixels and scores (N,), best first, N ≤ top_k.
    """
    heat2: npt.NDArray[np.float32] = np.asarray(heat, dtype=np.float32)
    if heat2.ndim == 4:
        heat2 = heat2.reshape(heat2.shape[1:3])
    gh, gw = heat2.shape
    ltrb = np.asarray(box, dtype=np.float32).reshape(gh * gw, 4)
    candidates = np.flatnonzero((heat2 >= threshold) & peak_mask(heat2))
    scores = heat2.ravel()[candidates]
    if len(candidates) > top_k:
        best = np.argpartition(-scores, top_k - 1)[:top_k]
        candidates, scores = candidates[best], scores[best]
    order = np.argsort(-scores, kind="stable")
    candidates, scores = candidates[order], scores[order]
    rows, cols = np.divmod(candidates, gw)
    cx = (cols.astype(np.float32) + 0.5) * stride
    cy = (rows.astype(np.float32) + 0.5) * stride
    dist = stride * np.exp(np.clip(ltrb[candidates], -MAX_LOG, MAX_LOG))
    boxes = np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1)
    return boxes.astype(np.float32), scores.astype(np.float32)


def iou_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Intersection over union of every box in `a` (N, 4) with every box in `b` (M, 4): (N, M)."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out: npt.NDArray[np.float32] = np.zeros(inter.shape, dtype=np.float32)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def over_smaller(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Intersection over the smaller box, for every box in `a` (A, 4) with every box in `b`
    (B, 4): (A, B). 1.0 when one box lies inside the other, whatever their sizes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    return np.asarray(np.where(smaller > 0, inter / np.where(smaller > 0, smaller, 1.0), 0.0))


def nms(boxes: npt.ArrayLike, scores: npt.ArrayLike, iou: float) -> npt.NDArray[np.intp]:
    """Greedy class-agnostic non-maximum suppression.

    Indices of the kept boxes, best score first: a box is dropped when its IoU with a better
    kept box is above `iou`.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    overlaps = iou_matrix(np.asarray(boxes)[order], np.asarray(boxes)[order]) > iou
    suppressed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    for k in range(len(order)):
        if suppressed[k]:
            continue
        keep.append(k)
        suppressed |= overlaps[k]
    return order[np.asarray(keep, dtype=np.intp)]
