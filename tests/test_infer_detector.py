"""The detector end to end: with the interpreter double (int8 quantization, letterbox, stage
mapping, reload) and with a real TFLite model built in the test (runtime, CLI)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from node.capture.frame import ArrayRef, Frame
from node.cli import main
from node.config import Config, DetectorConfig
from node.configload import ConfigError, load
from node.infer.detector import (
    MAX_RUNNERS,
    Detection,
    DetectorStage,
    FrameDetections,
    PlateDetector,
    build_stage,
)
from node.infer.manifest import DEFAULT_MANIFEST
from node.infer.runtime import ModelError, default_backend, find_backend
from tests.interpreter_double import Rig, write_model

LOG_LTRB = np.log([2.0, 1.0, 3.0, 1.5])  # distances 8, 4, 12, 6 px at stride 4


def peak_rig(row: int = 2, col: int = 5, score: float = 0.8) -> Rig:
    heat = np.zeros((8, 16))
    box = np.zeros((8, 16, 4))
    heat[row, col] = score
    box[row, col] = LOG_LTRB
    return Rig(heat=heat, box=box)


def expected_box(row: int, col: int, rig: Rig, scale: float) -> list[float]:
    """The box the double's model gives, after its int8 output rounding, in image pixels."""
    step = rig.box_quant[0]
    d = 4 * np.exp(np.round(LOG_LTRB / step) * step)
    cx, cy = (col + 0.5) * 4, (row + 0.5) * 4
    return [(cx - d[0]) / scale, (cy - d[1]) / scale, (cx + d[2]) / scale, (cy + d[3]) / scale]


def test_detect_dequantizes_decodes_and_maps_back_through_the_letterbox(tmp_path: Path) -> None:
    rig = peak_rig()
    detector = PlateDetector(write_model(tmp_path), backend=rig.backend())
    assert detector.backend == "double 1.0"
    image = np.full((64, 128, 3), 50, np.uint8)  # twice the model's 64x32 input
    (found,) = detector.detect(image)
    np.testing.assert_allclose(found.box, expected_box(2, 5, rig, 0.5), rtol=1e-5)
    assert found.score == pytest.approx(205 / 256)  # 0.8 on the int8 grid of 1/256, zp -128
    interpreter = rig.opened[0]
    assert interpreter.last_input.dtype == np.int8
    assert np.all(interpreter.last_input == 50 - 128)  # int8 input: scale 1/255, zp -128
    assert detector.timing.invoke_ms >= 0.0


def test_threshold_from_the_manifest_unless_overridden(tmp_path: Path) -> None:
    path = write_model(tmp_path)  # manifest threshold 0.4
    rig = peak_rig(score=0.3)
    assert PlateDetector(path, backend=rig.backend()).detect(np.zeros((32, 64, 3), np.uint8)) == []
    lower = PlateDetector(path, threshold=0.25, backend=rig.backend())
    assert lower.threshold == 0.25
    assert len(lower.detect(np.zeros((32, 64, 3), np.uint8))) == 1
    plain = PlateDetector(path, backend=rig.backend())
    assert plain.threshold == 0.4
    assert len(plain.detect(np.zeros((32, 64, 3), np.uint8), threshold=0.2)) == 1


def test_max_detections_and_order(tmp_path: Path) -> None:
    heat = np.zeros((8, 16))
    heat[::2, ::2] = np.linspace(0.5, 0.9, 32).reshape(4, 8)  # 32 isolated peaks
    rig = Rig(heat=heat, box=np.full((8, 16, 4), -1.0))  # small boxes, no overlaps
    found = PlateDetector(write_model(tmp_path), backend=rig.backend()).detect(
        np.zeros((32, 64, 3), np.uint8)
    )
    assert len(found) == 10  # the manifest's max_detections
    scores = [d.score for d in found]
    assert scores == sorted(scores, reverse=True)


def test_peaks_in_the_padding_are_dropped(tmp_path: Path) -> None:
    rig = peak_rig(row=3, col=12)  # x 50 in the input: right of a 32 px wide image
    detector = PlateDetector(write_model(tmp_path), backend=rig.backend())
    assert detector.detect(np.zeros((32, 32, 3), np.uint8)) == []


