"""Zone geometry in main-stream image pixels: lines, lanes, and the road-plane homography.

Every function takes arrays of points, shape (N, 2), and answers for all of them at once.
Image coordinates are pixels with y pointing down. The zones are drawn in the plane of the
plates (see docs/configuration.md): the rules follow a plate's bottom-centre, so a line is
where a plate's bottom edge would be when the plate is right above the painted line.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from node.config import Point, ZonesConfig

Box = tuple[float, float, float, float]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


def as_points(points: object) -> Floats:
    """Anything array-like of [x, y] pairs as a float (N, 2) array."""
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def plate_points(boxes: object) -> Floats:
    """The bottom-centre of each (x0, y0, x1, y1) box: where a plate meets the zone plane."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2.0, b[:, 3]], axis=1)


def _cross(a: Floats, b: Floats) -> Floats:
    return np.asarray(a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0], dtype=np.float64)


def side_of(a: Point, b: Point, points: object) -> Floats:
    """Signed distance in pixels of each point from the infinite line a→b.

    Positive on the side a→b turns to when it turns clockwise on screen (y down), i.e. the
    right-hand side looking from a to b."""
    pa, d = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64) - a
    return _cross(d, as_points(points) - pa) / float(np.hypot(*d))


def crossings(a: Point, b: Point, p0: object, p1: object) -> Ints:
    """For each step p0[i] → p1[i]: +1 if it crosses the segment a-b from the negative to the
    positive side (see `side_of`), -1 the other way, 0 if it does not cross it.

    A point exactly on the line counts as positive, so a step that ends on the line and the
    next that leaves it are one crossing, not two."""
    q0, q1 = as_points(p0), as_points(p1)
    s0, s1 = side_of(a, b, q0), side_of(a, b, q1)
    step = q1 - q0
    ta = _cross(step, np.asarray(a, dtype=np.float64) - q0)
    tb = _cross(step, np.asarray(b, dtype=np.float64) - q0)
    within = ta * tb <= 0.0  # a and b are not both on one side of the step
    up = (s0 < 0.0) & (s1 >= 0.0) & within
    down = (s0 >= 0.0) & (s1 < 0.0) & within
    return up.astype(np.int64) - down.astype(np.int64)


def crossing_fraction(a: Point, b: Point, p0: object, p1: object) -> Floats:
    """Where along each step p0 → p1 (0..1) it meets the infinite line a→b (0.5 if parallel)."""
    s0, s1 = side_of(a, b, p0), side_of(a, b, p1)
    den = s0 - s1
    safe = np.where(den == 0.0, 1.0, den)
    return np.where(den == 0.0, 0.5, np.clip(s0 / safe, 0.0, 1.0))


def points_in_polygon(polygon: object, points: object) -> Bools:
    """Whether each point is inside the polygon (even-odd rule; the outline is not closed)."""
    poly, pts = as_points(polygon), as_points(points)
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.concatenate((x0[1:], x0[:1])), np.concatenate((y0[1:], y0[:1]))  # far ends
    px, py = pts[:, :1], pts[:, 1:]
    spans = (y0 > py) != (y1 > py)  # (N, M): edge straddles the point's row
    dy = np.where(y1 == y0, 1.0, y1 - y0)
    x_at = x0 + (py - y0) * (x1 - x0) / dy
    hits = spans & (px < x_at)
    return np.asarray(hits.sum(axis=1) % 2 == 1)


def polygon_area(polygon: object) -> float:
    """Signed area (shoelace); positive when the outline runs clockwise on screen."""
    p = as_points(polygon)
    return float(_cross(p, np.roll(p, -1, axis=0)).sum() / 2.0)


def segments_cross(p: Floats, q: Floats, r: Floats, s: Floats) -> bool:
    """Whether segments p-q and r-s share a point (touching and overlapping count)."""
    d1, d2 = _cross(q - p, r - p), _cross(q - p, s - p)
    d3, d4 = _cross(s - r, p - r), _cross(s - r, q - r)
    if d1 * d2 < 0 and d3 * d4 < 0:
        return True

    def on(a: Floats, b: Floats, c: Floats, d: Floats) -> bool:  # c on a-b, given collinear
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        return bool(d == 0 and np.all(lo <= c) and np.all(c <= hi))

    return on(p, q, r, d1) or on(p, q, s, d2) or on(r, s, p, d3) or on(r, s, q, d4)


