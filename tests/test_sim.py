"""`sim://junction`: determinism, plate ground truth on the pixels, true violations, pacing."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from node.capture.frame import ArrayRef, CaptureError, Frame, MainRef, PlateTruth
from node.capture.platerender import COLORS, LAYOUTS, PlateSpec, render_plate
from node.capture.sim import SimSource
from node.capture.simscene import LANE_DIVIDERS, SOLID_Z, background
from node.capture.simtraffic import KINDS, RULES, Traffic, TrueViolation, Vehicle
from node.config import CaptureConfig

SMALL = CaptureConfig(main_width=640, main_height=360, lores_width=320, lores_height=180)
U8Array = npt.NDArray[np.uint8]


def frames(url: str, n: int, cfg: CaptureConfig | None = None) -> Iterator[Frame]:
    src = SimSource(url, cfg or CaptureConfig())
    src.open(threading.Event())
    try:
        for _ in range(n):
            frame = src.read()
            assert frame is not None
            yield frame
    finally:
        src.close()


def digest(a: U8Array) -> str:
    return hashlib.sha256(a.tobytes()).hexdigest()


def test_same_seed_gives_the_same_pixels() -> None:
    def run(seed: int) -> tuple[list[str], str]:
        fs = list(frames(f"sim://junction?seed={seed}&fps=0", 30))
        return [digest(f.lores) for f in fs], digest(fs[-1].main.array())

    lores_a, main_a = run(7)
    lores_b, main_b = run(7)
    lores_c, main_c = run(8)
    assert lores_a == lores_b
    assert main_a == main_b
    assert len(set(lores_a)) == 30  # traffic moves: every frame differs
    assert main_c != main_a
    assert sum(a != c for a, c in zip(lores_a, lores_c, strict=True)) == 30


def test_main_array_hands_over_the_rendered_main_like_a_camera() -> None:
    lazy = list(frames("sim://junction?seed=3&fps=0", 5, SMALL))
    eager = list(frames("sim://junction?seed=3&fps=0&main=array", 5, SMALL))
    for a, b in zip(lazy, eager, strict=True):
        assert isinstance(b.main, ArrayRef)
        assert not isinstance(a.main, ArrayRef)
        assert b.main.nbytes == 640 * 360 * 3  # the frame holds the image, as a camera's does
        assert digest(b.main.array()) == digest(a.main.array())
        assert digest(b.lores) == digest(a.lores)


def test_frame_shapes_and_main_reference() -> None:
    f = next(frames("sim://junction?seed=1&fps=0", 1))
    assert f.seq == 0
    assert f.lores.shape == (544, 960, 3)
    assert f.lores.dtype == np.uint8
    assert f.lores.flags.c_contiguous
    assert isinstance(f.main, MainRef)
    assert f.main.shape == (1080, 1920, 3)
    assert f.main.nbytes < 8192  # the ring holds a recipe, not an image
    main = f.main.array()
    assert main.shape == (1080, 1920, 3)
    assert main.dtype == np.uint8
    assert main.flags.c_contiguous
    assert f.lores_to_main == pytest.approx((2.0, 1080 / 544))
    assert f.meta["signal_phase"] in ("GREEN", "AMBER", "RED")
    # The lores image is the main image at lores size (same scene, same places).
    small = np.asarray(Image.fromarray(main).resize((960, 544), Image.Resampling.BOX), dtype=float)
    assert float(np.abs(small - f.lores).mean()) < 6.0


@dataclass
class PlateChecks:
    layouts: set[str] = field(default_factory=set)
    colors: set[str] = field(default_factory=set)
    widths: list[float] = field(default_factory=list)
    compared: int = 0
    hidden: int = 0


def check_plate(main: U8Array, p: PlateTruth) -> float:
    """Checks that the box holds the plate; returns how well it matches a fresh rendering."""
    x0, y0, x1, y1 = (int(v) for v in p.box)
    inner = main[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].reshape(-1, 3).astype(float)
    on_sheet = float((np.abs(inner - COLORS[p.color][0]).max(axis=1) < 45).mean())
    road = np.asarray(background(1920, 1080))[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].reshape(-1, 3)
    assert float(np.abs(inner - road).mean()) > 40, p  # not the empty road
    if y1 - y0 >= 14:  # the sheet shows between glyphs; on smaller plates they blur over it
        assert on_sheet > 0.25, (p, on_sheet)
    elif y1 - y0 >= 9:
        assert on_sheet > 0.15, (p, on_sheet)
    return match_score(main, p.box, p)


def match_score(main: U8Array, box: tuple[float, float, float, float], p: PlateTruth) -> float:
    """Normalised cross-correlation of the pixels in `box` with the plate rendered afresh."""
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = main[y0:y1, x0:x1].astype(float).mean(axis=2)
    ref = render_plate(p.text, p.layout, p.color, (x1 - x0) / (LAYOUTS[p.layout][0] / 1000.0))
    ref_img = Image.fromarray(np.ascontiguousarray(ref[:, :, :3]))
    want = np.asarray(ref_img.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS), dtype=float)
    a, b = crop - crop.mean(), want.mean(axis=2) - want.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-9))


def test_truth_boxes_lie_on_the_plate_pixels() -> None:
    seen = PlateChecks()
    for f in frames("sim://junction?seed=3&fps=0&rate=90", 160):
        if f.seq % 8:
            continue
        main = f.main.array()
        assert f.truth is not None
        for p in f.truth:
            x0, y0, x1, y1 = p.box
            assert 0 <= x0 < x1 <= 1920
            assert 0 <= y0 < y1 <= 1080
            assert 0.0 <= p.visible <= 1.0
            if p.visible == 0.0 and x1 - x0 >= 16:  # wholly behind a nearer vehicle
                assert match_score(main, p.box, p) < 0.3, p
                seen.hidden += 1
            if p.visible < 1.0 or x1 - x0 < 10 or y1 - y0 < 5:
                continue
            score = check_plate(main, p)
            seen.layouts.add(p.layout)
            seen.colors.add(p.color)
            seen.widths.append(x1 - x0)
            if x1 - x0 >= 30:  # big enough to compare glyph for glyph
                assert score > 0.8, (p, score)
                # a box 3 px off matches clearly worse: the check can tell
                assert match_score(main, (x0 + 3, y0, x1 + 3, y1), p) < score - 0.1
                seen.compared += 1
    assert seen.layouts == set(LAYOUTS)
    assert len(seen.colors) >= 2
    assert min(seen.widths) <= 16
    assert max(seen.widths) >= 60
    assert any(w >= 12 for w in seen.widths)
    assert seen.compared >= 10
    assert seen.hidden >= 1


def test_every_rule_is_broken_and_the_signal_cycles() -> None:
    url = "sim://junction?seed=2&fps=0&rate=60&violations=0.5"
    src = SimSource(url, SMALL)
    src.open(threading.Event())
    phases: set[str] = set()
    texts: set[str] = set()
    hidden = 0
    for _ in range(1800):  # three simulated minutes at 10 frames per second
        f = src.read()
        assert f is not None
        assert f.truth is not None
        phases.add(str(f.meta["signal_phase"]))
        texts.update(p.text for p in f.truth)
        hidden += sum(p.visible < 1.0 for p in f.truth)
    violations = src.true_violations
    src.close()
    assert phases == {"GREEN", "AMBER", "RED"}
    assert {v.rule for v in violations} == set(RULES)
    assert all(isinstance(v, TrueViolation) and 0 <= v.seq < 1800 for v in violations)
    assert [v.seq for v in violations] == sorted(v.seq for v in violations)
    for v in violations:
        if v.rule == "wrong_way" and v.vehicle == "motorbike":
            assert v.plate not in texts  # coming towards us: no front plate to see
        else:
            assert v.plate in texts, v
    assert any(v.rule == "wrong_way" and v.vehicle != "motorbike" for v in violations)
    assert hidden > 0  # plates do get hidden behind nearer vehicles
    stats = src.stats()
    assert stats["frames"] == 1800
    assert int(stats["vehicles_spawned"]) > 150


def test_red_light_violations_happen_on_red() -> None:
    src = SimSource("sim://junction?seed=4&fps=0&rate=60&violations=0.6", SMALL)
    src.open(threading.Event())
    phase_at = {}
    for _ in range(900):
        f = src.read()
        assert f is not None
        phase_at[f.seq] = f.meta["signal_phase"]
    reds = [v for v in src.true_violations if v.rule == "red_light"]
    assert reds
    assert all(phase_at[v.seq] == "RED" for v in reds)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("sim://junction?seed=1&colour=red", "'colour'"),
        ("sim://junction?sed=1", "'sed'"),
        ("sim://junction?seed=x", "bad value"),
        ("sim://junction?violations=2", "violations"),
        ("sim://junction?rate=-1", "rate"),
        ("sim://junction?seed=1&seed=2", "twice"),
        ("sim://junction?main=yuv", "main='yuv'"),
        ("sim://roundabout", "sim://junction"),
    ],
)
def test_bad_urls_raise_capture_error(url: str, needle: str) -> None:
    with pytest.raises(CaptureError, match=needle):
        SimSource(url, CaptureConfig())


def test_url_defaults_and_fps_override() -> None:
    src = SimSource("sim://junction", CaptureConfig(fps=12.0))
    assert (src.params.seed, src.params.rate, src.params.violations) == (1, 40.0, 0.25)
    assert src.fps == 12.0
    assert src.url == "sim://junction"
    assert SimSource("sim://junction?fps=0", CaptureConfig()).fps == 0.0
    assert SimSource("sim://junction?fps=25", CaptureConfig()).fps == 25.0


def test_read_before_open_raises() -> None:
    with pytest.raises(CaptureError, match="not open"):
        SimSource("sim://junction", SMALL).read()


def test_read_paces_itself_and_stop_is_immediate() -> None:
    src = SimSource("sim://junction?fps=20", SMALL)
    stop = threading.Event()
    src.open(stop)
    began = time.monotonic()
    for _ in range(6):
        assert src.read() is not None
    assert time.monotonic() - began >= 0.24  # frames 0..5 are due at 0, 50, ..., 250 ms
    slow = SimSource("sim://junction?fps=1", SMALL)
    slow.open(stop)
    assert slow.read() is not None
    threading.Timer(0.1, stop.set).start()
    began = time.monotonic()
    assert slow.read() is None  # would have waited a second
    assert time.monotonic() - began < 0.6
    assert src.read() is None
    slow.close()
    src.close()


def test_simulation_does_not_depend_on_pacing() -> None:
    cfg50 = CaptureConfig(
        fps=50.0, main_width=640, main_height=360, lores_width=320, lores_height=180
    )
    fast = [digest(f.lores) for f in frames("sim://junction?seed=9&fps=0", 5, cfg50)]
    paced = [digest(f.lores) for f in frames("sim://junction?seed=9&fps=50", 5, SMALL)]
    assert fast == paced


def test_unpaced_frames_carry_simulated_time_not_wall_clock() -> None:
    fs = list(frames("sim://junction?seed=1&fps=0", 6))  # capture.fps = 10 by default
    steps = {b.mono_ns - a.mono_ns for a, b in itertools.pairwise(fs)}
    assert steps == {100_000_000}  # 1/fps of simulated time, however fast they were made
    assert {b.utc_ns - a.utc_ns for a, b in itertools.pairwise(fs)} == steps
    assert abs(fs[0].utc_ns - time.time_ns()) < 60 * 10**9  # anchored at now


def test_the_sims_speeders_are_over_the_enforced_tolerance() -> None:
    """The sim records speeding above the limit plus the rule's default tolerance, the
    offence the node enforces (a rider slowed to 52 km/h in a 50 zone is not fined)."""
    from node.capture.simtraffic import SPEED_LIMIT, SPEEDING_OVER
    from node.config import SpeedingConfig

    want = SPEED_LIMIT * 3.6 + SpeedingConfig().tolerance_kmh
    assert pytest.approx(want) == SPEEDING_OVER * 3.6


@pytest.mark.parametrize(
    ("crossing_z", "recorded", "unresolvable"),
    [
        (SOLID_Z[1] - 0.8, True, False),  # well before the marking's end: an offence
        (SOLID_Z[1] - 0.3, True, True),  # too near its end for any camera to call
        (SOLID_Z[1] + 0.3, True, True),  # just past it: recorded, but unresolvable too
        (SOLID_Z[1] + 0.8, False, False),  # past it: a lawful lane change
    ],
)
def test_a_solid_line_offence_is_judged_where_the_plate_crosses_the_line(
    crossing_z: float, recorded: bool, unresolvable: bool
) -> None:
    """The step that crosses the lane line is judged at the crossing, not where the step ends
    (a car crossing 0.3 m before the marking's end, 0.5 m past it a frame later, offended)."""
    traffic = Traffic(np.random.default_rng(1), 0.0, 0.0, 0.1)
    divider = LANE_DIVIDERS[1]
    car = Vehicle(
        7,
        KINDS[1],
        0,
        PlateSpec("98A-123.45", "car1", "white"),
        "solid_line",
        divider - 0.1,
        crossing_z + 0.4,
        8.0,
        8.0,
        divider - 3.5,
        (0.0, 0.0, 0.0),
    )
    traffic._record(car, 12, "GREEN", (crossing_z - 0.4, crossing_z + 4.1, divider + 0.1))
    got = [(v.rule, v.seq, v.unresolvable) for v in traffic.violations]
    assert got == ([("solid_line", 12, unresolvable)] if recorded else [])
