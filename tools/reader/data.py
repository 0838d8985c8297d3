"""Training and validation samples for the plate reader.

A sample is one plate seen by a roadside camera and cut out the way the node cuts it:

1. a plate picture: Vietnamese plates of every layout and colour drawn by the shared renderer
   (`node.capture.platerender.render_plate`), or (training only, `P_GENERIC`) a generic
   Latin-alphanumeric one-row plate in one of the system's TrueType fonts, so the reader
   learns letters, not one typeface;
2. dirt and IR glow (`tools.plates.augment.dirty`, `ir_glow`), then the plate on a
   background turned in 3-D (yaw up to 35°, pitch 20°, roll 8°) at a random size, then the
   detector's photometric degradations (`augment.degrade`: colour, low light, IR grey, glare,
   motion/focus blur, low resolution, noise, JPEG);
3. a detection box: the projected plate's hull, each edge moved at random as a detector's box
   would be; then the node's own `node.infer.reader.crop_plate` and `plate_rows`.

Rendering a plate costs ~20 ms here, so training plates come from a bank rendered once per
seed (`bank`, cached as .npz in the run folder), each picked with fresh augmentation. The
validation set is rendered fresh at its exact size from its own seed (`VAL_SEED`), never from
the bank. Everything is a pure function of the seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from node.capture.platerender import COLORS, LAYOUTS, glyph_mm, render_plate
from node.infer.reader import crop_plate, plate_rows
from node.plates.grammar import ALPHABET
from tools.plates.augment import LEGIBLE_PX, degrade, dirty, ir_glow
from tools.plates.synth import rotation

U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]

INPUT_W, INPUT_H = 128, 32
TWO_ROW_BELOW_ASPECT = 2.8
FORMATS = tuple(LAYOUTS)  # car1, car2, moto
BANK_W = 240  # bank plates are drawn about this many pixels wide
MIN_W, MAX_W = 40.0, 240.0  # plate width in the picture (frontal), log-uniform
MAX_YAW, MAX_PITCH, MAX_ROLL = 35.0, 20.0, 8.0
P_DIRT, P_IR_GLOW, P_GENERIC = 0.2, 0.1, 0.12
BOX_JITTER = (0.06, 0.1)  # each box edge moves up to this fraction of the width / height
P_LEGIBLE = 0.7  # training samples drawn from the acceptance set's range and degradations
GLYPH_SHARE = {name: glyph_mm(name) / size[0] for name, size in LAYOUTS.items()}
GENERIC_GLYPH_SHARE = 0.55  # generic plates: letter height / plate height (about)
VAL_SEED = 20_261_128
SERIES = "ABCDEFGHKLMNPRSTUVXYZ"  # letters issued on plates (not I, J, O, Q, W)
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))


@dataclass(frozen=True)
class Plate:
    """A plate picture (RGBA) and what it says, row by row."""

    rgba: U8
    layout: str  # car1, car2, moto or generic
    color: str
    rows: tuple[str, ...]


def plate_text(layout: str, rng: np.random.Generator) -> tuple[str, tuple[str, ...]]:
    """A random plate number for `layout`: the renderer's text and the rows the reader reads."""
    province = f"{int(rng.integers(11, 100)):02d}"
    digits = "".join(str(int(d)) for d in rng.integers(0, 10, 5))
    five = rng.random() < 0.8
    serial_text = f"{digits[:3]}.{digits[3:]}" if five else digits[:4]
    serial = digits if five else digits[:4]
    letter = SERIES[int(rng.integers(len(SERIES)))]
    if layout == "moto":
        second = (
            SERIES[int(rng.integers(len(SERIES)))]
            if rng.random() < 0.15
            else str(int(rng.integers(1, 10)))
        )
        return f"{province}-{letter}{second} {serial_text}", (province + letter + second, serial)
    if rng.random() < 0.12:
        letter += SERIES[int(rng.integers(len(SERIES)))]
    text = f"{province}{letter}-{serial_text}"
    if layout == "car1":
        return text, (province + letter + serial,)
    return text, (province + letter, serial)


def vn_plate(layout: str, color: str, rng: np.random.Generator, width: float) -> Plate:
    text, rows = plate_text(layout, rng)
    rgba = render_plate(text, layout, color, width / LAYOUTS[layout][0] * 1000.0)
    return Plate(rgba, layout, color, rows)


@lru_cache(maxsize=1)
def fonts() -> tuple[Path, ...]:
    """TrueType fonts on this machine (sorted, so the same machine gives the same list)."""
    found = [p for d in FONT_DIRS if d.is_dir() for p in d.rglob("*.ttf")]
    return tuple(sorted(p for p in found if "Oblique" not in p.name and "Italic" not in p.name))


