"""Zone geometry, and the `[zones]` config: every way it can be wrong, each said in one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from node.config import LaneConfig, RulesConfig, ZonesConfig
from node.configload import ConfigError, key_lines, load, to_toml_dict, validate
from node.rules.zones import (
    DegenerateError,
    Homography,
    Zones,
    crossing_fraction,
    crossings,
    plate_points,
    points_in_polygon,
    polygon_area,
    self_crossing,
    side_of,
)

ROOT = Path(__file__).resolve().parent.parent

# --- geometry --------------------------------------------------------------------------------


def test_side_and_crossings() -> None:
    a, b = (100.0, 500.0), (900.0, 500.0)  # pointing right: below it (y larger) is positive
    assert side_of(a, b, [(300, 510), (300, 480)]).tolist() == [10.0, -20.0]
    p0 = [(300, 520), (300, 480), (50, 520), (300, 520), (300, 500), (300, 520)]
    p1 = [(300, 480), (300, 520), (50, 480), (320, 510), (300, 490), (300, 500)]
    # up across, down across, beside the segment, not reaching it, leaving the line, onto it
    assert crossings(a, b, p0, p1).tolist() == [-1, 1, 0, 0, -1, 0]
    assert crossing_fraction(a, b, [(0, 520)], [(0, 440)]).tolist() == [0.25]


def test_point_in_polygon_vectorised() -> None:
    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    pts = [(5, 5), (-1, 5), (10.5, 5), (5, 9.9), (5, 10.1)]
    assert points_in_polygon(square, pts).tolist() == [True, False, False, True, False]
    u_shape = [(0, 0), (3, 0), (3, 8), (7, 8), (7, 0), (10, 0), (10, 10), (0, 10)]
    assert points_in_polygon(u_shape, [(5, 4), (5, 9), (1, 4)]).tolist() == [False, True, True]
    assert polygon_area(square) == 100.0
    assert self_crossing(square) is None
    assert self_crossing([(0, 0), (10, 10), (10, 0), (0, 10)]) == (0, 2)


def test_plate_points_are_bottom_centres() -> None:
    assert plate_points([(10, 20, 30, 40), (0, 0, 4, 2)]).tolist() == [[20, 40], [2, 2]]


def test_homography_round_trip_on_known_points() -> None:
    # a camera looking along a road: a 7 m x 30 m rectangle seen as a trapezoid
    image = [(456.0, 792.0), (1464.0, 792.0), (1086.0, 198.0), (834.0, 198.0)]
    world = [(-3.5, 10.0), (3.5, 10.0), (3.5, 40.0), (-3.5, 40.0)]
    h = Homography.fit(image, world)
    assert h.to_world(image) == pytest.approx(np.array(world), abs=1e-9)
    # the same pinhole camera (f = 1440, height 5.5 m above the plane) at other points
    f, height, cx = 1440.0, 5.5, 960.0
    road = np.array([(0.0, 20.0), (2.0, 15.0), (-1.0, 33.0)])
    pixels = np.stack([cx + f * road[:, 0] / road[:, 1], f * height / road[:, 1]], axis=1)
    assert h.to_world(pixels) == pytest.approx(road, abs=1e-6)
    assert h.to_image(road) == pytest.approx(pixels, abs=1e-6)
    # one pixel is 1/20 m across at 20 m, and (20^2 / (1440 * 5.5)) m along
    assert h.metres_per_pixel([(960.0, 396.0)])[0] == pytest.approx(400 / 7920, rel=1e-2)


def test_degenerate_homography_refused() -> None:
    with pytest.raises(DegenerateError, match="three on a line"):
        Homography.fit([(0, 0), (1, 1), (2, 2), (3, 3)], [(0, 0), (1, 0), (1, 1), (0, 1)])


def test_zones_from_config_and_lane_lookup() -> None:
    cfg = ZonesConfig(
        stop_line=((0.0, 50.0), (100.0, 50.0)),
        lanes=(
            LaneConfig("a", ((0.0, 0.0), (50.0, 0.0), (50.0, 100.0), (0.0, 100.0), (0.0, 0.0)),
                       (0.0, -3.0)),
            LaneConfig("b", ((50.0, 0.0), (100.0, 0.0), (100.0, 100.0), (50.0, 100.0)),
                       (0.0, -1.0)),
        ),
    )  # fmt: skip
    z = Zones.from_config(cfg)
    assert len(z.lanes[0].polygon) == 4  # the closing point is dropped
    assert z.lanes[0].direction.tolist() == [0.0, -1.0]
    assert z.lane_index([(25, 50), (75, 50), (150, 50)]).tolist() == [0, 1, -1]
    assert z.homography is None
    assert z.speed_trap is None


# --- the config ------------------------------------------------------------------------------

GOOD = """\
[zones]
stop_line = [[100, 500], [1800, 520]]
homography_points = [[456, 792], [1464, 792], [1086, 198], [834, 198]]
homography_world_m = [[-3.5, 10], [3.5, 10], [3.5, 40], [-3.5, 40]]
solid_lines = [[[900, 1000], [940, 600]]]