def self_crossing(polygon: object) -> tuple[int, int] | None:
    """The first pair of non-adjacent edges (edge i runs from point i to i+1) that meet."""
    p = as_points(polygon)
    n = len(p)
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing edge
            if segments_cross(p[i], p[(i + 1) % n], p[j], p[(j + 1) % n]):
                return (i, j)
    return None


class DegenerateError(ValueError):
    """Four points that do not define a homography."""


@dataclass(frozen=True, eq=False)
class Homography:
    """Image pixels ↔ road-plane metres, from 4 (or more) corresponding points."""

    matrix: Floats  # 3x3, image → road
    inverse: Floats  # 3x3, road → image

    @classmethod
    def fit(cls, image: object, world: object) -> Homography:
        """Direct linear transform with Hartley normalisation; DegenerateError if it fails."""
        src, dst = as_points(image), as_points(world)
        if len(src) != len(dst) or len(src) < 4:
            raise DegenerateError("needs at least 4 pairs of points")
        ts, td = _normaliser(src), _normaliser(dst)
        a, b = _apply(ts, src), _apply(td, dst)
        rows = []
        for (x, y), (u, v) in zip(a, b, strict=True):
            rows.append([-x, -y, -1.0, 0.0, 0.0, 0.0, u * x, u * y, u])
            rows.append([0.0, 0.0, 0.0, -x, -y, -1.0, v * x, v * y, v])
        _, sv, vt = np.linalg.svd(np.asarray(rows))
        if sv[-2] < 1e-9 * sv[0]:
            raise DegenerateError("the points do not fix a homography (three on a line?)")
        h = np.linalg.inv(td) @ vt[-1].reshape(3, 3) @ ts
        if abs(np.linalg.det(h)) < 1e-12 * np.abs(h).max() ** 3:
            raise DegenerateError("the homography is singular")
        h = h / h[2, 2] if abs(h[2, 2]) > 1e-12 else h
        return cls(h, np.linalg.inv(h))

    def to_world(self, points: object) -> Floats:
        """Road-plane metres of image points."""
        return _apply(self.matrix, as_points(points))

    def to_image(self, points: object) -> Floats:
        """Image pixels of road-plane points."""
        return _apply(self.inverse, as_points(points))

    def metres_per_pixel(self, points: object) -> Floats:
        """For each image point, how far (m) a one-pixel shift moves it on the road, at most."""
        p = as_points(points)
        base = self.to_world(p)
        dx = np.linalg.norm(self.to_world(p + np.array([1.0, 0.0])) - base, axis=1)
        dy = np.linalg.norm(self.to_world(p + np.array([0.0, 1.0])) - base, axis=1)
        return np.asarray(np.maximum(dx, dy))


def _normaliser(p: Floats) -> Floats:
    """The similarity that moves `p`'s centroid to 0 and its mean distance to sqrt(2)."""
    c = p.mean(axis=0)
    d = float(np.linalg.norm(p - c, axis=1).mean()) or 1.0
    k = np.sqrt(2.0) / d
    return np.array([[k, 0.0, -k * c[0]], [0.0, k, -k * c[1]], [0.0, 0.0, 1.0]])


def _apply(m: Floats, p: Floats) -> Floats:
    h = p @ m[:, :2].T + m[:, 2]  # homogeneous (x, y, 1) @ m.T without building the ones
    w = np.where(np.abs(h[:, 2]) < 1e-12, 1e-12, h[:, 2])
    return np.asarray(h[:, :2] / w[:, None])


@dataclass(frozen=True, eq=False)
class Lane:
    name: str
    polygon: Floats  # (M, 2), not closed
    direction: Floats  # unit image vector: the allowed direction of travel
    speed_limit_kmh: float


@dataclass(frozen=True, eq=False)
class Line:
    a: Point
    b: Point


