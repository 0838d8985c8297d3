"""Decoding heat/box maps into boxes, and NMS, on hand-made tensors."""

from __future__ import annotations

import numpy as np
import pytest

from node.infer.decode import decode, iou_matrix, nms, peak_mask

GH, GW = 8, 12


def maps() -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    return np.zeros((GH, GW), np.float32), np.zeros((GH, GW, 4), np.float32)


def test_single_peak_gives_the_exact_box() -> None:
    heat, box = maps()
    heat[3, 5] = 0.9
    box[3, 5] = np.log([2.0, 1.0, 3.0, 0.5])  # distances 8, 4, 12, 2 px at stride 4
    boxes, scores = decode(heat, box, threshold=0.5)
    cx, cy = (5 + 0.5) * 4, (3 + 0.5) * 4
    np.testing.assert_allclose(boxes, [[cx - 8, cy - 4, cx + 12, cy + 2]], rtol=1e-6)
    np.testing.assert_allclose(scores, [0.9])
    assert boxes.dtype == np.float32
    assert scores.dtype == np.float32


def test_model_shaped_tensors_and_other_strides() -> None:
    heat, box = maps()
    heat[0, 0] = 0.7
    boxes, _ = decode(heat[None, :, :, None], box[None], threshold=0.5, stride=8)
    np.testing.assert_allclose(boxes, [[4 - 8, 4 - 8, 4 + 8, 4 + 8]])  # ln(d/8) = 0: d = 8


def test_neighbours_that_are_not_the_maximum_are_suppressed() -> None:
    heat, box = maps()
    heat[2:5, 2:5] = 0.6
    heat[3, 3] = 0.9  # the peak
    heat[3, 5] = 0.8  # next to a 0.6 only: its own peak, two cells from the first
    boxes, scores = decode(heat, box, threshold=0.5)
    np.testing.assert_allclose(scores, [0.9, 0.8])
    np.testing.assert_allclose(boxes[:, 0] + 4, [3.5 * 4, 5.5 * 4])  # d = 4: x0 = cx - 4


def test_equal_neighbours_are_both_peaks_and_nms_merges_them() -> None:
    heat, box = maps()
    heat[4, 4] = heat[4, 5] = 0.7
    box[4, 4] = box[4, 5] = np.log(4.0)  # 16 px each way: the two boxes overlap heavily
    boxes, scores = decode(heat, box, threshold=0.5)
    assert len(scores) == 2
    assert list(nms(boxes, scores, 0.5)) == [0]


def test_threshold_is_inclusive_and_respected() -> None:
    heat, box = maps()
    heat[1, 1], heat[5, 8], heat[6, 2] = 0.5, 0.49, 0.95
    _, scores = decode(heat, box, threshold=0.5)
    np.testing.assert_allclose(scores, [0.95, 0.5])
    assert len(decode(heat, box, threshold=0.96)[1]) == 0


def test_top_k_keeps_the_best_in_order() -> None:
    heat, box = maps()
    values = np.linspace(0.3, 0.9, 10)
    for k, v in enumerate(values):  # ten isolated peaks on even cells
        heat[(k // 5) * 4, (k % 5) * 2] = v
    _, scores = decode(heat, box, threshold=0.1, top_k=3)
    np.testing.assert_allclose(scores, values[::-1][:3], rtol=1e-6)
    assert len(decode(heat, box, threshold=0.1, top_k=100)[1]) == 10


def test_empty_heat_gives_no_boxes() -> None:
    heat, box = maps()
    boxes, scores = decode(heat, box, threshold=0.3)
    assert boxes.shape == (0, 4)
    assert scores.shape == (0,)
    assert nms(boxes, scores, 0.5).shape == (0,)


def test_wild_box_outputs_do_not_overflow() -> None:
    heat, box = maps()
    heat[0, 0] = 0.9
    box[0, 0] = 1e6
    boxes, _ = decode(heat, box, threshold=0.5)
    assert np.all(np.isfinite(boxes))


def test_peak_mask_edges() -> None:
    heat = np.array([[0.9, 0.1], [0.1, 0.2]], np.float32)
    assert peak_mask(heat).tolist() == [[True, False], [False, False]]


def test_nms_keeps_the_best_of_overlapping_boxes_and_both_of_disjoint_ones() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0.6
            [1, 1, 11, 11],  # 0.9: overlaps box 0 (IoU 0.68), better
            [50, 50, 60, 60],  # 0.3: disjoint
            [0, 0, 10, 20],  # 0.2: IoU 0.43 with box 1 (box 0 is gone): kept at 0.5
        ],
        np.float32,
    )
    scores = np.array([0.6, 0.9, 0.3, 0.2], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]


def test_nms_chain_is_greedy() -> None:
    # b overlaps a and c; a suppresses b, so c (overlapping only b) survives.
    boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, 0.2).tolist() == [0, 2]


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
        ([0, 0, 10, 10], [2, 2, 4, 4], 4 / 100),  # contained
        ([5, 5, 5, 5], [5, 5, 5, 5], 0.0),  # empty boxes
        ([10, 10, 0, 0], [0, 0, 10, 10], 0.0),  # inverted box has no area
    ],
)
def test_iou_matrix(a: list[float], b: list[float], want: float) -> None:
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(want)


def test_iou_matrix_shape() -> None:
    a = np.zeros((3, 4), np.float32)
    b = np.zeros((5, 4), np.float32)
    assert iou_matrix(a, b).shape == (3, 5)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 5)
