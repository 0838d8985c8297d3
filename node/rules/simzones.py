"""The zones of `sim://junction`, derived from the simulator's own camera and road model.

Everything is drawn in the plate plane, `PLATE_PLANE_M` above the road (about the bottom edge
of the simulated plates), because the rules follow a plate's bottom-centre: a plate right
above the painted stop line has its bottom-centre on the zones' stop line. Lanes are the
simulated approach lanes (traffic moves away from the camera, up the image), the solid lines
are the lane dividers before the stop line, and the homography maps the plate plane to road
metres (x across the road, z along it).
"""

from __future__ import annotations

import math

import numpy as np

from node.capture.simscene import (
    CAMERA_HEIGHT,
    LANE_DIVIDERS,
    LANE_W,
    N_LANES,
    ROAD_HALF,
    SOLID_Z,
    STOP_LINE_W,
    STOP_Z,
    Camera,
)
from node.capture.simtraffic import SPEED_LIMIT
from node.config import CaptureConfig, LaneConfig, Point, SpeedTrapConfig, ZonesConfig
from node.rules.zones import Floats

PLATE_PLANE_M = 0.5
EDGE_MARGIN_M = 0.5  # outer lanes reach this far past the kerb lines
HOMOGRAPHY_Z = (8.0, 40.0)  # from where plates come into view (7.3 m) to the far end
TRAP_Z = (10.0, 18.0)
FAR_Z = 200.0  # lanes reach this far: past where the simulated vehicles leave


def sim_zones(capture: CaptureConfig | None = None, speed_trap: bool = False) -> ZonesConfig:
    """`[zones]` for the simulated junction at the capture's main-stream size."""
    cap = capture or CaptureConfig()
    cam = Camera(cap.main_width, cap.main_height)
    near = _nearest_visible_z(cam)
    edge = ROAD_HALF + EDGE_MARGIN_M
    solid = tuple(
        (_point(_px(cam, x, max(near, SOLID_Z[0]))), _point(_px(cam, x, SOLID_Z[1])))
        for x in LANE_DIVIDERS
    )
    # the calibrated area covers every lane; its near corners kept inside the picture
    (z0, z1), hx = HOMOGRAPHY_Z, edge
    near_hx = min(hx, (cam.cx - 1.0) * z0 / cam.f)
    world = ((-near_hx, z0), (near_hx, z0), (hx, z1), (-hx, z1))
    trap = SpeedTrapConfig()
    if speed_trap:
        za, zb = TRAP_Z
        trap = SpeedTrapConfig(_across(cam, za, edge), _across(cam, zb, edge), zb - za)
    return ZonesConfig(
        stop_line=_across(cam, STOP_Z - STOP_LINE_W, edge),
        lanes=_lanes(cam, near),
        solid_lines=solid,
        homography_points=tuple(_point(_px(cam, x, z)) for x, z in world),
        homography_world_m=world,
        speed_trap=trap,
    )


def _lanes(cam: Camera, near: float) -> tuple[LaneConfig, ...]:
    """The approach lanes, from below the image's bottom edge (cut there) to `FAR_Z`."""
    lanes = []
    for i in range(N_LANES):
        x0, x1 = -ROAD_HALF + LANE_W * i, -ROAD_HALF + LANE_W * (i + 1)
        x0 -= EDGE_MARGIN_M if i == 0 else 0.0
        x1 += EDGE_MARGIN_M if i == N_LANES - 1 else 0.0
        quad = [(x0, near * 0.9), (x1, near * 0.9), (x1, FAR_Z), (x0, FAR_Z)]
        poly = _clip_to_frame(np.array([_px(cam, x, z) for x, z in quad]), cam)
        centre = (x0 + x1) / 2.0
        a, b = np.array(_px(cam, centre, near)), np.array(_px(cam, centre, FAR_Z))
        direction = (b - a) / float(np.hypot(*(b - a)))
        name = f"lane{i + 1}"
        lanes.append(LaneConfig(name, _points(poly), _point(direction), SPEED_LIMIT * 3.6))
    return tuple(lanes)


def _px(cam: Camera, x: float, z: float) -> Point:
    return cam.project(x, PLATE_PLANE_M, z)


