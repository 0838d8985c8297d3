"""Constant-velocity Kalman filters for many plate boxes at once.

State per box: centre x, centre y, width, height and their velocities, in main-stream pixels
and pixels per second. Noise scales with the plate's size (its geometric-mean side), so a
plate far away (small, slow on the image) and one near the camera (large, fast) are treated
alike. Every operation works on all boxes in one set of numpy calls.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]

MEASURE_SIGMA = 0.1  # a detected box's position and size error, in plate sizes
CENTRE_ACCEL = 50.0  # unmodelled acceleration of the centre, plate sizes per s^2
SIZE_ACCEL = 10.0  # of the width and height, plate sizes per s^2
START_SPEED = 20.0  # velocity uncertainty of a new track, plate sizes per s
START_GROWTH = 2.0  # growth-rate uncertainty of a new track's size, plate sizes per s


def xyxy_to_cxcywh(boxes: Floats) -> Floats:
    b = boxes.reshape(-1, 4)
    return np.stack(
        [(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]],
        axis=1,
    )


def cxcywh_to_xyxy(s: Floats) -> Floats:
    w, h = np.maximum(s[:, 2], 1e-3), np.maximum(s[:, 3], 1e-3)
    return np.stack([s[:, 0] - w / 2, s[:, 1] - h / 2, s[:, 0] + w / 2, s[:, 1] + h / 2], axis=1)


def box_sizes(cxcywh: Floats) -> Floats:
    """The geometric-mean side of each box, at least one pixel."""
    return np.asarray(np.sqrt(np.maximum(cxcywh[:, 2] * cxcywh[:, 3], 1.0)))


class BoxFilters:
    """N independent filters; rows are added, updated and dropped together."""

    def __init__(self) -> None:
        self.x: Floats = np.zeros((0, 8))
        self.p: Floats = np.zeros((0, 8, 8))

    def __len__(self) -> int:
        return len(self.x)

    def add(self, boxes: Floats) -> None:
        """New filters at these (x0, y0, x1, y1) boxes, at rest but unsure of their speed."""
        z = xyxy_to_cxcywh(boxes)
        s = box_sizes(z)
        x = np.zeros((len(z), 8))
        x[:, :4] = z
        sig = np.stack([MEASURE_SIGMA * s] * 4 + [START_SPEED * s] * 2 + [START_GROWTH * s] * 2)
        p = np.zeros((len(z), 8, 8))
        p[:, np.arange(8), np.arange(8)] = sig.T**2
        self.x = np.concatenate([self.x, x])
        self.p = np.concatenate([self.p, p])

    def keep(self, mask: npt.NDArray[np.bool_]) -> None:
        self.x, self.p = self.x[mask], self.p[mask]

    def predict(self, dt: float) -> None:
        """Advance every filter by `dt` seconds."""
        if not len(self) or dt <= 0:
            return
        f = np.eye(8)
        f[np.arange(4), np.arange(4) + 4] = dt
        s = box_sizes(self.x[:, :4])
        accel = np.stack([CENTRE_ACCEL * s] * 2 + [SIZE_ACCEL * s] * 2, axis=1) ** 2  # (N, 4)
        q = np.zeros_like(self.p)
        i = np.arange(4)
        q[:, i, i] = accel * dt**4 / 4
        q[:, i, i + 4] = q[:, i + 4, i] = accel * dt**3 / 2
        q[:, i + 4, i + 4] = accel * dt**2
        self.x = self.x @ f.T
        self.p = f @ self.p @ f.T + q

    def update(self, rows: Ints, boxes: Floats) -> None:
        """Correct filters `rows` with their measured (x0, y0, x1, y1) boxes."""
        if not len(rows):
            return
        z = xyxy_to_cxcywh(boxes)
        x, p = self.x[rows], self.p[rows]
        r = (MEASURE_SIGMA * box_sizes(z)) ** 2
        s = p[:, :4, :4] + r[:, None, None] * np.eye(4)
        k = p[:, :, :4] @ np.linalg.inv(s)  # (M, 8, 4)
        x = x + (k @ (z - x[:, :4])[:, :, None])[:, :, 0]
        p = p - k @ p[:, :4, :]
        self.x[rows] = x
        self.p[rows] = (p + p.transpose(0, 2, 1)) / 2

    def boxes(self) -> Floats:
        """The current (x0, y0, x1, y1) estimate of every filter."""
        return cxcywh_to_xyxy(self.x[:, :4])

    def centre_sigma(self) -> Floats:
        """One standard deviation of each filter's centre, pixels (the larger axis)."""
        return np.asarray(np.sqrt(np.maximum(self.p[:, 0, 0], self.p[:, 1, 1])))
