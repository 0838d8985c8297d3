"""The plate reader: a detected plate → rectified rows → int8 CTC recogniser → text + confidence.

Pipeline for one plate (the same functions make the training data, see tools/reader/data.py):

1. `crop_plate`: the detection box grown by a margin (`CROP_MARGIN`), clipped to the image.
2. `plate_rows`: the crop in grey; a crop wider than `two_row_below_aspect` x its height is a
   one-row plate, a narrower one has two rows and is split where the horizontal ink is
   lowest between 38 % and 62 % of its height (the gap between the rows of the two-row car
   and motorbike layouts). Each row is resized to the model's input (default 128x32) and its
   contrast stretched (2nd to 98th percentile to 0 … 255). Perspective and tilt are not
   undone geometrically: the recogniser is trained on plates seen up to ±35° off axis.
3. The recogniser (`ctc-rows/v1`): input `[1, H, W, 1]` uint8 grey, output `[1, T, C]`
   per-step class probabilities (class `blank_index` is the CTC blank, the others the
   manifest's `alphabet` in order). Greedy decoding: best class per step, repeats merged,
   blanks dropped; a character's confidence is its best step's probability.
4. The rows' characters are checked by the plate grammar (`node.plates.grammar`); the overall
   confidence is the product of the character confidences.

The model is chosen by a manifest beside it (`models/reader.json`), whose sha256 is checked
before the runtime sees the file, exactly as for the detector.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from node.infer.manifest import checked_keys, read_json, read_model_bytes
from node.infer.runtime import Backend, Interpreter, ModelError, TensorSpec, default_backend
from node.plates.grammar import ALPHABET, PlateNumber, parse_rows

READER_FORMAT = "ctc-rows/v1"
DEFAULT_READER_MANIFEST = Path(__file__).resolve().parent / "models" / "reader.json"
CROP_MARGIN = (0.06, 0.12)  # fraction of the box's width / height added on each side
SPLIT_BAND = (0.38, 0.62)  # where a two-row plate's row gap is looked for (of crop height)
SPLIT_OVERLAP = 0.03  # each row keeps this fraction of the crop's height past the split
MAX_SHEAR = 0.5  # the steepest slant `deskew` undoes (tan of about 27 degrees)
SHEARS = np.linspace(-MAX_SHEAR, MAX_SHEAR, 21)
BAND_LEVEL = 0.3  # text rows: ink above the floor at least this fraction of the peak's
BAND_MARGIN = 0.08
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601
_LUMA.flags.writeable = False
_LEVELS = np.arange(256, dtype=np.float32)  # every grey level
_LEVELS.flags.writeable = False

Grey = npt.NDArray[np.uint8]
Box = tuple[float, float, float, float]


# --- geometry ------------------------------------------------------------------------------


def crop_plate(image: npt.NDArray[np.uint8], box: Box | Any) -> npt.NDArray[np.uint8]:
    """The plate at `box` (x0, y0, x1, y1 in `image` pixels) with `CROP_MARGIN` around it,
    clipped to the image (a copy). ValueError for an empty box or a box off the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0) or not all(np.isfinite((x0, y0, x1, y1))):
        raise ValueError(f"plate box {[x0, y0, x1, y1]} is empty or not finite")
    mx, my = (x1 - x0) * CROP_MARGIN[0], (y1 - y0) * CROP_MARGIN[1]
    h, w = image.shape[:2]
    left, top = max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my)))
    right, bottom = min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my)))
    if right - left < 2 or bottom - top < 2:
        raise ValueError(f"plate box {[x0, y0, x1, y1]} lies off the {w}x{h} image")
    return np.ascontiguousarray(image[top:bottom, left:right])


def to_grey(crop: npt.NDArray[np.uint8]) -> Grey:
    """An RGB (or already grey) crop as grey uint8 (ITU-R 601 luma)."""
    if crop.ndim == 2:
        return crop
    if crop.ndim != 3 or crop.shape[2] not in (3, 4):
        raise ValueError(f"plate crop must be (H, W, 3) RGB, got shape {list(crop.shape)}")
    rgb = crop[..., :3].astype(np.float32)
    grey = rgb @ _LUMA
    grey += 0.5
    np.maximum(grey, 0.0, out=grey)  # np.clip(grey, 0, 255) without its Python overhead
    np.minimum(grey, 255.0, out=grey)
    return grey.astype(np.uint8)