[[zones.lanes]]
name = "left"
polygon = [[100, 1000], [900, 1000], [900, 100], [100, 100]]
direction = "up"
speed_limit_kmh = 40

[[zones.lanes]]
name = "right"
polygon = [[900, 1000], [1800, 1000], [1800, 100], [900, 100]]
direction = [0.1, -1]

[zones.speed_trap]
line_a = [[100, 800], [1800, 800]]
line_b = [[100, 600], [1800, 600]]
distance_m = 10
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    return info.value.problems


def test_a_good_zones_config_loads_and_round_trips(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, GOOD))
    z = cfg.zones
    assert z.stop_line == ((100.0, 500.0), (1800.0, 520.0))
    assert [lane.name for lane in z.lanes] == ["left", "right"]
    assert z.lanes[0].direction == (0.0, -1.0)
    assert z.lanes[1].speed_limit_kmh == 50.0
    assert z.speed_trap.distance_m == 10.0
    again = write(tmp_path, tomli_w.dumps(to_toml_dict(cfg)))
    assert load(again) == cfg
    zones = Zones.from_config(z)
    assert zones.homography is not None
    assert zones.speed_trap is not None


def test_key_lines_know_arrays_of_tables() -> None:
    lines = key_lines(GOOD)
    assert (lines["zones.lanes[0]"], lines["zones.lanes[0].polygon"]) == (7, 9)
    assert (lines["zones.lanes[1]"], lines["zones.lanes[1].direction"]) == (13, 16)
    assert lines["zones.speed_trap.distance_m"] == 21


def replace_line(text: str, start: str, new: str) -> str:
    lines = text.splitlines()
    (i,) = [i for i, line in enumerate(lines) if line.startswith(start)]
    lines[i] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("start", "new", "problem"),
    [
        ("polygon = [[100, 1000]", "polygon = [[1, 1], [2, 2]]",
         "zones.lanes[0].polygon: must have at least 3 points, got 2 (node.toml line 9)"),
        ("polygon = [[100, 1000]", "polygon = [[1, 1], [2, 2, 3], [4, 4]]",
         "zones.lanes[0].polygon[1]: must be a point [x, y], got [2, 2, 3] (node.toml line 9)"),
        ("polygon = [[100, 1000]", "polygon = [[1, 1], ['a', 2], [4, 4]]",
         "zones.lanes[0].polygon[1]: must be a number, got 'a' (node.toml line 9)"),
        ("polygon = [[100, 1000]", "polygon = 5",
         "zones.lanes[0].polygon: must be a list, got 5 (node.toml line 9)"),
        ("polygon = [[100, 1000]", "polygon = [[100, 1000], [900, 100], [900, 1000], [100, 100]]",
         "zones.lanes[0].polygon: crosses itself (edges 0 and 2) (node.toml line 9)"),
        ("polygon = [[100, 1000]", "polygon = [[100, 100], [500, 500], [900, 900]]",
         "zones.lanes[0].polygon: encloses no area (its points are on one line) "
         "(node.toml line 9)"),
        ("polygon = [[100, 1000]", "polygon = [[100, 100], [100, 100], [900, 900]]",
         "zones.lanes[0].polygon: point 1 repeats point 0 (node.toml line 9)"),
        ("polygon = [[100, 1000]", "polygon = [[100, 1000], [2000, 1000], [900, 100]]",
         "zones.lanes[0].polygon: point [2000, 1000] is outside the 1920x1080 main image "
         "(capture.main_width/main_height) (node.toml line 9)"),
        ('direction = "up"', 'direction = "north"',
         "zones.lanes[0].direction: must be one of up, down, left, right or a vector [dx, dy], "
         "got 'north' (node.toml line 10)"),
        ('direction = "up"', "direction = [0, 0]",
         "zones.lanes[0].direction: must not be [0, 0] (node.toml line 10)"),
        ('direction = "up"', "",
         "zones.lanes[0].direction: required key missing (node.toml line 7)"),
        ('name = "right"', 'name = "left"',
         "zones.lanes[1].name: 'left' is the name of zones.lanes[0] (node.toml line 14)"),
        ("speed_limit_kmh", "speed_limit_kmh = 500",
         "zones.lanes[0].speed_limit_kmh: must be between 5 and 200, got 500 (node.toml line 11)"),
        ("speed_limit_kmh", "speed_limit = 40",
         "zones.lanes[0].speed_limit: unknown key (did you mean 'speed_limit_kmh'?) "
         "(node.toml line 11)"),
        ("stop_line", "stop_line = [[100, 500]]",
         "zones.stop_line: must have 2 points (or none), got 1 (node.toml line 2)"),
        ("stop_line", "stop_line = [[100, 500], [100, 500]]",
         "zones.stop_line: the two points must differ (node.toml line 2)"),
        ("solid_lines", "solid_lines = [[[900, 1000]]]",
         "zones.solid_lines[0]: must have at least 2 points, got 1 (node.toml line 5)"),
        ("solid_lines", "solid_lines = [[[900, 1000], [900, 1000]]]",
         "zones.solid_lines[0]: point 1 repeats point 0 (node.toml line 5)"),
        ("homography_world_m", "",
         "zones.homography_world_m: needed with zones.homography_points (node.toml line 1)"),
        ("homography_points", "homography_points = [[456, 792], [1464, 792], [1086, 198]]",
         "zones.homography_points: must have 4 points (or none), got 3 (node.toml line 3)"),
        ("homography_points", "homography_points = [[456, 792], [1464, 792], [834, 198], "
         "[1086, 198]]",
         "zones.homography_points: the 4 points must be the corners of a convex quadrilateral, "
         "in the same order in homography_points and homography_world_m (node.toml line 3)"),
        ("homography_world_m", "homography_world_m = [[0, 0], [1, 0], [2, 0], [0, 1]]",
         "zones.homography_world_m: the 4 points must be the corners of a convex "
         "quadrilateral, in the same order in homography_points and homography_world_m "
         "(node.toml line 4)"),
        ("distance_m", "",
         "zones.speed_trap: line_a, line_b and distance_m go together (node.toml line 18)"),
        ("line_b", "line_b = [[100, 600], [1800, 900]]",
         "zones.speed_trap.line_b: crosses line_a (node.toml line 20)"),
    ],
)  # fmt: skip
def test_every_zone_problem_names_key_and_line(
    tmp_path: Path, start: str, new: str, problem: str
) -> None:
    assert problems(tmp_path, replace_line(GOOD, start, new)) == [problem]


