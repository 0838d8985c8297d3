"""YUV420 (I420) to RGB, vectorised with numpy.

picamera2 hands a YUV420 stream to us as `make_array(name)` does: a 2-D uint8 array of shape
(height * 3 // 2, stride). The first `height` rows are the Y plane (`stride` bytes a row, of
which the first `width` are pixels); the U plane follows as height/2 rows of stride/2 bytes,
then the V plane the same. The 2-D shape does not match the chroma rows, so the planes are
cut from the flat buffer.

The matrix follows the stream's libcamera colour space: "Rec709" (limited range, BT.709, the
picamera2 video default at 1280x720 and above), "SMPTE170M" (limited range, BT.601, the default
below that), "sYCC"/"JPEG" (full range, BT.601) and "Rec2020" (limited range, BT.2020).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from node.capture.frame import Image


class YuvMatrix(NamedTuple):
    """A Y'CbCr encoding: luma weights of red and blue, and whether the range is full."""

    kr: float
    kb: float
    full_range: bool


BT601_LIMITED = YuvMatrix(0.299, 0.114, False)
BT601_FULL = YuvMatrix(0.299, 0.114, True)
BT709_LIMITED = YuvMatrix(0.2126, 0.0722, False)
BT2020_LIMITED = YuvMatrix(0.2627, 0.0593, False)


def matrix_for(colour_space: object) -> YuvMatrix:
    """The matrix for a libcamera colour space (or its name; matched by substring).

    Accepts a `libcamera.ColorSpace` (its repr names it, e.g. "<libcamera.ColorSpace 'Rec709'>")
    or a plain name. Composite names ("SMPTE170M/sRGB/Rec601/Full") are read part by part.
    Unknown names fall back to BT.601 limited range (SMPTE170M).
    """
    name = str(colour_space).lower()
    full = any(word in name for word in ("sycc", "jpeg", "full"))
    if "2020" in name:
        return BT2020_LIMITED._replace(full_range=full)
    if "709" in name and "rec601" not in name:
        return BT709_LIMITED._replace(full_range=full)
    return BT601_FULL if full else BT601_LIMITED


FRACTION_BITS = 5  # fixed point: int16 sums stay below 2**15 for every matrix here
Lut = npt.NDArray[np.int16]


@functools.cache
def tables(matrix: YuvMatrix) -> tuple[Lut, Lut, Lut, Lut, Lut]:
    """Fixed-point lookup tables: luma (with the rounding half), R from Cr, G from Cb and Cr,
    B from Cb. Each maps a byte to its contribution, times 2**FRACTION_BITS."""
    one = 1 << FRACTION_BITS
    code = np.arange(256, dtype=np.float64)
    y_scale, c_scale, y_offset = (
        (1.0, 1.0, 0.0) if matrix.full_range else (255 / 219, 255 / 224, 16.0)
    )
    chroma = (code - 128.0) * c_scale * one
    kr, kb = matrix.kr, matrix.kb
    kg = 1.0 - kr - kb

    def fixed(values: npt.NDArray[np.float64]) -> Lut:
        return np.round(values).astype(np.int16)

    return (
        fixed((code - y_offset) * y_scale * one + one / 2),
        fixed((2.0 - 2.0 * kr) * chroma),
        fixed(-(2.0 * kb * (1.0 - kb) / kg) * chroma),
        fixed(-(2.0 * kr * (1.0 - kr) / kg) * chroma),
        fixed((2.0 - 2.0 * kb) * chroma),
    )


def yuv420_to_rgb(yuv: npt.NDArray[np.uint8], width: int, matrix: YuvMatrix) -> Image:
    """Convert one YUV420 frame, as picamera2's `make_array` returns it, to (h, w, 3) RGB.

    Integer lookup tables and planar int16 sums (about 3x faster than float32 here); the
    result is within 1 of an exact float conversion.
    """
    rows, stride = yuv.shape
    height = rows * 2 // 3
    if rows != height * 3 // 2 or height % 2 or width % 2 or width > stride or stride % 2:
        raise ValueError(f"not a YUV420 frame of width {width}: array shape {yuv.shape}")
    h2, w2, s2 = height // 2, width // 2, stride // 2
    flat = np.ascontiguousarray(yuv).reshape(-1)
    y_end = height * stride
    u_end = y_end + h2 * s2
    luma = flat[:y_end].reshape(height, stride)[:, :width]
    cb = flat[y_end:u_end].reshape(h2, s2)[:, :w2]
    cr = flat[u_end : u_end + h2 * s2].reshape(h2, s2)[:, :w2]
    y_lut, r_cr, g_cb, g_cr, b_cb = tables(matrix)
    # Row pairs share a chroma row: (h2, 2, width) lets one chroma row broadcast over both.
    y_pairs = np.take(y_lut, luma).reshape(h2, 2, width)
    out = np.empty((h2, 2, width, 3), dtype=np.uint8)
    plane = np.empty_like(y_pairs)
    terms = (np.take(r_cr, cr), np.take(g_cb, cb) + np.take(g_cr, cr), np.take(b_cb, cb))
    for channel, term in enumerate(terms):
        np.add(y_pairs, term.repeat(2, axis=1)[:, None, :], out=plane)
        plane >>= FRACTION_BITS
        np.clip(plane, 0, 255, out=plane)
        out[..., channel] = plane
    return out.reshape(height, width, 3)
