"""Photometric degradations of detector training images, shared by synthetic and real samples.

`degrade` turns a clean RGB picture into one seen by a cheap roadside camera: colour and
exposure changes, low light, IR greyscale, glare, partial occlusion of plates, motion or
focus blur, a low-resolution look, sensor noise and JPEG artefacts. None of them moves
anything, so the plate boxes stay valid. Each effect fires with its own probability; every
random choice comes from the generator passed in, so a sample is reproducible from its seed.

`dirty` and `ir_glow` act on a single plate picture (RGBA) before it is placed in a scene.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import simplejpeg
from PIL import Image, ImageChops, ImageDraw, ImageFilter

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

P_JITTER = 0.85
P_LOW_LIGHT = 0.25
P_IR = 0.12
P_GLARE = 0.15
P_OCCLUDE = 0.12  # per plate box
P_MOTION = 0.1  # the blurs exclude each other
P_LOW_RES = 0.22
P_FOCUS = 0.06
P_NOISE = 0.35
P_JPEG = 0.5
MAX_OCCLUDED = 0.4  # an occluder hides at most this fraction of a plate's box
LEGIBLE_PX = 10.0  # `degrade(glyph_px=...)` keeps letters at least this tall after a low-res look

NOISE_SIGMAS = (2.5, 5.0, 8.0, 12.0)
_NOISE_SIDE = 512


@lru_cache(maxsize=1)
def _noise_bank() -> tuple[Image.Image, ...]:
    """Fixed fields of Gaussian noise around 128, one per sigma; samples use random windows."""
    rng = np.random.default_rng(918_273)
    shape = (_NOISE_SIDE, _NOISE_SIDE, 3)
    fields = (np.clip(rng.normal(128.0, s, shape), 0, 255).astype(np.uint8) for s in NOISE_SIGMAS)
    return tuple(Image.fromarray(f) for f in fields)


@lru_cache(maxsize=1)
def blob() -> Image.Image:
    """A soft round blob (mode L, 64 x 64, 255 at the centre fading to 0 at the rim)."""
    t = np.linspace(-1.0, 1.0, 64)
    r2 = t[None, :] ** 2 + t[:, None] ** 2
    return Image.fromarray((255.0 * np.clip(1.0 - r2, 0.0, 1.0) ** 2).astype(np.uint8))


@lru_cache(maxsize=1)
def _faint_blobs() -> tuple[Image.Image, ...]:
    """`blob` at peak strengths 30 % to 80 % (smudges of dirt)."""
    return tuple(blob().point([round(v * k) for v in range(256)]) for k in np.linspace(0.3, 0.8, 6))


def degrade(
    image: Image.Image,
    rng: np.random.Generator,
    boxes: F32,
    ir: bool | None = None,
    glyph_px: float | None = None,
) -> U8:
    """`image` (RGB) degraded at random, as an (H, W, 3) uint8 array; `boxes` (N, 4) are the
    plates (occluders and some glare go over them). `ir` forces IR greyscale on or off;
    None draws it with probability `P_IR`.

    `glyph_px`, the height of a plate's letters in the picture, asks for a picture a person
    could still read (the plate reader's acceptance set): no glare, no darker than half
    brightness, a low-resolution look that keeps letters `LEGIBLE_PX` tall, motion blur at
    most a fifth and focus blur a twelfth of the letter height, noise sigma at most 8 and
    JPEG quality at least 40. Without it (the default) the draws are unchanged."""
    if ir is None:
        ir = bool(rng.random() < P_IR)
    image = image.point(_tone_lut(rng, ir, min_bright=0.5 if glyph_px else 0.0))
    if rng.random() < P_GLARE and not glyph_px:
        image = _glare(image, rng, boxes)
    for box in boxes:
        if rng.random() < P_OCCLUDE:
            occlude(image, rng, box)
    if ir:
        image = image.convert("L").convert("RGB")
    image = _blur(image, rng, glyph_px)
    if rng.random() < P_NOISE:
        image = _noise(image, rng, max_sigma=8.0 if glyph_px else math.inf)
    pixels = np.asarray(image)
    if rng.random() < P_JPEG:
        pixels = jpeg(pixels, max(int(rng.integers(20, 91)), 40 if glyph_px else 0))
    return pixels


def _blur(image: Image.Image, rng: np.random.Generator, glyph_px: float | None) -> Image.Image:
    """At most one of: motion blur, a low-resolution look, focus blur (`degrade`)."""
    pick = rng.random()
    if pick < P_MOTION:
        max_len = glyph_px / 5.0 if glyph_px else math.inf
        return Image.fromarray(_motion_blur(np.asarray(image), rng, max_len))
    pick -= P_MOTION
    if pick < P_LOW_RES:
        return _low_res(image, rng, LEGIBLE_PX / glyph_px if glyph_px else 0.0)
    if pick - P_LOW_RES < P_FOCUS:
        sigma = float(rng.uniform(0.5, 1.8))
        if glyph_px:
            sigma = min(sigma, glyph_px / 12.0)
        return image.filter(ImageFilter.GaussianBlur(sigma))
    return image


def _tone_lut(rng: np.random.Generator, ir: bool, min_bright: float = 0.0) -> list[int]:
    """One RGB lookup table: colour jitter, contrast, brightness and (sometimes) low light."""
    x = np.arange(256, dtype=np.float32) / 255.0
    gamma = float(rng.uniform(0.75, 1.3))
    gain = np.ones(3, dtype=np.float32)
    contrast, bright = 1.0, 1.0
    if rng.random() < P_JITTER:
        gain = rng.uniform(0.85, 1.15, 3).astype(np.float32)
        contrast, bright = float(rng.uniform(0.7, 1.25)), float(rng.uniform(0.75, 1.25))
    if ir:  # an IR-lit night scene: dim surroundings (the plates glow: see `ir_glow`)
        gamma *= float(rng.uniform(1.0, 1.6))
        bright *= float(rng.uniform(0.6, 1.0))
    elif rng.random() < P_LOW_LIGHT:  # night or dusk: dark and contrasty
        gamma *= float(rng.uniform(1.2, 2.2))
        bright *= float(rng.uniform(0.35, 0.8))
    bright = max(bright, min_bright)
    curve = x[None, :] ** gamma * gain[:, None] * bright
    curve = (curve - 0.5) * contrast + 0.5
    lut: list[int] = np.clip(curve * 255.0 + 0.5, 0, 255).astype(np.uint8).ravel().tolist()
    return lut


def _glare(image: Image.Image, rng: np.random.Generator, boxes: F32) -> Image.Image:
    """A bright specular blob, half the time on a plate (headlights, sun on the plate sheet)."""
    w, h = image.size
    if len(boxes) and rng.random() < 0.5:
        x0, y0, x1, y1 = boxes[int(rng.integers(len(boxes)))]
        cx, cy = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
        r = max(3.0, float(x1 - x0) * float(rng.uniform(0.15, 0.6)))
    else:
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        r = min(w, h) * float(rng.uniform(0.05, 0.3))
    x0, y0 = round(cx - r), round(cy - r)
    side = max(2, round(2 * r))
    mask = blob().resize((side, side), Image.Resampling.BILINEAR)
    level = int(rng.integers(160, 256))
    tint = (level, level, min(255, level + int(rng.integers(0, 30))))
    out = image.copy()
    out.paste(tint, (x0, y0, x0 + side, y0 + side), mask)
    return out


def occlude(image: Image.Image, rng: np.random.Generator, box: npt.ArrayLike) -> None:
    """Covers at most `MAX_OCCLUDED` of `box` with a bar, a blob or a diagonal (in place)."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64))
    bw, bh = x1 - x0, y1 - y0
    if bw < 2 or bh < 2:
        return
    draw = ImageDraw.Draw(image)
    shade = int(rng.integers(0, 256))
    fill = (shade, int(np.clip(shade + rng.integers(-40, 41), 0, 255)), shade)
    frac = float(rng.uniform(0.12, MAX_OCCLUDED))
    kind = int(rng.integers(3))
    if kind == 0:  # a bar from one side: a pole, a hand, a wheel of the next vehicle
        side = int(rng.integers(4))
        if side < 2:
            a = x0 if side == 0 else x1 - frac * bw
            bar = [(a, y0), (a + frac * bw, y0), (a + frac * bw, y1), (a, y1)]
        else:
            a = y0 if side == 2 else y1 - frac * bh
            bar = [(x0, a), (x1, a), (x1, a + frac * bh), (x0, a + frac * bh)]
        draw.polygon(bar, fill=fill)
    elif kind == 1:  # a blob: mud, a sticker, a leaf
        rx = bw * math.sqrt(frac / math.pi) * float(rng.uniform(0.7, 1.0))
        ry = frac * bw * bh / (math.pi * rx) * 0.95
        cx, cy = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)
    else:  # a diagonal strap or cable
        width = max(1, round(frac * min(bw, bh) * 0.6))
        ends = [(x0, float(rng.uniform(y0, y1))), (x1, float(rng.uniform(y0, y1)))]
        draw.line(ends, fill=fill, width=width)


