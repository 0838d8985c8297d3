"""The simulated junction's fixed scenery: camera model, road layout and background picture.

Road coordinates are metres: `x` lateral (right positive, 0 = centre of the approach
carriageway), `y` height above the road, `z` distance ahead of the camera. The camera hangs
`CAMERA_HEIGHT` metres above the road behind the stop line, looking along the approach with
no pitch, so a road point projects to ``u = cx + f*x/z``, ``v = v0 + f*(H - y)/z``.

The scenery does not depend on the traffic seed: every `sim://junction` is the same place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float]
RGB = tuple[int, int, int]

CAMERA_HEIGHT = 6.0
FOCAL_AT_1920 = 1440.0  # focal length in pixels for a 1920-pixel-wide main image
NEAR_Z = 8.0  # road distance seen at the bottom image row

LANE_W = 3.5
N_LANES = 3
ROAD_HALF = LANE_W * N_LANES / 2.0  # approach carriageway is [-ROAD_HALF, ROAD_HALF]
LANE_DIVIDERS = tuple(-ROAD_HALF + LANE_W * i for i in range(1, N_LANES))
MEDIAN_X = (-ROAD_HALF - 1.0, -ROAD_HALF)
OPPOSITE_X = (-ROAD_HALF - 8.0, -ROAD_HALF - 1.0)
RIGHT_FACADE_X = ROAD_HALF + 3.75
LEFT_FACADE_X = OPPOSITE_X[0] - 3.75

STOP_Z = 20.0  # far edge of the stop line; fronts must stay short of it on red
STOP_LINE_W = 0.4
SOLID_Z = (0.0, STOP_Z - STOP_LINE_W)  # lane lines are solid here: no lane changes
ZEBRA_NEAR = (21.5, 25.5)
CROSS_Z = (26.0, 44.0)  # the cross street
ZEBRA_FAR = (44.5, 48.5)
FAR_Z = 400.0

SIGNAL_X, SIGNAL_Z = ROAD_HALF + 0.8, 20.8  # the signal pole on the right pavement
LAMP_Y = {"RED": 5.3, "AMBER": 4.95, "GREEN": 4.6}
LAMP_R = 0.14
LAMP_ON = {"RED": (255, 48, 40), "AMBER": (255, 178, 30), "GREEN": (60, 255, 120)}

_ASPHALT = (82, 84, 88)
_PAVEMENT = (150, 142, 132)
_PAINT = (226, 226, 218)
_SKY = (196, 208, 220)


@dataclass(frozen=True, slots=True)
class Camera:
    """The pinhole camera, in main-image pixels."""

    width: int
    height: int

    @property
    def f(self) -> float:
        return FOCAL_AT_1920 * self.width / 1920.0

    @property
    def cx(self) -> float:
        return self.width / 2.0

    @property
    def v0(self) -> float:
        """Row of the horizon: chosen so the bottom row sees the road at `NEAR_Z`."""
        return self.height - self.f * CAMERA_HEIGHT / NEAR_Z

    def project(self, x: float, y: float, z: float) -> Point:
        """Main-image (u, v) of the road point (x, y, z); z must be positive."""
        return (self.cx + self.f * x / z, self.v0 + self.f * (CAMERA_HEIGHT - y) / z)

    def lamp(self, phase: str) -> tuple[float, float, float]:
        """(u, v, radius) in main pixels of the signal lamp of `phase`."""
        u, v = self.project(SIGNAL_X, LAMP_Y[phase], SIGNAL_Z)
        return (u, v, self.f * LAMP_R / SIGNAL_Z)


@lru_cache(maxsize=4)
def background(width: int, height: int) -> Image.Image:
    """The scenery at main resolution (RGB), lamps unlit. Cached: treat as read-only."""
    ss = 2 if width <= 2400 else 1  # supersample so thin far-away paint stays smooth
    cam = Camera(width, height)
    painter = _Painter(cam, ss, np.random.default_rng(20_240_611))
    painter.sky_and_ground()
    painter.road_markings()
    painter.kerbs()
    painter.buildings()
    painter.signal_pole()
    return painter.image.resize((width, height), Image.Resampling.LANCZOS)


class _Painter:
    """Draws the scenery onto a supersampled canvas, in road coordinates."""

    def __init__(self, cam: Camera, ss: int, rng: np.random.Generator) -> None:
        self.cam = cam
        self.ss = ss
        self.rng = rng
        self.size = (cam.width * ss, cam.height * ss)
        self.image = Image.new("RGB", self.size, _SKY)
        self.draw = ImageDraw.Draw(self.image)

    def px(self, x: float, y: float, z: float) -> Point:
        u, v = self.cam.project(x, y, max(z, 0.5))
        return (u * self.ss, v * self.ss)

    def ground_quad(self, x0: float, x1: float, z0: float, z1: float) -> list[Point]:
        return [self.px(x0, 0, z0), self.px(x1, 0, z0), self.px(x1, 0, z1), self.px(x0, 0, z1)]

    def facade_quad(self, x: float, z0: float, z1: float, y0: float, y1: float) -> list[Point]:
        return [self.px(x, y0, z0), self.px(x, y0, z1), self.px(x, y1, z1), self.px(x, y1, z0)]

    def front_quad(self, z: float, x0: float, x1: float, y0: float, y1: float) -> list[Point]:
        return [self.px(x0, y0, z), self.px(x1, y0, z), self.px(x1, y1, z), self.px(x0, y1, z)]

    def sky_and_ground(self) -> None:
        """Pavement everywhere below the horizon, then textured asphalt where the road is."""
        w, h = self.size
        horizon = max(0, round(self.cam.v0 * self.ss))
        self.draw.rectangle((0, horizon, w, h), fill=_PAVEMENT)
        road = Image.new("L", self.size, 0)
        rd = ImageDraw.Draw(road)
        rd.polygon(self.ground_quad(OPPOSITE_X[0], ROAD_HALF, 0.5, FAR_Z), fill=255)
        rd.polygon(self.ground_quad(-400.0, 400.0, CROSS_Z[0], CROSS_Z[1]), fill=255)
        self.image.paste(self._asphalt(), (0, 0), road)
        self._paving_joints()

    def _asphalt(self) -> Image.Image:
        """Asphalt grain and blotches, generated at output resolution and upsampled."""
        w, h = self.cam.width, self.cam.height
        coarse = self.rng.normal(0.0, 3.0, (h // 24 + 2, w // 24 + 2)).astype(np.float32)
        blot = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        shade = np.asarray(blot, dtype=np.float32) + self.rng.normal(0.0, 7.0, (h, w)).astype(
            np.float32
        )
        shade += float(_ASPHALT[1])
        grey = Image.fromarray(np.clip(shade, 0, 255).astype(np.uint8))
        tint = Image.merge("RGB", (grey.point(lambda g: g - 2), grey, grey.point(lambda g: g + 4)))
        return tint.resize(self.size, Image.Resampling.BILINEAR)

    def _paving_joints(self) -> None:
        joint = (128, 121, 112)
        for z in np.arange(1.0, 120.0, 1.2):
            for x0, x1 in ((ROAD_HALF, RIGHT_FACADE_X), (LEFT_FACADE_X, OPPOSITE_X[0])):
                if not CROSS_Z[0] - 0.5 < z < CROSS_Z[1] + 0.5:
                    self.draw.line([self.px(x0, 0, z), self.px(x1, 0, z)], fill=joint, width=1)

    def paint(self, quad: Sequence[Point], color: RGB = _PAINT) -> None:
        self.draw.polygon(list(quad), fill=color)

    def road_markings(self) -> None:
        """Lane lines (solid before the stop line, dashed after), stop line, zebras, arrows."""
        half = 0.075
        for x in LANE_DIVIDERS:
            self.paint(self.ground_quad(x - half, x + half, 0.5, SOLID_Z[1]))
            for z in np.arange(ZEBRA_FAR[1] + 1.0, FAR_Z, 9.0):
                self.paint(self.ground_quad(x - half, x + half, z, z + 3.0))
        x = (OPPOSITE_X[0] + OPPOSITE_X[1]) / 2.0
        for z0, z1 in ((0.5, ZEBRA_NEAR[0] - 1.0), (ZEBRA_FAR[1] + 1.0, FAR_Z)):
            for z in np.arange(z0, z1 - 1.0, 9.0):
                self.paint(self.ground_quad(x - half, x + half, z, min(z + 3.0, z1)))
        for edge in (ROAD_HALF - 0.25, OPPOSITE_X[0] + 0.25):
            for z0, z1 in ((0.5, CROSS_Z[0]), (CROSS_Z[1], FAR_Z)):
                self.paint(self.ground_quad(edge - 0.1, edge + 0.1, z0, z1))
        self.paint(self.ground_quad(MEDIAN_X[1], ROAD_HALF, STOP_Z - STOP_LINE_W, STOP_Z))
        for z0, z1 in (ZEBRA_NEAR, ZEBRA_FAR):
            for x in np.arange(OPPOSITE_X[0] + 0.3, ROAD_HALF - 0.4, 1.0):
                self.paint(self.ground_quad(x, x + 0.55, z0, z1))
        for lane in range(N_LANES):
            self._arrow(-ROAD_HALF + LANE_W * (lane + 0.5), 11.0)

    def _arrow(self, x: float, z: float) -> None:
        self.paint(self.ground_quad(x - 0.12, x + 0.12, z, z + 3.4))
        tip = [self.px(x - 0.45, 0, z + 3.4), self.px(x + 0.45, 0, z + 3.4), self.px(x, 0, z + 5.0)]
        self.paint(tip)

    def kerbs(self) -> None:
        """Raised median with a striped kerb, and the pavement kerbs."""
        for z0, z1 in ((0.5, ZEBRA_NEAR[0] - 0.5), (ZEBRA_FAR[1] + 0.5, FAR_Z)):
            self.paint(self.ground_quad(MEDIAN_X[0], MEDIAN_X[1], z0, z1), (112, 118, 96))
            for z in np.arange(z0, min(z1, 150.0), 1.0):
                stripe = (236, 236, 230) if int(z) % 2 else (34, 34, 34)
                for xk in (MEDIAN_X[0], MEDIAN_X[1] - 0.15):
                    self.paint(self.ground_quad(xk, xk + 0.15, z, z + 1.0), stripe)
        for x in (ROAD_HALF, OPPOSITE_X[0] - 0.2):
            for z0, z1 in ((0.5, CROSS_Z[0]), (CROSS_Z[1], FAR_Z)):
                self.paint(self.ground_quad(x, x + 0.2, z0, z1), (186, 184, 178))

    def buildings(self) -> None:
        """Narrow Vietnamese tube houses along both pavements and across the cross street."""
        houses: list[tuple[float, list[tuple[list[Point], RGB]]]] = []
        for x in (RIGHT_FACADE_X, LEFT_FACADE_X):
            for z0, z1 in ((0.5, CROSS_Z[0]), (CROSS_Z[1], 260.0)):
                z = z0
                while z < z1:
                    width = min(float(self.rng.uniform(3.8, 6.5)), z1 - z)
                    houses.append((z + width, self._side_house(x, z, z + width)))
                    z += width
        for x0, x1 in ((RIGHT_FACADE_X, 60.0), (-60.0, LEFT_FACADE_X)):
            houses.append((CROSS_Z[1], self._front_houses(x0, x1)))
        for _, parts in sorted(houses, key=lambda item: -item[0]):
            for quad, color in parts:
                self.paint(quad, color)

    def _palette(self) -> RGB:
        colors = [(226, 202, 140), (214, 170, 160), (230, 228, 214), (160, 190, 200)]
        colors += [(190, 200, 150), (236, 210, 100), (200, 150, 110), (170, 170, 176)]
        return colors[int(self.rng.integers(len(colors)))]

    def _side_house(self, x: float, z0: float, z1: float) -> list[tuple[list[Point], RGB]]:
        wall = self._palette()
        floors = int(self.rng.integers(2, 6))
        top = 3.6 + 3.2 * floors
        parts = [(self.facade_quad(x, z0, z1, 0.0, top), wall)]
        sign = [(200, 30, 36), (20, 80, 170), (240, 190, 20), (30, 140, 70)]
        shop = sign[int(self.rng.integers(len(sign)))]
        parts.append((self.facade_quad(x, z0 + 0.2, z1 - 0.2, 0.0, 2.8), (62, 58, 54)))
        parts.append((self.facade_quad(x, z0 + 0.1, z1 - 0.1, 2.9, 3.5), shop))
        for f in range(floors):
            y = 4.3 + 3.2 * f
            parts.append((self.facade_quad(x, z0 + 0.6, z1 - 0.6, y, y + 1.7), (58, 70, 84)))
            parts.append((self.facade_quad(x, z0 + 0.3, z1 - 0.3, y - 0.2, y), (120, 116, 110)))
        return parts

    def _front_houses(self, x0: float, x1: float) -> list[tuple[list[Point], RGB]]:
        parts: list[tuple[list[Point], RGB]] = []
        x, z = x0, CROSS_Z[1] + 0.01
        while x < x1:
            width = float(self.rng.uniform(4.0, 7.0))
            top = 3.6 + 3.2 * int(self.rng.integers(2, 6))
            parts.append((self.front_quad(z, x, x + width, 0.0, top), self._palette()))
            parts.append((self.front_quad(z, x + 0.3, x + width - 0.3, 0.0, 2.8), (62, 58, 54)))
            for y in np.arange(4.3, top - 1.0, 3.2):
                quad = self.front_quad(z, x + 0.8, x + width - 0.8, float(y), float(y) + 1.7)
                parts.append((quad, (58, 70, 84)))
            x += width
        return parts

    def signal_pole(self) -> None:
        """Pole and the three-lamp signal head (all lamps dark; the lit one is drawn per frame)."""
        x, z = SIGNAL_X, SIGNAL_Z
        self.paint(self.front_quad(z, x + 0.12, x + 0.26, 0.0, 5.7), (96, 100, 104))
        self.paint(self.front_quad(z, x - 0.24, x + 0.24, 4.35, 5.55), (22, 24, 26))
        for y in LAMP_Y.values():
            (u, v), r = self.px(x, y, z), self.cam.f * LAMP_R / z * self.ss
            self.draw.ellipse((u - r, v - r, u + r, v + r), fill=(48, 46, 44))


def draw_lamp(img: Image.Image, cam: Camera, phase: str, sx: float, sy: float) -> None:
    """Lights the lamp of `phase` on `img` (drawn at scale (sx, sy) of the main image)."""
    u, v, r = cam.lamp(phase)
    u, v = u * sx, v * sy
    rx, ry = max(r * sx, 0.8), max(r * sy, 0.8)
    draw = ImageDraw.Draw(img)
    on = LAMP_ON[phase]
    glow = (min(255, on[0] // 2 + 120), min(255, on[1] // 2 + 120), min(255, on[2] // 2 + 120))
    draw.ellipse((u - rx, v - ry, u + rx, v + ry), fill=on)
    draw.ellipse((u - rx * 0.45, v - ry * 0.45, u + rx * 0.45, v + ry * 0.45), fill=glow)


@lru_cache(maxsize=4)
def lores_background(width: int, height: int, lw: int, lh: int) -> Image.Image:
    """The scenery resampled to the lores size (x and y scaled separately). Read-only."""
    return background(width, height).resize((lw, lh), Image.Resampling.LANCZOS)
