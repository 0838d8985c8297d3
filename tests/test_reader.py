"""The plate reader's pieces that need no trained model: cropping, deskew and row split on
rendered plates, CTC decoding, the manifest's refusals, and TrackReader's reading policy."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from node.capture.platerender import LAYOUTS, render_plate
from node.infer.reader import (
    CROP_MARGIN,
    PlateRead,
    ReaderManifest,
    crop_plate,
    ctc_greedy,
    deskew,
    make_read,
    plate_rows,
    read_reader_manifest,
    shear_scores,
    split_row,
    to_grey,
)
from node.infer.runtime import ModelError
from node.plates.grammar import ALPHABET
from node.plates.track import TrackReader

U8 = npt.NDArray[np.uint8]


def scene(
    layout: str, width: int, shear: float = 0.0, color: str = "white"
) -> tuple[U8, tuple[float, float, float, float]]:
    """A plate `width` px wide on a grey background, optionally slanted (vertical shear)."""
    text = {"car1": "98A-123.45", "car2": "51G-678.90", "moto": "29-B1 234.56"}[layout]
    plate = Image.fromarray(render_plate(text, layout, color, width / LAYOUTS[layout][0] * 1000))
    pw, ph = plate.size
    slant = abs(shear) * pw
    canvas = Image.new("RGB", (pw + 80, round(ph + slant) + 80), (90, 95, 100))
    if shear:
        plate = plate.transform(
            (pw, round(ph + slant)),
            Image.Transform.AFFINE,
            (1, 0, 0, shear, 1, -slant if shear > 0 else 0),
            Image.Resampling.BILINEAR,
        )
    canvas.paste(plate, (40, 40), plate)
    return np.asarray(canvas), (40.0, 40.0, 40.0 + pw, 40.0 + plate.height)


def test_crop_plate_adds_the_margin_and_clips() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    crop = crop_plate(image, (50, 40, 150, 60))
    mx, my = 100 * CROP_MARGIN[0], 20 * CROP_MARGIN[1]
    assert crop.shape == (
        math.ceil(60 + my) - math.floor(40 - my),
        math.ceil(150 + mx) - math.floor(50 - mx),
        3,
    )
    clipped = crop_plate(image, (-30, -10, 30, 10))  # clipped at the image's edges
    assert clipped.shape[:2] == (
        math.ceil(10 + 20 * CROP_MARGIN[1]),
        math.ceil(30 + 60 * CROP_MARGIN[0]),
    )
    with pytest.raises(ValueError, match="empty"):
        crop_plate(image, (10, 10, 10, 20))
    with pytest.raises(ValueError, match="off the 200x100 image"):
        crop_plate(image, (300, 300, 400, 320))


@pytest.mark.parametrize("layout", ["car1", "car2", "moto"])
@pytest.mark.parametrize("shear", [0.0, 0.18, -0.18])
def test_rows_one_for_one_row_plates_two_for_two_row_plates(layout: str, shear: float) -> None:
    image, box = scene(layout, 160, shear)
    rows = plate_rows(crop_plate(image, box), 128, 32, 2.5)
    assert len(rows) == (1 if layout == "car1" else 2)
    assert all(r.shape == (32, 128) and r.dtype == np.uint8 for r in rows)
    assert all(int(r.max()) - int(r.min()) > 150 for r in rows)  # contrast stretched


@pytest.mark.parametrize("layout", ["car2", "moto"])
@pytest.mark.parametrize("width", [60, 120, 240])
def test_two_row_split_falls_in_the_gap_between_the_rows(layout: str, width: int) -> None:
    image, box = scene(layout, width)
    grey = to_grey(crop_plate(image, box))
    w = grey.shape[1]
    # glyph ink: dark pixels in the middle 60 % of the columns (no border, no screws)
    dark = (grey[:, round(0.2 * w) : round(0.8 * w)] < 110).mean(axis=1)
    cut = split_row(grey)
    assert dark[cut] < 0.02, (cut, dark.round(2).tolist())
    assert dark[:cut].max() > 0.2  # text on both sides
    assert dark[cut:].max() > 0.2


def one_hot(classes: list[int], conf: float = 0.9) -> npt.NDArray[np.float32]:
    probs = np.full((len(classes), len(ALPHABET) + 1), (1 - conf) / len(ALPHABET), np.float32)
    probs[np.arange(len(classes)), classes] = conf
    return probs


def test_ctc_greedy_merges_repeats_and_drops_blanks() -> None:
    c = {ch: ALPHABET.index(ch) + 1 for ch in ALPHABET}
    steps = [0, c["9"], c["9"], 0, c["8"], 0, c["1"], 0, c["1"], c["1"], 0]
    text, conf = ctc_greedy(one_hot(steps), ALPHABET)
    assert text == "9811"
    assert len(conf) == 4
    assert all(abs(x - 0.9) < 1e-4 for x in conf)
    probs = one_hot(steps)
    probs[2, c["9"]] = 0.99  # a repeat's best step is the character's confidence
    assert ctc_greedy(probs, ALPHABET)[1][0] == pytest.approx(0.99, abs=1e-4)
    assert ctc_greedy(one_hot([0, 0, 0]), ALPHABET) == ("", ())
    with pytest.raises(ValueError, match="CTC output"):
        ctc_greedy(np.zeros((5, 10), np.float32), ALPHABET)


def test_make_read_confidence_and_grammar() -> None:
    r = make_read(("29B1", "12345"), ((0.9, 0.9, 0.9, 0.9), (1.0, 1.0, 1.0, 1.0, 0.5)))
    assert r.text == "29-B1 123.45"
    assert r.valid
    assert r.confidence == pytest.approx(0.9**4 * 0.5, abs=1e-4)
    assert r.as_dict()["char_conf"][-1] == 0.5


def write_manifest(folder: Path, blob: bytes, **over: Any) -> Path:
    (folder / "reader.tflite").write_bytes(blob)
    doc = {
        "name": "reader", "version": "t", "format": "ctc-rows/v1", "file": "reader.tflite",
        "sha256": hashlib.sha256(blob).hexdigest(), "input_width": 128, "input_height": 32,
    } | over  # fmt: skip
    path = folder / "reader.json"
    path.write_text(json.dumps(doc))
    return path


def test_manifest_checks(tmp_path: Path) -> None:
    from node.infer.reader import PlateReader

    m = read_reader_manifest(write_manifest(tmp_path, b"x" * 100))
    assert isinstance(m, ReaderManifest)
    assert m.alphabet == ALPHABET
    cases: list[tuple[dict[str, Any], str]] = [
        ({"format": "centernet-ltrb-log/v1"}, "'format' must be ctc-rows/v1"),
        ({"file": "../plates.tflite"}, "plain file name"),
        ({"input_width": 4}, "'input_width' must be 16"),
        ({"alphabet": "AA"}, "distinct"),
        ({"sha256": "ABC"}, "64 lowercase hex"),
    ]
    for over, message in cases:
        with pytest.raises(ModelError, match=message):
            read_reader_manifest(write_manifest(tmp_path, b"x" * 100, **over))
    path = write_manifest(tmp_path, b"x" * 100, sha256="0" * 64)
    with pytest.raises(ModelError, match="sha256 mismatch"):
        PlateReader(path)
    with pytest.raises(ModelError, match="cannot load model"):
        PlateReader(write_manifest(tmp_path, b"x" * 100))
    with pytest.raises(ModelError, match="reader manifest not found"):
        PlateReader(tmp_path / "none.json")


class ScriptedReader:
    """Records which crops it was asked to read and answers from a script."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.calls: list[int] = []

    def read_crop(self, crop: U8, seq: int = -1) -> PlateRead:
        self.calls.append(seq)
        text = self.answers[(len(self.calls) - 1) % len(self.answers)]
        return make_read((text,), ((0.9,) * len(text),), seq)


