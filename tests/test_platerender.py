"""The Vietnamese plate renderer: formats, sizes, colours and determinism."""

from __future__ import annotations

import re

import numpy as np
import pytest

from node.capture.platerender import (
    COLORS,
    LAYOUTS,
    PLATE_PATTERNS,
    PROVINCES,
    PlateSpec,
    plate_pixel_size,
    plate_rows,
    random_plate_color,
    random_plate_text,
    render_plate,
)

# The formats written out independently of the module's own patterns.
CAR_RE = re.compile(r"(\d{2})([A-HJ-NPR-VX-Z])-(\d{3}\.\d{2}|\d{4})")
MOTO_RE = re.compile(r"(\d{2})-([A-HJ-NPR-VX-Z])([1-9]) (\d{3}\.\d{2}|\d{4})")
SAMPLE_TEXT = {"car1": "98A-123.45", "car2": "98A-123.45", "moto": "29-B1 123.45"}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_random_text_matches_the_vietnamese_format(layout: str) -> None:
    rng = np.random.default_rng(5)
    texts = [random_plate_text(layout, rng) for _ in range(300)]
    pattern = MOTO_RE if layout == "moto" else CAR_RE
    for text in texts:
        m = pattern.fullmatch(text)
        assert m is not None, text
        assert PLATE_PATTERNS[layout].fullmatch(text), text
        assert int(m.group(1)) in PROVINCES
        assert not set(text) & set("IOQW")
    serials = {len(t.split("-" if layout != "moto" else " ")[-1]) for t in texts}
    assert serials == {4, 6}  # both "1234" and "123.45" occur
    assert len(set(texts)) > 290


def test_random_text_is_deterministic_from_the_generator() -> None:
    a = [random_plate_text("moto", np.random.default_rng(9)) for _ in range(3)]
    assert a == [a[0]] * 3
    rng1, rng2 = np.random.default_rng(11), np.random.default_rng(11)
    assert [random_plate_text("car1", rng1) for _ in range(20)] == [
        random_plate_text("car1", rng2) for _ in range(20)
    ]


def test_plate_colour_mix_is_mostly_white() -> None:
    rng = np.random.default_rng(1)
    colors = [random_plate_color(rng) for _ in range(2000)]
    counts = {c: colors.count(c) for c in COLORS}
    assert set(colors) == set(COLORS)
    assert counts["white"] > counts["yellow"] > counts["blue"] > 0
    assert counts["white"] > 1200


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("color", sorted(COLORS))
def test_every_layout_and_colour_renders_to_scale(layout: str, color: str) -> None:
    w_mm, h_mm = LAYOUTS[layout]
    bg, fg = COLORS[color]
    for ppm in (60.0, 250.0, 1000.0):
        img = render_plate(SAMPLE_TEXT[layout], layout, color, ppm)
        assert img.dtype == np.uint8
        assert img.shape == (round(h_mm * ppm / 1000), round(w_mm * ppm / 1000), 4)
        assert plate_pixel_size(layout, ppm) == (img.shape[1], img.shape[0])
    img = render_plate(SAMPLE_TEXT[layout], layout, color, 1000.0)
    alpha = img[:, :, 3]
    assert alpha[0, 0] < 64  # rounded corners
    assert alpha[-1, -1] < 64
    assert alpha[img.shape[0] // 2, img.shape[1] // 2] == 255
    rgb = img[:, :, :3].reshape(-1, 3).astype(int)
    to_bg = np.abs(rgb - np.array(bg)).max(axis=1)
    to_fg = np.abs(rgb - np.array(fg)).max(axis=1)
    assert np.median(rgb, axis=0) == pytest.approx(bg, abs=20)  # the sheet dominates
    assert 0.15 < float((to_fg < 40).mean()) < 0.6  # and the text is drawn in the text colour
    assert float((to_bg < 30).mean()) > 0.35


def test_two_row_layouts_put_a_row_in_each_half() -> None:
    for layout in ("car2", "moto"):
        img = render_plate(SAMPLE_TEXT[layout], layout, "white", 1000.0)
        ink = img[:, :, :3].max(axis=2) < 60
        h = img.shape[0]
        rows_with_ink = ink[:, 10:-10].any(axis=1)
        assert rows_with_ink[int(h * 0.2) : int(h * 0.4)].any()
        assert rows_with_ink[int(h * 0.6) : int(h * 0.8)].any()
        assert not rows_with_ink[int(h * 0.49) : int(h * 0.51)].any()  # a gap between rows


def test_rendering_is_deterministic_and_text_dependent() -> None:
    a = render_plate("30E-1234", "car1", "yellow", 300.0)
    b = render_plate("30E-1234", "car1", "yellow", 300.0)
    c = render_plate("30E-1235", "car1", "yellow", 300.0)
    assert a.tobytes() == b.tobytes()
    assert a.shape == c.shape
    assert a.tobytes() != c.tobytes()
    differs = np.abs(a.astype(int) - c.astype(int)).max(axis=2) > 60
    cols = np.flatnonzero(differs.any(axis=0))
    assert cols.min() > a.shape[1] * 0.7  # only the last digit changed


def test_rows_split_where_the_plate_splits() -> None:
    assert plate_rows("98A-123.45", "car1") == ("98A-123.45",)
    assert plate_rows("98A-123.45", "car2") == ("98A", "123.45")
    assert plate_rows("29-B1 123.45", "moto") == ("29-B1", "123.45")
    assert PlateSpec("29-B1 1234", "moto", "red").size_m == (0.19, 0.14)


def test_bad_arguments_raise_value_error() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="layout"):
        random_plate_text("bus", rng)
    with pytest.raises(ValueError, match="layout"):
        render_plate("98A-123.45", "car3", "white", 100.0)
    with pytest.raises(ValueError, match="colour"):
        render_plate("98A-123.45", "car1", "green", 100.0)
    with pytest.raises(ValueError, match="colour"):
        PlateSpec("98A-123.45", "car1", "pink")
    with pytest.raises(ValueError, match="two rows"):
        render_plate("98A12345", "car2", "white", 100.0)
    with pytest.raises(ValueError, match="two rows"):
        PlateSpec("29-B1-123.45", "moto", "white")
    with pytest.raises(ValueError, match="positive"):
        render_plate("98A-123.45", "car1", "white", 0.0)
    with pytest.raises(ValueError, match="empty"):
        render_plate("", "car1", "white", 100.0)
