"""Plate pictures for synthetic samples, and what each plate is mounted on.

`plate_picture` draws from a bank rendered once per process by
`node.capture.platerender.render_plate` (every layout x colour, `PLATES_PER_KIND` random
numbers each, as image pyramids), so a sample costs no text rendering. `mount` puts the
plate on something: bare, in a frame, on a drawn vehicle tail (painted panel, bumper band,
recess, lamps: flat shapes that the caller projects and fills directly on the canvas, which
is much cheaper than warping a big picture), or on a simulator vehicle picture
(`node.capture.simsprites`) where the simulator puts plates.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from node.capture.platerender import COLORS, LAYOUTS, random_plate_text, render_plate
from node.capture.simsprites import BODY_STYLES, SpriteCache, body_sprite, level_for

RGB = tuple[int, int, int]
Rect = tuple[float, float, float, float]  # x0, y0, width, height
Shape = tuple[tuple[tuple[float, float], ...], RGB]  # a filled polygon

BANK_SEED = 20_250_101
PLATES_PER_KIND = 20  # per (layout, colour); the first BIG_PER_KIND have big masters
BIG_PER_KIND = 8
SMALL_MASTER_W, BIG_MASTER_W = 96, 256
MIN_LEVEL_W = 12
P_FRAME, P_BODY, P_VEHICLE = 0.3, 0.4, 0.2
MAX_SPRITE_PPM = 170.0  # simulator vehicles are drawn at 192 px/m: never enlarge them

_SPRITES = SpriteCache(48 << 20)  # holds every (body, level) used: no resizing after warm-up
_VEHICLES = {
    "moto": ("moto_rear",),
    "car1": ("sedan_rear", "suv_rear", "car_front", "truck_rear"),
    "car2": ("sedan_rear", "suv_rear", "truck_rear"),
}
_PAINTS: tuple[RGB, ...] = (
    (232, 232, 230), (176, 179, 184), (26, 27, 30), (158, 22, 26), (32, 58, 112),
    (96, 99, 104), (204, 188, 152), (34, 72, 54), (120, 20, 60), (236, 236, 240),
)  # fmt: skip
_FRAMES: tuple[RGB, ...] = ((20, 20, 22), (170, 172, 176), (120, 20, 24), (20, 40, 110))


@dataclass(frozen=True, eq=False)
class Mount:
    """A plate on its carrier, in patch pixels: `patch` (RGBA) holds the plate at `rect`;
    `shapes` are drawn first (the first one is the carrier's outline); `extent` (x0, y0,
    x1, y1) bounds the patch and the shapes."""

    patch: Image.Image
    rect: Rect
    shapes: tuple[Shape, ...]
    extent: tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class _Plate:
    levels: tuple[Image.Image, ...]  # RGBA, widest first, each half the one before

    def level(self, width: float) -> Image.Image:
        """The narrowest level at least 0.77 `width` wide (the widest if none is): a warp
        to `width` then scales it by 0.65 to 1.3, little enough for bilinear sampling."""
        for img in reversed(self.levels):
            if img.width >= width / 1.3:
                return img
        return self.levels[0]


def pick(rng: np.random.Generator, weights: tuple[float, ...]) -> int:
    """An index drawn with the given weights (cheaper than `Generator.choice`)."""
    cum = list(itertools.accumulate(weights))
    return min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(weights) - 1)


def plate_picture(rng: np.random.Generator, layout: str, color: str, width: float) -> Image.Image:
    """A bank plate of `layout` and `color` (RGBA, read-only) about `width` px wide."""
    kind = _plate_bank()[layout, color]
    pool = kind[:BIG_PER_KIND] if width > SMALL_MASTER_W else kind
    return pool[int(rng.integers(len(pool)))].level(width)


@lru_cache(maxsize=1)
def _plate_bank() -> dict[tuple[str, str], tuple[_Plate, ...]]:
    rng = np.random.default_rng(BANK_SEED)
    bank = {}
    for layout, (w_mm, _) in LAYOUTS.items():
        for color in COLORS:
            plates = []
            for i in range(PLATES_PER_KIND):
                master = BIG_MASTER_W if i < BIG_PER_KIND else SMALL_MASTER_W
                text = random_plate_text(layout, rng)
                rgba = render_plate(text, layout, color, master / w_mm * 1000.0)
                plates.append(_Plate(_pyramid(Image.fromarray(rgba))))
            bank[layout, color] = tuple(plates)
    return bank


def _pyramid(rgba: Image.Image) -> tuple[Image.Image, ...]:
    levels, pre = [rgba], rgba.convert("RGBa")
    while pre.width >= 2 * MIN_LEVEL_W:
        pre = pre.resize((pre.width // 2, max(1, pre.height // 2)), Image.Resampling.LANCZOS)
        levels.append(pre.convert("RGBA"))
    return tuple(levels)


def mount(rng: np.random.Generator, plate: Image.Image, layout: str, cap: float) -> Mount:
    """`plate` on a random carrier; `cap` bounds each margin of a drawn body (patch px)."""
    choice = rng.random()
    ppm = plate.width / (LAYOUTS[layout][0] / 1000.0)
    if choice < P_VEHICLE and ppm <= MAX_SPRITE_PPM:
        return _on_vehicle(rng, plate, layout)
    patch, rect = plate, (0.0, 0.0, float(plate.width), float(plate.height))
    if rng.random() < P_FRAME:
        patch, rect = _framed(rng, plate)
    shapes: tuple[Shape, ...] = ()
    if choice < P_VEHICLE + P_BODY:
        shapes = _body(rng, patch.size, cap)
    xs = [x for poly, _ in shapes for x, _ in poly] + [0.0, float(patch.width)]
    ys = [y for poly, _ in shapes for _, y in poly] + [0.0, float(patch.height)]
    return Mount(patch, rect, shapes, (min(xs), min(ys), max(xs), max(ys)))


def _framed(rng: np.random.Generator, plate: Image.Image) -> tuple[Image.Image, Rect]:
    """The plate in a black, chrome or dealer-coloured frame with a wider bottom bar."""
    m = max(1, round(plate.height * float(rng.uniform(0.04, 0.12))))
    bottom = max(m, round(m * float(rng.uniform(1.0, 2.5))))
    color = _FRAMES[pick(rng, (0.5, 0.25, 0.15, 0.1))]
    out = Image.new("RGBA", (plate.width + 2 * m, plate.height + m + bottom), (0, 0, 0, 0))
    ImageDraw.Draw(out).rounded_rectangle(
        (0, 0, out.width - 1, out.height - 1), radius=m, fill=(*color, 255)
    )
    out.paste(plate, (m, m), plate)
    return out, (float(m), float(m), float(plate.width), float(plate.height))


def _box(
    x0: float, y0: float, x1: float, y1: float, cut: float = 0.0
) -> tuple[tuple[float, float], ...]:
    """A rectangle as a polygon, its corners cut by `cut` (a cheap rounded corner)."""
    if cut <= 0:
        return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    return (
        (x0 + cut, y0), (x1 - cut, y0), (x1, y0 + cut), (x1, y1 - cut),
        (x1 - cut, y1), (x0 + cut, y1), (x0, y1 - cut), (x0, y0 + cut),
    )  # fmt: skip


def _shade(c: RGB, f: float) -> RGB:
    return (min(255, round(c[0] * f)), min(255, round(c[1] * f)), min(255, round(c[2] * f)))


def _body(rng: np.random.Generator, size: tuple[int, int], cap: float) -> tuple[Shape, ...]:
    """A vehicle tail around a `size` patch at the origin: panel, bumper, recess, lamps."""
    pw, ph = size
    left, right = (min(cap, pw * float(rng.uniform(0.15, 1.5))) for _ in range(2))
    top = min(cap, ph * float(rng.uniform(0.4, 4.0)))
    bottom = min(cap, ph * float(rng.uniform(0.2, 2.0)))
    x0, y0, x1, y1 = -left, -top, pw + right, ph + bottom
    paint = _PAINTS[int(rng.integers(len(_PAINTS)))]
    cut = min(x1 - x0, y1 - y0) * float(rng.uniform(0.0, 0.12))
    shapes: list[Shape] = [(_box(x0, y0, x1, y1, cut), paint)]
    if rng.random() < 0.7:  # the bumper: a darker band through or under the plate
        b0 = ph * float(rng.uniform(-0.2, 0.7))
        b1 = min(y1, b0 + ph * float(rng.uniform(0.6, 1.8)))
        dark = _shade(paint, 0.55) if rng.random() < 0.5 else (30, 30, 32)
        shapes.append((_box(x0, b0, x1, b1), dark))
    if rng.random() < 0.5:  # the recess the plate sits in
        e = ph * float(rng.uniform(0.1, 0.35))
        shapes.append((_box(-e, -e, pw + e, ph + e, e * 0.5), _shade(paint, 0.45)))
    if rng.random() < 0.6 and left > pw * 0.3:  # tail lamps at both sides above the plate
        l0, l1 = -top * float(rng.uniform(0.5, 0.9)), -top * float(rng.uniform(0.05, 0.4))
        lamp = (190, 24, 28) if rng.random() < 0.8 else (240, 150, 30)
        shapes.append((_box(x0 + left * 0.05, l0, x0 + left * 0.7, l1), lamp))
        shapes.append((_box(x1 - right * 0.7, l0, x1 - right * 0.05, l1), lamp))
    return tuple(shapes)


def _on_vehicle(rng: np.random.Generator, plate: Image.Image, layout: str) -> Mount:
    """The plate where the simulator puts it on one of its vehicle pictures."""
    styles = _VEHICLES[layout]
    style = styles[int(rng.integers(len(styles)))]
    plate_at = BODY_STYLES[style].plate_at
    assert plate_at is not None
    sprite = body_sprite(style, int(rng.integers(64)))
    w_mm, h_mm = LAYOUTS[layout]
    level = 6 * round(level_for(plate.width / (w_mm / 1000.0)) / 6)  # few sizes: cache hits
    body = _SPRITES.get(sprite, level)
    kx = body.width * sprite.px_per_m / sprite.image.width
    ky = body.height * sprite.px_per_m / sprite.image.height
    pw, ph = max(1, round(w_mm / 1000.0 * kx)), max(1, round(h_mm / 1000.0 * ky))
    if plate.size != (pw, ph):
        plate = plate.resize((pw, ph), Image.Resampling.BILINEAR)
    ax, ay = sprite.anchor_at(level)
    x0, y0 = round(ax + plate_at[0] * kx - pw / 2.0), round(ay - plate_at[1] * ky - ph / 2.0)
    patch = body.copy()
    patch.paste(plate, (x0, y0), plate)
    rect = (float(x0), float(y0), float(pw), float(ph))
    return Mount(patch, rect, (), (0.0, 0.0, float(patch.width), float(patch.height)))
