"""Training targets for the detector's heads (tools.detector.targets): where the peak and the
box distances go, and how the box loss is shared between plates."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tools.detector.arch import STRIDE
from tools.detector.targets import encode

SMALL = [10.0, 10.0, 22.0, 14.0]  # 12 x 4 px: a plate far down the road
LARGE = [40.0, 100.0, 200.0, 140.0]  # 160 x 40 px


def _share(weight: npt.NDArray[np.float32], box: list[float]) -> float:
    """The box-loss weight in the cells around `box` (its bounding cells plus one)."""
    x0, y0, x1, y1 = (int(v // STRIDE) for v in box)
    return float(weight[max(0, y0 - 1) : y1 + 2, max(0, x0 - 1) : x1 + 2].sum())


def test_peak_and_distances_at_the_centre_cell() -> None:
    heat, box, weight = encode(np.array([LARGE], np.float32), 256, 256)
    i, j = np.unravel_index(int(np.argmax(heat[..., 0])), heat.shape[:2])
    assert heat[i, j, 0] == 1.0
    assert (int(i), int(j)) == (120 // STRIDE, 120 // STRIDE)
    cx, cy = (j + 0.5) * STRIDE, (i + 0.5) * STRIDE
    d = STRIDE * np.exp(box[i, j])
    np.testing.assert_allclose([cx - d[0], cy - d[1], cx + d[2], cy + d[3]], LARGE, atol=1e-3)
    assert weight[i, j, 0] == 1.0


def test_area_weights_favour_big_plates() -> None:
    boxes = np.array([SMALL, LARGE], np.float32)
    _, _, weight = encode(boxes, 256, 256)
    assert _share(weight[..., 0], LARGE) > 5 * _share(weight[..., 0], SMALL)


def test_per_plate_weights_give_every_plate_one_share() -> None:
    boxes = np.array([SMALL, LARGE], np.float32)
    heat_a, box_a, _ = encode(boxes, 256, 256)
    heat, box, weight = encode(boxes, 256, 256, per_plate=True)
    np.testing.assert_array_equal(heat, heat_a)  # only the weights differ
    np.testing.assert_array_equal(box, box_a)
    w = weight[..., 0]
    assert abs(_share(w, SMALL) - 1.0) < 1e-5
    assert abs(_share(w, LARGE) - 1.0) < 1e-5
    centres = []
    for plate in (SMALL, LARGE):  # at least half of each share on the decoder's centre cell
        cx, cy = (plate[0] + plate[2]) / 2, (plate[1] + plate[3]) / 2
        centres.append(float(w[int(cy // STRIDE), int(cx // STRIDE)]))
    assert centres[0] == 1.0  # a plate this small has only its centre cell
    assert 0.5 <= centres[1] < 0.6  # the rest of the big plate's share is spread around
