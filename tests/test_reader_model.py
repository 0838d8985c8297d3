"""The bundled reader model, through the node's own runtime: it reads rendered plates of every
layout and colour, a tampered model is refused, and the `roadnode read` / `eval-reader`
contracts. The images are made here from the shared plate renderer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from node.capture.platerender import COLORS, LAYOUTS, random_plate_text, render_plate
from node.infer.reader import DEFAULT_READER_MANIFEST, PlateReader
from node.infer.runtime import ModelError
from node.plates.grammar import normalize

pytestmark = pytest.mark.skipif(
    not DEFAULT_READER_MANIFEST.exists(),
    reason="no bundled reader model (node/infer/models/reader.json) in this build yet",
)

U8 = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def reader() -> PlateReader:
    return PlateReader(DEFAULT_READER_MANIFEST, num_threads=1)


def picture(text: str, layout: str, color: str, width: int) -> tuple[U8, tuple[float, ...]]:
    plate = Image.fromarray(render_plate(text, layout, color, width / LAYOUTS[layout][0] * 1000))
    canvas = Image.new("RGB", (plate.width + 60, plate.height + 60), (70, 75, 80))
    canvas.paste(plate, (30, 30), plate)
    return np.asarray(canvas), (30.0, 30.0, 30.0 + plate.width, 30.0 + plate.height)


def test_reads_rendered_plates_of_every_layout_and_colour(reader: PlateReader) -> None:
    rng = np.random.default_rng(11)
    right = total = 0
    wrong = []
    for layout in LAYOUTS:
        for color in COLORS:
            for width in (80, 140, 220):
                text = random_plate_text(layout, rng)
                image, box = picture(text, layout, color, width)
                read = reader.read(image, box)
                total += 1
                if read.raw == normalize(text):
                    right += 1
                    assert read.valid
                    assert read.text == text  # formatted back exactly as the plate shows it
                    assert len(read.char_conf) == len(read.raw)
                    assert 0.0 < read.confidence <= 1.0
                else:
                    wrong.append((layout, color, width, text, read.raw))
    assert right / total >= 0.9, wrong


def test_a_blank_plate_reads_nothing_valid(reader: PlateReader) -> None:
    blank = np.full((60, 240, 3), 235, np.uint8)
    read = reader.read_crop(blank)
    assert not read.valid


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    manifest = json.loads(DEFAULT_READER_MANIFEST.read_text())
    shutil.copy(DEFAULT_READER_MANIFEST, tmp_path / "reader.json")
    blob = bytearray((DEFAULT_READER_MANIFEST.parent / manifest["file"]).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / manifest["file"]).write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        PlateReader(tmp_path / "reader.json")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def test_read_command_json_lines_and_a_bad_image(tmp_path: Path) -> None:
    road = np.full((540, 960, 3), 90, np.uint8)
    plate = render_plate("51G-678.90", "car1", "white", 260 / 0.52)
    pic = Image.fromarray(road)
    pic.paste(Image.fromarray(plate), (350, 250), Image.fromarray(plate))
    good = tmp_path / "car.png"
    pic.save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = run("read", "--json", str(bad), str(good))
    assert out.returncode == 1  # one image failed, the other was still read
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["image"] == str(bad)
    assert "error" in lines[0]
    assert lines[1]["width"] == 960
    assert lines[1]["height"] == 540
    for p in lines[1]["plates"]:
        assert set(p) >= {"box", "score", "text", "confidence"}


def test_eval_reader_on_labelled_boxes(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    lines = []
    for k, layout in enumerate(LAYOUTS):
        text = random_plate_text(layout, rng)
        image, box = picture(text, layout, "white", 180)
        Image.fromarray(image).save(tmp_path / f"p{k}.png")
        h, w = image.shape[:2]
        lines.append(
            {"image": f"p{k}.png", "width": w, "height": h, "boxes": [list(box)],
             "plate_text": [text]}
        )  # fmt: skip
    lines.append({"image": "p0.png", "width": 1, "height": 1, "boxes": [], "plate_text": []})
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = run("eval-reader", "--labels", str(labels), "--json")
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["plates"] == 3
    assert figures["exact_match"] >= 2 / 3
    assert 0.0 <= figures["cer"] < 0.2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(lines[0] | {"plate_text": ["a", "b"]}) + "\n")
    out = run("eval-reader", "--labels", str(bad))
    assert out.returncode == 1
    assert "plate_text" in out.stderr
