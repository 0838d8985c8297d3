"""AP50, recall, precision and false positives on hand-made cases; the labels reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from node.infer.evaluate import (
    LabelError,
    average_precision,
    evaluate,
    match_image,
    read_labels,
)

A = [0.0, 0.0, 10.0, 10.0]
B = [100.0, 100.0, 120.0, 110.0]
C = [50.0, 0.0, 60.0, 10.0]
NEAR_A = [1.0, 1.0, 11.0, 11.0]  # IoU 0.68 with A
OFF = [300.0, 300.0, 310.0, 310.0]  # overlaps nothing


def dets(*pairs: tuple[list[float], float]) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    boxes = np.array([b for b, _ in pairs], np.float64).reshape(-1, 4)
    return boxes, np.array([s for _, s in pairs], np.float64)


def test_perfect_detections() -> None:
    result = evaluate([dets((NEAR_A, 0.9), (B, 0.8))], [[A, B]], threshold=0.5)
    assert result.ap50 == pytest.approx(1.0)
    assert result.recall == result.precision == pytest.approx(1.0)
    assert result.fp_per_image == 0.0
    assert (result.true_positives, result.false_positives) == (2, 0)


def test_one_miss_of_two() -> None:
    result = evaluate([dets((A, 0.9))], [[A, B]], threshold=0.5)
    assert result.recall == pytest.approx(0.5)
    assert result.precision == pytest.approx(1.0)
    assert result.ap50 == pytest.approx(0.5)


def test_a_false_positive_ranked_above_a_true_positive_lowers_ap() -> None:
    truths = [[A, B]]
    # TP 0.9, FP 0.8, TP 0.7: precision 1 at recall 0.5, 2/3 at recall 1 -> 0.5 + 0.5 * 2/3
    middle = average_precision([dets((A, 0.9), (OFF, 0.8), (B, 0.7))], truths)
    assert middle == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # FP first: precision 1/2 at recall 0.5 is lifted to 2/3 by interpolation -> 2/3
    first = average_precision([dets((OFF, 0.95), (A, 0.9), (B, 0.7))], truths)
    assert first == pytest.approx(2 / 3)
    # FP last: it comes after full recall and costs nothing
    last = average_precision([dets((A, 0.9), (B, 0.7), (OFF, 0.1))], truths)
    assert last == pytest.approx(1.0)


def test_duplicate_detections_count_as_false_positives() -> None:
    result = evaluate([dets((A, 0.9), (NEAR_A, 0.8))], [[A]], threshold=0.5)
    assert (result.true_positives, result.false_positives) == (1, 1)
    assert result.precision == pytest.approx(0.5)
    assert result.ap50 == pytest.approx(1.0)  # the duplicate ranks after full recall
    _, hits = match_image(*dets((NEAR_A, 0.8), (A, 0.9)), [A])
    assert hits.tolist() == [True, False]  # the better score takes the plate


def test_iou_below_half_is_a_miss() -> None:
    shifted = [6.0, 0.0, 16.0, 10.0]  # IoU 4/16 = 0.25 with A
    result = evaluate([dets((shifted, 0.9))], [[A]], threshold=0.5)
    assert (result.true_positives, result.false_positives) == (0, 1)
    assert result.ap50 == 0.0


def test_threshold_splits_recall_precision_and_fp_per_image() -> None:
    per_image = [dets((A, 0.9), (OFF, 0.4)), dets((OFF, 0.6)), dets((C, 0.3))]
    truths = [[A], [B], [C]]
    high = evaluate(per_image, truths, threshold=0.5)
    assert high.recall == pytest.approx(1 / 3)
    assert high.precision == pytest.approx(1 / 2)
    assert high.fp_per_image == pytest.approx(1 / 3)
    low = evaluate(per_image, truths, threshold=0.25)
    assert low.recall == pytest.approx(2 / 3)
    assert low.precision == pytest.approx(2 / 4)
    assert low.fp_per_image == pytest.approx(2 / 3)
    # ranked: TP .9, FP .6, FP .4, TP .3 -> 1/3 * 1 + 1/3 * 2/4
    assert high.ap50 == low.ap50 == pytest.approx(1 / 3 + 1 / 3 * 0.5)


def test_matching_is_per_image() -> None:
    # A detection of A in image 2 does not match the A in image 1.
    result = evaluate([dets(), dets((A, 0.9))], [[A], []], threshold=0.5)
    assert (result.true_positives, result.false_positives) == (0, 1)
    assert result.ap50 == 0.0


def test_undefined_figures_are_none() -> None:
    result = evaluate([dets()], [[]], threshold=0.5)
    assert result.ap50 is None
    assert result.recall is None
    assert result.precision is None
    assert result.fp_per_image == 0.0
    assert evaluate([], [], threshold=0.5).fp_per_image is None


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="2 images of detections but 1"):
        average_precision([dets(), dets()], [[]])


def write_labels(tmp_path: Path, lines: list[object]) -> Path:
    path = tmp_path / "labels.jsonl"
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_read_labels(tmp_path: Path) -> None:
    path = write_labels(
        tmp_path,
        [
            {"image": "images/a.png", "width": 960, "height": 544, "boxes": [A, B]},
            "",
            {"image": "b.png", "width": 640, "height": 480, "boxes": []},
        ],
    )
    got = read_labels(path)
    assert [g.image for g in got] == [tmp_path / "images" / "a.png", tmp_path / "b.png"]
    assert (got[0].width, got[0].height) == (960, 544)
    np.testing.assert_array_equal(got[0].boxes, [A, B])
    assert got[1].boxes.shape == (0, 4)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 1: not valid JSON"),
        ("[1, 2]", "line 1: expected a JSON object"),
        ({"width": 1, "height": 1, "boxes": []}, "'image' must be a path"),
        ({"image": "a.png", "width": 0, "height": 1, "boxes": []}, "positive whole numbers"),
        ({"image": "a.png", "width": True, "height": 1, "boxes": []}, "positive whole numbers"),
        ({"image": "a.png", "width": 9, "height": 9, "boxes": [[1, 2, 3]]}, "list of [x0"),
        ({"image": "a.png", "width": 9, "height": 9, "boxes": A}, "list of [x0"),
        ({"image": "a.png", "width": 9, "height": 9, "boxes": [[1, 2, 3, "x"]]}, "list of"),
        ({"image": "a.png", "width": 9, "height": 9, "boxes": [[5, 0, 1, 4]]}, "x0 < x1"),
    ],
)
def test_bad_labels_name_file_and_line(tmp_path: Path, line: object, message: str) -> None:
    path = write_labels(tmp_path, [line])
    with pytest.raises(LabelError) as info:
        read_labels(path)
    assert str(info.value).startswith(f"{path} line 1: ")
    assert message in str(info.value)


def test_missing_labels_file(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="cannot read labels"):
        read_labels(tmp_path / "nope.jsonl")