def test_track_reader_reads_tracks_not_every_frame() -> None:
    scripted = ScriptedReader(["98A12345", "98A12845", "98A12345"])
    tr = TrackReader(scripted, every_n_frames=3, min_plate_px=40, max_reads_per_track=4)
    big, small = np.zeros((30, 120, 3), np.uint8), np.zeros((10, 30, 3), np.uint8)
    for seq in range(20):
        tr.observe(1, seq, big if seq >= 2 else small)  # too small for the first two frames
    assert scripted.calls == [2, 5, 8, 11]  # every third frame, at most four reads
    best = tr.best(1)
    assert best is not None
    assert best.raw == "98A12345"
    assert len(best.reads) == 4
    assert tr.best(2) is None
    assert not tr.wants(1, 30, 120)  # done: four reads
    assert tr.wants(2, 30, 120)
    assert not tr.wants(2, 30, 20)
    tr.forget(1)
    assert tr.best(1) is None


def test_track_reader_forgets_idle_tracks() -> None:
    tr = TrackReader(ScriptedReader(["98A12345"]), every_n_frames=1, max_tracks=2, idle_frames=10)
    crop = np.zeros((30, 120, 3), np.uint8)
    tr.observe(1, 0, crop)
    tr.observe(2, 1, crop)
    tr.observe(3, 2, crop)  # over max_tracks: the oldest goes
    assert tr.best(1) is None
    assert tr.best(2) is not None
    tr.observe(3, 30, crop)  # track 2 idle for 29 frames
    assert tr.best(2) is None
    assert tr.best(3) is not None
    assert tr.stats()["reads"] == 4


