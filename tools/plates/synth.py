"""Synthetic training samples for the licence-plate detector (one class: "plate").

`make_sample(rng, size)` returns ``(image, boxes)``: an RGB uint8 array of shape
``(height, width, 3)`` and a float32 array ``(N, 4)`` of plate boxes ``x0, y0, x1, y1`` in
pixels (continuous coordinates: pixel column ``i`` spans ``[i, i + 1)``; 0 <= x0 < x1 <= width,
0 <= y0 < y1 <= height). `size` is ``(height, width)``. `synth_sample` returns the same as a
`Sample` that also names each box's plate layout and colour. Everything is a pure function
of the generator: the same seed gives the same bytes (the banks behind it are built once
per process from fixed seeds).

A sample is a background (`scenery`: a window of a simulated junction frame, which brings
its own labelled plates, or a procedural texture), a few hard-negative clutter sprites, then
0-6 plates of every layout and colour of `node.capture.platerender`, each on a carrier
(`mounts`: bare, framed, a drawn vehicle tail, a simulator vehicle) turned in 3-D (yaw up
to 35 degrees, pitch 20, roll 10) and projected. Plates are drawn smallest (farthest) first,
so nearer carriers may hide them. A box is the axis-aligned hull of the projected plate
quad, clipped to the image; plates less than `MIN_VISIBLE` visible (off the edge or hidden)
or narrower than `MIN_BOX_PX` after clipping get no box. With ``augment=True`` (the
default) plates get dirt and IR glow and the image goes through `augment.degrade`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from tools.plates import scenery
from tools.plates.augment import P_IR, degrade, dirty, ir_glow
from tools.plates.mounts import Mount, mount, pick, plate_picture

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Hide = npt.NDArray[np.int8]  # per pixel: index of the plate seen there, or -1

LAYOUT_P = {"car1": 0.35, "car2": 0.25, "moto": 0.40}  # every layout of platerender
COLOR_P = {"white": 0.5, "yellow": 0.22, "blue": 0.16, "red": 0.12}  # and every colour
COUNT_P = (0.08, 0.24, 0.22, 0.17, 0.13, 0.09, 0.07)  # P(0 plates), ..., P(6 plates)
MIN_W, SMALL_W = 10.0, 40.0  # plate widths: log-uniform from MIN_W, half of them below SMALL_W
MAX_W_FRACTION = 0.9
MIN_VISIBLE = 0.5
MIN_BOX_PX = 6.0
MAX_YAW, MAX_PITCH, MAX_ROLL = 35.0, 20.0, 10.0
P_DIRT = 0.2
CLUTTER_MAX = 3

_LAYOUTS, _LAYOUT_W = tuple(LAYOUT_P), tuple(LAYOUT_P.values())
_COLORS, _COLOR_W = tuple(COLOR_P), tuple(COLOR_P.values())


@dataclass(frozen=True, eq=False)
class Sample:
    """One training picture: `image` (H, W, 3) uint8 RGB, `boxes` (N, 4) float32 x0, y0,
    x1, y1, and per box the plate's layout and colour."""

    image: U8
    boxes: F32
    layouts: tuple[str, ...]
    colors: tuple[str, ...]


@dataclass(slots=True)
class _Truth:
    layout: str
    color: str
    box: tuple[float, float, float, float]  # unclipped
    area: float  # pixels a fully visible plate would mark in `hide`


def prepare() -> None:
    """Builds the per-process banks now (about 4 s; a process holds about 150-200 MB in all)
    rather than on the first sample: call it before forking data-loading workers."""
    scenery.prepare()
    plate_picture(np.random.default_rng(0), "car1", "white", 20.0)


def make_sample(
    rng: np.random.Generator, size: tuple[int, int] = (320, 320), augment: bool = True
) -> tuple[U8, F32]:
    """(image (H, W, 3) uint8 RGB, boxes (N, 4) float32 x0 y0 x1 y1); `size` = (H, W)."""
    s = synth_sample(rng, size, augment)
    return s.image, s.boxes


def make_batch(
    rng: np.random.Generator, n: int, size: tuple[int, int] = (320, 320), augment: bool = True
) -> tuple[U8, list[F32]]:
    """`n` samples: images stacked (n, H, W, 3) uint8 and a list of n box arrays (N_i, 4)."""
    samples = [synth_sample(rng, size, augment) for _ in range(n)]
    return np.stack([s.image for s in samples]), [s.boxes for s in samples]


def synth_sample(
    rng: np.random.Generator, size: tuple[int, int] = (320, 320), augment: bool = True
) -> Sample:
    """One sample with the layout and colour of each box (see the module docstring)."""
    height, width = size
    ir = augment and bool(rng.random() < P_IR)
    canvas, sim = scenery.background(rng, width, height)
    hide = np.full((height, width), -1, dtype=np.int8)
    truths = [_sim_truth(p, hide, i) for i, p in enumerate(sim)]
    scenery.add_clutter(rng, canvas, hide, int(rng.integers(0, CLUTTER_MAX + 1)))
    widths = sorted(_plate_width(rng, width) for _ in range(pick(rng, COUNT_P)))
    for tw in widths:  # far (small) ones first
        truth = _add_plate(rng, canvas, hide, tw, len(truths), augment, ir)
        if truth is not None:
            truths.append(truth)
    boxes, keep = _labels(truths, hide)
    image = degrade(canvas, rng, boxes, ir) if augment else np.asarray(canvas)
    layouts = tuple(truths[i].layout for i in keep)
    return Sample(image, boxes, layouts, tuple(truths[i].color for i in keep))


