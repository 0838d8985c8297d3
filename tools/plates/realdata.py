"""The real labelled plate photos: loading, a fixed train/val split, training crops.

The set is a folder (passed in by the caller, never assumed) holding ``labels.jsonl``, one
JSON object per line::

    {"image": "images/Cars12.png", "width": 500, "height": 300, "boxes": [[x0, y0, x1, y1], ...]}

``image`` is relative to the folder (PNG or JPEG); boxes are pixel edges (``0 <= x0 < x1 <=
width``), the same convention as `tools.plates.synth`: pixel column ``i`` spans ``[i, i + 1)``.

The split (`split`) depends only on each image's relative path: the item goes to validation
when ``int(sha256(path)[:16 hex digits], 16) % 1000 < round(1000 * val_fraction)``, with the
path written in POSIX form as in the labels file (``images/Cars12.png``). It does not depend
on a seed, the file order or the machine, and an image keeps its side when others are added.

`real_sample` makes a training crop: random scale (the median plate ends up 10 px to 60 % of
the crop wide), a window that keeps a random plate whole, padding where the window leaves
the photo, a horizontal flip half the time and the photometric degradations of
`tools.plates.augment`. Flipping is allowed on purpose: the detector learns where plates
are, not what they say, and a mirrored plate keeps its shape, contrast and stroke density
(the plate reader's training must not flip). `downscale_for_small_plates` makes the
evaluation variant that looks like junction footage: the whole photo shrunk until the
median plate is `target_px` wide.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from tools.plates.augment import degrade

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

LABELS = "labels.jsonl"
MIN_VISIBLE = 0.5  # a plate cut by the crop keeps its box if this much of it is inside
MIN_BOX_PX = 6.0  # narrower boxes are dropped (as in `tools.plates.synth`)
MIN_PLATE_PX, MAX_PLATE_FRACTION = 10.0, 0.6
SMALL_PLATE_PX = 40.0  # the top of the `small` draw
P_FLIP = 0.5


@dataclass(frozen=True)
class LabelledImage:
    """One labelled photo: `name` is its path relative to the set (POSIX form), `path` the
    file, `boxes` (N, 4) float32 x0, y0, x1, y1 in its pixels (read-only)."""

    name: str
    path: Path
    width: int
    height: int
    boxes: F32 = field(compare=False, repr=False)


def load_labels(path: str | Path) -> list[LabelledImage]:
    """The items of the set at `path` (its folder, or its ``labels.jsonl``), in file order.

    ValueError names the file and line of the first bad line (bad JSON, a missing or
    ill-typed field, a box outside the image or empty, a path leaving the folder, an image
    listed twice)."""
    labels = Path(path)
    if labels.is_dir():
        labels = labels / LABELS
    root = labels.parent
    items: list[LabelledImage] = []
    seen: dict[str, int] = {}
    with labels.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = _parse(json.loads(line), root)
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{labels}: line {number}: {exc}") from None
            if item.name in seen:
                first = seen[item.name]
                raise ValueError(f"{labels}: line {number}: {item.name!r} already on line {first}")
            seen[item.name] = number
            items.append(item)
    return items


def _parse(record: Any, root: Path) -> LabelledImage:
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    name = record["image"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"image must be a non-empty path, got {name!r}")
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or "\\" in name:
        raise ValueError(f"image {name!r} must be a relative POSIX path inside the set")
    width, height = record["width"], record["height"]
    for key, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    boxes = record["boxes"]
    if not isinstance(boxes, list):
        raise ValueError(f"boxes must be a list, got {type(boxes).__name__}")
    for box in boxes:
        _check_box(box, width, height)
    array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    array.setflags(write=False)
    return LabelledImage(rel.as_posix(), root / rel, width, height, array)


def _check_box(box: Any, width: int, height: int) -> None:
    numbers = isinstance(box, list) and len(box) == 4
    if not numbers or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
        raise ValueError(f"a box must be [x0, y0, x1, y1] numbers, got {box!r}")
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {box} is empty or outside the {width}x{height} image")


def split_bucket(name: str) -> int:
    """0-999 from the sha256 of the relative path `name`: the split's only input."""
    digest = hashlib.sha256(PurePosixPath(name).as_posix().encode("utf-8")).hexdigest()
    return int(digest[:16], 16) % 1000