def _point(p: Point | Floats) -> Point:
    return (round(float(p[0]), 2), round(float(p[1]), 2))


def _points(poly: Floats) -> tuple[Point, ...]:
    return tuple(_point(p) for p in poly)


def _across(cam: Camera, z: float, half: float) -> tuple[Point, ...]:
    """A line across the whole approach at distance z."""
    return (_point(_px(cam, -half, z)), _point(_px(cam, half, z)))


def _nearest_visible_z(cam: Camera) -> float:
    """The distance at which the plate plane meets the bottom edge of the image."""
    return cam.f * (CAMERA_HEIGHT - PLATE_PLANE_M) / (cam.height - cam.v0)


def _clip_to_frame(poly: Floats, cam: Camera) -> Floats:
    """The polygon cut to the image rectangle (Sutherland-Hodgman, one edge at a time)."""
    for axis, limit, keep_below in (
        (0, 0.0, False),
        (0, cam.width, True),
        (1, 0.0, False),
        (1, cam.height, True),
    ):
        out = []
        for p, q in zip(poly, np.roll(poly, -1, axis=0), strict=True):
            p_in = p[axis] <= limit if keep_below else p[axis] >= limit
            q_in = q[axis] <= limit if keep_below else q[axis] >= limit
            if p_in:
                out.append(p)
            if p_in != q_in:
                t = (limit - p[axis]) / (q[axis] - p[axis])
                out.append(p + t * (q - p))
        poly = np.array(out)
    return poly


ZOOM_Z = (STOP_Z - 6.0, STOP_Z + 8.0)  # the road the zoom pass covers, near and far
ZOOM_WIDTH = 960  # main pixels: every lane's plates in the window's rows above the lores area
ZOOM_MARGIN = 48  # main pixels beyond ZOOM_Z (plates are drawn above their plate-plane point)
OVERLAP = 96  # main pixels the lores pass reaches into the zoom window: a whole near plate
STEP = 32  # the bundled model's size multiple


def sim_zoom_window(capture: CaptureConfig | None = None) -> tuple[Point, ...]:
    """A `detector.zoom_window` around where plates cross the stop line: from 6 m before it
    to 8 m past it, `ZOOM_WIDTH` main pixels wide, its height a multiple of `STEP` (the
    zoom pass runs at full resolution, so that is the model's input)."""
    cap = capture or CaptureConfig()
    cam = Camera(cap.main_width, cap.main_height)
    near = _px(cam, 0.0, ZOOM_Z[0])[1] + ZOOM_MARGIN
    far = _px(cam, 0.0, ZOOM_Z[1])[1] - ZOOM_MARGIN
    w = min(ZOOM_WIDTH, cap.main_width)
    h = min(cap.main_height, math.ceil((near - far) / STEP) * STEP)
    y0 = min(max(0.0, (near + far) / 2 - h / 2), cap.main_height - h)
    x0 = (cap.main_width - w) / 2
    return ((x0, y0), (x0 + w, y0 + h))


def sim_area(capture: CaptureConfig | None = None) -> tuple[Point, ...]:
    """A `detector.area` for the lores pass: the whole width, from `OVERLAP` main pixels
    above the zoom window's near edge (a plate there is whole in one pass or the other) to
    the bottom of the frame, raised to a multiple of `STEP` lores rows. Above it plates are a
    few lores pixels high (the zoom pass finds them) or past where the sim's rules look."""
    cap = capture or CaptureConfig()
    (_, _), (_, zoom_bottom) = sim_zoom_window(cap)
    sy = cap.main_height / cap.lores_height
    rows = math.ceil((cap.main_height - zoom_bottom + OVERLAP) / sy / STEP) * STEP
    top = max(0.0, cap.main_height - rows * sy)
    return ((0.0, top), (float(cap.main_width), float(cap.main_height)))


def sim_passes(capture: CaptureConfig | None = None) -> tuple[tuple[Point, ...], tuple[Point, ...]]:
    """The sim's (`detector.zoom_window`, `detector.area`)."""
    return sim_zoom_window(capture), sim_area(capture)