def _sim_truth(p: scenery.SimPlate, hide: Hide, index: int) -> _Truth:
    """A plate of a simulated frame: its box is its picture (the sim pastes them upright)."""
    x0, y0, x1, y1 = p.box
    h, w = hide.shape
    rows = slice(max(0, math.floor(y0)), min(h, math.ceil(y1)))
    hide[rows, max(0, math.floor(x0)) : min(w, math.ceil(x1))] = index
    area = (math.ceil(x1) - math.floor(x0)) * (math.ceil(y1) - math.floor(y0))
    return _Truth(p.layout, p.color, p.box, area / max(p.visible, 1e-3))


def _labels(truths: list[_Truth], hide: Hide) -> tuple[F32, list[int]]:
    """Clipped boxes of the plates visible enough, and their indices in `truths`."""
    h, w = hide.shape
    counts = np.bincount(hide[hide >= 0].ravel(), minlength=len(truths))
    boxes, keep = [], []
    for i, t in enumerate(truths):
        x0, y0 = min(max(t.box[0], 0.0), w), min(max(t.box[1], 0.0), h)
        x1, y1 = min(max(t.box[2], 0.0), w), min(max(t.box[3], 0.0), h)
        if counts[i] >= MIN_VISIBLE * t.area and x1 - x0 >= MIN_BOX_PX and y1 - y0 >= 2.0:
            boxes.append((x0, y0, x1, y1))
            keep.append(i)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), keep


def _plate_width(rng: np.random.Generator, width: int) -> float:
    """Frontal plate width in pixels: log-uniform, half the plates at 10-40 px."""
    hi = SMALL_W if rng.random() < 0.5 else max(SMALL_W, MAX_W_FRACTION * width)
    return math.exp(rng.uniform(math.log(MIN_W), math.log(hi)))


def _add_plate(
    rng: np.random.Generator,
    canvas: Image.Image,
    hide: Hide,
    tw: float,
    index: int,
    augment_on: bool,
    ir: bool,
) -> _Truth | None:
    """Draws one plate `tw` px wide (frontal) somewhere on `canvas`; its truth or None."""
    layout = _LAYOUTS[pick(rng, _LAYOUT_W)]
    color = _COLORS[pick(rng, _COLOR_W)]
    plate = plate_picture(rng, layout, color, tw)
    if augment_on and rng.random() < P_DIRT:
        plate = dirty(plate, rng)
    if ir:
        plate = ir_glow(plate, rng)
    w, h = canvas.size
    carrier = mount(rng, plate, layout, 0.6 * max(w, h) * plate.width / tw)
    margin = min(0.3 * tw, 0.45 * w)
    centre = (float(rng.uniform(-margin, w + margin)), float(rng.uniform(-margin, h + margin)))
    if tw > 0.4 * w:  # big plates: keep most of them in the picture
        centre = (float(rng.uniform(0.4, 0.6)) * w, float(rng.uniform(0.25, 0.75)) * h)
    hom = _homography(rng, carrier, tw, centre)
    quad = _project(hom, _corners(carrier.rect))
    _draw_shapes(canvas, hide, carrier, hom)
    if not _paste(canvas, hide, carrier.patch, hom):
        return None
    lo, hi = quad.min(axis=0), quad.max(axis=0)
    box = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    return _Truth(layout, color, box, _mark(hide, quad, index))


def _corners(rect: tuple[float, float, float, float]) -> F64:
    x0, y0, pw, ph = rect
    return np.array([[x0, y0], [x0 + pw, y0], [x0 + pw, y0 + ph], [x0, y0 + ph]], dtype=np.float64)


def _project(hom: F64, pts: F64) -> F64:
    p = pts @ hom[:, :2].T + hom[:, 2]
    out: F64 = p[:, :2] / p[:, 2:3]
    return out


def _inverse(m: F64) -> F64:
    """The inverse of a 3 x 3 homography up to scale (its adjugate: cheaper than linalg)."""
    (a, b, c), (d, e, f), (g, h, i) = m.tolist()
    adj = [[e * i - f * h, c * h - b * i, b * f - c * e]]
    adj += [
        [f * g - d * i, a * i - c * g, c * d - a * f],
        [d * h - e * g, b * g - a * h, a * e - b * d],
    ]
    return np.array(adj, dtype=np.float64)


def rotation(yaw: float, pitch: float, roll: float) -> F64:
    """The camera rotation for yaw, then pitch, then roll (radians); the reader data uses it."""
    cy, sy, cp, sp, cr, sr = (f(a) for a in (yaw, pitch, roll) for f in (math.cos, math.sin))
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    out: F64 = rz @ rx @ ry
    return out


