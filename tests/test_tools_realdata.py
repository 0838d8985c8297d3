"""The real labelled set: label parsing, the fixed split, and box-preserving crops (on tiny
fabricated sets; never the shared data)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from tools.plates.realdata import (
    LabelledImage,
    downscale_for_small_plates,
    load_image,
    load_labels,
    real_sample,
    split,
)

U8 = npt.NDArray[np.uint8]
GREY = (120, 120, 120)
RED, BLUE = (230, 20, 20), (20, 20, 230)


def _plate_photo(path: Path, size: tuple[int, int], boxes: list[list[int]]) -> None:
    """A grey photo with each box painted red (left half) and blue (right half)."""
    img = np.full((size[1], size[0], 3), GREY, dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        mid = (x0 + x1) // 2
        img[y0:y1, x0:mid] = RED
        img[y0:y1, mid:x1] = BLUE
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _write_set(root: Path, records: list[dict[str, Any]], extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in records]
    (root / "labels.jsonl").write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return root


PHOTOS: list[tuple[str, tuple[int, int], list[list[int]]]] = [
    ("images/Cars0.png", (640, 480), [[200, 300, 320, 340]]),
    ("images/Cars1.jpg", (300, 200), []),  # a photo without plates
    ("images/Cars2.png", (500, 400), [[10, 10, 110, 40], [300, 200, 440, 250]]),
]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    records = [{"image": n, "width": w, "height": h, "boxes": b} for n, (w, h), b in PHOTOS]
    for name, size, boxes in PHOTOS:
        _plate_photo(tmp_path / "set" / name, size, boxes)
    return _write_set(tmp_path / "set", records, extra="\n")


def test_load_labels(dataset: Path) -> None:
    items = load_labels(dataset)
    assert [it.name for it in items] == ["images/Cars0.png", "images/Cars1.jpg", "images/Cars2.png"]
    assert load_labels(dataset / "labels.jsonl") == items
    first = items[0]
    assert first.path == dataset / "images" / "Cars0.png"
    assert first.path.is_file()
    assert (first.width, first.height) == (640, 480)
    assert first.boxes.dtype == np.float32
    assert first.boxes.shape == (1, 4)
    assert not first.boxes.flags.writeable
    assert items[1].boxes.shape == (0, 4)
    pixels = load_image(items[1])
    assert pixels.shape == (200, 300, 3)
    assert pixels.dtype == np.uint8


GOOD = {"image": "images/a.png", "width": 100, "height": 50, "boxes": [[1, 2, 30, 20]]}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2"),
        ("[1, 2]", "JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "boxes"}), "boxes"),
        (json.dumps({**GOOD, "image": "images/b.png", "width": 0}), "width must be"),
        (json.dumps({**GOOD, "image": "images/b.png", "height": True}), "height must be"),
        (json.dumps({**GOOD, "image": "images/b.png", "boxes": [[1, 2, 300, 20]]}), "outside"),
        (json.dumps({**GOOD, "image": "images/b.png", "boxes": [[30, 2, 30, 20]]}), "empty"),
        (json.dumps({**GOOD, "image": "images/b.png", "boxes": [[1, 2, 3]]}), "x0, y0"),
        (json.dumps({**GOOD, "image": "images/b.png", "boxes": {"a": 1}}), "must be a list"),
        (json.dumps({**GOOD, "image": "/abs/b.png"}), "relative"),
        (json.dumps({**GOOD, "image": "../b.png"}), "relative"),
        (json.dumps(GOOD), "already on line 1"),
    ],
)
def test_bad_label_line_names_its_line(tmp_path: Path, line: str, message: str) -> None:
    root = _write_set(tmp_path / "bad", [GOOD], extra=line + "\n")
    with pytest.raises(ValueError, match="line 2") as err:
        load_labels(root)
    assert message in str(err.value)


def test_load_image_checks_the_size(dataset: Path) -> None:
    item = load_labels(dataset)[0]
    wrong = LabelledImage(item.name, item.path, 641, 480, item.boxes)
    with pytest.raises(ValueError, match="640x480"):
        load_image(wrong)


def _items(n: int) -> list[LabelledImage]:
    none = np.zeros((0, 4), dtype=np.float32)
    return [LabelledImage(f"images/Cars{i}.png", Path(f"/x/{i}"), 10, 10, none) for i in range(n)]


def test_split_is_fixed_disjoint_and_about_a_fifth() -> None:
    items = _items(2000)
    train, val = split(items)
    names_t, names_v = {it.name for it in train}, {it.name for it in val}
    assert not names_t & names_v
    assert len(names_t | names_v) == 2000
    assert 0.175 < len(val) / 2000 < 0.225
    shuffled = [items[i] for i in np.random.default_rng(3).permutation(2000)]
    assert split(shuffled) == (train, val)  # same lists, same order
    # The rule, independently: sha256 of the relative path, first 16 hex digits, mod 1000.
    for it in items[:200]:
        bucket = int(hashlib.sha256(it.name.encode()).hexdigest()[:16], 16) % 1000
        assert (it.name in names_v) == (bucket < 200)
    # Pinned, so a change of rule (or a machine that computes it differently) shows up.
    pinned = [int(it.name[11:-4]) for it in val if int(it.name[11:-4]) < 40]
    assert sorted(pinned) == [2, 5, 9, 12, 14, 18, 21, 23, 25, 26, 29, 38]
    assert split(items, 0.0)[1] == []
    assert split(items, 1.0)[0] == []
    with pytest.raises(ValueError, match="val_fraction"):
        split(items, 1.5)


def _colour_mask(image: U8, color: tuple[int, int, int]) -> npt.NDArray[np.bool_]:
    diff = np.abs(image.astype(np.int16) - np.asarray(color, dtype=np.int16)).max(axis=-1)
    return np.asarray(diff < 40)


def _inside(
    mask: npt.NDArray[np.bool_], box: npt.NDArray[np.float32], pad: float
) -> npt.NDArray[np.bool_]:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = box
    return np.asarray(
        (xs + 0.5 >= x0 - pad)
        & (xs + 0.5 <= x1 + pad)
        & (ys + 0.5 >= y0 - pad)
        & (ys + 0.5 <= y1 + pad)
    )


def test_real_sample_boxes_cover_the_plate(dataset: Path) -> None:
    item = load_labels(dataset)[0]  # one plate: the window always keeps it whole
    pixels = load_image(item)
    widths, flipped = [], 0
    for seed in range(40):
        image, boxes = real_sample(
            np.random.default_rng(seed), item, (200, 240), augment=False, image=pixels
        )
        assert image.shape == (200, 240, 3)
        assert boxes.shape == (1, 4)
        box = boxes[0]
        red, blue = _colour_mask(image, RED), _colour_mask(image, BLUE)
        assert _inside(red, box, 1.0).all()
        assert _inside(blue, box, 1.0).all()
        w, h = box[2] - box[0], box[3] - box[1]
        if w >= 16:
            assert (red.sum() + blue.sum()) >= 0.6 * w * h
            flipped += bool(np.nonzero(blue)[1].mean() < np.nonzero(red)[1].mean())
        widths.append(w)
    assert min(widths) < 20
    assert max(widths) > 80
    assert 5 <= flipped <= 35  # mirrored about half the time


def test_real_sample_small_draws_junction_sized_plates(dataset: Path) -> None:
    item = load_labels(dataset)[0]
    pixels = load_image(item)
    widths = []
    for seed in range(30):
        _, boxes = real_sample(
            np.random.default_rng(seed), item, (200, 240), augment=False, image=pixels, small=True
        )
        widths.append(float(boxes[0, 2] - boxes[0, 0]))
        red = _colour_mask(_, RED)
        assert _inside(red, boxes[0], 1.0).all()
    assert max(widths) <= 41  # SMALL_PLATE_PX, give or take a pixel of rounding
    assert min(widths) < 14
    assert np.median(widths) < 25  # log-uniform 10-40: median 20


def test_real_sample_many_plates_and_none(dataset: Path) -> None:
    empty, two = load_labels(dataset)[1], load_labels(dataset)[2]
    image, boxes = real_sample(np.random.default_rng(1), empty, (96, 128))
    assert image.shape == (96, 128, 3)
    assert boxes.shape == (0, 4)
    a = real_sample(np.random.default_rng(4), two, (160, 160))
    b = real_sample(np.random.default_rng(4), two, (160, 160))
    assert a[0].tobytes() == b[0].tobytes()
    np.testing.assert_array_equal(a[1], b[1])
    assert len(a[1]) >= 1
    assert (a[1][:, :2] >= 0).all()
    assert (a[1][:, 2] <= 160).all()
    assert (a[1][:, 3] <= 160).all()


def test_downscale_for_small_plates(dataset: Path) -> None:
    item = load_labels(dataset)[2]  # plates 100 and 140 px wide: median 120
    image, boxes = downscale_for_small_plates(item, 20.0)
    assert image.shape == (67, 83, 3)  # 400 x 500 scaled by 1/6
    np.testing.assert_allclose(np.median(boxes[:, 2] - boxes[:, 0]), 20.0, atol=0.3)
    red = _colour_mask(image, RED)
    covered = np.zeros(red.sum(), dtype=bool)
    for box in boxes:
        covered |= _inside(red, box, 1.0)
    assert covered.all()
    assert red.sum() > 20
    same, kept = downscale_for_small_plates(item, 500.0)  # never enlarged
    assert same.shape == (400, 500, 3)
    np.testing.assert_array_equal(kept, item.boxes)
    with pytest.raises(ValueError, match="no plates"):
        downscale_for_small_plates(load_labels(dataset)[1])
