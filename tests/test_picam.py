"""PicamSource against the picamera2 double (and, marked hardware, a real camera)."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from node.capture import picam
from node.capture.frame import CaptureError, Frame
from node.capture.picam import PicamSource, camera_controls, sensor_ts_to_mono
from node.capture.yuv import BT601_FULL, BT709_LIMITED, matrix_for, yuv420_to_rgb
from node.config import CaptureConfig
from tests.picamera2_double import Behaviour, CompletedRequest, Picamera2, Rig, rgb_to_ycbcr

Floats = npt.NDArray[np.float64]
Bytes = npt.NDArray[np.uint8]

SMALL = CaptureConfig(
    source="picam://0",
    fps=30,
    main_width=640,
    main_height=480,
    lores_width=320,
    lores_height=240,
    stall_timeout_s=0.2,
    reconnect_max_s=1.0,
)


@pytest.fixture
def rig() -> Rig:
    return Rig()


@pytest.fixture
def stop() -> threading.Event:
    return threading.Event()


@pytest.fixture
def source(rig: Rig, stop: threading.Event) -> Iterator[PicamSource]:
    src = PicamSource("picam://0", SMALL, camera_factory=rig.open)
    src.open(stop)
    yield src
    src.close()


def read_frame(src: PicamSource) -> Frame:
    frame = src.read()
    assert frame is not None
    return frame


@pytest.mark.parametrize(
    ("main_size", "lores_size"), [((640, 480), (320, 240)), ((1280, 720), (640, 360))]
)
def test_frames_have_configured_shapes_and_rgb_order(
    rig: Rig, stop: threading.Event, main_size: tuple[int, int], lores_size: tuple[int, int]
) -> None:
    cfg = CaptureConfig(
        main_width=main_size[0],
        main_height=main_size[1],
        lores_width=lores_size[0],
        lores_height=lores_size[1],
    )
    src = PicamSource("picam://0", cfg, camera_factory=rig.open)
    src.open(stop)
    frame = read_frame(src)
    src.close()
    main = frame.main.array()
    assert main.shape == (main_size[1], main_size[0], 3)
    assert main.flags.c_contiguous
    assert (main == np.array(rig.colour, dtype=np.uint8)).all()
    assert frame.lores.shape == (lores_size[1], lores_size[0], 3)
    assert frame.lores.dtype == np.uint8
    # The double encodes with SMPTE170M below 1280x720 and Rec709 above, as picamera2 does.
    assert np.abs(frame.lores.astype(int) - np.array(rig.colour)).max() <= 2
    assert frame.lores_to_main == (main_size[0] / lores_size[0], main_size[1] / lores_size[1])


def test_every_request_is_released_once(rig: Rig, source: PicamSource) -> None:
    for _ in range(5):
        read_frame(source)
    assert len(rig.requests) == 5
    assert [r.ref_count for r in rig.requests] == [0] * 5


def test_request_released_even_when_building_the_frame_fails(
    rig: Rig, stop: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(request: object) -> dict[str, object]:
        raise RuntimeError("metadata unavailable")

    monkeypatch.setattr(CompletedRequest, "get_metadata", broken)
    monkeypatch.setattr(picam, "BACKOFF_START_S", 0.05)
    src = PicamSource("picam://0", SMALL, camera_factory=rig.open)
    src.open(stop)
    threading.Timer(0.3, stop.set).start()
    assert src.read() is None
    src.close()
    assert len(rig.requests) >= 2
    assert all(r.ref_count == 0 for r in rig.requests)
    assert src.stats()["camera_errors"] == len(rig.requests)


def test_timestamps_are_monotonic_and_close_to_now(source: PicamSource) -> None:
    frames = [read_frame(source) for _ in range(5)]
    monos = [f.mono_ns for f in frames]
    assert monos == sorted(monos)
    assert len(set(monos)) == 5
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5]
    now_mono, now_utc = time.monotonic_ns(), time.time_ns()
    for f in frames:
        assert 0 <= now_mono - f.mono_ns < 1_000_000_000
        assert abs((now_utc - f.utc_ns) - (now_mono - f.mono_ns)) < 50_000_000
        assert f.mono_ns == f.meta["sensor_ts_ns"]  # the sensor stamps CLOCK_MONOTONIC
    assert source.stats()["timestamp_fallbacks"] == 0


def test_sensor_timestamp_mapping() -> None:
    now_mono, now_boot = 1_000_000_000_000, 1_000_500_000_000  # boottime 500 s ahead
    assert sensor_ts_to_mono(now_mono - 7_000_000, now_mono, now_boot) == now_mono - 7_000_000
    assert sensor_ts_to_mono(now_boot - 7_000_000, now_mono, now_boot) == now_mono - 7_000_000
    assert sensor_ts_to_mono(12345, now_mono, now_boot) is None
    assert sensor_ts_to_mono(now_mono + 1, now_mono, None) is None  # from the future


def test_implausible_sensor_timestamp_falls_back_to_read_time(
    rig: Rig, source: PicamSource
) -> None:
    rig.clock = "bogus"
    before = time.monotonic_ns()
    frame = read_frame(source)
    assert before <= frame.mono_ns <= time.monotonic_ns()
    assert source.stats()["timestamp_fallbacks"] == 1


@pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"), reason="Linux only")
def test_boottime_sensor_timestamps_map_to_monotonic(rig: Rig, source: PicamSource) -> None:
    rig.clock = "boottime"
    frame = read_frame(source)
    assert 0 <= time.monotonic_ns() - frame.mono_ns < 1_000_000_000
    assert source.stats()["timestamp_fallbacks"] == 0


def test_controls_and_streams_are_passed(rig: Rig, stop: threading.Event) -> None:
    cfg = CaptureConfig(
        fps=25, exposure_us=5000, analogue_gain=2.0, main_width=640, main_height=480,
        lores_width=320, lores_height=240,
    )  # fmt: skip
    src = PicamSource("picam://1", cfg, camera_factory=rig.open)
    src.open(stop)
    frame = read_frame(src)
    src.close()
    cam = rig.cameras[0]
    assert cam.camera_idx == 1
    config = cam.camera_configuration()
    assert (config["main"]["format"], config["main"]["size"]) == ("RGB888", (640, 480))
    assert (config["lores"]["format"], config["lores"]["size"]) == ("YUV420", (320, 240))
    assert config["buffer_count"] == picam.BUFFER_COUNT
    controls = config["controls"]
    assert controls["FrameDurationLimits"] == (40000, 40000)
    assert controls["AeEnable"] is False
    assert controls["ExposureTime"] == 5000
    assert controls["AnalogueGain"] == 2.0
    assert frame.meta["ExposureTime"] == 5000
    assert frame.meta["AnalogueGain"] == 2.0
    assert frame.meta["Lux"] == 412.5
    assert frame.meta["camera"] == 1
    assert cam.wait_timeouts
    assert all(t is not None and t > 0 for t in cam.wait_timeouts)


def test_auto_exposure_sets_no_shutter_or_gain() -> None:
    assert camera_controls(CaptureConfig(fps=10)) == {"FrameDurationLimits": (100000, 100000)}


def test_stall_reconnects_and_frames_resume(
    rig: Rig, stop: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    rig.behaviours = [Behaviour(frames=3, fault="stall")]
    src = PicamSource("picam://0", SMALL, camera_factory=rig.open)
    src.open(stop)
    with caplog.at_level(logging.WARNING, logger="node.capture.picam"):
        frames = [read_frame(src) for _ in range(6)]
    src.close()
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5, 6]
    stats = src.stats()
    assert (stats["stalls"], stats["reconnects"], stats["camera_errors"]) == (1, 1, 0)
    assert stats["frames"] == 6
    first, second = rig.cameras
    assert (first.closed, first.flushes, second.delivered) == (True, 1, 3)
    messages = [r.getMessage() for r in caplog.records]
    assert any("camera 0 stalled" in m for m in messages)
    assert any("camera 0 reopened" in m for m in messages)
    assert all(r.ref_count == 0 for r in rig.requests)


def test_backoff_restarts_after_a_frame(
    rig: Rig, stop: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    rig.behaviours = [Behaviour(frames=1), Behaviour(frames=1)]
    src = PicamSource("picam://0", SMALL, camera_factory=rig.open)
    src.open(stop)
    with caplog.at_level(logging.WARNING, logger="node.capture.picam"):
        assert [read_frame(src).seq for _ in range(3)] == [1, 2, 3]
    src.close()
    stalls = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(stalls) == 2
    assert all(m.endswith("reopening in 0.5 s") for m in stalls)


def test_camera_error_reconnects(rig: Rig, stop: threading.Event) -> None:
    rig.behaviours = [Behaviour(frames=1, fault="error")]
    src = PicamSource("picam://0", SMALL, camera_factory=rig.open)
    src.open(stop)
    assert [read_frame(src).seq for _ in range(3)] == [1, 2, 3]
    src.close()
    assert (src.stats()["camera_errors"], src.stats()["reconnects"]) == (1, 1)


def test_failed_opens_back_off_then_recover(
    rig: Rig, stop: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    rig.fail_opens = 2
    src = PicamSource("picam://0", SMALL, camera_factory=rig.open)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="node.capture.picam"):
        src.open(stop)  # fails, logged, retried by read()
        assert src.stats()["state"] == "reopening"
        frame = read_frame(src)
    elapsed = time.monotonic() - started
    src.close()
    assert frame.seq == 1
    assert 1.4 <= elapsed < 3.0  # waits 0.5 s, fails again, waits 1.0 s (the cap)
    assert (src.stats()["open_failures"], src.stats()["reconnects"], rig.opens) == (2, 1, 3)
    failures = [r.getMessage() for r in caplog.records if "failed to" in r.getMessage()]
    assert len(failures) == 2
    assert failures[1].endswith("next try in 1.0 s")  # 0.5 doubled, at the 1.0 s cap


def test_stop_during_backoff_returns_promptly(
    rig: Rig, stop: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(picam, "BACKOFF_START_S", 20.0)
    rig.fail_opens = 1000
    src = PicamSource("picam://0", SMALL, camera_factory=rig.open)
    src.open(stop)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert src.read() is None
    assert time.monotonic() - started < 1.0
    src.close()


def test_stop_while_waiting_for_a_frame_returns_promptly(rig: Rig, stop: threading.Event) -> None:
    rig.behaviours = [Behaviour(frames=0, fault="stall")]
    cfg = CaptureConfig(
        main_width=640, main_height=480, lores_width=320, lores_height=240, stall_timeout_s=30
    )
    src = PicamSource("picam://0", cfg, camera_factory=rig.open)
    src.open(stop)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert src.read() is None
    assert time.monotonic() - started < 1.0
    src.close()
    assert src.stats()["stalls"] == 0
    assert (rig.cameras[0].closed, rig.cameras[0].flushes) == (True, 1)


@pytest.mark.parametrize(
    ("url", "needle"),
    [("picam://x", "whole number"), ("picam://", "whole number"), ("picam://0?hdr=1", "query")],
)
def test_bad_urls_are_capture_errors(url: str, needle: str) -> None:
    with pytest.raises(CaptureError, match=needle):
        PicamSource(url, SMALL)


def test_lores_larger_than_main_is_a_capture_error() -> None:
    cfg = CaptureConfig(main_width=640, main_height=480, lores_width=960, lores_height=544)
    with pytest.raises(CaptureError, match="lores size 960x544 exceeds main size 640x480"):
        PicamSource("picam://0", cfg)


def test_configuration_the_sensor_rejects_is_a_capture_error(
    rig: Rig, stop: threading.Event
) -> None:
    cfg = CaptureConfig(main_width=4608, main_height=3456)
    src = PicamSource("picam://0", cfg, camera_factory=rig.open)
    with pytest.raises(CaptureError, match="rejected the configuration"):
        src.open(stop)
    assert rig.cameras[0].closed


def test_missing_picamera2_is_a_capture_error(
    stop: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes the import fail
    src = PicamSource("picam://0", SMALL)
    with pytest.raises(CaptureError, match="picamera2 is not importable"):
        src.open(stop)


def test_module_imports_without_picamera2() -> None:
    code = "import sys, node.capture.picam; assert 'picamera2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_yuv_matrix_follows_colour_space_names() -> None:
    assert matrix_for("<libcamera.ColorSpace 'Rec709'>") == BT709_LIMITED
    assert matrix_for("sYCC") == BT601_FULL
    assert matrix_for("SMPTE170M/Rec709/Rec601/Limited").kr == 0.299
    y, cb, cr = rgb_to_ycbcr((10, 200, 30), "sYCC")
    yuv = np.concatenate(
        [np.full((4, 8), y), np.full((2, 4), cb).reshape(1, 8), np.full((2, 4), cr).reshape(1, 8)]
    ).astype(np.uint8)
    rgb = yuv420_to_rgb(yuv, 8, BT601_FULL)
    assert rgb.shape == (4, 8, 3)
    assert np.abs(rgb.astype(int) - [10, 200, 30]).max() <= 2


def reference_rgb(yuv: Floats | Bytes, width: int, kr: float, kb: float) -> Floats:
    """Limited-range YUV420 to RGB in float64, upsampling chroma by repetition."""
    rows, stride = yuv.shape
    height, flat = rows * 2 // 3, yuv.reshape(-1).astype(np.float64)
    h2, w2, s2, y_end = height // 2, width // 2, stride // 2, height * stride

    def chroma(start: int) -> Floats:
        plane = flat[start : start + h2 * s2].reshape(h2, s2)[:, :w2]
        return (plane.repeat(2, 0).repeat(2, 1) - 128.0) * 255 / 224

    luma = (flat[:y_end].reshape(height, stride)[:, :width] - 16.0) * 255 / 219
    cb, cr = chroma(y_end), chroma(y_end + h2 * s2)
    red, blue = luma + (2 - 2 * kr) * cr, luma + (2 - 2 * kb) * cb
    green = (luma - kr * red - kb * blue) / (1 - kr - kb)
    rgb: Floats = np.clip(np.rint(np.dstack([red, green, blue])), 0, 255)
    return rgb


def test_yuv420_conversion_matches_a_float_reference() -> None:
    yuv = np.random.default_rng(7).integers(0, 256, (96 * 3 // 2, 192), dtype=np.uint8)
    rgb = yuv420_to_rgb(yuv, 160, BT709_LIMITED)  # stride 192: 32 bytes of padding a row
    assert rgb.shape == (96, 160, 3)
    assert np.abs(rgb - reference_rgb(yuv, 160, 0.2126, 0.0722)).max() <= 1


# The parameters node.capture.picam passes, per method, on Picamera2 and CompletedRequest.
USED_API = {
    "Picamera2": {
        "create_video_configuration": ["main", "lores", "controls", "buffer_count"],
        "configure": ["camera_config"],
        "camera_configuration": [],
        "start": [],
        "capture_request": ["wait"],
        "wait": ["job", "timeout"],
        "cancel_all_and_flush": [],
        "stop": [],
        "close": [],
    },
    "CompletedRequest": {"make_array": ["name"], "get_metadata": [], "release": []},
}


def test_double_mirrors_the_real_picamera2_api() -> None:
    real = pytest.importorskip("picamera2")
    doubles = {"Picamera2": Picamera2, "CompletedRequest": CompletedRequest}
    reals = {"Picamera2": real.Picamera2, "CompletedRequest": real.CompletedRequest}
    for cls, methods in USED_API.items():
        for name, used in methods.items():
            real_params = list(inspect.signature(getattr(reals[cls], name)).parameters)
            double_params = list(inspect.signature(getattr(doubles[cls], name)).parameters)
            assert set(used) <= set(real_params), (cls, name, real_params)
            count = len(used) + 1  # self, then the parameters in the same order
            assert double_params[:count] == real_params[:count], (cls, name)


@pytest.mark.hardware
def test_real_camera_delivers_frames() -> None:
    pytest.importorskip("picamera2")
    stop = threading.Event()
    src = PicamSource("picam://0", CaptureConfig())
    src.open(stop)
    try:
        frames = [src.read() for _ in range(3)]
    finally:
        src.close()
    assert all(f is not None for f in frames)
    for f in frames:
        assert f is not None
        assert f.main.shape == (1080, 1920, 3)
        assert f.lores.shape == (544, 960, 3)
        assert abs(time.time_ns() - f.utc_ns) < 2_000_000_000
    assert src.stats()["stalls"] == 0
