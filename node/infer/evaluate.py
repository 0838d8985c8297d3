"""Measuring the detector against labelled images: AP50, recall, precision, false positives.

Matching is VOC-style: within each image, detections are taken best score first; each one
matches the ground-truth box it overlaps most, and counts as a true positive when that IoU is
at least `iou` and the box is not matched yet. Otherwise it is a false positive, so a
duplicate detection of a plate already found is a false positive. AP is the area under the
precision/recall curve over all images with all-point interpolation (VOC 2010+): precision at
each recall is the best precision at that recall or any higher one.

Labels are JSON lines, one image each, paths relative to the labels file:
    {"image": "images/x.png", "width": 960, "height": 544, "boxes": [[x0, y0, x1, y1], ...]}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from node.infer.decode import iou_matrix

FloatArray = npt.NDArray[np.float64]
SCORE_FLOOR = 0.01  # AP is measured over every detection scoring at least this


@dataclass(frozen=True)
class Evaluation:
    """Figures for one set of images. None where a figure is undefined (nothing to divide by)."""

    images: int
    ground_truths: int
    threshold: float
    ap50: float | None  # over all detections, whatever their score
    recall: float | None  # the rest at `threshold`
    precision: float | None
    fp_per_image: float | None
    true_positives: int
    false_positives: int


def match_image(
    boxes: npt.ArrayLike, scores: npt.ArrayLike, truths: npt.ArrayLike, iou: float = 0.5
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """One image's detections, sorted best first: (scores, true-positive flags)."""
    boxes_a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores_a = np.asarray(scores, dtype=np.float64).reshape(-1)
    truths_a = np.asarray(truths, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-scores_a, kind="stable")
    boxes_a, scores_a = boxes_a[order], scores_a[order]
    hits = np.zeros(len(order), dtype=bool)
    if len(truths_a) == 0 or len(order) == 0:
        return scores_a, hits
    overlaps = iou_matrix(boxes_a, truths_a)
    best = overlaps.argmax(axis=1)
    taken = np.zeros(len(truths_a), dtype=bool)
    for k, g in enumerate(best):  # sequential by nature: a match takes a plate from the rest
        if overlaps[k, g] >= iou and not taken[g]:
            taken[g] = hits[k] = True
    return scores_a, hits


def _pooled(
    dets_per_image: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
    gts_per_image: Sequence[npt.ArrayLike],
    iou: float,
) -> tuple[FloatArray, npt.NDArray[np.bool_], int]:
    """All images' detections sorted best first: scores, true-positive flags, number of truths."""
    if len(dets_per_image) != len(gts_per_image):
        raise ValueError(
            f"{len(dets_per_image)} images of detections but {len(gts_per_image)} of labels"
        )
    matched = [
        match_image(boxes, scores, truths, iou)
        for (boxes, scores), truths in zip(dets_per_image, gts_per_image, strict=True)
    ]
    scores = np.concatenate([s for s, _ in matched]) if matched else np.zeros(0)
    hits = np.concatenate([h for _, h in matched]) if matched else np.zeros(0, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    n_truths = sum(len(np.asarray(t, dtype=np.float64).reshape(-1, 4)) for t in gts_per_image)
    return scores[order], hits[order], n_truths


def ap_from_hits(hits: npt.NDArray[np.bool_], n_truths: int) -> float | None:
    """All-point interpolated AP of a ranked list of true-positive flags (None: no truths)."""
    if n_truths == 0:
        return None
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    recall = np.concatenate([[0.0], tp / n_truths, [1.0]])
    precision = np.concatenate([[0.0], tp / np.maximum(tp + fp, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def average_precision(
    dets_per_image: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
    gts_per_image: Sequence[npt.ArrayLike],
    iou: float = 0.5,
) -> float | None:
    """AP at `iou` (AP50 by default) over all images; None when there is no ground truth.

    `dets_per_image[i]` is (boxes (N, 4), scores (N,)) and `gts_per_image[i]` boxes (M, 4).
    """
    _, hits, n_truths = _pooled(dets_per_image, gts_per_image, iou)
    return ap_from_hits(hits, n_truths)


def evaluate(
    dets_per_image: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
    gts_per_image: Sequence[npt.ArrayLike],
    threshold: float,
    iou: float = 0.5,
) -> Evaluation:
    """AP over all detections, and recall / precision / false positives at `threshold`."""
    scores, hits, n_truths = _pooled(dets_per_image, gts_per_image, iou)
    kept = hits[scores >= threshold]  # matching is greedy by score, so this is a prefix
    tp, fp = int(kept.sum()), int(len(kept) - kept.sum())
    n_images = len(gts_per_image)
    return Evaluation(
        images=n_images,
        ground_truths=n_truths,
        threshold=threshold,
        ap50=ap_from_hits(hits, n_truths),
        recall=tp / n_truths if n_truths else None,
        precision=tp / (tp + fp) if tp + fp else None,
        fp_per_image=fp / n_images if n_images else None,
        true_positives=tp,
        false_positives=fp,
    )


# --- labels ----------------------------------------------------------------------------------


class LabelError(Exception):
    """A labels file is unreadable or malformed; the message names the file and line."""


@dataclass(frozen=True)
class LabelledImage:
    image: Path  # resolved against the labels file's folder
    width: int
    height: int
    boxes: FloatArray  # (M, 4): x0, y0, x1, y1 in the image's pixels


def _labelled(raw: object, folder: Path, where: str) -> LabelledImage:
    if not isinstance(raw, dict):
        raise LabelError(f"{where}: expected a JSON object")
    image, width, height, boxes = (raw.get(k) for k in ("image", "width", "height", "boxes"))
    if not isinstance(image, str) or not image:
        raise LabelError(f"{where}: 'image' must be a path")
    dims = [v for v in (width, height) if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    if len(dims) != 2:
        raise LabelError(f"{where}: 'width' and 'height' must be positive whole numbers")
    bad_boxes = LabelError(f"{where}: 'boxes' must be a list of [x0, y0, x1, y1]")
    if not isinstance(boxes, list):
        raise bad_boxes
    try:
        array = np.asarray(boxes, dtype=np.float64) if boxes else np.zeros((0, 4))
    except (TypeError, ValueError):
        raise bad_boxes from None
    if array.ndim != 2 or array.shape[1] != 4 or not np.all(np.isfinite(array)):
        raise bad_boxes
    if np.any(array[:, 2:] <= array[:, :2]):
        raise LabelError(f"{where}: every box needs x0 < x1 and y0 < y1")
    return LabelledImage(folder / image, dims[0], dims[1], array)


def read_labels(path: Path) -> list[LabelledImage]:
    """Parse a labels file (JSON lines; blank lines skipped); LabelError naming file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(f"{path}: cannot read labels: {e}") from None
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise LabelError(f"{path} line {number}: not valid JSON: {e.msg}") from None
        out.append(_labelled(raw, path.parent, f"{path} line {number}"))
    return out
