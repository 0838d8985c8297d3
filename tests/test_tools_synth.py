"""Synthetic detector samples: determinism, boxes on plates, coverage of formats and sizes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from node.capture.platerender import COLORS, LAYOUTS
from tools.plates import synth
from tools.plates.synth import Sample, make_batch, make_sample, synth_sample

U8 = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def clean() -> list[Sample]:
    """Undegraded samples: plates keep their exact colours."""
    rng = np.random.default_rng(2024)
    return [synth_sample(rng, (320, 320), augment=False) for _ in range(60)]


@pytest.fixture(scope="module")
def noisy() -> list[Sample]:
    rng = np.random.default_rng(77)
    return [synth_sample(rng, (256, 384)) for _ in range(60)]


def test_same_seed_same_bytes() -> None:
    a = [make_sample(np.random.default_rng(5)) for _ in range(2)]
    b = make_sample(np.random.default_rng(6))
    assert a[0][0].tobytes() == a[1][0].tobytes()
    np.testing.assert_array_equal(a[0][1], a[1][1])
    assert a[0][0].tobytes() != b[0].tobytes()
    images1, boxes1 = make_batch(np.random.default_rng(9), 4, (128, 160))
    images2, boxes2 = make_batch(np.random.default_rng(9), 4, (128, 160))
    assert images1.shape == (4, 128, 160, 3)
    assert images1.dtype == np.uint8
    assert images1.tobytes() == images2.tobytes()
    assert len(boxes1) == 4
    for x, y in zip(boxes1, boxes2, strict=True):
        np.testing.assert_array_equal(x, y)


def test_shapes_types_and_bounds(noisy: list[Sample]) -> None:
    for s in noisy:
        assert s.image.shape == (256, 384, 3)
        assert s.image.dtype == np.uint8
        assert s.boxes.dtype == np.float32
        assert s.boxes.shape == (len(s.layouts), 4)
        assert len(s.colors) == len(s.layouts)
        x0, y0, x1, y1 = s.boxes.T
        assert (x0 >= 0).all()
        assert (y0 >= 0).all()
        assert (x1 <= 384).all()
        assert (y1 <= 256).all()
        assert (x1 - x0 >= synth.MIN_BOX_PX).all()
        assert (y1 > y0).all()
    counts = [len(s.boxes) for s in noisy]
    assert 0 in counts
    assert max(counts) >= 4


def test_every_layout_and_colour_occurs(clean: list[Sample], noisy: list[Sample]) -> None:
    pairs = {
        (lay, col) for s in clean + noisy for lay, col in zip(s.layouts, s.colors, strict=True)
    }
    assert {lay for lay, _ in pairs} == set(LAYOUTS)
    assert {col for _, col in pairs} == set(COLORS)
    assert len(pairs) >= 10  # nearly every combination, in only 120 samples


def test_small_plates_are_common(clean: list[Sample]) -> None:
    widths = np.concatenate([s.boxes[:, 2] - s.boxes[:, 0] for s in clean])
    assert len(widths) > 100
    assert (widths <= 20).sum() >= 0.15 * len(widths)
    assert (widths <= 40).mean() > 0.4
    assert widths.max() > 150  # and big ones


def _near(pixels: U8, color: tuple[int, int, int], tol: int) -> npt.NDArray[np.bool_]:
    diff = np.abs(pixels.astype(np.int16) - np.asarray(color, dtype=np.int16))
    return np.asarray((diff <= tol).all(axis=-1))


def _shows_plate(image: U8, box: npt.NDArray[np.float32], color: str) -> bool:
    """Whether `box` of `image` holds the plate colour (>= 15 %) and its text colour."""
    bg, ink = COLORS[color]
    x0, y0, x1, y1 = (int(v) for v in np.round(box))
    crop = image[y0:y1, x0:x1]
    return bool(_near(crop, bg, 40).mean() >= 0.15 and _near(crop, ink, 60).mean() >= 0.02)


def test_boxes_lie_on_plates(clean: list[Sample]) -> None:
    """Inside each box are the plate's own background and text colours; the same box moved
    off the plate rarely shows both. (Plates under 28 px are mostly blend: not tested.)"""
    on, off, total = 0, 0, 0
    for s in clean:
        for box, color in zip(s.boxes, s.colors, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            if w < 28 or h < 8:
                continue
            total += 1
            on += _shows_plate(s.image, box, color)
            dx = w if box[2] + w <= 320 else -min(w, box[0])
            dy = h if box[3] + h <= 320 else -min(h, box[1])
            off += _shows_plate(s.image, box + np.array([dx, dy, dx, dy]), color)
    assert total >= 40
    assert on >= 0.95 * total
    assert off <= 0.3 * total


def test_augmented_samples_vary_in_look(noisy: list[Sample]) -> None:
    means = [float(s.image.mean()) for s in noisy]
    greys = [bool((s.image[..., 0] == s.image[..., 2]).all()) for s in noisy]
    assert max(means) - min(means) > 60  # dark nights and bright days
    assert any(greys)
    assert not all(greys)


def _stripe_contrast(pixels: npt.NDArray[np.uint8]) -> float:
    """How well the strokes still stand out: the correlation of the picture's column profile
    with the strokes' (1: sharp; near 0: smeared away; brightness and contrast do not count,
    the reader stretches those)."""
    cols = pixels.astype(np.float32).mean(axis=2)[20:40].mean(axis=0)
    pattern = (np.arange(cols.size) % 6 < 3).astype(np.float32)
    return float(np.corrcoef(cols, pattern)[0, 1])


def test_legible_degradation_keeps_strokes_readable() -> None:
    """`degrade(glyph_px=...)` (the reader's acceptance set) never blurs, shrinks or darkens
    strokes away; the detector's full-strength degradation sometimes does."""
    from PIL import Image

    from tools.plates.augment import degrade

    stripes = np.full((60, 240, 3), 20, np.uint8)
    for x in range(0, 240, 6):  # 3 px light, 3 px dark: strokes of letters 21 px tall
        stripes[:, x : x + 3] = 230
    no_boxes = np.zeros((0, 4), np.float32)
    full, legible = [], []
    for seed in range(120):
        img = Image.fromarray(stripes)
        full.append(_stripe_contrast(degrade(img, np.random.default_rng(seed), no_boxes)))
        out = degrade(img, np.random.default_rng(seed), no_boxes, glyph_px=21.0)
        legible.append(_stripe_contrast(out))
    assert min(full) < 0.6  # full strength: some strokes are smeared together
    assert min(legible) > 0.75  # legible: every stroke still stands out