def _motion_blur(pixels: U8, rng: np.random.Generator, max_len: float = math.inf) -> U8:
    """Average of 3-7 copies shifted along a random direction (a vehicle moving fast), the
    copies at most `max_len` pixels apart end to end."""
    taps = int(rng.integers(3, 8))
    if taps - 1 > max_len:
        taps = int(max_len) + 1
    angle = float(rng.uniform(0.0, math.pi))
    if rng.random() < 0.6:  # mostly along the road: up/down in the picture
        angle = math.pi / 2 + float(rng.normal(0.0, 0.3))
    steps = np.linspace(-(taps - 1) / 2.0, (taps - 1) / 2.0, taps)
    dx = np.round(steps * math.cos(angle)).astype(int)
    dy = np.round(steps * math.sin(angle)).astype(int)
    pad = int(max(np.abs(dx).max(), np.abs(dy).max()))
    h, w = pixels.shape[:2]
    padded = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    acc = np.zeros(pixels.shape, dtype=np.uint16)
    for ox, oy in zip(dx, dy, strict=True):
        acc += padded[pad + oy : pad + oy + h, pad + ox : pad + ox + w]
    return (acc // taps).astype(np.uint8)


def _low_res(image: Image.Image, rng: np.random.Generator, min_f: float = 0.0) -> Image.Image:
    """Down-scaled (by at least `min_f`; not at all past 0.8) and back up: the look of a cheap
    sensor or a digital zoom."""
    f = max(float(rng.uniform(0.3, 0.8)), min_f)
    if f > 0.8:
        return image
    w, h = image.size
    small = image.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR)
    up = Image.Resampling.NEAREST if rng.random() < 0.2 else Image.Resampling.BILINEAR
    return small.resize((w, h), up)


