"""The zones derived for sim://junction agree with the simulator's own road and events."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from node.capture.sim import SimSource
from node.capture.simscene import LANE_DIVIDERS, LANE_W, ROAD_HALF, STOP_LINE_W, STOP_Z
from node.capture.simtraffic import Traffic
from node.config import CaptureConfig, Config
from node.configload import load, to_toml_dict
from node.infer.detector import box_of
from node.rules.simzones import sim_area, sim_zones, sim_zoom_window
from node.rules.zones import Zones, crossings, plate_points

FRAMES = 400  # 40 s of simulated time at 10 fps: more than one signal cycle
LINE_Z = STOP_Z - STOP_LINE_W


@dataclass
class Seen:
    """One vehicle over the run: its plate's bottom-centre and its road position per frame."""

    plate: dict[int, tuple[float, float]] = field(default_factory=dict)
    road: dict[int, tuple[float, float, int]] = field(default_factory=dict)  # x, z, direction


@dataclass
class Run:
    vehicles: dict[int, Seen]
    phases: list[str]
    red_runners: set[int]
    lanes_checked: int


def traffic_of(source: SimSource) -> Traffic:
    traffic = source._traffic  # the test looks behind the source for the vehicles' positions
    assert traffic is not None
    return traffic


def simulate(seed: int) -> Run:
    source = SimSource(f"sim://junction?seed={seed}&fps=0&violations=0.4", CaptureConfig())
    source.open(threading.Event())
    zones = Zones.from_config(sim_zones())
    vehicles: dict[int, Seen] = {}
    phases, checked = [], 0
    try:
        for _ in range(FRAMES):
            frame = source.read()
            assert frame is not None
            assert frame.truth is not None
            phases.append(str(frame.meta["signal_phase"]))
            for v in traffic_of(source).vehicles:
                vehicles.setdefault(v.vid, Seen()).road[frame.seq] = (v.x, v.z, v.direction)
            for plate in frame.truth:
                x0, y0, x1, y1 = plate.box
                if x0 <= 0 or y0 <= 0 or x1 >= 1920 or y1 >= 1080:
                    continue  # cut by the frame edge: the box is not the plate's
                (px, py), seen = plate_points([plate.box])[0], vehicles[plate.vehicle_id]
                seen.plate[frame.seq] = (float(px), float(py))
                checked += _check_lane(zones, seen.road[frame.seq], (px, py))
        runners = {t.vehicle_id for t in source.true_violations if t.rule == "red_light"}
    finally:
        source.close()
    return Run(vehicles, phases, runners, checked)


def _check_lane(zones: Zones, road: tuple[float, float, int], point: tuple[float, float]) -> int:
    x, _, direction = road
    if direction < 0 or min(abs(x - d) for d in LANE_DIVIDERS) < 0.25:
        return 0  # wrong-way front plates sit lower; a plate on a lane line is in either lane
    want = min(2, max(0, math.floor((x + ROAD_HALF) / LANE_W)))
    got = int(zones.lane_index([point])[0])
    assert got == want, (x, point, got)
    return 1


@pytest.fixture(scope="module")
def run() -> Run:
    return simulate(seed=5)


def test_sim_zones_are_a_valid_config(tmp_path: Path) -> None:
    cfg = Config(zones=sim_zones(speed_trap=True))
    path = tmp_path / "node.toml"
    path.write_text(tomli_w.dumps(to_toml_dict(cfg)), encoding="utf-8")
    assert load(path) == cfg
    small = CaptureConfig(main_width=1280, main_height=720, lores_width=640, lores_height=360)
    assert Zones.from_config(sim_zones(small)).homography is not None


def test_truth_plates_fall_in_their_lanes(run: Run) -> None:
    assert run.lanes_checked > 1000  # every visible plate of every frame was checked


def crossing_seq(zones: Zones, plate: dict[int, tuple[float, float]]) -> Iterator[int]:
    """Frames at which the plate point has just crossed the stop line going up the image."""
    line = zones.stop_line
    assert line is not None
    seqs = sorted(plate)
    pts = np.array([plate[s] for s in seqs])
    steps = crossings(line.a, line.b, pts[:-1], pts[1:])
    for k in np.nonzero(steps)[0]:
        if pts[k + 1, 1] < pts[k, 1]:
            yield seqs[k + 1]


def test_stop_line_crossings_match_the_simulated_road(run: Run) -> None:
    """A plate crosses the zones' stop line in the frame its vehicle's rear passes the painted
    line (give or take a frame), and only red-light runners cross it on a settled red."""
    zones = Zones.from_config(sim_zones())
    compared, red_crossers = 0, set()
    for vid, seen in run.vehicles.items():
        for seq in crossing_seq(zones, seen.plate):
            rear_past = [s for s, (_, z, d) in sorted(seen.road.items()) if d > 0 and z >= LINE_Z]
            assert rear_past, vid
            assert abs(seq - rear_past[0]) <= 1, (vid, seq, rear_past[0])
            compared += 1
            if run.phases[seq] == "RED" and run.phases[max(0, seq - 20)] == "RED":
                red_crossers.add(vid)
    assert compared >= 20
    assert red_crossers
    assert red_crossers <= run.red_runners


def test_every_plate_near_enough_is_whole_in_one_detector_pass() -> None:
    """The sim's zoom window and lores area (`detector.area`) leave no gap: every visible
    plate from the window's far edge to the bottom of the frame lies wholly inside the window
    or inside the area, so one of the two passes sees all of it. Both are sized in steps of
    32 (the model runs at those sizes without padding)."""
    cap = CaptureConfig()
    window, area = box_of(sim_zoom_window(cap)), box_of(sim_area(cap))
    assert window is not None
    assert area is not None
    zx0, zy0, zx1, zy1 = window
    ax0, ay0, ax1, ay1 = area
    assert (zx1 - zx0) % 32 == 0
    assert (zy1 - zy0) % 32 == 0
    assert round((ay1 - ay0) * cap.lores_height / cap.main_height) % 32 == 0
    assert (ax0, ax1, ay1) == (0, cap.main_width, cap.main_height)
    assert zy1 - ay0 >= 96  # the overlap: a whole near plate
    source = SimSource("sim://junction?seed=5&fps=0&violations=0.4", cap)
    source.open(threading.Event())
    checked = 0
    try:
        for _ in range(200):
            frame = source.read()
            assert frame is not None
            assert frame.truth is not None
            for plate in frame.truth:
                x0, y0, x1, y1 = plate.box
                if y0 < zy0 or plate.visible < 0.5:
                    continue
                in_window = zx0 <= x0 and x1 <= zx1 and y1 <= zy1
                assert in_window or y0 >= ay0, (plate.box, plate.layout)
                checked += 1
    finally:
        source.close()
    assert checked > 300