def row_ink(grey: Grey) -> npt.NDArray[np.float64]:
    """The horizontal ink of every row of `grey` (at least 2 wide): mean |dI/dx|. (The sums
    of |dI/dx| are whole numbers, so this is exactly numpy's `.mean(axis=1)` of them.)"""
    diff = np.diff(grey.astype(np.int16), axis=1)
    sums = np.abs(diff, out=diff).sum(axis=1)
    ink: npt.NDArray[np.float64] = sums / (grey.shape[1] - 1)
    return ink


def _split_at(ink: npt.NDArray[np.float64]) -> int:
    h = ink.shape[0]
    lo, hi = (
        int(h * SPLIT_BAND[0]),
        max(int(h * SPLIT_BAND[0]) + 1, int(np.ceil(h * SPLIT_BAND[1]))),
    )
    smooth = np.convolve(ink, np.ones(3, np.float32) / 3.0, mode="same")
    return lo + int(np.argmin(smooth[lo:hi]))


def split_row(grey: Grey) -> int:
    """Where a two-row plate's rows part: the crop row, inside `SPLIT_BAND`, with the least
    horizontal ink (mean |dI/dx|, smoothed over 3 rows)."""
    return _split_at(row_ink(grey))


# `deskew` looks for the slant on a copy this wide; under shear k the pixel (y, x) of its
# |dI/dx| map falls in profile bin round(y - SHEARS[k] * (x - (SHEAR_WIDTH - 1) / 2)) + pad,
# x in 0 … SHEAR_WIDTH - 2.
SHEAR_WIDTH = 64
_SHEAR_PAD = int(np.ceil(MAX_SHEAR * SHEAR_WIDTH / 2.0)) + 1  # no bin falls outside the pad
_SHEAR_TABLE_ROWS = (128, 256)  # taller maps (crops over 4x taller than wide) are binned anew


def _shear_bins(y0: int, y1: int, span: int) -> npt.NDArray[np.intp]:
    """The profile bin of every pixel of rows y0 … y1 - 1 of a |dI/dx| map under every shear
    (len(SHEARS), y1 - y0, SHEAR_WIDTH - 1); shear k's bins are [k * span, (k + 1) * span)."""
    ys, xs = np.mgrid[y0:y1, 0 : SHEAR_WIDTH - 1]
    centred = xs - (SHEAR_WIDTH - 1) / 2.0
    slanted = ys[None] - SHEARS[:, None, None] * centred[None]
    rows: npt.NDArray[np.intp] = np.round(slanted).astype(np.intp)
    rows += _SHEAR_PAD + np.arange(len(SHEARS))[:, None, None] * span
    return rows


@functools.lru_cache(maxsize=len(_SHEAR_TABLE_ROWS))  # 1.2 MB for 128 rows, 2.4 for 256
def _shear_groups(limit: int) -> tuple[npt.NDArray[np.intp], ...]:
    """`_shear_bins` for maps of up to `limit` rows, by column group: under shear k,
    neighbouring columns whose pixels all fall in the same bins row by row form a group
    [x0, x1), whose column sums go to its bins at once. A pixel's bin does not depend on the
    map's height, so one table serves every height up to `limit`. Returns three (limit,
    groups) tables, flattened: where row y's cumulative column sums end and start (y * width
    + x1, y * width + x0) and its bin (span `limit` + 2 x pad)."""
    sw = SHEAR_WIDTH
    rows = _shear_bins(0, limit, limit + 2 * _SHEAR_PAD)
    starts = np.ones((len(SHEARS), sw - 1), bool)
    starts[:, 1:] = (rows[:, :, 1:] != rows[:, :, :-1]).any(axis=1)
    ks, x0 = np.nonzero(starts)
    x1 = np.append(x0[1:], 0)
    x1[np.append(ks[1:] != ks[:-1], True)] = sw - 1  # a shear's last group ends at the edge
    y = np.arange(limit, dtype=np.intp)[:, None] * sw
    tables = (y + x1, y + x0, rows[ks, :, x0].T)
    out = tuple(np.ascontiguousarray(t, np.intp).ravel() for t in tables)
    for table in out:
        table.flags.writeable = False
    return out