def test_lanes_must_be_tables(tmp_path: Path) -> None:
    assert problems(tmp_path, "[zones]\nlanes = [1]\n") == [
        "zones.lanes[0]: must be a table, got 1 (node.toml line 2)"
    ]


def test_lanes_may_run_opposite_ways_only_side_by_side(tmp_path: Path) -> None:
    two_way = replace_line(GOOD, "direction = [0.1, -1]", 'direction = "down"')
    assert [lane.direction for lane in load(write(tmp_path, two_way)).zones.lanes] == [
        (0.0, -1.0),
        (0.0, 1.0),
    ]
    overlapping = replace_line(
        two_way, "polygon = [[900, 1000]", "polygon = [[700, 1000], [1800, 1000], [1800, 100]]"
    )
    assert problems(tmp_path, overlapping) == [
        "zones.lanes[1].direction: lane 'right' runs against zones.lanes[0] ('left'), which "
        "overlaps it (node.toml line 16)"
    ]


def test_overrides_reach_into_zones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, GOOD), ["zones.stop_line=[[1, 2]]"])
    assert info.value.problems == ["zones.stop_line: must have 2 points (or none), got 1 (--set)"]


def test_signal_and_tracker_cross_checks() -> None:
    with pytest.raises(ConfigError) as info:
        validate(
            {
                "signal": {"source": "serial", "gpio_red_line": 4, "gpio_amber_line": 4},
                "tracker": {"low_score": 0.6, "high_score": 0.5},
            }
        )
    assert info.value.problems == [
        "signal.serial_url: needed when signal.source = 'serial'",
        "signal.gpio_amber_line: must differ from signal.gpio_red_line, got 4 for both",
        "tracker.low_score: must not exceed tracker.high_score (0.5), got 0.6",
    ]
    with pytest.raises(ConfigError, match=r"signal\.gpio_red_line: needed"):
        validate({"signal": {"source": "gpio"}})


def test_every_nested_key_is_documented() -> None:
    """Tables inside sections ([zones.lanes], [rules.red_light], ...) have their own tables."""
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    nested = {
        "zones.lanes": LaneConfig,
        "zones.speed_trap": type(ZonesConfig().speed_trap),
        **{f"rules.{f.name}": f.default_factory for f in _tables(RulesConfig)},
    }
    missing = []
    for name, cls in nested.items():
        head = f"[[{name}]]" if name == "zones.lanes" else f"[{name}]"
        assert f"#### {head}" in doc, f"{head} not documented"
        body = doc.split(f"#### {head}", 1)[1].split("\n#", 1)[0]
        missing += [
            f"{name}.{f.name}"
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f"| `{f.name}` |" not in body
        ]
    assert not missing


def _tables(cls: type) -> list[dataclasses.Field[object]]:
    return [f for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING]


def test_zones_example_in_docs_is_valid() -> None:
    import tomllib

    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = doc.split("### [zones]", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    zones = validate(tomllib.loads(example)).zones
    assert (len(zones.lanes), zones.speed_trap.distance_m) == (1, 8.0)
