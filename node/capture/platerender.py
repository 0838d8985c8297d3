"""Vietnamese licence plates: random plate numbers and pixel renderings of the plates.

Pure functions of their arguments (numpy + Pillow only), so model-training tools and the
simulator draw identical plates. Randomness comes only from the `numpy.random.Generator`
passed in; rendering is deterministic.

Formats (`layout`), sizes in millimetres (width, height):

- ``"car1"``  520 x 110, one row:   ``98A-123.45`` (or ``30E-1234``)
- ``"car2"``  330 x 165, two rows:  ``98A`` / ``123.45``  (text ``98A-123.45``)
- ``"moto"``  190 x 140, two rows:  ``29-B1`` / ``123.45`` (text ``29-B1 123.45``)

Colours: ``"white"`` (private), ``"yellow"`` (commercial) with black text; ``"blue"``
(government), ``"red"`` (military) with white text.

Glyphs come from Pillow's built-in scalable font (``ImageFont.load_default(size=...)``,
shipped inside the Pillow wheel), drawn one character at a time (no layout engine involved),
emboldened and condensed into fixed cells like the narrow plate typeface.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
RGBA = npt.NDArray[np.uint8]
"""An RGBA image, shape (height, width, 4), dtype uint8; alpha is the plate's shape."""

LAYOUTS: MappingProxyType[str, tuple[int, int]] = MappingProxyType(
    {"car1": (520, 110), "car2": (330, 165), "moto": (190, 140)}
)
"""Plate size in millimetres (width, height) per layout."""

COLORS: MappingProxyType[str, tuple[RGB, RGB]] = MappingProxyType(
    {
        "white": ((236, 236, 230), (18, 18, 20)),
        "yellow": ((246, 196, 32), (18, 18, 20)),
        "blue": ((22, 64, 158), (240, 240, 240)),
        "red": ((186, 28, 30), (240, 240, 240)),
    }
)
"""(background, text) colour per plate colour."""

PROVINCES: tuple[int, ...] = tuple(
    p for p in range(11, 100) if p not in {13, 42, 44, 45, 46, 80, 87, 91, 96}
)
"""Province codes in use on civilian plates."""

SERIES_LETTERS = "ABCDEFGHKLMNPSTUVXYZ"
"""Series letters (no I, J, O, Q, R, W: they read as digits or are not issued)."""

_SERIAL = r"(?:\d{3}\.\d{2}|\d{4})"
_PROV = r"(?:1[1-9]|[2-9]\d)"
PLATE_PATTERNS: MappingProxyType[str, re.Pattern[str]] = MappingProxyType(
    {
        "car1": re.compile(rf"{_PROV}[{SERIES_LETTERS}]-{_SERIAL}"),
        "car2": re.compile(rf"{_PROV}[{SERIES_LETTERS}]-{_SERIAL}"),
        "moto": re.compile(rf"{_PROV}-[{SERIES_LETTERS}][1-9] {_SERIAL}"),
    }
)
"""Full-match patterns of the texts `random_plate_text` makes."""

DESIGN_PX_PER_M = 2000.0  # the finest drawing resolution used before resampling

_FONT_PX = 160  # size at which glyphs are rasterised before being fitted into their cells


@dataclass(frozen=True, slots=True)
class _RowStyle:
    """Where the text rows sit on a plate layout, in millimetres."""

    row_centres: tuple[float, ...]  # y of each row's centre
    glyph_h: float  # height of letters and digits
    margin: float  # free space kept at the left and right edges
    corner_r: float
    screws: tuple[tuple[float, float], ...]  # screw-head centres


_STYLES: MappingProxyType[str, _RowStyle] = MappingProxyType(
    {
        "car1": _RowStyle((55.0,), 78.0, 34.0, 6.0, ((19.0, 55.0), (501.0, 55.0))),
        "car2": _RowStyle((45.0, 119.0), 64.0, 18.0, 7.0, ((26.0, 45.0), (304.0, 45.0))),
        "moto": _RowStyle((37.0, 101.0), 52.0, 8.0, 8.0, ((16.0, 14.0), (174.0, 14.0))),
    }
)


def glyph_mm(layout: str) -> float:
    """Height in millimetres of the letters and digits on a `layout` plate."""
    return _STYLES[layout].glyph_h


@dataclass(frozen=True, slots=True)
class PlateSpec:
    """One plate: its text, layout and colour (validated)."""

    text: str
    layout: str
    color: str

    def __post_init__(self) -> None:
        plate_rows(self.text, self.layout)
        check_color(self.color)

    @property
    def size_m(self) -> tuple[float, float]:
        """(width, height) in metres."""
        w, h = LAYOUTS[self.layout]
        return (w / 1000.0, h / 1000.0)


