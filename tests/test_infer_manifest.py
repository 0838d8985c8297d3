"""Model manifests: what is refused and how it is said; letterboxing and input quantization."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.infer.letterbox import PAD, Letterbox, Placement, input_table, resize
from node.infer.manifest import FORMAT, ModelManifest, load_model, read_manifest
from node.infer.runtime import ModelError
from tests.interpreter_double import Rig, write_model


def refusal(path: Path, rig: Rig | None = None) -> str:
    with pytest.raises(ModelError) as info:
        load_model(path, 1, (rig or Rig()).backend())
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_good_manifest_loads(tmp_path: Path) -> None:
    rig = Rig()
    interpreter, manifest = load_model(write_model(tmp_path), 3, rig.backend())
    assert interpreter is rig.opened[0]
    assert rig.opened[0].num_threads == 3
    assert manifest.model_path == tmp_path / "plates.tflite"
    assert (manifest.input_width, manifest.input_height, manifest.stride) == (64, 32, 4)
    assert manifest.score_threshold == 0.4
    assert manifest.input_range == "0-1"
    assert manifest.label == "plates 1.0.0"


def test_optional_keys_take_defaults(tmp_path: Path) -> None:
    path = write_model(
        tmp_path, stride=None, score_threshold=None, nms_iou=None, max_detections=None
    )
    m = read_manifest(path)
    assert (m.stride, m.score_threshold, m.nms_iou, m.max_detections) == (4, 0.35, 0.5, 100)


def test_sha256_mismatch_is_refused_before_loading(tmp_path: Path) -> None:
    path = write_model(tmp_path)
    (tmp_path / "plates.tflite").write_bytes(b"tampered")
    rig = Rig()
    message = refusal(path, rig)
    assert message.startswith(f"{tmp_path / 'plates.tflite'}: sha256 mismatch: ")
    assert "plates.json says" in message
    assert rig.opened == []  # the runtime never saw the bytes


def test_missing_model_file(tmp_path: Path) -> None:
    path = write_model(tmp_path)
    (tmp_path / "plates.tflite").unlink()
    message = refusal(path)
    assert message == f"{tmp_path / 'plates.tflite'}: model file not found (named by {path})"


def test_missing_manifest(tmp_path: Path) -> None:
    assert refusal(tmp_path / "none.json") == f"{tmp_path / 'none.json'}: model manifest not found"


def test_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "plates.json"
    path.write_text('{"name": "plates",\n "version": }', encoding="utf-8")
    assert refusal(path).startswith(f"{path}: not valid JSON: Expecting value (line 2)")


@pytest.mark.parametrize(
    "name", ["../plates.tflite", "sub/plates.tflite", "/abs/plates.tflite", "..", ".", "a\\b", ""]
)
def test_model_paths_must_be_plain_names_in_the_folder(tmp_path: Path, name: str) -> None:
    path = write_model(tmp_path, file=name)
    message = refusal(path)
    assert message == (
        f"{path}: 'file' must be a plain file name in the manifest's folder, got {name!r}"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "yolo/v8"}, "unsupported format 'yolo/v8' (this node reads " + FORMAT + ")"),
        ({"sha256": None}, "missing key 'sha256'"),
        ({"sha256": "ABC"}, "'sha256' must be 64 lowercase hex digits, got 'ABC'"),
        ({"input_width": "64"}, "'input_width' must be a whole number, got '64'"),
        ({"input_width": 64.0}, "'input_width' must be a whole number, got 64.0"),
        ({"stride": True}, "'stride' must be a whole number, got True"),
        ({"input_width": 66}, "input 66x32 is not a multiple of the stride 4"),
        ({"score_threshold": 1.5}, "'score_threshold' must be between 0 and 1, got 1.5"),
        ({"input_range": "0-2"}, "'input_range' must be 0-1 or 0-255, got '0-2'"),
    ],
)
def test_bad_manifest_values(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    path = write_model(tmp_path, **changes)
    assert refusal(path) == f"{path}: {message}"


def test_manifest_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("[1]", encoding="utf-8")
    assert refusal(path) == f"{path}: must be a JSON object, got list"


def test_input_shape_that_does_not_match_the_manifest(tmp_path: Path) -> None:
    path = write_model(tmp_path, input_width=128, input_height=64)
    model = tmp_path / "plates.tflite"
    assert refusal(path) == f"{model}: input is 64x32, the manifest says 128x64"


def test_output_grid_that_does_not_match_the_stride(tmp_path: Path) -> None:
    path = write_model(tmp_path, stride=8)
    assert "heat output is [1, 8, 16, 1], expected [1, 4, 8, 1] at stride 8" in refusal(path)


def test_model_the_runtime_cannot_load(tmp_path: Path) -> None:
    path = write_model(tmp_path, content=b"not a model")
    model = tmp_path / "plates.tflite"
    assert refusal(path) == (
        f"{model}: cannot load model: Model provided has model identifier 'a mo', should be 'TFL3'"
    )


def test_manifest_equality_ignores_where_it_was_read(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = read_manifest(write_model(tmp_path / "a"))
    b = read_manifest(write_model(tmp_path / "b"))
    assert a == b
    assert isinstance(a, ModelManifest)


# --- input quantization ----------------------------------------------------------------------


def test_input_tables() -> None:
    pixels = np.arange(256)
    uint8 = input_table(np.dtype(np.uint8), 1 / 255, 0)
    np.testing.assert_array_equal(uint8, pixels)  # raw bytes: the usual uint8 model
    int8 = input_table(np.dtype(np.int8), 1 / 255, -128)
    np.testing.assert_array_equal(int8, pixels - 128)
    general = input_table(np.dtype(np.int8), 0.0078125, -1)  # x/255 in 1/128 steps
    np.testing.assert_array_equal(
        general, np.clip(np.floor(pixels / 255 * 128 + 0.5) - 1, -128, 127)
    )
    raw = input_table(np.dtype(np.uint8), 1.0, 0, "0-255")
    np.testing.assert_array_equal(raw, pixels)
    half = input_table(np.dtype(np.int8), 2.0, -128, "0-255")
    assert half[0] == -128
    assert half[255] == 0  # 255/2 = 127.5 rounds half up
    floats = input_table(np.dtype(np.float32), 0.0, 0)
    np.testing.assert_allclose(floats, pixels / 255)
    assert floats.dtype == np.float32


# --- letterbox -------------------------------------------------------------------------------


def test_letterbox_keeps_aspect_pads_grey_and_maps_boxes_back() -> None:
    table = input_table(np.dtype(np.int8), 1 / 255, -128)
    box = Letterbox(960, 544, table)
    image = np.full((1080, 1440, 3), 200, np.uint8)  # 4:3 into 960x544: 725x544
    placement = box.place(image)
    assert box.fit(1440, 1080) == (725, 544)
    assert placement == Placement(725 / 1440, 544 / 1080, 1440, 1080)
    assert box.buffer.shape == (1, 544, 960, 3)
    assert box.buffer.dtype == np.int8
    assert np.all(box.buffer[0, :, :725] == 200 - 128)
    assert np.all(box.buffer[0, :, 725:] == PAD - 128)
    boxes = np.array([[100.0, 200.0, 400.0, 300.0], [0.0, 0.0, 1440.0, 1080.0]], np.float32)
    np.testing.assert_allclose(placement.to_image(placement.to_input(boxes)), boxes, rtol=1e-5)


def test_letterbox_clips_to_the_image_and_repads_when_the_size_changes() -> None:
    box = Letterbox(64, 32, input_table(np.dtype(np.uint8), 1 / 255, 0))
    buffer = box.buffer
    box.place(np.full((32, 64, 3), 9, np.uint8))  # fills all of it
    placement = box.place(np.full((32, 32, 3), 9, np.uint8))
    assert box.buffer is buffer  # allocated once
    assert np.all(buffer[0, :, 32:] == PAD)
    assert np.all(buffer[0, :, :32] == 9)
    out = placement.to_image(np.array([[-5.0, -5.0, 60.0, 40.0]], np.float32))
    np.testing.assert_array_equal(out, [[0, 0, 32, 32]])


def test_letterbox_upscales_small_images_and_quantizes_with_any_table() -> None:
    table = input_table(np.dtype(np.int8), 0.0078125, -1)
    box = Letterbox(64, 32, table)
    placement = box.place(np.full((8, 8, 3), 255, np.uint8))
    assert (placement.scale_x, placement.scale_y) == (4.0, 4.0)
    assert np.all(box.buffer[0, :, :32] == table[255])
    assert np.all(box.buffer[0, :, 32:] == table[PAD])


def test_letterbox_refuses_what_is_not_rgb() -> None:
    box = Letterbox(64, 32, input_table(np.dtype(np.uint8), 1 / 255, 0))
    with pytest.raises(ValueError, match="RGB uint8"):
        box.place(np.zeros((32, 64), np.uint8))


def test_resize_by_two_is_an_exact_box_reduction() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2, :2] = 100
    image[0, 0] = 104
    out = resize(image, 2, 2)
    assert out.shape == (2, 2, 3)
    assert out[0, 0, 0] == 101  # mean of 104, 100, 100, 100
    assert out[1, 1, 0] == 0
