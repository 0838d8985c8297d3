"""Letterboxing: fit any image into the model's fixed input without distorting it.

The image is resized to fit within width x height keeping its aspect ratio, placed at the
top-left, and the rest is grey 114. Pixels are quantized on the way in through a 256-entry
table built from the input tensor's (scale, zero_point), so the model gets exactly the values
it was calibrated on. The input buffer is allocated once, and the padding is rewritten only
when the placed size changes.

Resizing uses Pillow: an integer box reduction first when shrinking by 2x or more (the
1920x1080 → 960x540 case is a pure 2x reduction), then BILINEAR for what is left. An image that
already has the input's size (the detection stream) is only copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from node.capture.frame import Image

PAD = 114
INPUT_RANGES = ("0-1", "0-255")


def input_table(
    dtype: np.dtype[Any], scale: float, zero_point: int, input_range: str = "0-1"
) -> npt.NDArray[Any]:
    """What each pixel byte 0..255 becomes in the input tensor.

    The model's real input is pixel / 255 (`input_range` "0-1") or the pixel itself ("0-255");
    a quantized input stores round(real / scale) + zero_point, clipped to its integer type.
    """
    real = np.arange(256, dtype=np.float64)
    if input_range == "0-1":
        real /= 255.0
    elif input_range != "0-255":
        raise ValueError(f"input_range must be one of {', '.join(INPUT_RANGES)}")
    if dtype == np.float32:
        return real.astype(np.float32)
    if scale == 0.0:  # integer input without quantization: it takes the bytes as they are
        real = np.arange(256, dtype=np.float64)
    else:
        real = np.floor(real / scale + 0.5) + zero_point
    info = np.iinfo(dtype)
    return np.clip(real, info.min, info.max).astype(dtype)


@dataclass(frozen=True)
class Placement:
    """Where an image went in the input: per-axis scale and the image's own size."""

    scale_x: float
    scale_y: float
    width: int
    height: int

    def to_image(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Boxes (N, 4) in input pixels → the image's pixels, clipped to the image."""
        out = boxes / np.array([self.scale_x, self.scale_y] * 2, dtype=np.float32)
        np.clip(out[:, 0::2], 0.0, self.width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, self.height, out=out[:, 1::2])
        return out.astype(np.float32, copy=False)

    def to_input(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Boxes (N, 4) in the image's pixels → input pixels (the inverse of `to_image`)."""
        return (boxes * np.array([self.scale_x, self.scale_y] * 2, dtype=np.float32)).astype(
            np.float32, copy=False
        )


def check_image(image: Image) -> None:
    """ValueError unless `image` is RGB uint8, (H, W, 3)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.shape}")


def resize(image: Image, width: int, height: int) -> Image:
    """`image` resized to width x height (box reduction by whole factors, then BILINEAR)."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    pil = PILImage.fromarray(image)
    factor = min(w // width, h // height)
    if factor >= 2 and w % factor == 0 and h % factor == 0:
        pil = pil.reduce(factor)
    if pil.size != (width, height):
        pil = pil.resize((width, height), PILImage.Resampling.BILINEAR, reducing_gap=1.0)
    return np.asarray(pil)


class Letterbox:
    """The model's input buffer, and the code that places an image in it."""

    def __init__(self, width: int, height: int, table: npt.NDArray[Any]) -> None:
        if table.shape != (256,):
            raise ValueError("Letterbox: table must have 256 entries")
        self.width = width
        self.height = height
        self.table = table
        self.buffer: npt.NDArray[Any] = np.full((1, height, width, 3), table[PAD], table.dtype)
        self._placed = (width, height)
        as_bytes = table.view(np.uint8) if table.dtype.itemsize == 1 else None
        identity = np.arange(256, dtype=np.uint8)
        self._copy = as_bytes is not None and np.array_equal(as_bytes, identity)
        self._flip = as_bytes is not None and np.array_equal(as_bytes, identity ^ 0x80)

    def fit(self, width: int, height: int, shrink: float = 1.0) -> tuple[int, int]:
        """The size an image of width x height is resized to: as large as fits, same aspect,
        times `shrink` (a pyramid level: 0.25 puts the whole image in a quarter of the input)."""
        scale = min(self.width / width, self.height / height) * shrink
        return (
            min(self.width, max(1, round(width * scale))),
            min(self.height, max(1, round(height * scale))),
        )

    def place(self, image: Image, shrink: float = 1.0) -> Placement:
        """Put `image` (RGB uint8, HxWx3) into `buffer`; how to map boxes back."""
        check_image(image)
        h, w = image.shape[:2]
        nw, nh = self.fit(w, h, shrink)
        if (nw, nh) != self._placed:
            self.buffer.fill(self.table[PAD])
            self._placed = (nw, nh)
        resized = resize(image, nw, nh)
        region = self.buffer[0, :nh, :nw]
        if self._copy:
            np.copyto(region.view(np.uint8), resized)
        elif self._flip:  # int8 with zero point -128: q = byte - 128, the top bit flipped
            np.bitwise_xor(resized, 0x80, out=region.view(np.uint8))
        else:  # indices are bytes, always in range: "clip" only skips the bounds check
            np.take(self.table, resized, out=region, mode="clip")
        return Placement(nw / w, nh / h, w, h)
