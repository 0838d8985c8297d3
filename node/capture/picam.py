"""`picam://N`: Raspberry Pi camera N through picamera2 (libcamera), main + lores per frame.

picamera2 is imported only inside `default_camera_factory`, so this module imports on any
machine; on the Pi it comes from Raspberry Pi OS (python3-picamera2, 0.3.17 or newer for
`Picamera2.wait(job, timeout=...)`).

Streams: `main` is RGB888 at (capture.main_width, capture.main_height), `lores` YUV420 at
(capture.lores_width, capture.lores_height), converted here to RGB with the matrix of the
configured colour space. picamera2's "RGB888" is B, G, R in memory (PIL mode "BGR" in
picamera2's own make_image), so main is flipped to R, G, B.

Timestamps: `SensorTimestamp` (ns, start of exposure of the first row). libcamera documents it
as CLOCK_BOOTTIME, but the Raspberry Pi pipeline stamps it from the V4L2 buffer timestamp,
which is CLOCK_MONOTONIC (libcamera bug 254; picamera2 itself compares it with
time.monotonic_ns() in `capture_request(flush=True)`). The two clocks differ only by time spent
in suspend, which a node never does; to be safe each frame's timestamp is matched against both
clocks, read at the moment the frame is read, and mapped through the one it fits (an age of
0..5 s). It becomes `mono_ns` in the monotonic domain, and `utc_ns` = time.time_ns() read at
the same moment minus the frame's age. A timestamp that fits neither falls back to the read
time and is counted (`timestamp_fallbacks`).

Faults: a stall (no frame within capture.stall_timeout_s) or a camera error is counted and
logged (one warning line, with the camera number); the camera is flushed, stopped, closed and
reopened after a backoff (0.5 s, doubling, capped at capture.reconnect_max_s, reset by the next
frame), waiting on `stop`. `read()` keeps trying until it has a frame or `stop` is set. Only
configuration errors raise CaptureError: a bad URL, bad sizes, picamera2 missing, or a
configuration the camera rejects the first time it is opened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from node.capture.frame import ArrayRef, CaptureError, Frame
from node.capture.yuv import matrix_for, yuv420_to_rgb
from node.config import CaptureConfig

_log = logging.getLogger(__name__)

CameraFactory = Callable[[int], Any]
BACKOFF_START_S = 0.5
WAIT_SLICE_S = 0.1  # how often a wait for a frame looks at `stop`
BUFFER_COUNT = 4  # per stream; picamera2's video default is 6, memory is short on a Pi
MAX_FRAME_AGE_NS = 5_000_000_000
_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def default_camera_factory(camera_num: int) -> Any:
    """Open camera `camera_num` with picamera2 (imported here, not at module import)."""
    from picamera2 import Picamera2

    return Picamera2(camera_num)


def parse_picam_url(url: str) -> int:
    """The camera number of `picam://N`; CaptureError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "picam":
        raise CaptureError(f"{url}: not a picam:// URL")
    if parts.query:
        raise CaptureError(f"{url}: picam:// takes no query (got {parts.query!r})")
    text = parts.netloc + parts.path
    if not text.isdigit():
        raise CaptureError(f"{url}: camera number must be a whole number, as in picam://0")
    return int(text)


def camera_controls(cfg: CaptureConfig) -> dict[str, Any]:
    """libcamera controls for the configured frame rate, shutter and gain.

    FrameDurationLimits rather than picamera2's virtual FrameRate control: the
    create_*_configuration defaults carry their own FrameDurationLimits, which ours replaces.
    """
    frame_us = round(1_000_000 / cfg.fps)
    controls: dict[str, Any] = {"FrameDurationLimits": (frame_us, frame_us)}
    if cfg.exposure_us > 0:
        controls["AeEnable"] = False
        controls["ExposureTime"] = int(cfg.exposure_us)
    if cfg.analogue_gain > 0:
        controls["AnalogueGain"] = float(cfg.analogue_gain)
    return controls


def sensor_ts_to_mono(sensor_ts: int, now_mono: int, now_boot: int | None) -> int | None:
    """The sensor timestamp in the monotonic domain, or None if it fits neither clock."""
    if 0 <= now_mono - sensor_ts <= MAX_FRAME_AGE_NS:
        return sensor_ts
    if now_boot is not None and 0 <= now_boot - sensor_ts <= MAX_FRAME_AGE_NS:
        return now_mono - (now_boot - sensor_ts)
    return None