def split(
    items: Sequence[LabelledImage], val_fraction: float = 0.2
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(train, val): val holds the items whose `split_bucket` is below 1000 * val_fraction.

    Both lists are sorted by (bucket, name), so neither depends on the order of `items`."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    cut = round(1000 * val_fraction)
    ordered = sorted(items, key=lambda it: (split_bucket(it.name), it.name))
    train = [it for it in ordered if split_bucket(it.name) >= cut]
    val = [it for it in ordered if split_bucket(it.name) < cut]
    return train, val


def load_image(item: LabelledImage) -> U8:
    """The photo as (height, width, 3) uint8 RGB. A photo stored sideways with an EXIF
    orientation is turned upright when that gives the labelled size; any other size
    mismatch is a ValueError."""
    with Image.open(item.path) as stored:
        stored.load()
        img = stored
        if img.size != (item.width, item.height):
            upright = ImageOps.exif_transpose(stored)
            if upright.size == (item.width, item.height):
                img = upright
        if img.size != (item.width, item.height):
            raise ValueError(
                f"{item.path}: image is {img.width}x{img.height}, "
                f"labels say {item.width}x{item.height}"
            )
        return np.asarray(img.convert("RGB")).copy()


def real_sample(
    rng: np.random.Generator,
    item: LabelledImage,
    size: tuple[int, int] = (320, 320),
    augment: bool = True,
    flip: bool = True,
    image: U8 | None = None,
    small: bool = False,
) -> tuple[U8, F32]:
    """A training crop of `item`: (image (H, W, 3) uint8 RGB, boxes (N, 4) float32 x0 y0 x1
    y1); `size` = (H, W). `augment` turns the photometric degradations on, `flip` the
    random mirroring. Pass `image` (from `load_image`) to skip reading the file. The median
    plate is drawn log-uniform from MIN_PLATE_PX to most of the crop, or with `small` to
    SMALL_PLATE_PX (plates as junction footage shows them)."""
    pixels = load_image(item) if image is None else image
    height, width = size
    boxes = item.boxes
    if len(boxes):
        top = SMALL_PLATE_PX if small else MAX_PLATE_FRACTION * width
        target = math.exp(rng.uniform(math.log(MIN_PLATE_PX), math.log(top)))
        scale = target / float(np.median(boxes[:, 2] - boxes[:, 0]))
    else:
        scale = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        scale *= min(width / item.width, height / item.height)
    anchor = int(rng.integers(max(1, len(boxes))))  # the plate the window keeps whole
    ox = _offset(rng, item.width, width / scale, boxes[:, 0::2], anchor)
    oy = _offset(rng, item.height, height / scale, boxes[:, 1::2], anchor)
    flip = flip and bool(rng.random() < P_FLIP)
    fill = (int(rng.integers(0, 256)),) * 3  # grey padding where the window leaves the photo
    out = _resample(Image.fromarray(pixels), scale, (ox, oy), (width, height), flip, fill)
    moved = (boxes - np.array([ox, oy, ox, oy], dtype=np.float32)) * np.float32(scale)
    if flip:
        moved = np.stack([width - moved[:, 2], moved[:, 1], width - moved[:, 0], moved[:, 3]], 1)
    kept = _clip(moved.reshape(-1, 4), width, height)
    return (degrade(out, rng, kept) if augment else np.asarray(out)), kept


def _offset(rng: np.random.Generator, extent: int, window: float, spans: F32, anchor: int) -> float:
    """Where a `window` long crop starts along one axis: inside the photo (or the photo
    inside it), keeping span number `anchor` whole when it can."""
    lo, hi = sorted((0.0, float(extent) - window))
    if len(spans):
        a0, a1 = (float(v) for v in spans[anchor])
        lo2, hi2 = max(lo, a1 - window), min(hi, a0)
        if lo2 <= hi2:
            lo, hi = lo2, hi2
        else:  # the plate is longer than the window: centre on it
            lo = hi = (a0 + a1 - window) / 2.0
    return float(rng.uniform(lo, hi)) if hi > lo else lo


def _resample(
    img: Image.Image,
    scale: float,
    origin: tuple[float, float],
    size: tuple[int, int],
    flip: bool,
    fill: tuple[int, ...],
) -> Image.Image:
    """The `size` window at `origin` (photo pixels) of `img` scaled by `scale`: a point p
    lands at (p - origin) * scale (then mirrored if `flip`); outside the photo is `fill`."""
    k = max(1, int(0.5 / scale))  # box-filter big reductions first: bilinear then aliases less
    if k > 1:
        img = img.reduce(k)
    s = scale * k  # output pixels per pixel of the reduced photo
    ox, oy = origin[0] / k, origin[1] / k
    if flip:
        coeffs = (-1.0 / s, 0.0, ox + size[0] / s, 0.0, 1.0 / s, oy)
    else:
        coeffs = (1.0 / s, 0.0, ox, 0.0, 1.0 / s, oy)
    return img.transform(
        size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=fill
    )


def _clip(boxes: F32, width: int, height: int) -> F32:
    """`boxes` clipped to the picture; those less than `MIN_VISIBLE` inside, or too small
    once clipped, are dropped."""
    limits = np.array([width, height, width, height], dtype=np.float32)
    clipped = np.clip(boxes, 0.0, limits)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (inside >= MIN_VISIBLE * area) & (clipped[:, 2] - clipped[:, 0] >= MIN_BOX_PX)
    keep &= clipped[:, 3] - clipped[:, 1] >= 2.0
    out: F32 = clipped[keep].astype(np.float32)
    return out


def downscale_for_small_plates(
    item: LabelledImage, target_px: float = 20.0, image: U8 | None = None
) -> tuple[U8, F32]:
    """The whole photo shrunk so its median plate is `target_px` wide (never enlarged), and
    its boxes: the "small plates" evaluation variant (junction footage: 12-30 px plates)."""
    if not len(item.boxes):
        raise ValueError(f"{item.name}: no plates to size the picture by")
    if not target_px > 0:
        raise ValueError(f"target_px must be positive, got {target_px}")
    pixels = load_image(item) if image is None else image
    scale = min(1.0, target_px / float(np.median(item.boxes[:, 2] - item.boxes[:, 0])))
    w, h = max(1, round(item.width * scale)), max(1, round(item.height * scale))
    small = Image.fromarray(pixels).resize((w, h), Image.Resampling.BILINEAR)
    factors = np.array([w / item.width, h / item.height] * 2, dtype=np.float32)
    boxes: F32 = (item.boxes * factors).astype(np.float32)
    return np.asarray(small), boxes