def shear_scores(small: Grey) -> npt.NDArray[np.float64]:
    """For every shear in `SHEARS`, the sharpness of the horizontal profile of |dI/dx| of
    `small` (sh x `SHEAR_WIDTH`) sheared by it: the sum of its bins' squares.

    The map's values are whole numbers, so every sum here is exact whatever its order: the
    scores are exactly those of a per-pixel `np.bincount` of the map into every shear's bins
    (which is what maps taller than the tables get)."""
    sh, sw = small.shape
    if sw != SHEAR_WIDTH:
        raise ValueError(f"shear_scores needs a map {SHEAR_WIDTH} wide, got {sw}")
    diff = np.diff(small.astype(np.int32), axis=1)
    energy = np.abs(diff, out=diff)
    limit = next((rows for rows in _SHEAR_TABLE_ROWS if sh <= rows), 0)
    if limit:
        ends, starts, bins = _shear_groups(limit)
        n = sh * (ends.size // limit)
        cum = np.zeros((sh, sw), np.int32)  # row y's sum of |dI/dx| left of x
        np.cumsum(energy, axis=1, out=cum[:, 1:])
        flat = cum.ravel()
        sums = flat.take(ends[:n])
        sums -= flat.take(starts[:n])
        span = limit + 2 * _SHEAR_PAD
        profiles = np.asarray(np.bincount(bins[:n], sums, minlength=len(SHEARS) * span), float)
    else:
        span = sh + 2 * _SHEAR_PAD
        profiles = np.zeros(len(SHEARS) * span)
        for y0 in range(0, sh, 128):  # a few rows at a time: the bins of all take memory
            part = energy[y0 : y0 + 128]
            part_bins = _shear_bins(y0, y0 + part.shape[0], span)
            weights = np.broadcast_to(part, part_bins.shape).ravel()
            profiles += np.bincount(part_bins.ravel(), weights, minlength=len(SHEARS) * span)
    profiles = profiles.reshape(len(SHEARS), span)
    scores: npt.NDArray[np.float64] = np.einsum("ij,ij->i", profiles, profiles)
    return scores


def _order_stats_u8(values: Grey, indexes: tuple[int, ...]) -> tuple[int, ...]:
    """The values at `indexes` of `values` sorted (uint8), from a 256-bin histogram."""
    cum = np.cumsum(np.bincount(values.ravel(), minlength=256))
    found = np.searchsorted(cum, indexes, side="right")
    return tuple(int(v) for v in found)


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's linear interpolation between neighbours, as `np.percentile` computes it."""
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1.0 - t)