def test_stage_maps_lores_detections_to_main_pixels(tmp_path: Path) -> None:
    rig = peak_rig()
    stage = DetectorStage(PlateDetector(write_model(tmp_path), backend=rig.backend()), keep=2)
    for seq in range(3):
        lores = np.zeros((32, 64, 3), np.uint8)
        main = ArrayRef(np.zeros((96, 192, 3), np.uint8))  # 3x the detection stream
        stage.process(Frame(seq, 1000 + seq, 0, lores, main))
    recent = stage.recent()
    assert [r.seq for r in recent] == [1, 2]  # bounded
    (plate,) = recent[-1].detections
    np.testing.assert_allclose(plate.box, np.array(expected_box(2, 5, rig, 1.0)) * 3, rtol=1e-5)
    stats = stage.stats()
    assert (stats["frames"], stats["plates"], stats["last_plates"]) == (3, 3, 1)
    assert stats["model"] == "plates 1.0.0"
    assert stats["backend"] == "double 1.0"


def test_reload_keeps_the_old_model_when_the_new_one_is_refused(tmp_path: Path) -> None:
    rig = peak_rig()
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    detector = PlateDetector(write_model(tmp_path / "old"), backend=rig.backend())
    bad = write_model(tmp_path / "new", name="next", version="2.0.0")
    (tmp_path / "new" / "next.tflite").write_bytes(b"corrupted in transit")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        detector.reload(bad)
    assert detector.manifest.version == "1.0.0"
    assert len(detector.detect(np.zeros((32, 64, 3), np.uint8))) == 1
    good = write_model(tmp_path / "new", name="next", version="2.0.0")
    assert detector.reload(good).version == "2.0.0"
    assert detector.manifest.label == "next 2.0.0"
    assert len(detector.detect(np.zeros((32, 64, 3), np.uint8))) == 1


def test_config_section_builds_the_stage(tmp_path: Path) -> None:
    assert Config().detector == DetectorConfig("", 2, 0.35, True)
    path = write_model(tmp_path)
    rig = peak_rig()
    cfg = DetectorConfig(model=str(path), threads=3, score_threshold=0.0)
    stage = build_stage(cfg, rig.backend())
    assert stage is not None
    assert stage.detector.threshold == 0.4  # 0: the manifest's
    assert rig.opened[0].num_threads == 3
    assert build_stage(DetectorConfig(enabled=False), rig.backend()) is None


def test_empty_model_means_the_bundled_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundled = Path(__file__).parent.parent / "node" / "infer" / "models" / "plates.json"
    assert bundled == DEFAULT_MANIFEST
    path = write_model(tmp_path)
    monkeypatch.setattr("node.infer.detector.DEFAULT_MANIFEST", path)
    detector = PlateDetector.from_config(DetectorConfig(), peak_rig().backend())
    assert detector.manifest.path == path


def test_config_bounds() -> None:
    with pytest.raises(ConfigError) as info:
        load(None, ["detector.threads=9", "detector.score_threshold=1", "detector.enabled=1"])
    assert info.value.problems == [
        "detector.threads: must be between 1 and 8, got 9 (--set)",
        "detector.score_threshold: must be between 0 and 0.99, got 1 (--set)",
        "detector.enabled: must be true or false, got 1 (--set)",
    ]


# --- backends --------------------------------------------------------------------------------