def check_layout(layout: str) -> tuple[int, int]:
    """The plate size in mm for `layout`; ValueError for an unknown layout."""
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"unknown plate layout {layout!r} (know {sorted(LAYOUTS)})") from None


def check_color(color: str) -> tuple[RGB, RGB]:
    """(background, text) colours for `color`; ValueError for an unknown colour."""
    try:
        return COLORS[color]
    except KeyError:
        raise ValueError(f"unknown plate colour {color!r} (know {sorted(COLORS)})") from None


def random_plate_text(layout: str, rng: np.random.Generator) -> str:
    """A random plate number in the format of `layout` (see `PLATE_PATTERNS`)."""
    check_layout(layout)
    province = int(rng.choice(PROVINCES))
    letter = SERIES_LETTERS[int(rng.integers(len(SERIES_LETTERS)))]
    digits = "".join(str(int(d)) for d in rng.integers(0, 10, size=5))
    serial = f"{digits[:3]}.{digits[3:]}" if rng.random() < 0.8 else digits[:4]
    if layout == "moto":
        return f"{province:02d}-{letter}{int(rng.integers(1, 10))} {serial}"
    return f"{province:02d}{letter}-{serial}"


def random_plate_color(rng: np.random.Generator) -> str:
    """A plate colour drawn with roughly street frequencies (mostly private white plates)."""
    colors = ("white", "yellow", "blue", "red")
    return colors[int(rng.choice(4, p=(0.76, 0.16, 0.05, 0.03)))]


def plate_rows(text: str, layout: str) -> tuple[str, ...]:
    """The rows of text as printed on the plate: car2 splits at ``-``, moto at the space."""
    check_layout(layout)
    if not text or not text.isprintable():
        raise ValueError(f"plate text {text!r} is empty or not printable")
    if layout == "car1":
        return (text,)
    sep = "-" if layout == "car2" else " "
    rows = tuple(text.split(sep))
    if len(rows) != 2 or not all(rows):
        raise ValueError(f"{layout} plate text {text!r} must be two rows split by {sep!r}")
    return rows


def plate_pixel_size(layout: str, px_per_m: float) -> tuple[int, int]:
    """(width, height) in pixels of a `layout` plate rendered at `px_per_m`."""
    w_mm, h_mm = check_layout(layout)
    if not px_per_m > 0:
        raise ValueError(f"px_per_m must be positive, got {px_per_m}")
    return (max(1, round(w_mm * px_per_m / 1000.0)), max(1, round(h_mm * px_per_m / 1000.0)))


def render_plate(text: str, layout: str, color: str, px_per_m: float) -> RGBA:
    """The plate as an RGBA array at `px_per_m` pixels per metre (alpha = plate outline).

    Drawn at 2.5 times the resolution asked (at most `DESIGN_PX_PER_M`, at least 400 px/m)
    and resampled with Lanczos, so small plates keep the look of a real plate seen from afar.
    """
    size = plate_pixel_size(layout, px_per_m)
    design = max(min(DESIGN_PX_PER_M, 2.5 * px_per_m), 400.0, float(px_per_m))
    big = _draw_plate(text, layout, color, design / 1000.0)
    if big.size != size:
        big = big.convert("RGBa").resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        big = big.convert("RGBA")
    return np.asarray(big, dtype=np.uint8).copy()


def _draw_plate(text: str, layout: str, color: str, px_per_mm: float) -> Image.Image:
    """The plate drawn at `px_per_mm` as an RGBA image."""
    rows = plate_rows(text, layout)
    bg, fg = check_color(color)
    style = _STYLES[layout]
    w_mm, h_mm = LAYOUTS[layout]
    size = (round(w_mm * px_per_mm), round(h_mm * px_per_mm))
    k = px_per_mm
    shape = Image.new("L", size, 0)
    ImageDraw.Draw(shape).rounded_rectangle(
        (0, 0, size[0] - 1, size[1] - 1), radius=style.corner_r * k, fill=255
    )
    plate = Image.fromarray(_sheen(bg, size))
    draw = ImageDraw.Draw(plate)
    inset = 3.5 * k
    draw.rounded_rectangle(
        (inset, inset, size[0] - 1 - inset, size[1] - 1 - inset),
        radius=max(1.0, (style.corner_r - 2.0) * k),
        outline=fg,
        width=max(1, round(2.6 * k)),
    )
    for cx, cy in style.screws:
        _draw_screw(draw, cx * k, cy * k, 4.2 * k, bg)
    for row, cy in zip(rows, style.row_centres, strict=True):
        _draw_row(plate, row, cy * k, style.glyph_h * k, (w_mm - 2 * style.margin) * k, bg, fg)
    plate.putalpha(shape)
    return plate