def deskew(grey: Grey) -> Grey:
    """The crop with the plate's slant undone: a plate seen from the side and from above
    leans (its rows run at an angle in an axis-aligned box). The vertical shear (up to
    ±`MAX_SHEAR`) that makes the rows' vertical strokes line up best is found on a 64-pixel
    wide copy (the sharpest horizontal profile of |dI/dx|) and applied to the crop."""
    h, w = grey.shape
    if w < 8 or h < 4:
        return grey
    sw = SHEAR_WIDTH
    sh = max(4, round(h * sw / w))
    image = PILImage.fromarray(grey)
    small = np.asarray(image.resize((sw, sh), PILImage.Resampling.BILINEAR), np.uint8)
    best, best_score = 0.0, -1.0
    for s, score in zip(SHEARS.tolist(), shear_scores(small).tolist(), strict=True):
        if score > best_score * 1.0001:
            best, best_score = float(s), score
    if abs(best) < 0.02:
        return grey
    n = grey.size
    a, b = _order_stats_u8(grey, ((n - 1) // 2, n // 2))
    fill = (a + b) // 2  # int(np.median(grey))
    out = image.transform(
        (w, h),
        PILImage.Transform.AFFINE,
        (1.0, 0.0, 0.0, best, 1.0, -best * (w - 1) / 2.0),
        PILImage.Resampling.BILINEAR,
        fillcolor=fill,
    )
    return np.asarray(out, np.uint8)


def _band_rows(ink: npt.NDArray[np.float64]) -> tuple[int, int]:
    """`text_band`'s rows (top, bottom) from the crop's `row_ink`."""
    h = ink.shape[0]
    if h < 8:
        return 0, h
    k = max(1, h // 16)
    smooth = np.convolve(ink, np.ones(2 * k + 1, np.float32) / (2 * k + 1), mode="same")
    # the floor: np.percentile(smooth, 10.0), background texture and sensor noise
    index = (h - 1) * 0.1
    below = int(np.floor(index))
    ordered = np.partition(smooth, (below, below + 1))
    floor = _lerp(float(ordered[below]), float(ordered[below + 1]), index - below)
    inked = np.flatnonzero(smooth - floor >= BAND_LEVEL * (float(smooth.max()) - floor))
    if inked.size == 0:
        return 0, h
    top, bottom = int(inked[0]), int(inked[-1]) + 1
    grow = round((bottom - top) * BAND_MARGIN)
    top, bottom = max(0, top - grow), min(h, bottom + grow)
    if bottom - top < max(4, h // 5):
        return 0, h
    return top, bottom


def text_band(grey: Grey) -> Grey:
    """The rows of the (deskewed) crop that hold text: where the smoothed horizontal ink,
    above the crop's floor (its 10th percentile: background texture, noise), is at least
    `BAND_LEVEL` of the peak's, grown by `BAND_MARGIN` of the band's height."""
    if grey.shape[0] < 8:
        return grey
    top, bottom = _band_rows(row_ink(grey))
    return grey[top:bottom]


def row_images(grey: Grey, two_row_below_aspect: float) -> list[Grey]:
    """The crop's text rows, top first: deskewed, cut to the text band, then one row for a
    wide band, two (split where the ink is lowest) for a narrow one."""
    straight = deskew(grey)
    if straight.shape[0] < 8:
        return [straight]
    ink = row_ink(straight)  # the band's rows keep their ink: the split reuses it
    top, bottom = _band_rows(ink)
    band = straight[top:bottom]
    h, w = band.shape
    if w >= two_row_below_aspect * h or h < 8:
        return [band]
    cut = _split_at(ink[top:bottom])
    pad = max(1, round(h * SPLIT_OVERLAP))
    return [band[: min(h, cut + pad)], band[max(0, cut - pad) :]]


def percentiles_u8(values: Grey, qs: tuple[float, ...]) -> tuple[float, ...]:
    """`np.percentile(values, qs)` (linear interpolation, the same numbers) for uint8 data,
    from a 256-bin histogram instead of a sort."""
    n = values.size
    cum = np.cumsum(np.bincount(values.ravel(), minlength=256))
    out = []
    for q in qs:
        index = q / 100.0 * (n - 1)  # in the order numpy computes it
        below = int(np.floor(index))
        a, b = np.searchsorted(cum, (below, min(below + 1, n - 1)), side="right").tolist()
        out.append(_lerp(float(a), float(b), index - below))
    return tuple(out)


def _stretch_table(lo: float, hi: float) -> Grey:
    """`normalise_row`'s contrast stretch of every grey level (the same float32 arithmetic
    per pixel, done once per level)."""
    out = (_LEVELS - float(lo)) * (255.0 / float(hi - lo))
    out += 0.5
    np.maximum(out, 0.0, out=out)  # np.clip(out, 0, 255) without its Python overhead
    np.minimum(out, 255.0, out=out)
    return out.astype(np.uint8)


def normalise_row(row: Grey, width: int, height: int) -> Grey:
    """A row resized to the model's input and its contrast stretched to 0 … 255."""
    small = np.asarray(
        PILImage.fromarray(row).resize((width, height), PILImage.Resampling.BILINEAR),
        dtype=np.uint8,
    )
    lo, hi = percentiles_u8(small, (2.0, 98.0))
    if hi - lo < 8.0:  # a flat patch: leave it as it is rather than amplify noise
        return small
    stretched: Grey = _stretch_table(lo, hi).take(small)
    return stretched


def plate_rows(
    crop: npt.NDArray[np.uint8], width: int, height: int, two_row_below_aspect: float
) -> list[Grey]:
    """The model inputs (`height` x `width` grey) for one plate crop from `crop_plate`."""
    grey = shrink(to_grey(crop), width)
    if grey.shape[0] < 2 or grey.shape[1] < 2:
        raise ValueError(f"plate crop of {grey.shape[1]}x{grey.shape[0]} pixels is too small")
    return [normalise_row(r, width, height) for r in row_images(grey, two_row_below_aspect)]


def shrink(grey: Grey, width: int) -> Grey:
    """A crop more than twice the model's row `width` wide, box-averaged down by a whole
    factor to between one and two widths: its rows end up `width` wide anyway, and the
    pre-processing (deskew, band, split) costs grow with the crop's area."""
    h, w = grey.shape
    k = w // width
    if k < 2 or h < 2 * k:
        return grey
    return np.asarray(PILImage.fromarray(grey).reduce(k), dtype=np.uint8)


# --- decoding ------------------------------------------------------------------------------


def ctc_greedy(
    probs: npt.NDArray[np.float32], alphabet: str, blank: int = 0
) -> tuple[str, tuple[float, ...]]:
    """Greedy CTC decoding of per-step probabilities `probs` (T, C): best class per step,
    repeats merged, blanks dropped. Returns the text and each character's confidence (the
    highest probability among the steps that produced it)."""
    if probs.ndim != 2 or probs.shape[1] != len(alphabet) + 1:
        raise ValueError(f"CTC output must be (T, {len(alphabet) + 1}), got {list(probs.shape)}")
    best = probs.argmax(axis=1)
    peak = probs.max(axis=1)
    chars: list[str] = []
    confs: list[float] = []
    prev = blank
    for k, cls in enumerate(best.tolist()):
        if cls != blank:
            if cls != prev:
                index = cls - 1 if cls > blank else cls
                chars.append(alphabet[index])
                confs.append(float(peak[k]))
            else:
                confs[-1] = max(confs[-1], float(peak[k]))
        prev = cls
    return "".join(chars), tuple(round(c, 4) for c in confs)


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlateRead:
    """One reading of one plate crop.

    `rows`: characters read per row (letters and digits); `char_conf`: one confidence per
    character of `raw` (rows joined); `confidence`: their product (0 when nothing was read);
    `plate`: the grammar's verdict (its `text` is the canonical text when valid, else `raw`).
    """

    rows: tuple[str, ...]
    char_conf: tuple[float, ...]
    confidence: float
    plate: PlateNumber
    seq: int = -1  # the frame it was read in, when known

    @property
    def raw(self) -> str:
        return "".join(self.rows)

    @property
    def text(self) -> str:
        return self.plate.text

    @property
    def valid(self) -> bool:
        return self.plate.valid

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "raw": self.raw,
            "rows": list(self.rows),
            "valid": self.valid,
            "reason": self.plate.reason,
            "confidence": round(self.confidence, 4),
            "char_conf": [round(c, 3) for c in self.char_conf],
            **({"seq": self.seq} if self.seq >= 0 else {}),
        }


def make_read(
    rows: tuple[str, ...], row_confs: tuple[tuple[float, ...], ...], seq: int = -1
) -> PlateRead:
    """A `PlateRead` from per-row texts and confidences, checked by the grammar."""
    confs = tuple(c for rc in row_confs for c in rc)
    overall = float(np.prod(confs)) if confs else 0.0
    return PlateRead(rows, confs, round(overall, 4), parse_rows(rows), seq)


# --- manifest ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReaderManifest:
    name: str
    version: str
    file: str
    sha256: str
    input_width: int
    input_height: int
    alphabet: str = ALPHABET
    blank_index: int = 0
    two_row_below_aspect: float = 2.8
    min_confidence: float = 0.6
    format: str = READER_FORMAT
    path: Path = field(default=Path(), compare=False)

    @property
    def model_path(self) -> Path:
        return self.path.parent / self.file

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


_READER_KEYS: dict[str, tuple[type, bool, Any, str]] = {
    "name": (str, True, lambda v: 0 < len(v) <= 64, "1 to 64 characters"),
    "version": (str, True, lambda v: 0 < len(v) <= 64, "1 to 64 characters"),
    "format": (str, True, lambda v: v == READER_FORMAT, READER_FORMAT),
    "file": (
        str,
        True,
        lambda v: v not in ("", ".", "..") and not re.search(r"[/\\\0]", v),
        "a plain file name in the manifest's folder",
    ),
    "sha256": (str, True, lambda v: re.fullmatch(r"[0-9a-f]{64}", v), "64 lowercase hex digits"),
    "input_width": (int, True, lambda v: 16 <= v <= 1024, "16 … 1024"),
    "input_height": (int, True, lambda v: 8 <= v <= 256, "8 … 256"),
    "alphabet": (
        str,
        False,
        lambda v: 0 < len(v) <= 128 and len(set(v)) == len(v) and v.isprintable(),
        "1 to 128 distinct printable characters",
    ),
    "blank_index": (int, False, lambda v: v == 0, "0"),
    "two_row_below_aspect": (float, False, lambda v: 1.0 <= v <= 10.0, "1 … 10"),
    "min_confidence": (float, False, lambda v: 0.0 <= v <= 1.0, "0 … 1"),
}


def parse_reader_manifest(raw: Any, path: Path) -> ReaderManifest:
    """Check a decoded reader manifest (from `path`); ModelError on the first problem."""
    return ReaderManifest(**checked_keys(raw, path, _READER_KEYS), path=path)


def read_reader_manifest(path: Path) -> ReaderManifest:
    return parse_reader_manifest(read_json(path, "reader manifest"), path)


@dataclass(frozen=True)
class ReaderIO:
    input: TensorSpec
    output: TensorSpec

    @classmethod
    def read(cls, interpreter: Interpreter, manifest: ReaderManifest) -> ReaderIO:
        source = manifest.model_path
        inputs = [TensorSpec.from_detail(d) for d in interpreter.get_input_details()]
        outputs = [TensorSpec.from_detail(d) for d in interpreter.get_output_details()]
        want_in = (1, manifest.input_height, manifest.input_width, 1)
        if len(inputs) != 1 or inputs[0].shape != want_in:
            got = [list(s.shape) for s in inputs]
            raise ModelError(f"{source}: input must be {list(want_in)}, found {got}")
        if inputs[0].dtype not in (np.uint8, np.int8, np.float32):
            raise ModelError(f"{source}: input must be uint8, int8 or float32")
        classes = len(manifest.alphabet) + 1
        if len(outputs) != 1 or len(outputs[0].shape) != 3 or outputs[0].shape[2] != classes:
            got = [list(s.shape) for s in outputs]
            raise ModelError(f"{source}: output must be [1, T, {classes}], found {got}")
        return cls(inputs[0], outputs[0])


# --- the reader ----------------------------------------------------------------------------


class PlateReader:
    """One loaded reader model. Not thread-safe: one reader per thread."""

    def __init__(
        self,
        manifest_path: Path | str = DEFAULT_READER_MANIFEST,
        num_threads: int = 1,
        backend: Backend | None = None,
    ) -> None:
        self._backend = backend or default_backend()
        self.manifest = read_reader_manifest(Path(manifest_path))
        content = read_model_bytes(self.manifest)
        self._interp = self._backend.open(content, self.manifest.model_path, num_threads)
        self._io = ReaderIO.read(self._interp, self.manifest)
        spec = self._io.input
        self._buffer = np.zeros(spec.shape, dtype=spec.dtype)
        # _quantize is per pixel, so a table of its 256 answers quantizes a row by lookup
        self._table = self._quantize(np.arange(256, dtype=np.uint8))
        _shear_groups(128)  # deskew's table for the usual plates, built now, not on a read
        self.last_ms = 0.0

    @property
    def backend(self) -> str:
        return self._backend.name

    def _quantize(self, pixels: Grey) -> npt.NDArray[Any]:
        """Grey levels as the model's input type (any shape in, the same shape out)."""
        spec = self._io.input
        if spec.dtype == np.float32:  # a float model takes pixel / 255
            return pixels.astype(np.float32) / 255.0
        if spec.scale == 0.0:
            return pixels.astype(spec.dtype)
        real = pixels.astype(np.float32) / 255.0
        q = np.round(real / spec.scale + spec.zero_point)
        info = np.iinfo(spec.dtype)
        out: npt.NDArray[Any] = np.clip(q, info.min, info.max).astype(spec.dtype)
        return out

    def _read_row(self, row: Grey) -> tuple[str, tuple[float, ...]]:
        if row.shape != self._io.input.shape[1:3]:
            raise ValueError(f"row of shape {list(row.shape)} is not the model's input")
        np.take(self._table, row, out=self._buffer[0, :, :, 0], mode="clip")  # row: 0 … 255
        self._interp.set_tensor(self._io.input.index, self._buffer)
        self._interp.invoke()
        out = self._io.output.dequantize(self._interp.get_tensor(self._io.output.index))[0]
        return ctc_greedy(out, self.manifest.alphabet, self.manifest.blank_index)

    def read_crop(self, crop: npt.NDArray[np.uint8], seq: int = -1) -> PlateRead:
        """Read a plate crop made by `crop_plate` (RGB or grey)."""
        t0 = time.perf_counter()
        m = self.manifest
        rows = plate_rows(crop, m.input_width, m.input_height, m.two_row_below_aspect)
        results = [self._read_row(r) for r in rows]
        self.last_ms = (time.perf_counter() - t0) * 1000.0
        return make_read(tuple(t for t, _ in results), tuple(c for _, c in results), seq)

    def read(self, image: npt.NDArray[np.uint8], box: Box | Any, seq: int = -1) -> PlateRead:
        """Read the plate at `box` (x0, y0, x1, y1) in `image`."""
        return self.read_crop(crop_plate(image, box), seq)
