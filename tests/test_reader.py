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
    make_read,
    plate_rows,
    read_reader_manifest,
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
