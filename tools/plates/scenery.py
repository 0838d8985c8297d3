"""Backgrounds for synthetic detector samples: simulated junction frames, textures, clutter.

Three banks are built once per process from fixed seeds (so they never depend on the sample
generator) and cached:

- a few frames of `sim://junction` (full and half resolution) with their plate truth;
- procedural textures: gradients, blotches, blocks, stripes, car-like bodies, walls of text;
- clutter sprites that are HARD NEGATIVES: shop signs, plate-shaped white and yellow boards
  with text that is not laid out like a plate, blue house-number signs, round road signs,
  stickers with bar codes.

Per sample, `background` cuts a random window out of one of them (the generator passed in
decides everything) and `add_clutter` pastes a few clutter sprites.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from node.capture.sim import SimSource
from node.config import CaptureConfig

RGB = tuple[int, int, int]
BILINEAR = Image.Resampling.BILINEAR

SIM_FRAMES = ((1, 2), (2, 12), (3, 24), (4, 36))  # (seed, frames read): traffic varies
SIM_LEVELS = (1.0, 0.5**0.5, 0.5, 0.5**1.5)
P_SIM = 0.35  # share of samples cut out of a simulated junction frame
P_RESAMPLE = 0.15  # share of windows resampled at any scale (the others are plain crops)
TEXTURES = 12
TEXTURE_SIDE = 640
CLUTTER = 120

_PAINTS: tuple[RGB, ...] = (
    (232, 232, 230), (176, 179, 184), (26, 27, 30), (158, 22, 26), (32, 58, 112),
    (96, 99, 104), (204, 188, 152), (34, 72, 54), (200, 120, 30), (240, 240, 236),
)  # fmt: skip
_SIGN_BG: tuple[RGB, ...] = (
    (200, 30, 36), (20, 80, 170), (240, 190, 20), (30, 140, 70), (240, 240, 236),
    (250, 250, 250), (246, 206, 40), (20, 20, 22), (230, 110, 30), (120, 40, 140),
)  # fmt: skip
_LETTERS = "ABCDEFGHIKLMNOPQRSTUVXYZ"


@dataclass(frozen=True, slots=True)
class SimPlate:
    """A plate in a background picture: box (x0, y0, x1, y1) in its pixels, and how much of
    it a nearer vehicle left visible."""

    layout: str
    color: str
    box: tuple[float, float, float, float]
    visible: float


@dataclass(frozen=True, eq=False)
class _SimFrame:
    levels: tuple[Image.Image, ...]  # the main image at the scales in SIM_LEVELS
    plates: tuple[SimPlate, ...]  # boxes in full-resolution pixels


@lru_cache(maxsize=1)
def _sim_frames() -> tuple[_SimFrame, ...]:
    """Main-stream frames of the simulated junction, several seeds and moments."""
    cfg = CaptureConfig()
    out = []
    for seed, reads in SIM_FRAMES:
        src = SimSource(f"sim://junction?seed={seed}&fps=0&rate=70", cfg)
        src.open(threading.Event())
        frame = None
        for _ in range(reads):
            frame = src.read()
        src.close()
        assert frame is not None
        full = Image.fromarray(frame.main.array())
        levels = tuple(_scaled(full, k) for k in SIM_LEVELS)
        truth = frame.truth or ()
        plates = tuple(SimPlate(t.layout, t.color, t.box, t.visible) for t in truth)
        out.append(_SimFrame(levels, plates))
    return tuple(out)


def _scaled(img: Image.Image, k: float) -> Image.Image:
    size = (round(img.width * k), round(img.height * k))
    return img if k == 1.0 else img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def prepare() -> None:
    """Builds the banks (simulated frames, textures, clutter) now."""
    _sim_frames()
    _textures()
    _clutter()


def background(
    rng: np.random.Generator, width: int, height: int
) -> tuple[Image.Image, list[SimPlate]]:
    """A width x height RGB background and the plates it already shows (boxes in its pixels)."""
    if rng.random() < P_SIM:
        return _sim_window(rng, width, height)
    levels = _textures()[int(rng.integers(TEXTURES))]
    img, _, _, _ = _window(rng, levels, (width, height), (0.5, 2.0), None)
    if rng.random() < 0.3:  # swap colour channels: more variety, nothing mirrored
        bands = img.split()
        order = rng.permutation(3)
        img = Image.merge("RGB", (bands[order[0]], bands[order[1]], bands[order[2]]))
    return img, []


def _window(
    rng: np.random.Generator,
    levels: tuple[Image.Image, ...],
    size: tuple[int, int],
    scales: tuple[float, float],
    centre: tuple[float, float] | None,
) -> tuple[Image.Image, float, float, float]:
    """A `size` window of the picture whose `levels` are copies at falling scales.

    Mostly a plain crop of a level big enough (cheap); sometimes (`P_RESAMPLE`, or when no
    level is big enough) resampled at a scale drawn from `scales`. Returns (image, scale,
    ox, oy): a point p of level 0 lands at (p - (ox, oy)) * scale in the window.
    """
    w, h = size
    full_w, full_h = levels[0].size
    fits = [im for im in levels if im.width >= w and im.height >= h]
    resample = not fits or rng.random() < P_RESAMPLE
    if resample:
        scale = math.exp(rng.uniform(math.log(scales[0]), math.log(scales[1])))
        scale = max(scale, w / full_w, h / full_h)
    else:
        scale = fits[int(rng.integers(len(fits)))].width / full_w
    rw, rh = w / scale, h / scale
    cx, cy = centre if centre is not None else (rng.uniform(0, full_w), rng.uniform(0, full_h))
    ox = min(max(float(cx) - rw / 2, 0.0), full_w - rw)
    oy = min(max(float(cy) - rh / 2, 0.0), full_h - rh)
    src = next((im for im in reversed(levels) if im.width >= full_w * scale), levels[0])
    k = src.width / full_w
    if resample:
        box = (ox * k, oy * k, (ox + rw) * k, (oy + rh) * k)
        return src.resize(size, BILINEAR, box=box), scale, ox, oy
    x0, y0 = min(round(ox * k), src.width - w), min(round(oy * k), src.height - h)
    return src.crop((x0, y0, x0 + w, y0 + h)), scale, x0 / k, y0 / k


def _sim_window(
    rng: np.random.Generator, width: int, height: int
) -> tuple[Image.Image, list[SimPlate]]:
    frames = _sim_frames()
    frame = frames[int(rng.integers(len(frames)))]
    centre = None
    if frame.plates and rng.random() < 0.6:  # most windows show some of the traffic
        x0, y0, x1, y1 = frame.plates[int(rng.integers(len(frame.plates)))].box
        jitter = rng.uniform(-0.4, 0.4, 2) * (width, height)
        centre = ((x0 + x1) / 2 + float(jitter[0]), (y0 + y1) / 2 + float(jitter[1]))
    img, scale, ox, oy = _window(rng, frame.levels, (width, height), (0.3, 2.5), centre)
    plates = []
    for p in frame.plates:
        b = p.box
        moved = ((b[0] - ox) * scale, (b[1] - oy) * scale, (b[2] - ox) * scale, (b[3] - oy) * scale)
        if moved[2] > 0 and moved[3] > 0 and moved[0] < width and moved[1] < height:
            plates.append(SimPlate(p.layout, p.color, moved, p.visible))
    return img, plates


def add_clutter(
    rng: np.random.Generator, canvas: Image.Image, hide: npt.NDArray[np.int8], count: int
) -> None:
    """Pastes `count` clutter sprites on `canvas`; marks what they cover -1 in `hide`."""
    bank = _clutter()
    w, h = canvas.size
    for _ in range(count):
        levels = bank[int(rng.integers(len(bank)))]
        small = rng.random() < 0.5  # as often at plate scale as at any scale
        hi = 40.0 if small else max(12.0, 0.7 * w)
        sw = round(math.exp(rng.uniform(math.log(10.0), math.log(hi))))
        sprite = next((im for im in reversed(levels) if im.width >= sw), levels[0])
        sh = max(2, round(sw * sprite.height / sprite.width))
        scaled = sprite.resize((sw, sh), BILINEAR)
        x0, y0 = int(rng.integers(-sw // 3, w - sw // 2)), int(rng.integers(-sh // 3, h - sh // 2))
        canvas.paste(scaled, (x0, y0), scaled)
        cover = np.asarray(scaled.getchannel("A")) > 127
        cx0, cy0 = max(0, x0), max(0, y0)
        cx1, cy1 = min(w, x0 + sw), min(h, y0 + sh)
        if cx0 < cx1 and cy0 < cy1:
            sub = cover[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
            hide[cy0:cy1, cx0:cx1][sub] = -1


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, size))


def _words(rng: np.random.Generator, n: int) -> str:
    """`n` made-up words or numbers: sign text that is not a plate number."""
    parts = []
    for _ in range(n):
        if rng.random() < 0.3:
            digits = "".join(str(int(d)) for d in rng.integers(0, 10, int(rng.integers(3, 11))))
            parts.append(digits if rng.random() < 0.5 else f"0{digits[:3]} {digits[3:]}")
        else:
            word = "".join(_LETTERS[int(i)] for i in rng.integers(0, 24, int(rng.integers(2, 8))))
            parts.append(word if rng.random() < 0.7 else word.lower())
    return " ".join(parts)


def _pick(rng: np.random.Generator, colors: tuple[RGB, ...]) -> RGB:
    return colors[int(rng.integers(len(colors)))]


def _ink(bg: RGB) -> RGB:
    return (20, 20, 22) if sum(bg) > 420 else (245, 245, 240)


def _text(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, fill: RGB
) -> None:
    draw.text(xy, text, fill=fill, font=_font(size))


_DARK: RGB = (24, 24, 26)


def _sign(rng: np.random.Generator) -> Image.Image:
    """A hard negative: a board with text, some of them plate-shaped but never plate-laid-out."""
    kind = int(rng.integers(5))
    w, h = _sign_size(rng, kind)
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    if kind == 3:  # a round road sign: a speed limit
        ring = (200, 30, 36) if rng.random() < 0.7 else (20, 80, 170)
        draw.ellipse((0, 0, w - 1, h - 1), fill=(*ring, 255))
        draw.ellipse((w * 0.14, h * 0.14, w * 0.86, h * 0.86), fill=(245, 245, 240, 255))
        _text(draw, (w * 0.28, h * 0.3), str(int(rng.integers(1, 9)) * 10), round(h * 0.4), _DARK)
        return img
    if kind == 1:  # plate-shaped: white or yellow, like a plate, but with other text
        bg = (246, 206, 40) if rng.random() < 0.3 else (238, 238, 232)
    else:
        bg = (22, 64, 158) if kind == 2 else _pick(rng, _SIGN_BG)
    draw.rounded_rectangle((0, 0, w - 1, h - 1), radius=int(rng.integers(0, 8)), fill=(*bg, 255))
    ink = _ink(bg)
    if kind in (1, 2) and rng.random() < 0.5:
        draw.rectangle((3, 3, w - 4, h - 4), outline=(*ink, 255), width=2)
    if kind == 4:  # a label with a bar code
        for bar in range(6, w // 2, 3):
            if rng.random() < 0.6:
                draw.line((bar, h * 0.5, bar, h - 6), fill=_DARK, width=int(rng.integers(1, 3)))
        _text(draw, (w * 0.55, h * 0.3), _words(rng, 1), round(h * 0.25), _DARK)
        return img
    lines = int(rng.integers(1, 4))
    y = float(rng.uniform(0.05, 0.25)) * h
    for _ in range(lines):
        size = max(8, round(h * float(rng.uniform(0.18, 0.55)) / lines * 1.4))
        x = float(rng.uniform(0.02, 0.3)) * w
        _text(draw, (x, y), _words(rng, int(rng.integers(1, 4))), size, ink)
        y += size * 1.2
    return img


def _sign_size(rng: np.random.Generator, kind: int) -> tuple[int, int]:
    if kind == 0:  # a shop sign: long, words and phone numbers
        return int(rng.integers(240, 480)), int(rng.integers(40, 110))
    if kind == 1:  # a plate-shaped board
        w = int(rng.integers(120, 260))
        return w, round(w / float(rng.uniform(1.3, 4.8)))
    if kind == 2:  # a house number: blue, white digits
        return int(rng.integers(80, 140)), int(rng.integers(50, 80))
    if kind == 3:
        side = int(rng.integers(60, 120))
        return side, side
    return int(rng.integers(80, 200)), int(rng.integers(40, 100))


@lru_cache(maxsize=1)
def _clutter() -> tuple[tuple[Image.Image, ...], ...]:
    """The clutter sprites, each with copies halving in size (cheap to scale from)."""
    rng = np.random.default_rng(551_177)
    out = []
    for _ in range(CLUTTER):
        levels = [_sign(rng)]
        while levels[-1].width >= 24 and levels[-1].height >= 8:
            levels.append(levels[-1].reduce(2))
        out.append(tuple(levels))
    return tuple(out)


@lru_cache(maxsize=1)
def _textures() -> tuple[tuple[Image.Image, Image.Image], ...]:
    """Each texture at full size and at half size."""
    rng = np.random.default_rng(73_001)
    out = []
    for _ in range(TEXTURES):
        tex = _texture(rng)
        out.append((tex, tex.reduce(2)))
    return tuple(out)


def _texture(rng: np.random.Generator) -> Image.Image:
    """A busy street-ish picture: a shaded base with blocks, stripes, bodies and signs."""
    side = TEXTURE_SIDE
    t = np.linspace(0.0, 1.0, side, dtype=np.float32)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ramp = t[:, None] if rng.random() < 0.5 else t[None, :]
    base = a[None, None, :] * (1 - ramp[..., None]) + b[None, None, :] * ramp[..., None]
    blot = Image.fromarray((rng.normal(128, 25, (8, 8, 3)).clip(0, 255)).astype(np.uint8))
    base = base + np.asarray(blot.resize((side, side), Image.Resampling.BICUBIC)) - 128.0
    base = np.broadcast_to(base, (side, side, 3))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(15, 40))):
        kind = int(rng.integers(4))
        x, y = float(rng.uniform(-40, side)), float(rng.uniform(-40, side))
        if kind == 0:  # a block: a wall, a window, a shutter
            w, h = float(rng.uniform(10, 200)), float(rng.uniform(10, 200))
            draw.rectangle(
                (x, y, x + w, y + h), fill=tuple(int(v) for v in rng.integers(0, 256, 3))
            )
        elif kind == 1:  # stripes: a zebra crossing, a shutter, a railing
            _stripes(draw, rng, x, y)
        elif kind == 2:  # a car-like body with a window and lamps (no plate)
            _body(draw, rng, x, y)
        else:
            sign = _sign(rng)
            img.paste(sign, (round(x), round(y)), sign)
    noise = rng.normal(0, 4, (side, side, 3)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def _stripes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, y: float) -> None:
    color = tuple(int(v) for v in rng.integers(0, 256, 3))
    n, gap = int(rng.integers(3, 12)), float(rng.uniform(4, 24))
    length, width = float(rng.uniform(20, 200)), max(1, round(gap * float(rng.uniform(0.2, 0.6))))
    ang = float(rng.uniform(0, math.pi))
    dx, dy = math.cos(ang), math.sin(ang)
    for i in range(n):
        ox, oy = x - dy * gap * i, y + dx * gap * i
        draw.line((ox, oy, ox + dx * length, oy + dy * length), fill=color, width=width)


def _body(draw: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, y: float) -> None:
    paint = _pick(rng, _PAINTS)
    w = float(rng.uniform(60, 260))
    h = w * float(rng.uniform(0.35, 0.8))
    draw.rounded_rectangle((x, y, x + w, y + h), radius=w * 0.08, fill=paint)
    draw.rounded_rectangle(
        (x + w * 0.12, y + h * 0.08, x + w * 0.88, y + h * 0.4), radius=w * 0.04, fill=(38, 48, 58)
    )
    for lx in (x + w * 0.04, x + w * 0.8):
        draw.rectangle((lx, y + h * 0.5, lx + w * 0.16, y + h * 0.62), fill=(190, 24, 28))
    draw.rectangle((x, y + h * 0.8, x + w, y + h), fill=(30, 30, 32))