@dataclass(frozen=True, eq=False)
class SpeedTrap:
    line_a: Line
    line_b: Line
    distance_m: float


@dataclass(frozen=True, eq=False)
class Zones:
    """The zones of one camera, ready for the rules (built from a validated `ZonesConfig`)."""

    stop_line: Line | None = None
    lanes: tuple[Lane, ...] = ()
    solid_lines: tuple[Floats, ...] = ()  # each (K, 2), K >= 2
    homography: Homography | None = None
    speed_trap: SpeedTrap | None = None
    homography_area: Floats | None = None  # the image polygon the homography was fitted on

    @classmethod
    def from_config(cls, cfg: ZonesConfig) -> Zones:
        stop = Line(*cfg.stop_line) if cfg.stop_line else None
        lanes = tuple(
            Lane(
                lane.name,
                _open(as_points(lane.polygon)),
                _unit(lane.direction),
                lane.speed_limit_kmh,
            )
            for lane in cfg.lanes
        )
        homography, area = None, None
        if cfg.homography_points and cfg.homography_world_m:
            homography = Homography.fit(cfg.homography_points, cfg.homography_world_m)
            area = _open(as_points(cfg.homography_points))
        t = cfg.speed_trap
        trap = None
        if t.line_a and t.line_b and t.distance_m > 0:
            trap = SpeedTrap(Line(*t.line_a), Line(*t.line_b), t.distance_m)
        solid = tuple(as_points(line) for line in cfg.solid_lines)
        return cls(stop, lanes, solid, homography, trap, area)

    @cached_property
    def segments(self) -> dict[tuple[Point, Point], int]:
        """Every line segment a rule tests crossings of (the stop line, each piece of each
        solid line, the speed trap's lines), numbered: the column of `sides()`."""
        pieces: list[tuple[Point, Point]] = []
        if self.stop_line is not None:
            pieces.append((self.stop_line.a, self.stop_line.b))
        for line in self.solid_lines:
            pieces += [
                ((p[0], p[1]), (q[0], q[1]))
                for p, q in zip(line[:-1].tolist(), line[1:].tolist(), strict=True)
            ]
        if self.speed_trap is not None:
            pieces += [(t.a, t.b) for t in (self.speed_trap.line_a, self.speed_trap.line_b)]
        return {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}

    def sides(self, points: object) -> Floats:
        """`side_of` every segment (columns numbered by `segments`) for each point: (N, S),
        computed once per sample so the rules do not redo it every frame."""
        pts = as_points(points)
        if not self.segments:
            return np.zeros((len(pts), 0))
        pa, d, length = self._segment_arrays
        return np.asarray(_cross(d[None], pts[:, None, :] - pa[None]) / length)

    @cached_property
    def _segment_arrays(self) -> tuple[Floats, Floats, Floats]:
        """`segments` as arrays, made once: start points, directions, lengths."""
        ab = np.asarray(list(self.segments), dtype=np.float64).reshape(-1, 2, 2)
        d = ab[:, 1] - ab[:, 0]
        return ab[:, 0], d, np.hypot(d[:, 0], d[:, 1])

    def in_area(self, points: object) -> Bools:
        """Whether each point is inside the homography's calibrated area (all, without one)."""
        pts = as_points(points)
        if self.homography_area is None:
            return np.ones(len(pts), dtype=bool)
        return points_in_polygon(self.homography_area, pts)

    def lane_index(self, points: object) -> Ints:
        """Index of the first lane that holds each point; -1 for none."""
        pts = as_points(points)
        out = np.full(len(pts), -1, dtype=np.int64)
        for i in reversed(range(len(self.lanes))):
            out[points_in_polygon(self.lanes[i].polygon, pts)] = i
        return out


def _open(polygon: Floats) -> Floats:
    """The outline without a closing point that repeats the first."""
    if len(polygon) > 3 and np.array_equal(polygon[0], polygon[-1]):
        return polygon[:-1]
    return polygon


def _unit(v: Point) -> Floats:
    d = np.asarray(v, dtype=np.float64)
    n = float(np.hypot(*d))
    return d / n if n > 0 else d
