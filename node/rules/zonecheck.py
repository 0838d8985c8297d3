"""The `[zones]` checks that need geometry: each yields (keys it read, one problem line).

Shapes and counts (a polygon of 2 points, a point of 3 numbers) are refused by the loader;
these checks see values of the right shape and ask whether they make sense on the image.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from node.config import Config, LaneConfig, Point, ZonesConfig
from node.rules.zones import (
    DegenerateError,
    Floats,
    Homography,
    as_points,
    points_in_polygon,
    polygon_area,
    segments_cross,
    self_crossing,
)

Problem = tuple[set[str], str]
FRAME_KEYS = {"capture.main_width", "capture.main_height"}
OVERLAP_SHARE = 0.02  # lanes sharing more than this of the smaller one's area overlap


def zone_problems(cfg: Config) -> Iterator[Problem]:
    """Every problem with `cfg.zones` that its shape alone does not show."""
    z = cfg.zones
    yield from _in_frame(z, cfg.capture.main_width, cfg.capture.main_height)
    if len(z.stop_line) == 2 and z.stop_line[0] == z.stop_line[1]:
        yield ({"zones.stop_line"}, "zones.stop_line: the two points must differ")
    names: dict[str, int] = {}
    for i, lane in enumerate(z.lanes):
        yield from _lane_problems(i, lane)
        if lane.name and lane.name in names:
            key = f"zones.lanes[{i}].name"
            yield ({key}, f"{key}: {lane.name!r} is the name of zones.lanes[{names[lane.name]}]")
        names.setdefault(lane.name, i)
    yield from _contradictions(z.lanes)
    for i, line in enumerate(z.solid_lines):
        if (k := _repeat(line)) is not None:
            key = f"zones.solid_lines[{i}]"
            yield ({key}, f"{key}: point {k + 1} repeats point {k}")
    yield from _homography_problems(z)
    yield from _trap_problems(z)


def _in_frame(z: ZonesConfig, width: int, height: int) -> Iterator[Problem]:
    keyed: list[tuple[str, tuple[Point, ...]]] = [
        ("zones.stop_line", z.stop_line),
        ("zones.homography_points", z.homography_points),
        ("zones.speed_trap.line_a", z.speed_trap.line_a),
        ("zones.speed_trap.line_b", z.speed_trap.line_b),
    ]
    keyed += [(f"zones.lanes[{i}].polygon", lane.polygon) for i, lane in enumerate(z.lanes)]
    keyed += [(f"zones.solid_lines[{i}]", line) for i, line in enumerate(z.solid_lines)]
    for key, pts in keyed:
        bad = [p for p in pts if not (0 <= p[0] <= width and 0 <= p[1] <= height)]
        if bad:
            x, y = bad[0]
            yield (
                {key} | FRAME_KEYS,
                f"{key}: point [{x:g}, {y:g}] is outside the {width}x{height} main image "
                "(capture.main_width/main_height)",
            )


def _repeat(points: tuple[Point, ...]) -> int | None:
    """Index of the first point that equals the one before it."""
    return next((k for k in range(len(points) - 1) if points[k] == points[k + 1]), None)


def _lane_problems(i: int, lane: LaneConfig) -> Iterator[Problem]:
    key = f"zones.lanes[{i}]"
    if lane.direction == (0.0, 0.0):
        yield ({f"{key}.direction"}, f"{key}.direction: must not be [0, 0]")
    poly = list(lane.polygon)
    if len(poly) > 3 and poly[0] == poly[-1]:
        poly = poly[:-1]  # closed explicitly
    if len(poly) < 3:
        return  # the loader said so
    pkey = f"{key}.polygon"
    if (k := _repeat(tuple(poly))) is not None:
        yield ({pkey}, f"{pkey}: point {k + 1} repeats point {k}")
    elif (pair := self_crossing(poly)) is not None:
        yield ({pkey}, f"{pkey}: crosses itself (edges {pair[0]} and {pair[1]})")
    elif abs(polygon_area(poly)) < 1.0:
        yield ({pkey}, f"{pkey}: encloses no area (its points are on one line)")


def _contradictions(lanes: tuple[LaneConfig, ...]) -> Iterator[Problem]:
    """Lanes that overlap on the image but allow opposite directions of travel."""
    for j, b in enumerate(lanes):
        for i, a in enumerate(lanes[:j]):
            da, db = np.asarray(a.direction), np.asarray(b.direction)
            if float(da @ db) >= 0.0 or not _overlap(a.polygon, b.polygon):
                continue
            key = f"zones.lanes[{j}].direction"
            yield (
                {key, f"zones.lanes[{i}].direction"},
                f"{key}: lane {b.name!r} runs against zones.lanes[{i}] ({a.name!r}), "
                "which overlaps it",
            )


def _overlap(pa: tuple[Point, ...], pb: tuple[Point, ...]) -> bool:
    """Whether two outlines share more than `OVERLAP_SHARE` of the smaller one's area."""
    a, b = as_points(pa), as_points(pb)
    if len(a) < 3 or len(b) < 3:
        return False
    lo, hi = np.maximum(a.min(0), b.min(0)), np.minimum(a.max(0), b.max(0))
    if np.any(hi <= lo):
        return False
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 64), np.linspace(lo[1], hi[1], 64))
    grid: Floats = np.stack([gx.ravel(), gy.ravel()], axis=1)
    both = points_in_polygon(a, grid) & points_in_polygon(b, grid)
    shared = float(both.mean()) * float(np.prod(hi - lo))
    smaller = min(abs(polygon_area(a)), abs(polygon_area(b)))
    return smaller > 0 and shared > OVERLAP_SHARE * smaller


def _convex(points: Floats) -> bool:
    edges = np.roll(points, -1, axis=0) - points
    turns = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1]
    turns -= edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    return bool(np.all(turns > 0) or np.all(turns < 0))


def _homography_problems(z: ZonesConfig) -> Iterator[Problem]:
    img, world = z.homography_points, z.homography_world_m
    ki, kw = "zones.homography_points", "zones.homography_world_m"
    if bool(img) != bool(world):
        have, need = (ki, kw) if img else (kw, ki)
        yield ({have, need}, f"{need}: needed with {have}")
        return
    if not img:
        return
    for key, pts in ((ki, img), (kw, world)):
        if not _convex(as_points(pts)):
            yield (
                {ki, kw},
                f"{key}: the 4 points must be the corners of a convex quadrilateral, "
                "in the same order in homography_points and homography_world_m",
            )
            return
    # two convex quadrilaterals, corner to corner: the map cannot fold the plane's horizon
    # through the image quadrilateral; it can still be singular (a corner on a side)
    try:
        Homography.fit(img, world)
    except DegenerateError as e:
        yield ({ki, kw}, f"{ki}: degenerate homography: {e}")


def _trap_problems(z: ZonesConfig) -> Iterator[Problem]:
    t = z.speed_trap
    keys = {"zones.speed_trap.line_a", "zones.speed_trap.line_b", "zones.speed_trap.distance_m"}
    given = [bool(t.line_a), bool(t.line_b), t.distance_m > 0]
    if any(given) and not all(given):
        yield (keys, "zones.speed_trap: line_a, line_b and distance_m go together")
        return
    if not all(given):
        return
    for key, line in (("line_a", t.line_a), ("line_b", t.line_b)):
        if line[0] == line[1]:
            yield (keys, f"zones.speed_trap.{key}: the two points must differ")
            return
    a, b = as_points(t.line_a), as_points(t.line_b)
    if segments_cross(a[0], a[1], b[0], b[1]):
        yield (keys, "zones.speed_trap.line_b: crosses line_a")
