"""Pre-drawn pictures of the simulated vehicles and their plates, and a cache of scaled copies.

Each body style is drawn once per colour variant at `MASTER_PX_PER_M`; a frame pastes copies
scaled to a geometric ladder of sizes (`level_scale`: 1.08 per step), so any one (sprite,
level) is resampled once and then reused until the byte-bounded LRU drops it.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from node.capture.platerender import PlateSpec, render_plate

RGB = tuple[int, int, int]
MASTER_PX_PER_M = 192.0
PLATE_PX_PER_M = 600.0
LADDER = 1.08


def level_for(px_per_m: float) -> int:
    """The ladder level nearest to `px_per_m` pixels per metre."""
    return round(math.log(max(px_per_m, 0.05)) / math.log(LADDER))


def level_scale(level: int) -> float:
    """Pixels per metre of ladder `level`."""
    return float(LADDER**level)


@dataclass(frozen=True, eq=False)
class Sprite:
    """An RGBA picture of something fronto-parallel, with its metric scale and anchor point.

    `image` is premultiplied ("RGBa", so resampling does not bleed colour from transparent
    pixels); `mask` marks its opaque pixels; `anchor` is the master-pixel position placed on
    the projected reference point (the ground point below a body's centre; a plate's
    centre). Treat as immutable.
    """

    key: str
    image: Image.Image
    px_per_m: float
    anchor: tuple[float, float]
    mask: npt.NDArray[np.bool_] = field(repr=False)

    def size_at(self, level: int) -> tuple[int, int]:
        s = level_scale(level) / self.px_per_m
        return (max(1, round(self.image.width * s)), max(1, round(self.image.height * s)))

    def anchor_at(self, level: int) -> tuple[float, float]:
        w, h = self.size_at(level)
        return (self.anchor[0] * w / self.image.width, self.anchor[1] * h / self.image.height)


def make_sprite(
    key: str, image: Image.Image, px_per_m: float, anchor: tuple[float, float]
) -> Sprite:
    """A sprite from an RGBA or RGBa master picture."""
    mask = np.asarray(image.getchannel(3)) > 127
    premultiplied = image if image.mode == "RGBa" else image.convert("RGBa")
    return Sprite(key, premultiplied, px_per_m, anchor, mask)


def plate_sprite(key: str, spec: PlateSpec) -> Sprite:
    """The plate master for one vehicle (rendered once, at `PLATE_PX_PER_M`)."""
    rgba = Image.fromarray(render_plate(spec.text, spec.layout, spec.color, PLATE_PX_PER_M))
    return make_sprite(key, rgba, PLATE_PX_PER_M, (rgba.width / 2.0, rgba.height / 2.0))


class SpriteCache:
    """Scaled copies of sprites by (sprite key, level), least recently used dropped first."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self._max = max_bytes
        self._bytes = 0
        self._items: OrderedDict[tuple[str, int], Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sprite: Sprite, level: int) -> Image.Image:
        key = (sprite.key, level)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        size = sprite.size_at(level)
        scaled = sprite.image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        scaled = scaled.convert("RGBA")
        with self._lock:
            if key not in self._items:
                self._items[key] = scaled
                self._bytes += size[0] * size[1] * 4
            while self._bytes > self._max and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.width * old.height * 4
        return scaled

    def drop(self, key: str) -> None:
        """Forgets every scaled copy of the sprite `key` (a vehicle that left)."""
        with self._lock:
            for k in [k for k in self._items if k[0] == key]:
                old = self._items.pop(k)
                self._bytes -= old.width * old.height * 4

    def drop_all(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes


@dataclass(frozen=True, slots=True)
class BodyStyle:
    """A vehicle body picture: size in metres and where its plate sits (None: no plate)."""

    name: str
    width: float
    height: float
    plate_at: tuple[float, float] | None  # plate centre (x, height) relative to the anchor
    variants: int  # colour schemes drawn for this style


BODY_STYLES = {
    "moto_rear": BodyStyle("moto_rear", 0.84, 1.76, (0.0, 0.60), 12),
    "moto_front": BodyStyle("moto_front", 0.84, 1.76, None, 6),
    "sedan_rear": BodyStyle("sedan_rear", 1.82, 1.46, (0.0, 0.52), 8),
    "suv_rear": BodyStyle("suv_rear", 1.92, 1.82, (0.0, 0.62), 8),
    "truck_rear": BodyStyle("truck_rear", 2.32, 3.12, (0.0, 0.46), 4),
    "car_front": BodyStyle("car_front", 1.82, 1.46, (0.0, 0.36), 8),
}

_CAR_PAINT = [(232, 232, 230), (176, 179, 184), (26, 27, 30), (158, 22, 26), (32, 58, 112)]
_CAR_PAINT += [(96, 99, 104), (204, 188, 152), (34, 72, 54)]
_MOTO_PAINT = [(24, 24, 26), (170, 24, 28), (232, 232, 232), (30, 70, 150), (120, 122, 126)]
_CLOTHES = [(236, 236, 236), (40, 80, 160), (28, 28, 30), (180, 30, 40), (120, 120, 124)]
_CLOTHES += [(226, 190, 40), (210, 120, 150), (40, 120, 70), (90, 60, 140), (200, 110, 40)]
_HELMETS = [(240, 240, 240), (200, 30, 30), (30, 70, 170), (20, 20, 20), (240, 200, 30)]
_HELMETS += [(230, 130, 170), (130, 130, 136)]
_SKIN = (196, 150, 118)
_DARK = (28, 28, 30)
_GLASS = (38, 48, 58)


class _Pen:
    """Draws in metres: x right from the anchor, y up from the ground."""

    def __init__(self, draw: ImageDraw.ImageDraw, k: float, anchor: tuple[float, float]) -> None:
        self.d, self.k, self.ax, self.ay = draw, k, anchor[0], anchor[1]

    def p(self, x: float, y: float) -> tuple[float, float]:
        return (self.ax + x * self.k, self.ay - y * self.k)

    def rect(
        self, x0: float, y0: float, x1: float, y1: float, fill: tuple[int, ...], r: float = 0
    ) -> None:
        (a, b), (c, d) = self.p(x0, y1), self.p(x1, y0)
        if r > 0:
            self.d.rounded_rectangle((a, b, c, d), radius=r * self.k, fill=fill)
        else:
            self.d.rectangle((a, b, c, d), fill=fill)

    def oval(self, cx: float, cy: float, rx: float, ry: float, fill: tuple[int, ...]) -> None:
        (a, b), (c, d) = self.p(cx - rx, cy + ry), self.p(cx + rx, cy - ry)
        self.d.ellipse((a, b, c, d), fill=fill)

    def poly(self, pts: list[tuple[float, float]], fill: tuple[int, ...]) -> None:
        self.d.polygon([self.p(x, y) for x, y in pts], fill=fill)

    def mirror(self, pts: list[tuple[float, float]], fill: tuple[int, ...]) -> None:
        """Draws `pts` and its mirror image about x = 0."""
        self.poly(pts, fill)
        self.poly([(-x, y) for x, y in pts], fill)


def _shade(c: RGB, f: float) -> RGB:
    return (min(255, int(c[0] * f)), min(255, int(c[1] * f)), min(255, int(c[2] * f)))


def body_sprite(style: str, variant: int) -> Sprite:
    """The master picture of body `style` in colour scheme `variant` (any int). Cached."""
    return _body_sprite(style, variant % BODY_STYLES[style].variants)


@lru_cache(maxsize=64)
def _body_sprite(style: str, variant: int) -> Sprite:
    spec = BODY_STYLES[style]
    k = MASTER_PX_PER_M * 2  # drawn at twice the master scale, then halved: smooth edges
    below = 0.1
    size = (round(spec.width * k), round((spec.height + below) * k))
    img = Image.new("RGBA", size, (0, 0, 0, 0))
    pen = _Pen(ImageDraw.Draw(img), k, (size[0] / 2.0, spec.height * k))
    rng = np.random.default_rng([7, list(BODY_STYLES).index(style), variant])
    pen.oval(0.0, 0.0, spec.width * 0.5, 0.07, (0, 0, 0, 120))
    _PAINTERS[style](pen, rng)
    half = img.convert("RGBa").reduce(2)
    return make_sprite(
        f"{style}/{variant}", half, MASTER_PX_PER_M, (half.width / 2.0, spec.height * k / 2)
    )


def _pick(rng: np.random.Generator, palette: list[RGB]) -> RGB:
    return palette[int(rng.integers(len(palette)))]


def _rider(pen: _Pen, rng: np.random.Generator, front: bool, y0: float = 0.0) -> None:
    """A rider's torso, arms and helmet, seat height `y0` above the standard one."""
    shirt, helmet = _pick(rng, _CLOTHES), _pick(rng, _HELMETS)
    pen.mirror(
        [(0.22, 1.42 + y0), (0.31, 1.16 + y0), (0.36, 1.04 + y0), (0.3, 1.02 + y0)],
        _shade(shirt, 0.85),
    )
    pen.poly(
        [
            (-0.19, 0.92 + y0),
            (0.19, 0.92 + y0),
            (0.25, 1.4 + y0),
            (0.14, 1.49 + y0),
            (-0.14, 1.49 + y0),
            (-0.25, 1.4 + y0),
        ],
        shirt,
    )
    pen.rect(-0.05, 1.46 + y0, 0.05, 1.53 + y0, _SKIN)
    pen.oval(0.0, 1.6 + y0, 0.135, 0.13, helmet)
    if front:
        pen.oval(0.0, 1.58 + y0, 0.1, 0.06, _DARK)
    else:
        pen.oval(-0.04, 1.66 + y0, 0.05, 0.03, _shade(helmet, 1.25))


def _moto(pen: _Pen, rng: np.random.Generator, front: bool) -> None:
    paint, legs = _pick(rng, _MOTO_PAINT), _pick(rng, _CLOTHES[:4])
    pen.rect(-0.055, 0.0, 0.055, 0.44, _DARK, 0.04)
    pen.mirror([(0.18, 0.16), (0.32, 0.16), (0.3, 0.34), (0.2, 0.34)], _DARK)
    pen.mirror([(0.17, 0.28), (0.29, 0.28), (0.28, 0.95), (0.15, 0.95)], _shade(legs, 0.8))
    pen.poly(
        [(-0.13, 0.38), (0.13, 0.38), (0.19, 0.62), (0.2, 0.87), (-0.2, 0.87), (-0.19, 0.62)], paint
    )
    pen.mirror([(0.3, 1.2), (0.34, 1.36), (0.36, 1.36), (0.32, 1.2)], _DARK)
    pen.oval(0.36, 1.38, 0.045, 0.03, _DARK)
    pen.oval(-0.36, 1.38, 0.045, 0.03, _DARK)
    if front:
        _rider(pen, rng, front=True)
        pen.poly([(-0.16, 0.4), (0.16, 0.4), (0.22, 1.0), (-0.22, 1.0)], _shade(paint, 0.9))
        pen.rect(-0.3, 1.04, 0.3, 1.08, _DARK)
        pen.oval(0.0, 1.1, 0.08, 0.065, (250, 246, 222))
        return
    pen.rect(-0.105, 0.515, 0.105, 0.685, _DARK)
    pen.rect(-0.09, 0.76, 0.09, 0.83, (214, 28, 30), 0.02)
    pen.oval(-0.16, 0.79, 0.025, 0.02, (250, 160, 30))
    pen.oval(0.16, 0.79, 0.025, 0.02, (250, 160, 30))
    pen.rect(-0.17, 0.87, 0.17, 0.93, _DARK, 0.03)
    _rider(pen, rng, front=False)
    if rng.random() < 0.4:  # a pillion passenger, nearer the camera
        _rider(pen, rng, front=False, y0=-0.08)


def _car_rear(pen: _Pen, rng: np.random.Generator, tall: float, plate_y: float) -> None:
    paint = _pick(rng, _CAR_PAINT)
    pen.rect(-0.86, 0.0, -0.6, 0.38, _DARK, 0.05)
    pen.rect(0.6, 0.0, 0.86, 0.38, _DARK, 0.05)
    pen.rect(-0.9, 0.24, 0.9, 0.98 + tall, paint, 0.12)
    pen.rect(-0.9, 0.24, 0.9, 0.4, _shade(paint, 0.55), 0.06)
    pen.mirror(
        [(0.56, 0.72 + tall), (0.88, 0.72 + tall), (0.88, 0.9 + tall), (0.6, 0.9 + tall)],
        (180, 20, 24),
    )
    pen.mirror(
        [(0.64, 0.76 + tall), (0.84, 0.76 + tall), (0.84, 0.8 + tall), (0.66, 0.8 + tall)],
        (240, 220, 210),
    )
    pen.rect(-0.9, 0.95 + tall, 0.9, 0.965 + tall, _shade(paint, 0.7))
    pen.poly(
        [(-0.84, 0.98 + tall), (0.84, 0.98 + tall), (0.66, 1.44 + tall), (-0.66, 1.44 + tall)],
        paint,
    )
    pen.poly(
        [(-0.72, 1.03 + tall), (0.72, 1.03 + tall), (0.6, 1.38 + tall), (-0.6, 1.38 + tall)], _GLASS
    )
    pen.poly(
        [(-0.5, 1.05 + tall), (-0.3, 1.05 + tall), (-0.42, 1.34 + tall), (-0.56, 1.34 + tall)],
        (70, 84, 96),
    )
    pen.oval(0.0, 0.84 + tall, 0.05, 0.035, (200, 202, 206))
    pen.rect(-0.3, plate_y - 0.095, 0.3, plate_y + 0.095, _shade(paint, 0.4), 0.02)


def _sedan(pen: _Pen, rng: np.random.Generator) -> None:
    _car_rear(pen, rng, 0.0, 0.52)


def _suv(pen: _Pen, rng: np.random.Generator) -> None:
    _car_rear(pen, rng, 0.36, 0.62)


def _truck(pen: _Pen, rng: np.random.Generator) -> None:
    box = _pick(rng, [(236, 236, 232), (40, 80, 160), (180, 184, 188), (220, 180, 40)])
    for x in (-0.88, -0.5, 0.5, 0.88):
        pen.rect(x - 0.2, 0.0, x + 0.24, 0.52, _DARK, 0.05)
    pen.rect(-1.12, 0.34, 1.12, 0.58, (54, 56, 60))
    for i in range(8):
        stripe = (220, 30, 30) if i % 2 else (240, 240, 240)
        pen.rect(-1.1 + i * 0.275, 0.34, -1.1 + (i + 1) * 0.275, 0.4, stripe)
    pen.mirror([(0.8, 0.42), (1.08, 0.42), (1.08, 0.54), (0.8, 0.54)], (200, 24, 24))
    pen.rect(-1.16, 0.62, 1.16, 3.12, box)
    pen.rect(-1.16, 0.62, 1.16, 0.7, _shade(box, 0.6))
    pen.rect(-0.012, 0.7, 0.012, 3.05, _shade(box, 0.55))
    for x in (-0.6, -0.2, 0.2, 0.6):
        pen.rect(x - 0.02, 0.75, x + 0.02, 3.0, _shade(box, 0.72))
    pen.rect(-0.2, 0.36, 0.2, 0.56, _DARK)


def _car_front(pen: _Pen, rng: np.random.Generator) -> None:
    paint = _pick(rng, _CAR_PAINT)
    pen.rect(-0.86, 0.0, -0.6, 0.36, _DARK, 0.05)
    pen.rect(0.6, 0.0, 0.86, 0.36, _DARK, 0.05)
    pen.rect(-0.9, 0.2, 0.9, 0.96, paint, 0.14)
    pen.rect(-0.9, 0.2, 0.9, 0.46, _shade(paint, 0.6), 0.08)
    pen.rect(-0.42, 0.5, 0.42, 0.7, _DARK, 0.05)
    pen.mirror([(0.48, 0.62), (0.86, 0.64), (0.86, 0.78), (0.52, 0.76)], (236, 238, 230))
    pen.poly([(-0.84, 0.98), (0.84, 0.98), (0.64, 1.42), (-0.64, 1.42)], paint)
    pen.poly([(-0.78, 1.0), (0.78, 1.0), (0.6, 1.38), (-0.6, 1.38)], (78, 92, 106))
    pen.mirror([(0.88, 0.95), (1.0, 0.98), (0.98, 1.08), (0.88, 1.06)], _shade(paint, 0.8))
    pen.rect(-0.3, 0.265, 0.3, 0.455, _DARK, 0.02)


_PAINTERS: dict[str, Callable[[_Pen, np.random.Generator], None]] = {
    "moto_rear": lambda pen, rng: _moto(pen, rng, front=False),
    "moto_front": lambda pen, rng: _moto(pen, rng, front=True),
    "sedan_rear": _sedan,
    "suv_rear": _suv,
    "truck_rear": _truck,
    "car_front": _car_front,
}
