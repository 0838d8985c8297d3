"""A test double for picamera2 0.3.x (0.3.17+), covering what `node.capture.picam` uses.

Mirrored from raspberrypi/picamera2 (picamera2/picamera2.py, request.py, job.py), with the same
method names, argument names and return shapes:

- `Picamera2(camera_num=0, verbose_console=None, tuning=None)`; raises RuntimeError("Camera
  __init__ sequence did not complete.") when it cannot open. (The double also takes `rig`.)
- `create_video_configuration(main={}, lores=None, raw={}, transform=None, colour_space=None,
  buffer_count=6, controls={}, display="main", encode="main", queue=True, sensor={},
  use_case="video") -> dict`, merging defaults as the real one does (main XBGR8888 1280x720,
  lores YUV420, colour space SMPTE170M below 1280x720 else Rec709, controls
  NoiseReductionMode + FrameDurationLimits (33333, 33333) overridden by ours).
- `configure(camera_config=None)`, `camera_configuration() -> dict` (with "stride" filled in),
  `start(config=None, show_preview=False)`, `stop()`, `close()`, `cancel_all_and_flush()`.
- `capture_request(wait=None, signal_function=None, flush=None)`: `wait=False` returns a Job;
  `wait(job, timeout=None)` returns `job.get_result(timeout)` and raises TimeoutError
  (concurrent.futures.TimeoutError) when no frame arrives in time.
- `CompletedRequest.make_array(name)`: RGB888 -> (h, w, 3) in B, G, R byte order; YUV420 ->
  (h * 3 // 2, stride) with the planes packed as in the buffer. `get_metadata() -> dict`,
  `release()` (raises on a second release, as the real ref count does).

Behaviour is set on a `Rig`: a colour to paint, opens that fail, per-camera faults (stall =
stop delivering frames, error = the wait raises), and which clock stamps `SensorTimestamp`.
"""

from __future__ import annotations

import time
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

BYTE_PAD = 0xEE  # fills stride padding, so a reader that keeps padding gets wrong colours
LUMA_WEIGHTS = {"Rec709": (0.2126, 0.0722), "SMPTE170M": (0.299, 0.114), "sYCC": (0.299, 0.114)}


class ColorSpace:
    """Stands in for libcamera.ColorSpace; its repr is what the real binding prints."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<libcamera.ColorSpace '{self.name}'>"


@dataclass
class Behaviour:
    """What one opened camera does: deliver `frames` frames (None = forever), then `fault`."""

    frames: int | None = None
    fault: Literal["stall", "error"] = "stall"


@dataclass
class Rig:
    """Shared state of the cameras a test opens through `rig.open` (the camera factory)."""

    colour: tuple[int, int, int] = (200, 40, 90)
    fail_opens: int = 0
    behaviours: list[Behaviour] = field(default_factory=list)
    clock: Literal["monotonic", "boottime", "bogus"] = "monotonic"
    sensor_size: tuple[int, int] = (4608, 2592)
    frame_interval_s: float = 0.0
    opens: int = 0
    cameras: list[Picamera2] = field(default_factory=list)
    requests: list[CompletedRequest] = field(default_factory=list)

    def open(self, camera_num: int) -> Picamera2:
        self.opens += 1
        return Picamera2(camera_num, rig=self)


class Job:
    """picamera2.job.Job: a Future the camera's event loop completes."""

    def __init__(self) -> None:
        self._future: Future[CompletedRequest] = Future()
        self._future.set_running_or_notify_cancel()

    def get_result(self, timeout: float | None = None) -> CompletedRequest:
        return self._future.result(timeout=timeout)

    def cancel(self) -> None:
        self._future.set_exception(CancelledError())