def _homography(
    rng: np.random.Generator, carrier: Mount, tw: float, centre: tuple[float, float]
) -> F64:
    """Patch pixels -> canvas pixels: the carrier as a card turned in 3-D, plate `tw` wide
    and centred on `centre`, seen by a pinhole camera at a random distance."""
    x0, y0, pw, ph = carrier.rect
    k = tw / pw
    to_card = np.array([[k, 0, -(x0 + pw / 2) * k], [0, k, -(y0 + ph / 2) * k], [0, 0, 1]])
    rot = rotation(
        math.radians(rng.uniform(-MAX_YAW, MAX_YAW)),
        math.radians(rng.uniform(-MAX_PITCH, MAX_PITCH)),
        math.radians(rng.uniform(-MAX_ROLL, MAX_ROLL)),
    )
    ex0, ey0, ex1, ey1 = carrier.extent
    card = _project(to_card, _corners((ex0, ey0, ex1 - ex0, ey1 - ey0)))
    reach = float(np.abs(card).max())  # keep the whole card well in front of the camera
    dist = max(tw * math.exp(rng.uniform(math.log(2.5), math.log(30.0))), 2.0 * reach)
    cam = np.array([[dist, 0, centre[0]], [0, dist, centre[1]], [0, 0, 1]])
    plane = np.array(
        [[rot[0, 0], rot[0, 1], 0], [rot[1, 0], rot[1, 1], 0], [rot[2, 0], rot[2, 1], dist]]
    )
    out: F64 = cam @ plane @ to_card
    return out


def _raster(quad: F64, origin: tuple[int, int], size: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """The pixels of a `size` window at `origin` that the filled polygon touches."""
    shape = Image.new("L", size, 0)
    points = [(float(x - origin[0]), float(y - origin[1])) for x, y in quad]
    ImageDraw.Draw(shape).polygon(points, fill=1)
    return np.asarray(shape) > 0


def _mark(hide: Hide, quad: F64, index: int) -> float:
    """Marks the plate quad's pixels in the picture with `index`; returns how many pixels
    the whole quad covers (in the picture or not), at least 1."""
    x0, y0 = (math.floor(v) for v in quad.min(axis=0))
    x1, y1 = (math.ceil(v) + 1 for v in quad.max(axis=0))
    inside = _raster(quad, (x0, y0), (x1 - x0, y1 - y0))
    h, w = hide.shape
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx0 < cx1 and cy0 < cy1:
        part = inside[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        hide[cy0:cy1, cx0:cx1][part] = index
    return max(1.0, float(inside.sum()))


def _clip_box(pts: F64, w: int, h: int) -> tuple[int, int, int, int] | None:
    """The integer hull of `pts` inside a w x h image, or None if it misses."""
    x0, y0 = max(0, math.floor(pts[:, 0].min())), max(0, math.floor(pts[:, 1].min()))
    x1, y1 = min(w, math.ceil(pts[:, 0].max())), min(h, math.ceil(pts[:, 1].max()))
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _draw_shapes(canvas: Image.Image, hide: Hide, carrier: Mount, hom: F64) -> None:
    """Projects and fills the carrier's shapes; what the outline covers is marked -1."""
    if not carrier.shapes:
        return
    draw = ImageDraw.Draw(canvas)
    for poly, fill in carrier.shapes:
        pts = _project(hom, np.asarray(poly, dtype=np.float64))
        draw.polygon([(float(x), float(y)) for x, y in pts], fill=fill)
    outline = _project(hom, np.asarray(carrier.shapes[0][0], dtype=np.float64))
    box = _clip_box(outline, canvas.width, canvas.height)
    if box is not None:
        x0, y0, x1, y1 = box
        hide[y0:y1, x0:x1][_raster(outline, (x0, y0), (x1 - x0, y1 - y0))] = -1


def _paste(canvas: Image.Image, hide: Hide, patch: Image.Image, hom: F64) -> bool:
    """Warps `patch` onto `canvas` and marks what it covers -1 in `hide`; False if it
    misses the canvas."""
    w, h = canvas.size
    box = _clip_box(_project(hom, _corners((0.0, 0.0, patch.width, patch.height))), w, h)
    if box is None:
        return False
    x0, y0, x1, y1 = box
    inv = _inverse(hom)
    seen = _project(inv, _corners((float(x0), float(y0), float(x1 - x0), float(y1 - y0))))
    src = _clip_box(np.vstack([seen - 2.0, seen + 2.0]), *patch.size)
    if src is None:
        return False
    if src != (0, 0, *patch.size):  # only the part that lands on the canvas
        patch = patch.crop(src)
    inv = np.array([[1, 0, -src[0]], [0, 1, -src[1]], [0, 0, 1]]) @ inv
    inv = inv @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], dtype=np.float64)
    coeffs = tuple(float(v) for v in (inv / inv[2, 2]).ravel()[:8])
    warped = patch.transform(
        (x1 - x0, y1 - y0), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR
    )
    canvas.paste(warped, (x0, y0), warped)
    hide[y0:y1, x0:x1][np.asarray(warped.getchannel("A")) > 127] = -1
    return True
