"""Aiming and focusing without a screen: a coarse ASCII picture and a sharpness score.

`sharpness` is the variance of the Laplacian of the grey image (the usual focus measure: a
sharp image has strong fine edges, a blurred one has none). It depends on the scene, so it is
for comparing while turning the focus ring on one scene, not an absolute grade. The ASCII
preview averages blocks of pixels (a character cell is about twice as tall as wide).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RAMP = " .:-=+*#%@"  # dark → bright
Grey = npt.NDArray[np.float32]


def grey(image: npt.NDArray[np.uint8]) -> Grey:
    """An (h, w) float image from RGB (h, w, 3) or grey (h, w) uint8."""
    if image.ndim == 2:
        return image.astype(np.float32)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"image: expected (h, w) or (h, w, 3), got shape {image.shape}")
    rgb = image[..., :3].astype(np.float32)
    out: Grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return out


def sharpness(image: npt.NDArray[np.uint8], max_side: int = 960) -> float:
    """Variance of the 4-neighbour Laplacian (0 for a flat image). Large images are first
    reduced by whole-pixel steps to at most `max_side`, so the score is comparable between
    the full image and the preview stream only roughly: compare like with like."""
    g = grey(image)
    step = max(1, int(np.ceil(max(g.shape) / max_side)))
    if step > 1:
        g = _block_mean(g, step)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def brightness(image: npt.NDArray[np.uint8]) -> float:
    """Mean grey level, 0..255."""
    return float(grey(image).mean())


def _block_mean(g: Grey, step: int) -> Grey:
    h, w = (g.shape[0] // step) * step, (g.shape[1] // step) * step
    if h == 0 or w == 0:
        return g
    out: Grey = g[:h, :w].reshape(h // step, step, w // step, step).mean(axis=(1, 3))
    return out


def ascii_preview(image: npt.NDArray[np.uint8], columns: int = 78) -> list[str]:
    """The image as lines of at most `columns` ASCII characters (dark = space)."""
    g = grey(image)
    h, w = g.shape
    if h == 0 or w == 0:
        raise ValueError("image: empty")
    cols = max(1, min(columns, w))
    rows = max(1, min(h, round(h / w * cols * 0.5)))
    ys = np.linspace(0, h, rows + 1).astype(int)
    xs = np.linspace(0, w, cols + 1).astype(int)
    # mean of each cell through a summed-area table (no Python loop over pixels)
    sat = np.zeros((h + 1, w + 1), np.float64)
    sat[1:, 1:] = g.cumsum(0).cumsum(1)
    y0, y1 = ys[:-1, None], np.maximum(ys[1:, None], ys[:-1, None] + 1)
    x0, x1 = xs[None, :-1], np.maximum(xs[None, 1:], xs[None, :-1] + 1)
    total = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    cells = total / ((y1 - y0) * (x1 - x0))
    lo, hi = float(cells.min()), float(cells.max())
    span = hi - lo if hi - lo > 1e-6 else 1.0  # stretch contrast: aiming is about shapes
    idx = np.clip(((cells - lo) / span * (len(RAMP) - 1)).round().astype(int), 0, len(RAMP) - 1)
    return ["".join(RAMP[i] for i in row).rstrip() for row in idx]


def decode_jpeg(data: bytes, min_width: int = 0) -> npt.NDArray[np.uint8]:
    """An RGB array from JPEG bytes (decoded at reduced size when `min_width` allows)."""
    import simplejpeg

    try:
        if min_width:
            image = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=min_width)
        else:
            image = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError as e:
        raise ValueError(f"JPEG: cannot decode: {e}") from None
    out: npt.NDArray[np.uint8] = np.ascontiguousarray(image)
    return out


def encode_jpeg(image: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    import simplejpeg

    data: bytes = simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality, "RGB")
    return data