class CompletedRequest:
    """picamera2.request.CompletedRequest over buffers painted with the rig's colour."""

    def __init__(self, camera: Picamera2, sensor_ts: int) -> None:
        self.ref_count = 1
        self._camera = camera
        self._config: dict[str, Any] = camera.camera_config or {}
        self._sensor_ts = sensor_ts

    def make_array(self, name: str) -> npt.NDArray[np.uint8]:
        self._check_alive()
        stream = self._config[name]
        w, h = stream["size"]
        stride = stream["stride"]
        buffer = self._buffer(stream)  # a fresh 1-D copy, as make_buffer returns
        if stream["format"] == "RGB888":
            if stride != w * 3:
                buffer = np.asarray(buffer.reshape((h, stride))[:, : w * 3], order="C")
            return buffer.reshape((h, w, 3))
        return buffer.reshape((h * 3 // 2, stride))

    def get_metadata(self) -> dict[str, Any]:
        self._check_alive()
        controls = self._config["controls"]
        frame_us = controls["FrameDurationLimits"][0]
        return {
            "SensorTimestamp": self._sensor_ts,
            "ExposureTime": int(controls.get("ExposureTime", min(frame_us, 10000))),
            "AnalogueGain": float(controls.get("AnalogueGain", 1.5)),
            "DigitalGain": 1.0,
            "Lux": 412.5,
            "FrameDuration": frame_us,
            "ColourTemperature": 5200,
        }

    def release(self) -> None:
        self.ref_count -= 1
        if self.ref_count < 0:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")

    def _check_alive(self) -> None:
        if self.ref_count <= 0:
            raise RuntimeError("CompletedRequest used after release")

    def _buffer(self, stream: dict[str, Any]) -> npt.NDArray[np.uint8]:
        w, h = stream["size"]
        stride = stream["stride"]
        if stream["format"] == "RGB888":
            rows = np.full((h, stride), BYTE_PAD, dtype=np.uint8)
            r, g, b = self._camera.rig.colour
            rows[:, : w * 3] = np.tile(np.array([b, g, r], dtype=np.uint8), w)
            return rows.reshape(-1)
        y, cb, cr = rgb_to_ycbcr(self._camera.rig.colour, str(self._config["colour_space"]))
        luma = np.full((h, stride), BYTE_PAD, dtype=np.uint8)
        luma[:, :w] = y
        planes = [luma.reshape(-1)]
        for value in (cb, cr):
            plane = np.full((h // 2, stride // 2), BYTE_PAD, dtype=np.uint8)
            plane[:, : w // 2] = value
            planes.append(plane.reshape(-1))
        return np.concatenate(planes)


def rgb_to_ycbcr(rgb: tuple[int, int, int], colour_space: str) -> tuple[int, int, int]:
    """Y'CbCr bytes of one RGB colour (limited range, but full for sYCC)."""
    name = next(n for n in LUMA_WEIGHTS if n in colour_space)
    kr, kb = LUMA_WEIGHTS[name]
    r, g, b = rgb
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb = (b - y) / (2 - 2 * kb)
    cr = (r - y) / (2 - 2 * kr)
    if name == "sYCC":
        out = (y, 128 + cb, 128 + cr)
    else:
        out = (16 + y * 219 / 255, 128 + cb * 224 / 255, 128 + cr * 224 / 255)
    y8, cb8, cr8 = (min(255, max(0, round(v))) for v in out)
    return y8, cb8, cr8


class Picamera2:
    """picamera2.Picamera2, for one camera, driven by a `Rig`."""

    def __init__(
        self,
        camera_num: int = 0,
        verbose_console: int | None = None,
        tuning: str | dict[str, Any] | None = None,
        *,
        rig: Rig,
    ) -> None:
        if rig.fail_opens > 0:
            rig.fail_opens -= 1
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.rig = rig
        self.camera_idx = camera_num
        self.behaviour = rig.behaviours.pop(0) if rig.behaviours else Behaviour()
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        self.delivered = 0
        self.flushes = 0
        self.wait_timeouts: list[float | None] = []
        self._jobs: list[Job] = []
        rig.cameras.append(self)

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: object = None,
        colour_space: object = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        if self.closed:
            raise RuntimeError("Camera not opened")
        main_cfg: dict[str, Any] = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}
        main_cfg |= main or {}
        w, h = main_cfg["size"]
        main_cfg["size"] = (w - w % 2, h - h % 2)  # align_stream(optimal=False)
        lores_cfg: dict[str, Any] | None = None
        if lores is not None:
            lores_cfg = {"format": "YUV420", "size": main_cfg["size"], "preserve_ar": False} | lores
        if colour_space is None:
            small = main_cfg["size"][0] < 1280 or main_cfg["size"][1] < 720
            colour_space = ColorSpace("SMPTE170M" if small else "Rec709")
        defaults = {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333)}
        return {
            "use_case": use_case,
            "transform": transform,
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": main_cfg,
            "lores": lores_cfg,
            "raw": {} if raw is None else raw,
            "controls": defaults | (controls or {}),
            "sensor": {} if sensor is None else sensor,
            "display": display,
            "encode": encode,
        }

    def configure(self, camera_config: dict[str, Any] | None = None) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if camera_config is None:
            raise RuntimeError("the double needs an explicit configuration")
        config: dict[str, Any] = {
            k: dict(v) if isinstance(v, dict) else v for k, v in camera_config.items()
        }
        main, lores = config["main"], config["lores"]
        for stream in (s for s in (main, lores) if s is not None):
            if stream["size"][0] % 2 or stream["size"][1] % 2:
                raise RuntimeError("width and height should be even")
        if lores is not None and (
            lores["size"][0] > main["size"][0] or lores["size"][1] > main["size"][1]
        ):
            raise RuntimeError("lores stream dimensions may not exceed main stream")
        if main["size"][0] > self.rig.sensor_size[0] or main["size"][1] > self.rig.sensor_size[1]:
            raise RuntimeError(f"Invalid camera configuration: {camera_config}")
        for stream in (s for s in (main, lores) if s is not None):
            w, h = stream["size"]
            bpp = 3 if stream["format"] == "RGB888" else 1
            stream["stride"] = -(-w * bpp // 64) * 64  # rows aligned to 64 bytes
            stream["framesize"] = stream["stride"] * (h if bpp == 3 else h * 3 // 2)
        self.camera_config = config

    def camera_configuration(self) -> dict[str, Any]:
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        return self.camera_config

    def start(
        self, config: dict[str, Any] | None = None, show_preview: bool | None = False
    ) -> None:
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.stop()
        self.closed = True

    def cancel_all_and_flush(self) -> None:
        self.flushes += 1
        for job in self._jobs:
            job.cancel()
        self._jobs = []

    def capture_request(
        self, wait: bool | float | None = None, signal_function: object = None, flush: object = None
    ) -> Any:
        job = Job()
        self._jobs.append(job)
        if wait is None:
            wait = signal_function is None
        if wait is False:
            return job
        return self.wait(job, timeout=None if wait is True else float(wait))

    def wait(self, job: Job, timeout: float | None = None) -> CompletedRequest:
        self.wait_timeouts.append(timeout)
        if job in self._jobs and self.started and not self.closed:
            self._serve(job)
        return job.get_result(timeout=timeout)

    def _serve(self, job: Job) -> None:
        """Play the camera's event loop for one job: a frame, an error, or nothing (stall)."""
        frames = self.behaviour.frames
        if frames is None or self.delivered < frames:
            time.sleep(self.rig.frame_interval_s)
            self.delivered += 1
            request = CompletedRequest(self, self._sensor_timestamp())
            self.rig.requests.append(request)
            self._jobs.remove(job)
            job._future.set_result(request)
        elif self.behaviour.fault == "error":
            self._jobs.remove(job)
            job._future.set_exception(RuntimeError("Camera frontend has timed out!"))

    def _sensor_timestamp(self) -> int:
        latency_ns = 5_000_000  # exposure + readout before the frame reaches us
        if self.rig.clock == "boottime":
            return time.clock_gettime_ns(time.CLOCK_BOOTTIME) - latency_ns
        if self.rig.clock == "bogus":
            return 12345
        return time.monotonic_ns() - latency_ns