def test_backend_fallback_order(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("fake_tflite_rt")
    fake.__version__ = "9.9"  # type: ignore[attr-defined]
    fake.Interpreter = object  # type: ignore[attr-defined]
    empty = types.ModuleType("empty_tflite_rt")
    monkeypatch.setitem(sys.modules, "fake_tflite_rt", fake)
    monkeypatch.setitem(sys.modules, "empty_tflite_rt", empty)
    candidates = [
        ("no_such_tflite_module", "Interpreter", ("missing-rt",)),
        ("empty_tflite_rt", "Interpreter", ("empty-rt",)),  # imports, but has no Interpreter
        ("fake_tflite_rt", "Interpreter", ("fake-tflite",)),
    ]
    backend = find_backend(candidates)
    assert backend.name == "fake-tflite 9.9"
    assert backend.factory is object
    with pytest.raises(ModelError) as info:
        find_backend(candidates[:2])
    assert str(info.value) == "no TFLite runtime installed (tried missing-rt, empty-rt)"


def test_the_installed_runtime_is_found() -> None:
    pytest.importorskip("ai_edge_litert.interpreter")
    assert default_backend().name == "ai-edge-litert 2.3.0"


# --- a real TFLite model ---------------------------------------------------------------------


def real_model(folder: Path, input_dtype: str = "uint8") -> Path:
    from tests.tflite_model import build_model

    return write_model(folder, build_model(96, 64, input_dtype), input_width=96, input_height=64)


def red_block(scale: int = 1) -> np.ndarray:  # type: ignore[type-arg]
    """A 96x64 (times `scale`) black image with a red 4x4 block on cell (row 5, col 10)."""
    image = np.zeros((64 * scale, 96 * scale, 3), np.uint8)
    image[20 * scale : 24 * scale, 40 * scale : 44 * scale, 0] = 255
    return image


def real_box(scale: float = 1.0) -> list[float]:
    from tests.tflite_model import box_log

    d = 4 * np.exp(box_log())
    cx, cy = 42.0, 22.0
    return [(cx - d[0]) * scale, (cy - d[1]) * scale, (cx + d[2]) * scale, (cy + d[3]) * scale]


@pytest.mark.parametrize("input_dtype", ["uint8", "int8"])
def test_real_tflite_model_end_to_end(tmp_path: Path, input_dtype: str) -> None:
    detector = PlateDetector(real_model(tmp_path, input_dtype), threads=2)
    assert detector.backend.startswith(("ai-edge-litert", "tflite-runtime", "tensorflow"))
    (found,) = detector.detect(red_block())
    np.testing.assert_allclose(found.box, real_box(), rtol=1e-5)
    assert found.score == pytest.approx(255 / 256)  # int8 heat: (127 + 128) / 256
    (scaled,) = detector.detect(red_block(2))  # letterboxed down by 2, mapped back up
    np.testing.assert_allclose(scaled.box, real_box(2.0), rtol=1e-5)
    assert detector.detect(np.zeros((64, 96, 3), np.uint8)) == []


def test_real_model_in_the_stage(tmp_path: Path) -> None:
    stage = DetectorStage(PlateDetector(real_model(tmp_path)))
    main_image = ArrayRef(np.zeros((128, 192, 3), np.uint8))
    stage.process(Frame(7, 0, 0, red_block(), main_image))
    (plate,) = stage.recent()[-1].detections
    np.testing.assert_allclose(plate.box, real_box(2.0), rtol=1e-5)


def save(path: Path, image: np.ndarray) -> Path:  # type: ignore[type-arg]
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(image).save(path)
    return path


def test_cli_detect_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = real_model(tmp_path)
    good = save(tmp_path / "big.png", red_block(2))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    args = ["detect", "--json", "--model", str(manifest), str(good), str(broken), str(good)]
    assert main(args) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == [str(good), str(broken), str(good)]
    assert (lines[0]["width"], lines[0]["height"]) == (192, 128)
    (plate,) = lines[0]["detections"]
    assert plate["box"] == [round(v, 1) for v in real_box(2.0)]
    assert plate["score"] == round(255 / 256, 3)
    assert lines[1]["error"].startswith(f"{broken}: ")
    assert lines[2] == lines[0]


def test_cli_detect_human(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = real_model(tmp_path)
    image = save(tmp_path / "a.png", red_block())
    assert main(["detect", "--model", str(manifest), "--threshold", "0.5", str(image)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{image}  96x64  1 plate"
    assert out[1].startswith("  0.996  [")


def test_cli_detect_refused_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", "--model", str(tmp_path / "x.json"), "a.png"]) == 1
    assert capsys.readouterr().err == f"roadnode: {tmp_path / 'x.json'}: model manifest not found\n"


def test_cli_eval_detector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = real_model(tmp_path)
    save(tmp_path / "data" / "images" / "plate.png", red_block())
    save(tmp_path / "data" / "images" / "empty.png", np.zeros((64, 96, 3), np.uint8))
    labels = tmp_path / "data" / "labels.jsonl"
    rows = [
        {"image": "images/plate.png", "width": 96, "height": 64, "boxes": [real_box()]},
        {"image": "images/empty.png", "width": 96, "height": 64, "boxes": []},
    ]
    labels.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    args = ["eval-detector", "--labels", str(labels), "--model", str(manifest)]
    assert main([*args, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["ap50"] == 1.0
    assert (figures["recall"], figures["precision"], figures["fp_per_image"]) == (1.0, 1.0, 0.0)
    assert (figures["images"], figures["failed"], figures["ground_truths"]) == (2, 0, 1)
    assert figures["threshold"] == 0.4
    assert main(args) == 0
    assert "AP50       1.000" in capsys.readouterr().out


def test_pyramid_levels_map_back_and_merge(tmp_path: Path) -> None:
    rig = peak_rig(row=1, col=2)
    path = write_model(tmp_path, pyramid=[1.0, 0.5])
    detector = PlateDetector(path, backend=rig.backend())
    image = np.full((64, 128, 3), 50, np.uint8)  # fits the 64x32 input at scale 0.5
    found = detector.detect(image)
    assert rig.opened[0].invocations == 2  # one invoke per level
    boxes = sorted(d.box for d in found)
    # the same peak read at full scale (0.5) and at the half level (0.25): two distinct boxes
    want = sorted([expected_box(1, 2, rig, 0.5), expected_box(1, 2, rig, 0.25)])
    np.testing.assert_allclose(boxes, want, rtol=1e-5)
    # the live stage runs one pass at full scale
    stage = DetectorStage(detector)
    frame = Frame(0, 0, 0, image, ArrayRef(np.zeros((128, 256, 3), np.uint8)))
    stage.process(frame)
    (only,) = stage.recent()[0].detections
    np.testing.assert_allclose(only.box, [v * 2 for v in expected_box(1, 2, rig, 0.5)], rtol=1e-5)


@pytest.mark.parametrize("bad", [[], [0.0], [1.5], "1", [1, 1, 1, 1, 1], [True]])
def test_bad_pyramid_is_refused(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ModelError, match="'pyramid' must be a list of 1 to 4 numbers"):
        PlateDetector(write_model(tmp_path, pyramid=bad), backend=peak_rig().backend())


def test_zoom_window_finds_a_plate_the_lores_cannot_see(tmp_path: Path) -> None:
    main = np.zeros((300, 400, 3), np.uint8)
    main[50:114, 100:196] = red_block()  # the block sits inside the window only in main
    lores = np.zeros((64, 96, 3), np.uint8)  # nothing visible in the detection stream
    frame = Frame(3, 0, 0, lores, ArrayRef(main))
    plain = DetectorStage(PlateDetector(real_model(tmp_path)))
    plain.process(frame)
    assert plain.result(3) == FrameDetections(3, 0, ())
    zoom = DetectorStage(PlateDetector(real_model(tmp_path)), zoom_window=(100, 50, 196, 114))
    zoom.process(frame)
    found = zoom.result(3)
    assert found is not None
    (plate,) = found.detections
    expected = np.array(real_box()) + np.array([100, 50, 100, 50])  # window → main pixels
    np.testing.assert_allclose(plate.box, expected, rtol=1e-5)
    assert zoom.result(4) is None  # a frame it never saw
    assert zoom.main_for(frame) is main  # the reader crops from the image the zoom fetched
    zoom.done_with(2)  # an older frame: the image stays
    assert zoom._last_main is not None
    zoom.done_with(3)  # the stages are done with it: the 6 MB of a camera frame go
    assert zoom._last_main is None


def test_build_stage_takes_the_configured_window_before_the_suggested_one(tmp_path: Path) -> None:
    manifest = str(real_model(tmp_path))
    cfg = DetectorConfig(model=manifest, zoom_window=((10.0, 20.0), (0.0, 5.0)))
    stage = build_stage(cfg, zoom_window=((1.0, 1.0), (2.0, 2.0)))
    assert stage is not None
    assert stage.zoom_window == (0, 5, 10, 20)  # corners put in order
    stage = build_stage(DetectorConfig(model=manifest), zoom_window=((1.0, 1.0), (50.0, 40.0)))
    assert stage is not None
    assert stage.zoom_window == (1, 1, 50, 40)


# --- a resizable model: each pass at its own size ----------------------------------------------


def resizable_model(folder: Path) -> Path:
    """The real test model (pooling and 1x1 convolutions: it runs at any size that divides by
    4), its manifest saying it resizes in steps of 16."""
    from tests.tflite_model import build_model

    folder.mkdir(parents=True, exist_ok=True)
    return write_model(
        folder, build_model(96, 64), input_width=96, input_height=64, size_multiple=16
    )


def test_a_resizable_model_runs_an_image_at_its_own_size(tmp_path: Path) -> None:
    band = red_block()[8:40]  # 96x32: the block on rows 12-16
    (tmp_path / "fixed").mkdir()
    fixed = PlateDetector(real_model(tmp_path / "fixed"))
    sized = PlateDetector(resizable_model(tmp_path / "sized"))
    expected = np.array(real_box()) - [0, 8, 0, 8]
    for detector in (fixed, sized):
        (plate,) = detector.detect(band, pyramid=(1.0,))
        np.testing.assert_allclose(plate.box, expected, rtol=1e-5)
    assert set(fixed._model.runners) == {(96, 64)}  # padded to the full input
    assert (96, 32) in sized._model.runners  # the padding cut off
    assert sized._model.runners[(96, 32)].letterbox.buffer.shape == (1, 32, 96, 3)
    # an image larger than the input is placed as a fixed model places it: same boxes
    (big,) = sized.detect(red_block(2), pyramid=(1.0,))
    np.testing.assert_allclose(big.box, real_box(2.0), rtol=1e-5)


def test_a_model_that_claims_to_resize_but_does_not_is_refused_at_load(tmp_path: Path) -> None:
    # the double's shapes are fixed: like a model file with a reshape baked in
    with pytest.raises(ModelError, match=r"does not run at 32x16 \(manifest size_multiple 16\)"):
        PlateDetector(write_model(tmp_path, size_multiple=16), backend=peak_rig().backend())


def test_size_multiple_must_divide_by_the_stride(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="'size_multiple' 6 is not a multiple of the stride 4"):
        PlateDetector(write_model(tmp_path, size_multiple=6), backend=peak_rig().backend())


def test_the_stage_runs_the_lores_pass_over_its_area_only(tmp_path: Path) -> None:
    main = ArrayRef(np.zeros((128, 192, 3), np.uint8))  # lores to main: x2
    frame = Frame(5, 0, 0, red_block(), main)  # the block on lores rows 20-24
    inside = DetectorStage(PlateDetector(resizable_model(tmp_path)), area=(0, 32, 192, 96))
    inside.process(frame)  # lores rows 16-48: the block, run at 96x32
    (plate,) = inside.recent()[-1].detections
    np.testing.assert_allclose(plate.box, real_box(2.0), rtol=1e-5)  # main pixels
    assert (96, 32) in inside.detector._model.runners
    assert len(inside.passes) == 1
    assert inside.stats()["invoke_ms"] == round(inside.passes[0].invoke_ms, 2)
    outside = DetectorStage(PlateDetector(resizable_model(tmp_path)), area=(0, 64, 192, 128))
    outside.process(frame)  # lores rows 32-64: below the block
    assert outside.recent()[-1].detections == ()
    gone = DetectorStage(PlateDetector(resizable_model(tmp_path)), area=(0, 300, 192, 400))
    gone.process(frame)  # an area off the frame: no pass, nothing found, nothing raised
    assert gone.recent()[-1].detections == ()
    assert gone.passes == ()


def test_build_stage_takes_the_configured_area_before_the_suggested_one(tmp_path: Path) -> None:
    manifest = str(real_model(tmp_path))
    cfg = DetectorConfig(model=manifest, area=((0.0, 500.0), (1920.0, 1080.0)))
    stage = build_stage(cfg, area=((0.0, 0.0), (10.0, 10.0)))
    assert stage is not None
    assert stage.area == (0, 500, 1920, 1080)
    stage = build_stage(DetectorConfig(model=manifest))
    assert stage is not None
    assert stage.area is None  # the whole frame


def test_inside_the_zoom_window_the_sharper_box_of_a_plate_wins(tmp_path: Path) -> None:
    """A plate in the window is seen by both passes; the lores box, a quarter of the pixels,
    is often looser than NMS can tell from another plate (seed 3: [1146, 576, 1220, 590]
    against the zoom pass's [1155, 573, 1211, 583], IoU 0.33: two tracks for one car)."""
    stage = DetectorStage(PlateDetector(real_model(tmp_path)), zoom_window=(480, 232, 1440, 616))
    zoom = [Detection((1155, 573, 1211, 583), 0.78), Detection((700, 300, 740, 310), 0.6)]
    loose = Detection((1146, 576, 1220, 590), 0.78)  # the same car, boxed loosely: dropped
    unseen = Detection((900, 400, 950, 412), 0.7)  # in the window, the zoom pass missed it
    edge = Detection((1420, 500, 1470, 512), 0.7)  # across the window's edge: kept
    beside = Detection((1215, 573, 1260, 583), 0.7)  # the rider abreast, no overlap: kept
    kept = stage._coarse_only([loose, unseen, edge, beside], zoom)
    assert kept == [unseen, edge, beside]
    assert stage._coarse_only([loose], []) == [loose]  # nothing sharper: nothing dropped


def test_a_resizable_model_keeps_a_few_sizes_open_not_one_per_image(tmp_path: Path) -> None:
    """`roadnode detect` over photos of every shape: a size each would be an interpreter each."""
    detector = PlateDetector(resizable_model(tmp_path))
    for rows in range(16, 65, 4):  # 13 heights, 4 input sizes (multiples of 16)
        for cols in (32, 48, 96):
            detector.detect(np.zeros((rows, cols, 3), np.uint8), pyramid=(1.0,))
    runners = detector._model.runners
    assert len(runners) == MAX_RUNNERS
    assert (96, 64) in runners  # the manifest's own size is never let go
    assert next(reversed(runners)) == (96, 64)  # the last image (64x96) ran at full size