def check_sizes(url: str, cfg: CaptureConfig) -> None:
    sizes = {
        "main": (cfg.main_width, cfg.main_height),
        "lores": (cfg.lores_width, cfg.lores_height),
    }
    for name, (w, h) in sizes.items():
        if w % 2 or h % 2:
            raise CaptureError(f"{url}: {name} size {w}x{h} must have even width and height")
    if cfg.lores_width > cfg.main_width or cfg.lores_height > cfg.main_height:
        raise CaptureError(
            f"{url}: lores size {cfg.lores_width}x{cfg.lores_height} exceeds main size "
            f"{cfg.main_width}x{cfg.main_height}"
        )


class PicamSource:
    """A `FrameSource` for a Raspberry Pi camera (see the module doc)."""

    def __init__(
        self, url: str, cfg: CaptureConfig, camera_factory: CameraFactory | None = None
    ) -> None:
        self._url = url
        self._cfg = cfg
        self._num = parse_picam_url(url)
        check_sizes(url, cfg)
        if cfg.exposure_us > 1_000_000 / cfg.fps:
            _log.warning(
                "%s: exposure %d us is longer than a frame at %g fps; libcamera will clip it",
                url,
                cfg.exposure_us,
                cfg.fps,
            )
        self._factory = camera_factory or default_camera_factory
        self._stop: threading.Event | None = None
        self._cam: Any = None
        self._job: Any = None
        self._configured_once = False
        self._closed = False
        self._lores_width = cfg.lores_width
        self._matrix = matrix_for("")
        self._delay = BACKOFF_START_S
        self._seq = 0
        self._last_mono = 0
        self._counts = dict.fromkeys(
            ("frames", "stalls", "camera_errors", "reconnects", "open_failures"), 0
        )
        self._counts["timestamp_fallbacks"] = 0

    @property
    def url(self) -> str:
        return self._url

    @property
    def fps(self) -> float:
        return self._cfg.fps

    def open(self, stop: threading.Event) -> None:
        """Open and start the camera; a transient failure is retried by `read()`."""
        self._stop = stop
        self._closed = False
        self._try_open("open")

    def _try_open(self, verb: str) -> bool:
        """Open the camera once; a transient failure is counted and logged (False)."""
        try:
            self._open_camera()
        except CaptureError:
            raise
        except Exception as exc:
            self._counts["open_failures"] += 1
            retry = f"; next try in {self._delay:.1f} s" if verb == "reopen" else ""
            _log.warning(
                "%s: camera %d failed to %s: %s%s", self._url, self._num, verb, _why(exc), retry
            )
            return False
        return True

    def read(self) -> Frame | None:
        stop = self._stop
        if stop is None or self._closed:
            raise CaptureError(f"{self._url}: read() before open() or after close()")
        while not stop.is_set():
            if self._cam is None:
                if not self._reopen(stop):
                    return None
                continue
            try:
                frame = self._next_frame(stop)
            except CaptureError:
                raise
            except TimeoutError:
                self._counts["stalls"] += 1
                self._fault(f"stalled: no frame for {self._cfg.stall_timeout_s:g} s")
            except Exception as exc:
                self._counts["camera_errors"] += 1
                self._fault(f"failed: {_why(exc)}")
            else:
                if frame is not None:
                    self._delay = BACKOFF_START_S
                return frame
        return None

    def stats(self) -> dict[str, float | int | str]:
        state = "closed" if self._closed else "running" if self._cam is not None else "reopening"
        return {"camera": self._num, "state": state, **self._counts}

    def close(self) -> None:
        self._closed = True
        self._teardown()

    def _open_camera(self) -> None:
        try:
            cam = self._factory(self._num)
        except ImportError as exc:
            raise CaptureError(f"{self._url}: picamera2 is not importable: {exc}") from exc
        try:
            config = cam.create_video_configuration(
                main={"size": (self._cfg.main_width, self._cfg.main_height), "format": "RGB888"},
                lores={"size": (self._cfg.lores_width, self._cfg.lores_height), "format": "YUV420"},
                controls=camera_controls(self._cfg),
                buffer_count=BUFFER_COUNT,
            )
            cam.configure(config)
            actual = cam.camera_configuration()
            self._use_configuration(actual)
        except Exception as exc:
            _quietly(cam.close)
            if self._configured_once:
                raise
            raise CaptureError(
                f"{self._url}: camera {self._num} rejected the configuration: {_why(exc)}"
            ) from exc
        try:
            cam.start()
        except Exception:
            _quietly(cam.close)
            raise
        self._configured_once = True
        self._cam = cam

    def _use_configuration(self, actual: dict[str, Any]) -> None:
        for name, asked in (
            ("main", (self._cfg.main_width, self._cfg.main_height)),
            ("lores", (self._cfg.lores_width, self._cfg.lores_height)),
        ):
            got = tuple(actual[name]["size"])
            if got != asked:
                _log.warning(
                    "%s: camera %d adjusted %s size %dx%d to %dx%d",
                    self._url,
                    self._num,
                    name,
                    *asked,
                    *got,
                )
        self._lores_width = int(actual["lores"]["size"][0])
        self._matrix = matrix_for(actual.get("colour_space", ""))

    def _reopen(self, stop: threading.Event) -> bool:
        """Wait out the backoff and try to open once; False when `stop` was set."""
        if stop.wait(self._delay):
            return False
        self._delay = min(self._delay * 2, self._cfg.reconnect_max_s)
        if not self._try_open("reopen"):
            return True
        self._counts["reconnects"] += 1
        _log.warning("%s: camera %d reopened", self._url, self._num)
        return True

    def _fault(self, what: str) -> None:
        _log.warning(
            "%s: camera %d %s; reopening in %.1f s", self._url, self._num, what, self._delay
        )
        self._teardown()

    def _teardown(self) -> None:
        cam, self._cam, self._job = self._cam, None, None
        if cam is None:
            return
        # cancel_all_and_flush drops the pending capture job, as picamera2 advises after a
        # timeout; then stop and close. A broken camera may fail any step: go on regardless.
        for name in ("cancel_all_and_flush", "stop", "close"):
            step = getattr(cam, name, None)
            if step is not None:
                _quietly(step)

    def _next_frame(self, stop: threading.Event) -> Frame | None:
        """The next frame; None if `stop` was set first (the request stays pending).

        Raises TimeoutError after capture.stall_timeout_s without a frame.
        """
        cam = self._cam
        if self._job is None:
            self._job = cam.capture_request(wait=False)
        deadline = time.monotonic() + self._cfg.stall_timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                request = cam.wait(self._job, timeout=max(0.0, min(WAIT_SLICE_S, left)))
                break
            except TimeoutError:
                if stop.is_set():
                    return None
                if left <= WAIT_SLICE_S:
                    raise
        self._job = None
        try:
            main_bgr = request.make_array("main")
            lores_yuv = request.make_array("lores")
            metadata = request.get_metadata()
        finally:
            request.release()
        return self._frame(main_bgr, lores_yuv, metadata)

    def _frame(self, main_bgr: Any, lores_yuv: Any, metadata: dict[str, Any]) -> Frame:
        now_mono = time.monotonic_ns()
        now_utc = time.time_ns()
        now_boot = None if _BOOTTIME is None else time.clock_gettime_ns(_BOOTTIME)
        if main_bgr.ndim != 3 or main_bgr.shape[2] != 3:
            raise CaptureError(f"{self._url}: main stream is not RGB888: {main_bgr.shape}")
        main = np.ascontiguousarray(main_bgr[..., ::-1])
        lores = yuv420_to_rgb(lores_yuv, self._lores_width, self._matrix)
        sensor_ts = metadata.get("SensorTimestamp")
        mono = None
        if isinstance(sensor_ts, int):
            mono = sensor_ts_to_mono(sensor_ts, now_mono, now_boot)
        if mono is None:
            self._counts["timestamp_fallbacks"] += 1
            mono = now_mono
        mono = max(mono, self._last_mono + 1)
        self._last_mono = mono
        self._seq += 1
        self._counts["frames"] += 1
        return Frame(
            seq=self._seq,
            mono_ns=mono,
            utc_ns=now_utc - (now_mono - mono),
            lores=lores,
            main=ArrayRef(main),
            meta=self._meta(metadata, sensor_ts),
        )

    def _meta(self, metadata: dict[str, Any], sensor_ts: object) -> dict[str, float | int | str]:
        meta: dict[str, float | int | str] = {"camera": self._num}
        if isinstance(sensor_ts, int):
            meta["sensor_ts_ns"] = sensor_ts
        if isinstance(metadata.get("ExposureTime"), int | float):
            meta["ExposureTime"] = int(metadata["ExposureTime"])
        for key in ("AnalogueGain", "Lux"):
            if isinstance(metadata.get(key), int | float):
                meta[key] = float(metadata[key])
        return meta


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _quietly(step: Callable[[], object]) -> None:
    """Run one teardown step of a camera that may already be broken; log, never raise."""
    try:
        step()
    except Exception as exc:
        _log.debug("camera teardown step %s failed: %s", getattr(step, "__name__", step), exc)
