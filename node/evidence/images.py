"""The images of a packet: plate crop, context frames, overview; JPEG with a quality ladder.

JPEG goes through simplejpeg (libjpeg-turbo, the binding picamera2 uses). Each part has a
ladder: the first quality is tried, and while the result is over the part's byte budget the
next lower rung is tried, down to the lowest; the lowest rung's result is kept whatever its
size (a part is never dropped for its size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image as PILImage

from node.capture.frame import Image

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Encoded:
    data: bytes
    width: int
    height: int
    quality: int


def ladder(start: int, lowest: int, step: int) -> tuple[int, ...]:
    """Qualities from `start` down to `lowest` (inclusive) in `step`s."""
    lowest = min(lowest, start)
    rungs = [*range(start, lowest, -step), lowest]
    return tuple(dict.fromkeys(rungs))


def encode(
    image: Image, qualities: Sequence[int], max_bytes: int, subsampling: str = "420"
) -> Encoded:
    """JPEG of `image` at the first quality of `qualities` whose result fits `max_bytes`."""
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    data, quality = b"", 0
    for quality in qualities:
        data = bytes(
            simplejpeg.encode_jpeg(
                image, quality=quality, colorspace="RGB", colorsubsampling=subsampling
            )
        )
        if len(data) <= max_bytes:
            break
    return Encoded(data, int(w), int(h), int(quality))


def crop_box(
    box: Box, margin: float, shape: tuple[int, ...], min_margin_px: int = 8
) -> tuple[int, int, int, int]:
    """The integer crop (x0, y0, x1, y1) around `box`: `margin` plate widths (heights) each
    side, at least `min_margin_px`, clipped to the image."""
    h, w = shape[:2]
    x0, y0, x1, y1 = box
    mx = max(min_margin_px, margin * (x1 - x0))
    my = max(min_margin_px, margin * (y1 - y0))
    cx0 = int(np.clip(np.floor(x0 - mx), 0, w - 1))
    cy0 = int(np.clip(np.floor(y0 - my), 0, h - 1))
    cx1 = int(np.clip(np.ceil(x1 + mx), cx0 + 1, w))
    cy1 = int(np.clip(np.ceil(y1 + my), cy0 + 1, h))
    return cx0, cy0, cx1, cy1


def crop(image: Image, box: tuple[int, int, int, int]) -> Image:
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def downscale(image: Image, width: int) -> tuple[Image, float]:
    """`image` scaled down to `width` (never up), and the scale (new / old)."""
    h, w = image.shape[:2]
    if width >= w:
        return image, 1.0
    height = max(1, round(h * width / w))
    small = PILImage.fromarray(image).resize((width, height), PILImage.Resampling.BOX)
    return np.ascontiguousarray(np.asarray(small, dtype=np.uint8)), width / w


def annotate(image: Image, boxes: Sequence[Box], scale: float, thickness: int = 2) -> Image:
    """A copy of `image` with each box (in full-resolution pixels, times `scale`) outlined."""
    out = image.copy()
    h, w = out.shape[:2]
    colour = np.array([255, 32, 32], dtype=np.uint8)
    for box in boxes:
        x0, y0, x1, y1 = (round(v * scale) for v in box)
        x0, x1 = max(0, x0 - thickness), min(w, x1 + thickness)
        y0, y1 = max(0, y0 - thickness), min(h, y1 + thickness)
        if x1 <= x0 or y1 <= y0:
            continue
        out[y0 : y0 + thickness, x0:x1] = colour
        out[max(y0, y1 - thickness) : y1, x0:x1] = colour
        out[y0:y1, x0 : x0 + thickness] = colour
        out[y0:y1, max(x0, x1 - thickness) : x1] = colour
    return out


def fit(
    image: Image, width: int, qualities: Sequence[int], max_bytes: int, min_width: int = 320
) -> tuple[Encoded, float]:
    """`image` scaled down to `width` and encoded down the quality ladder; when even the lowest
    rung is over `max_bytes`, scaled down further by 0.8 at a time (not below `min_width`)
    until it fits. Returns the JPEG and its scale (new / original width)."""
    full_w = image.shape[1]
    small, scale = downscale(image, width)
    enc = encode(small, qualities, max_bytes)
    w = enc.width
    while len(enc.data) > max_bytes and w > min_width:
        w = max(min_width, int(w * 0.8))
        small, scale = downscale(image, w)
        enc = encode(small, qualities[-1:], max_bytes)
    return enc, (enc.width / full_w if full_w else scale)