def test_percentiles_u8_equal_numpys() -> None:
    from node.infer.reader import percentiles_u8

    rng = np.random.default_rng(2)
    for k in range(400):
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, 140)))
        if k % 2:
            x = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            x = np.clip(rng.normal(128, rng.uniform(1, 60), shape), 0, 255).astype(np.uint8)
        for qs in ((2.0, 98.0), (0.0, 50.0, 100.0)):
            assert percentiles_u8(x, qs) == tuple(np.percentile(x, qs).tolist())


# --- the fast pre-processing against the straightforward one it replaced -------------------
#
# `plate_rows` makes the training data too (tools/reader/data.py), so what the model sees
# must not move by a grey level: the reference below is the first, plain implementation.

REF_SHEARS = np.linspace(-0.5, 0.5, 21)


def ref_to_grey(crop: U8) -> U8:
    if crop.ndim == 2:
        return crop
    grey = crop[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(grey + 0.5, 0, 255).astype(np.uint8)


def ref_shear_scores(small: U8) -> list[float]:
    """Every pixel of the |dI/dx| map binned under every shear, profile by profile."""
    sh, sw = small.shape
    energy = np.abs(np.diff(small.astype(np.float32), axis=1))
    ys, xs = np.mgrid[0:sh, 0 : sw - 1]
    centred = xs - (sw - 1) / 2.0
    pad = int(np.ceil(0.5 * sw / 2.0)) + 1
    span = sh + 2 * pad
    scores = []
    for s in REF_SHEARS:
        rows = np.round(ys - s * centred).astype(np.int64) + pad
        profile = np.bincount(np.clip(rows, 0, span - 1).ravel(), energy.ravel(), span)
        scores.append(float(np.dot(profile, profile)))
    return scores


def ref_deskew(grey: U8) -> U8:
    h, w = grey.shape
    if w < 8 or h < 4:
        return grey
    sh = max(4, round(h * 64 / w))
    small = np.asarray(Image.fromarray(grey).resize((64, sh), Image.Resampling.BILINEAR))
    best, best_score = 0.0, -1.0
    for s, score in zip(REF_SHEARS.tolist(), ref_shear_scores(small), strict=True):
        if score > best_score * 1.0001:
            best, best_score = s, score
    if abs(best) < 0.02:
        return grey
    out = Image.fromarray(grey).transform(
        (w, h),
        Image.Transform.AFFINE,
        (1.0, 0.0, 0.0, best, 1.0, -best * (w - 1) / 2.0),
        Image.Resampling.BILINEAR,
        fillcolor=int(np.median(grey)),
    )
    return np.asarray(out, np.uint8)


def ref_ink(grey: U8) -> npt.NDArray[np.float64]:
    ink: npt.NDArray[np.float64] = np.abs(np.diff(grey.astype(np.int16), axis=1)).mean(axis=1)
    return ink


def ref_text_band(grey: U8) -> U8:
    h = grey.shape[0]
    if h < 8:
        return grey
    k = max(1, h // 16)
    smooth = np.convolve(ref_ink(grey), np.ones(2 * k + 1, np.float32) / (2 * k + 1), "same")
    floor = float(np.percentile(smooth, 10.0))
    inked = np.flatnonzero(smooth - floor >= 0.3 * (float(smooth.max()) - floor))
    if inked.size == 0:
        return grey
    top, bottom = int(inked[0]), int(inked[-1]) + 1
    grow = round((bottom - top) * 0.08)
    top, bottom = max(0, top - grow), min(h, bottom + grow)
    return grey if bottom - top < max(4, h // 5) else grey[top:bottom]


def ref_split_row(grey: U8) -> int:
    h = grey.shape[0]
    lo, hi = int(h * 0.38), max(int(h * 0.38) + 1, int(np.ceil(h * 0.62)))
    smooth = np.convolve(ref_ink(grey), np.ones(3, np.float32) / 3.0, mode="same")
    return lo + int(np.argmin(smooth[lo:hi]))


def ref_plate_rows(crop: U8, width: int, height: int, aspect: float) -> list[U8]:
    grey = ref_to_grey(crop)
    h, w = grey.shape
    if w >= 2 * width and h >= 2 * (w // width):  # a wide crop: box-averaged down first
        grey = np.asarray(Image.fromarray(grey).reduce(w // width))
    band = ref_text_band(ref_deskew(grey))
    h, w = band.shape
    rows = [band]
    if w < aspect * h and h >= 8:
        cut, pad = ref_split_row(band), max(1, round(h * 0.03))
        rows = [band[: min(h, cut + pad)], band[max(0, cut - pad) :]]
    out = []
    for row in rows:
        small = np.asarray(Image.fromarray(row).resize((width, height), Image.Resampling.BILINEAR))
        lo, hi = np.percentile(small, (2.0, 98.0)).tolist()
        if hi - lo >= 8.0:
            stretched = (small.astype(np.float32) - float(lo)) * (255.0 / float(hi - lo))
            small = np.clip(stretched + 0.5, 0, 255).astype(np.uint8)
        out.append(small)
    return out


def varied_crops(count: int, seed: int) -> list[U8]:
    """Plate crops as a camera might give them: every layout and colour, 30 to 260 px wide,
    slanted, turned, on busy backgrounds, noisy, dim or washed out; RGB, RGBA and grey."""
    rng = np.random.default_rng(seed)
    texts = {"car1": "98A-123.45", "car2": "51G-678.90", "moto": "29-B1 234.56"}
    plates = [
        Image.fromarray(render_plate(texts[layout], layout, color, 1000.0))
        for layout in LAYOUTS
        for color in ("white", "yellow", "blue")
    ]
    crops = []
    for i in range(count):
        plate = plates[i % len(plates)]
        width = round(math.exp(rng.uniform(math.log(30), math.log(260))))
        plate = plate.resize((width, max(4, round(plate.height * width / plate.width))))
        shear = float(rng.uniform(-0.45, 0.45)) if rng.random() < 0.7 else 0.0
        pw, ph = plate.size
        slant = abs(shear) * pw
        plate = plate.transform(
            (pw, round(ph + slant)),
            Image.Transform.AFFINE,
            (1, 0, 0, shear, 1, -slant if shear > 0 else 0),
            Image.Resampling.BILINEAR,
        )
        plate = plate.rotate(float(rng.uniform(-12, 12)), Image.Resampling.BILINEAR, expand=True)
        margin = 30
        size = (plate.width + 2 * margin, plate.height + 2 * margin)
        back = rng.integers(0, 256, 3)[None, None] + rng.normal(0, 30, (size[1], size[0], 1))
        canvas = Image.fromarray(np.clip(back, 0, 255).astype(np.uint8))
        canvas.paste(plate, (margin, margin), plate)
        pixels = np.asarray(canvas, np.float32) * rng.uniform(0.3, 1.3) + rng.uniform(-40, 40)
        pixels += rng.normal(0, rng.uniform(0, 25), pixels.shape)
        image = np.clip(pixels, 0, 255).astype(np.uint8)
        jitter = rng.uniform(-0.08, 0.08, 4) * [pw, ph, pw, ph]
        box = np.array([margin, margin, margin + plate.width, margin + plate.height]) + jitter
        crop = crop_plate(image, tuple(box.tolist()))
        kind = rng.random()
        if kind < 0.15:
            crop = ref_to_grey(crop)
        elif kind < 0.25:
            crop = np.dstack([crop, np.full(crop.shape[:2], 255, np.uint8)])
        crops.append(crop)
    return crops


def test_plate_rows_are_byte_identical_to_the_plain_implementation() -> None:
    crops = varied_crops(300, seed=11)
    rng = np.random.default_rng(5)
    crops += [
        np.full((30, 100, 3), 128, np.uint8),  # flat: no ink anywhere
        np.zeros((40, 40), np.uint8),
        rng.integers(0, 256, (3, 50, 3), dtype=np.uint8),  # too low to deskew or band
        rng.integers(0, 256, (6, 7, 3), dtype=np.uint8),  # too narrow to deskew
        rng.integers(0, 256, (9, 400, 3), dtype=np.uint8),
        rng.integers(0, 256, (600, 30), dtype=np.uint8),  # 4x taller than wide: the slow path
        rng.integers(0, 256, (150, 60), dtype=np.uint8),  # map of 160 rows: the second table
    ]
    slanted = two_rows = 0
    for k, crop in enumerate(crops):
        grey = to_grey(crop)
        assert np.array_equal(grey, ref_to_grey(crop)), k
        straight = deskew(grey)
        assert np.array_equal(straight, ref_deskew(grey)), k
        slanted += straight is not grey
        rows = plate_rows(crop, 128, 32, 2.8)
        want = ref_plate_rows(crop, 128, 32, 2.8)
        two_rows += len(want) == 2
        assert [r.shape for r in rows] == [r.shape for r in want], k
        assert all(r.tobytes() == w.tobytes() for r, w in zip(rows, want, strict=True)), k
        assert all(r.dtype == np.uint8 for r in rows)
    assert slanted > 100  # the comparison covered every branch many times
    assert two_rows > 100
    assert len(crops) - slanted - 4 > 50


def test_shear_scores_equal_per_pixel_binning() -> None:
    rng = np.random.default_rng(3)
    heights = [1, 2, 4, 5, 17, 63, 127, 128, 129, 200, 256, 257, 300]
    for sh in heights + rng.integers(1, 140, 30).tolist():
        sparse: U8 = np.where(rng.random((sh, 64)) < 0.1, 255, 0).astype(np.uint8)  # strokes
        for small in (rng.integers(0, 256, (sh, 64), dtype=np.uint8), sparse):
            assert shear_scores(small).tolist() == ref_shear_scores(small), sh
    with pytest.raises(ValueError, match="64 wide"):
        shear_scores(np.zeros((10, 50), np.uint8))


class RecordingInterpreter:
    """A reader-shaped interpreter that keeps what it is given and answers blanks."""

    def __init__(self, dtype: Any, quant: tuple[float, int]) -> None:
        self.dtype, self.quant = dtype, quant
        self.inputs: list[npt.NDArray[Any]] = []

    def allocate_tensors(self) -> None:
        pass

    def resize_tensor_input(self, input_index: int, tensor_size: Any) -> None:
        raise RuntimeError("fixed shapes")

    def get_input_details(self) -> list[dict[str, Any]]:
        shape = np.array([1, 32, 128, 1], np.int32)
        return [{"index": 0, "shape": shape, "dtype": self.dtype, "quantization": self.quant}]

    def get_output_details(self) -> list[dict[str, Any]]:
        shape = np.array([1, 32, len(ALPHABET) + 1], np.int32)
        return [{"index": 1, "shape": shape, "dtype": np.float32, "quantization": (0.0, 0)}]

    def set_tensor(self, index: int, value: npt.NDArray[Any]) -> None:
        assert value.shape == (1, 32, 128, 1)
        assert value.dtype == self.dtype
        self.inputs.append(value.copy())

    def invoke(self) -> None:
        pass

    def get_tensor(self, index: int) -> npt.NDArray[Any]:
        out = np.zeros((1, 32, len(ALPHABET) + 1), np.float32)
        out[..., 0] = 1.0
        return out


@pytest.mark.parametrize(
    ("dtype", "quant"),
    [(np.uint8, (1 / 255, 0)), (np.int8, (1 / 255, -128)), (np.int8, (0.0041, -3)),
     (np.float32, (0.0, 0)), (np.uint8, (0.0, 0))],
)  # fmt: skip
def test_reader_quantizes_rows_as_before(tmp_path: Path, dtype: Any, quant: Any) -> None:
    from node.infer.reader import PlateReader
    from node.infer.runtime import Backend

    interp = RecordingInterpreter(dtype, quant)
    reader = PlateReader(
        write_manifest(tmp_path, b"model"), backend=Backend("recording", lambda **_: interp)
    )
    for crop in varied_crops(6, seed=2):
        rows = plate_rows(crop, 128, 32, 2.5)
        interp.inputs.clear()
        read = reader.read_crop(crop)
        assert read.raw == ""
        assert len(interp.inputs) == len(rows)
        for row, given in zip(rows, interp.inputs, strict=True):
            scale, zero = quant
            if dtype == np.float32:
                want = row.astype(np.float32)[None, :, :, None] / 255.0
            elif scale == 0.0:
                want = row.reshape(1, 32, 128, 1).astype(dtype)
            else:
                q = np.round(row.astype(np.float32) / 255.0 / scale + zero)
                info = np.iinfo(dtype)
                want = np.clip(q, info.min, info.max).astype(dtype).reshape(1, 32, 128, 1)
            assert given.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="not the model's input"):
        reader._read_row(np.zeros((32, 100), np.uint8))