def _sheen(bg: RGB, size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """The plate background: a faint top-to-bottom sheen of the reflective sheet."""
    w, h = size
    ramp = np.linspace(1.06, 0.94, h, dtype=np.float32)[:, None, None]
    base = np.asarray(bg, dtype=np.float32)[None, None, :]
    column = np.clip(base * ramp, 0, 255).astype(np.uint8)
    return np.repeat(column, w, axis=1)


def _draw_screw(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, bg: RGB) -> None:
    """A chromed screw head: a rim, a face and a slot."""
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_shade(bg, 0.55))
    r2 = r * 0.78
    draw.ellipse((cx - r2, cy - r2, cx + r2, cy + r2), fill=(178, 180, 184))
    draw.line((cx - r2, cy, cx + r2, cy), fill=(96, 98, 102), width=max(1, round(r * 0.25)))


def _shade(c: RGB, f: float) -> RGB:
    return (min(255, round(c[0] * f)), min(255, round(c[1] * f)), min(255, round(c[2] * f)))


def _cell_width(ch: str, glyph_h: float) -> float:
    if ch == "-":
        return 0.42 * glyph_h
    if ch in ". ":
        return 0.26 * glyph_h
    return 0.5 * glyph_h


def _draw_row(
    plate: Image.Image, row: str, cy: float, glyph_h: float, max_w: float, bg: RGB, fg: RGB
) -> None:
    """One row of glyphs, centred on the plate at height `cy`, with a slight emboss."""
    gap = 0.07 * glyph_h
    cells = [_cell_width(ch, glyph_h) for ch in row]
    total = sum(cells) + gap * (len(row) - 1)
    squeeze = min(1.0, max_w / total)
    off = max(1, round(glyph_h * 0.025))  # emboss: a shadow down and to the right
    left, top = round((plate.width - total * squeeze) / 2.0), round(cy - glyph_h / 2.0)
    size = (round(total * squeeze) + 2 * off + 2, round(glyph_h) + 2 * off + 2)
    shadow, ink = Image.new("L", size, 0), Image.new("L", size, 0)
    x = 0.0
    for ch, cell in zip(row, cells, strict=True):
        cell_w = cell * squeeze
        glyph = _glyph_mask(ch, round(glyph_h), round(cell_w))
        pos = (round(x + (cell_w - glyph.width) / 2.0), 0)
        ink.paste(glyph, pos, glyph)
        shadow.paste(glyph, (pos[0] + off, pos[1] + off), glyph)
        x += cell_w + gap * squeeze
    plate.paste(_shade(bg, 0.62), (left, top, left + size[0], top + size[1]), shadow)
    plate.paste(fg, (left, top, left + size[0], top + size[1]), ink)


@lru_cache(maxsize=512)
def _glyph_mask(ch: str, glyph_h: int, cell_w: int) -> Image.Image:
    """Coverage mask (mode L) of one plate glyph, `glyph_h` tall and at most `cell_w` wide."""
    glyph_h = max(1, glyph_h)
    if ch == " ":
        return Image.new("L", (1, glyph_h), 0)
    if ch in "-.":
        return _punct_mask(ch, glyph_h, cell_w)
    font = ImageFont.load_default(size=_FONT_PX)
    stroke = round(_FONT_PX * 0.045)
    canvas = Image.new("L", (_FONT_PX * 2, _FONT_PX * 2), 0)
    ImageDraw.Draw(canvas).text(
        (_FONT_PX // 2, _FONT_PX // 4),
        ch,
        fill=255,
        font=font,
        stroke_width=stroke,
        stroke_fill=255,
    )
    bbox = canvas.getbbox()
    if bbox is None:  # a character the font has no ink for
        return Image.new("L", (max(1, cell_w // 2), glyph_h), 0)
    inked = canvas.crop(bbox)
    natural_w = inked.width * glyph_h / inked.height
    width = max(1, min(cell_w, round(natural_w * 0.72)))
    return inked.resize((width, glyph_h), Image.Resampling.LANCZOS)


def _punct_mask(ch: str, glyph_h: int, cell_w: int) -> Image.Image:
    """The dash and the dot, drawn as plain bars: the plate font's are simple shapes."""
    thick = max(1, round(glyph_h * 0.13))
    mask = Image.new("L", (max(1, cell_w), glyph_h), 0)
    draw = ImageDraw.Draw(mask)
    if ch == "-":
        mid = glyph_h / 2.0
        draw.rectangle((cell_w * 0.12, mid - thick / 2, cell_w * 0.88, mid + thick / 2), fill=255)
    else:
        side = max(1.0, glyph_h * 0.15)
        x0 = (cell_w - side) / 2.0
        draw.rectangle((x0, glyph_h - side, x0 + side, glyph_h - 1), fill=255)
    return mask