def _noise(
    image: Image.Image, rng: np.random.Generator, max_sigma: float = math.inf
) -> Image.Image:
    """Gaussian sensor noise (one of `NOISE_SIGMAS` grey levels, at most `max_sigma`), from a
    random bank window."""
    w, h = image.size
    pick = int(rng.integers(len(NOISE_SIGMAS)))
    while pick and NOISE_SIGMAS[pick] > max_sigma:
        pick -= 1
    bank = _noise_bank()[pick]
    if w > bank.width or h > bank.height:
        bank = bank.resize((max(w, bank.width), max(h, bank.height)), Image.Resampling.NEAREST)
    x0, y0 = int(rng.integers(bank.width - w + 1)), int(rng.integers(bank.height - h + 1))
    return ImageChops.add(image, bank.crop((x0, y0, x0 + w, y0 + h)), 1.0, -128)


def jpeg(pixels: U8, quality: int) -> U8:
    """`pixels` (H, W, 3) passed through a JPEG encode and decode at `quality` (4:2:0)."""
    data = simplejpeg.encode_jpeg(
        np.ascontiguousarray(pixels), quality=quality, colorspace="RGB", colorsubsampling="420"
    )
    out: U8 = simplejpeg.decode_jpeg(data, colorspace="RGB")
    return out


def dirty(plate: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A copy of the RGBA `plate` with 1-4 dark smudges of road dirt."""
    out = plate.copy()
    w, h = out.size
    for _ in range(int(rng.integers(1, 5))):
        rx = max(2, round(w * float(rng.uniform(0.05, 0.3))))
        ry = max(2, round(h * float(rng.uniform(0.1, 0.5))))
        x0, y0 = round(rng.uniform(-rx / 2, w - rx / 2)), round(rng.uniform(-ry / 2, h - ry / 2))
        faint = _faint_blobs()[int(rng.integers(len(_faint_blobs())))]
        mask = faint.resize((rx, ry), Image.Resampling.BILINEAR)
        mud = (int(rng.integers(40, 90)), int(rng.integers(35, 75)), int(rng.integers(25, 60)))
        out.paste((*mud, 255), (x0, y0, x0 + rx, y0 + ry), mask)
    out.putalpha(plate.getchannel("A"))
    return out


def ir_glow(plate: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The RGBA `plate` as seen under IR: a retroreflective sheet glowing bright grey."""
    grey = plate.convert("L")
    gain = float(rng.uniform(1.3, 2.2))
    lifted = grey.point([min(255, round(60 + v * gain)) for v in range(256)])
    return Image.merge("RGBA", (lifted, lifted, lifted, plate.getchannel("A")))