def generic_plate(rng: np.random.Generator, width: float) -> Plate:
    """A one-row plate of 4-8 random letters and digits in a random font and colours."""
    n = int(rng.integers(4, 9))
    text = "".join(ALPHABET[int(i)] for i in rng.integers(0, len(ALPHABET), n))
    choices = fonts()
    size = 64
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont
    if choices:
        font = ImageFont.truetype(str(choices[int(rng.integers(len(choices)))]), size)
    else:
        font = ImageFont.load_default(size=size)
    spaced = text if rng.random() < 0.6 else " ".join([text[: n // 2], text[n // 2 :]])
    bbox = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), spaced, font=font)
    tw, th = round(bbox[2] - bbox[0]), round(bbox[3] - bbox[1])
    pad_x, pad_y = int(size * rng.uniform(0.2, 0.5)), int(size * rng.uniform(0.15, 0.35))
    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    luma = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    fg = (15, 15, 15) if luma > 128 else (240, 240, 240)
    img = Image.new("RGBA", (tw + 2 * pad_x, th + 2 * pad_y), (*bg, 255))
    draw = ImageDraw.Draw(img)
    draw.text((pad_x - bbox[0], pad_y - bbox[1]), spaced, fill=fg, font=font)
    draw.rectangle((1, 1, img.width - 2, img.height - 2), outline=fg, width=2)
    if img.width < 4.5 * img.height:  # a one-row plate is wide: pad the sides
        wide = Image.new("RGBA", (round(4.5 * img.height), img.height), (*bg, 255))
        wide.paste(img, ((wide.width - img.width) // 2, 0))
        img = wide
        ImageDraw.Draw(img).rectangle((1, 1, img.width - 2, img.height - 2), outline=fg, width=2)
    scale = width / img.width
    img = img.resize(
        (max(4, round(img.width * scale)), max(2, round(img.height * scale))),
        Image.Resampling.LANCZOS,
    )
    return Plate(np.asarray(img, np.uint8).copy(), "generic", "random", (text,))


def bank_plate(index: int, seed: int) -> Plate:
    """Bank plate `index`: layouts and colours in turn, the text from (seed, index)."""
    rng = np.random.default_rng([seed, 7, index])
    if rng.random() < P_GENERIC:
        return generic_plate(rng, BANK_W)
    layout = FORMATS[index % len(FORMATS)]
    color = tuple(COLORS)[(index // len(FORMATS)) % len(COLORS)]
    return vn_plate(layout, color, rng, BANK_W)


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A vehicle-ish surround: a flat or graded colour with some texture."""
    base = rng.integers(0, 256, 3).astype(np.float32)
    ramp = np.linspace(rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.2), h, dtype=np.float32)
    img: npt.NDArray[np.float32] = (
        base[None, None, :] * ramp[:, None, None] * np.ones((h, w, 1), np.float32)
    ).astype(np.float32)
    img += rng.normal(0.0, float(rng.uniform(2, 20)), (h, w, 1)).astype(np.float32)
    if rng.random() < 0.5:  # a bumper edge or grille line
        y = int(rng.integers(0, h))
        img[y : y + max(1, h // 12)] *= float(rng.uniform(0.2, 1.6))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def glyph_share(plate: Plate) -> float:
    """The height of `plate`'s letters as a share of its width."""
    if plate.layout in GLYPH_SHARE:
        return GLYPH_SHARE[plate.layout]
    return GENERIC_GLYPH_SHARE * plate.rgba.shape[0] / plate.rgba.shape[1]


def legible_width(share: float) -> float:
    """The narrowest plate (frontal, px) whose letters are `LEGIBLE_PX` tall."""
    return max(MIN_W, LEGIBLE_PX / share)


def scene(
    plate: Plate,
    rng: np.random.Generator,
    width: float,
    augment: bool = True,
    legible: bool = False,
) -> tuple[U8, tuple[float, float, float, float]]:
    """The plate `width` px wide (frontal), turned in 3-D on a background and degraded (only
    as far as a person could still read it when `legible`); the picture and the plate's box
    (hull of its projected corners)."""
    pic = Image.fromarray(plate.rgba)
    if augment and rng.random() < P_DIRT:
        pic = dirty(pic, rng)
    ir = bool(augment and rng.random() < P_IR_GLOW)
    if ir:
        pic = ir_glow(pic, rng)
    k = width / pic.width
    pw, ph = width, pic.height * k
    rot = rotation(*(math.radians(rng.uniform(-m, m)) for m in (MAX_YAW, MAX_PITCH, MAX_ROLL)))
    dist = width * math.exp(rng.uniform(math.log(6.0), math.log(40.0)))
    margin = 0.6 * width + 8
    cw, ch = round(pw + 2 * margin), round(ph + 2 * margin)
    cam = np.array([[dist, 0, cw / 2], [0, dist, ch / 2], [0, 0, 1]])
    plane = np.array(
        [[rot[0, 0], rot[0, 1], 0], [rot[1, 0], rot[1, 1], 0], [rot[2, 0], rot[2, 1], dist]]
    )
    to_card = np.array([[k, 0, -pw / 2], [0, k, -ph / 2], [0, 0, 1]])
    hom = cam @ plane @ to_card  # plate pixels -> canvas pixels
    corners = np.array(
        [[0, 0, 1], [pic.width, 0, 1], [pic.width, pic.height, 1], [0, pic.height, 1]]
    )
    proj = corners @ hom.T
    quad = proj[:, :2] / proj[:, 2:3]
    inv = np.linalg.inv(hom)
    inv /= inv[2, 2]
    warped = pic.transform(
        (cw, ch),
        Image.Transform.PERSPECTIVE,
        tuple(inv.ravel()[:8].tolist()),
        Image.Resampling.BILINEAR,
    )
    canvas = _background(rng, cw, ch)
    canvas.paste(warped, (0, 0), warped)
    lo, hi = quad.min(axis=0), quad.max(axis=0)
    box = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    if augment:
        glyph_px = width * glyph_share(plate) if legible else None
        pixels = degrade(canvas, rng, np.zeros((0, 4), np.float32), ir=ir, glyph_px=glyph_px)
    else:
        pixels = np.asarray(canvas, np.uint8)
    return pixels, box


def jitter_box(
    box: tuple[float, float, float, float], rng: np.random.Generator, amount: float = 1.0
) -> tuple[float, float, float, float]:
    """`box` with each edge moved as a detector's box edges move."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    jx, jy = BOX_JITTER[0] * w * amount, BOX_JITTER[1] * h * amount
    d = rng.uniform(-1, 1, 4)
    return (x0 + d[0] * jx, y0 + d[1] * jy, x1 + d[2] * jx, y1 + d[3] * jy)


def row_samples(
    plate: Plate,
    rng: np.random.Generator,
    width: float,
    augment: bool = True,
    legible: bool = False,
) -> list[tuple[U8, str]]:
    """The model inputs the node would make for this plate, with their labels; empty when the
    node would cut it into a different number of rows (counted as a miss in validation)."""
    pixels, box = scene(plate, rng, width, augment, legible)
    crop = crop_plate(pixels, jitter_box(box, rng, 1.0 if augment else 0.5))
    rows = plate_rows(crop, INPUT_W, INPUT_H, TWO_ROW_BELOW_ASPECT)
    if len(rows) != len(plate.rows):
        return []
    return list(zip(rows, plate.rows, strict=True))


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


@dataclass(frozen=True)
class ValPlate:
    """One validation plate: its picture, box, format, colour and rows."""

    pixels: U8
    box: tuple[float, float, float, float]
    layout: str
    color: str
    rows: tuple[str, ...]
    width: float = 0.0  # frontal plate width, pixels


def validation_set(
    per_kind: int = 100, seed: int = VAL_SEED, legible: bool = False
) -> list[ValPlate]:
    """`per_kind` plates of every layout x colour, each rendered at its own size, in a
    scene, degraded, with a jittered detection box (a fixed set for a given seed).

    The default is the stress set: 40-240 px wide, every degradation at full strength, many
    plates no person could read. `legible` is the acceptance set: plates whose letters are at
    least `LEGIBLE_PX` tall (car1 from 67 px wide, car2 52, moto 40) up to 240 px, degraded
    only as far as a person could still read them (`augment.degrade(glyph_px=...)`)."""
    out = []
    for li, layout in enumerate(FORMATS):
        for ci, color in enumerate(COLORS):
            for i in range(per_kind):
                rng = np.random.default_rng([seed, li, ci, i, *([1] if legible else [])])
                lo = legible_width(GLYPH_SHARE[layout]) if legible else MIN_W
                width = log_uniform(rng, lo, MAX_W)
                plate = vn_plate(layout, color, rng, width)
                pixels, box = scene(plate, rng, width, legible=legible)
                box = jitter_box(box, rng)
                out.append(ValPlate(pixels, box, layout, color, plate.rows, width))
    return out
