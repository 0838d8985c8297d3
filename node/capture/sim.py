"""`sim://junction`: a simulated junction camera with known plates and known violations.

URL query keys (all optional):

- ``seed``: int, default 1. The same seed gives the same frames, pixel for pixel.
- ``fps``: float, pacing override; 0 = as fast as possible. Default: ``capture.fps``.
  Simulated time always advances 1/fps per frame (``capture.fps`` when ``fps=0``), so the
  pictures never depend on wall-clock timing. Paced, `mono_ns`/`utc_ns` come from the clock;
  with ``fps=0`` they follow simulated time from the moment of `open()` (a virtual clock), so
  speeds and ages measured downstream are those of the simulated road.
- ``rate``: vehicles per minute arriving on the approach, default 40.
- ``violations``: fraction of vehicles that set out to break a rule, default 0.25.
- ``main``: ``recipe`` (default: `Frame.main` renders the full-resolution image on demand)
  or ``array`` (rendered with every frame and handed over as an array, as a camera does: for
  measuring memory and evidence as they are on a camera; costs a render per frame).

Each `read()` renders only the lores image; `Frame.main` renders the full-resolution image
on demand. `Frame.truth` lists the plates in view; `true_violations` the violations so far.
`Frame.meta["signal_phase"]` is the simulated signal ("GREEN", "AMBER" or "RED").
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from node.capture.frame import ArrayRef, CaptureError, Frame, MainRef
from node.capture.simrender import SceneRenderer, SceneSnapshot, SimMainRef, VehicleView
from node.capture.simsprites import BODY_STYLES, Sprite, SpriteCache, body_sprite, plate_sprite
from node.capture.simtraffic import Traffic, TrueViolation, Vehicle
from node.config import CaptureConfig

WARMUP_S = 20.0  # simulated before the first frame, so it opens on a busy road


@dataclass(frozen=True, slots=True)
class SimParams:
    """The query of a `sim://junction` URL."""

    seed: int = 1
    fps: float | None = None
    rate: float = 40.0
    violations: float = 0.25
    main_array: bool = False

    @classmethod
    def parse(cls, url: str) -> SimParams:
        """Parses and checks `url`; CaptureError names the offending part."""
        parts = urlsplit(url)
        if parts.scheme != "sim" or parts.netloc != "junction" or parts.path not in ("", "/"):
            raise CaptureError(f"sim source {url!r}: expected sim://junction[?key=value&...]")
        values: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in ("seed", "fps", "rate", "violations", "main"):
                raise CaptureError(f"sim source {url!r}: unknown query key {key!r}")
            if key in values:
                raise CaptureError(f"sim source {url!r}: query key {key!r} given twice")
            values[key] = value
        try:
            seed = int(values.get("seed", "1"))
            fps = float(values["fps"]) if "fps" in values else None
            rate = float(values.get("rate", "40"))
            violations = float(values.get("violations", "0.25"))
            main = values.get("main", "recipe")
            if main not in ("recipe", "array"):
                raise ValueError(f"main={main!r}: expected recipe or array")
        except ValueError as exc:
            raise CaptureError(f"sim source {url!r}: bad value ({exc})") from None
        for key, val, lo, hi in (
            ("seed", seed, 0, 2**63 - 1),
            ("fps", 0.0 if fps is None else fps, 0.0, 120.0),
            ("rate", rate, 0.0, 600.0),
            ("violations", violations, 0.0, 1.0),
        ):
            if not lo <= val <= hi or (isinstance(val, float) and not math.isfinite(val)):
                raise CaptureError(f"sim source {url!r}: {key}={val} is outside [{lo}, {hi}]")
        return cls(seed, fps, rate, violations, main == "array")


class SimSource:
    """A `FrameSource` that renders a simulated junction (see the module docstring)."""

    def __init__(self, url: str, cfg: CaptureConfig) -> None:
        self._url = url
        self._params = SimParams.parse(url)
        self._cfg = cfg
        self._fps = cfg.fps if self._params.fps is None else self._params.fps
        self._dt = 1.0 / (self._fps if self._fps > 0 else cfg.fps)
        self._stop: threading.Event | None = None
        self._renderer: SceneRenderer | None = None
        self._traffic: Traffic | None = None
        self._plates: dict[int, Sprite] = {}
        self._seq = 0
        self._t0 = 0.0
        self._clock0 = (0, 0)
        self._render_s = 0.0

    @property
    def url(self) -> str:
        return self._url

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def params(self) -> SimParams:
        return self._params

    @property
    def true_violations(self) -> tuple[TrueViolation, ...]:
        """The violations that happened in the frames read so far, in order (the last 10 000)."""
        return tuple(self._traffic.violations) if self._traffic else ()

    def open(self, stop: threading.Event) -> None:
        cfg = self._cfg
        main, lores = (cfg.main_width, cfg.main_height), (cfg.lores_width, cfg.lores_height)
        self._renderer = SceneRenderer(main, lores, SpriteCache())
        p = self._params
        self._traffic = Traffic(np.random.default_rng(p.seed), p.rate, p.violations, self._dt)
        for i in range(round(WARMUP_S / self._dt)):
            self._traffic.step((i + 1) * self._dt, -1)
        self._stop = stop
        self._seq = 0
        self._t0 = time.monotonic()
        self._clock0 = (time.monotonic_ns(), time.time_ns())

    def read(self) -> Frame | None:
        stop, traffic, renderer = self._stop, self._traffic, self._renderer
        if stop is None or traffic is None or renderer is None:
            raise CaptureError(f"sim source {self._url!r}: read() while not open")
        if stop.is_set() or not self._pace(stop):
            return None
        seq = self._seq
        t = WARMUP_S + seq * self._dt
        if seq > 0:
            traffic.step(t, seq)
        for gone in traffic.left:
            self._plates.pop(gone.vid, None)
            renderer.cache.drop(f"plate/{gone.vid}")
        began = time.perf_counter()
        snap = SceneSnapshot(traffic.signal.phase(t), self._views(traffic.vehicles))
        lores = renderer.render_lores(snap)
        truth = renderer.truth(snap)
        self._render_s += time.perf_counter() - began
        self._seq += 1
        meta: dict[str, float | int | str] = {
            "signal_phase": snap.phase,
            "sim_time_s": round(t, 6),
            "vehicles": len(snap.views),
        }
        main: MainRef = SimMainRef(renderer, snap)
        if self._params.main_array:
            main = ArrayRef(main.array())
        if self._fps > 0:
            mono_ns, utc_ns = time.monotonic_ns(), time.time_ns()
        else:  # virtual clock: simulated time since open()
            elapsed_ns = round(seq * self._dt * 1e9)
            mono_ns, utc_ns = self._clock0[0] + elapsed_ns, self._clock0[1] + elapsed_ns
        return Frame(seq, mono_ns, utc_ns, lores, main, meta, truth)

    def _pace(self, stop: threading.Event) -> bool:
        """Waits for this frame's time; False if `stop` was set meanwhile."""
        if self._fps <= 0:
            return True
        delay = self._t0 + self._seq / self._fps - time.monotonic()
        if delay > 0:
            return not stop.wait(delay)
        if delay < -1.0:  # fell far behind (a paused process): resume the cadence from now
            self._t0 = time.monotonic() - self._seq / self._fps
        return True

    def _views(self, vehicles: list[Vehicle]) -> tuple[VehicleView, ...]:
        views = []
        for v in sorted(vehicles, key=lambda v: (-v.z, v.vid)):
            style = BODY_STYLES[v.body]
            body = body_sprite(v.body, v.variant)
            if style.plate_at is None:
                views.append(VehicleView(v.vid, body, v.x, v.z))
                continue
            plate = self._plates.get(v.vid)
            if plate is None:
                plate = self._plates[v.vid] = plate_sprite(f"plate/{v.vid}", v.plate)
            views.append(VehicleView(v.vid, body, v.x, v.z, plate, v.plate, style.plate_at))
        return tuple(views)

    def stats(self) -> dict[str, float | int | str]:
        frames = self._seq
        traffic = self._traffic
        return {
            "frames": frames,
            "vehicles_spawned": traffic.spawned if traffic else 0,
            "vehicles_in_view": len(traffic.vehicles) if traffic else 0,
            "violations": len(traffic.violations) if traffic else 0,
            "render_ms_avg": round(1000.0 * self._render_s / frames, 3) if frames else 0.0,
            "sprite_cache_mb": round(self._renderer.cache.nbytes / 2**20, 2)
            if self._renderer
            else 0.0,
        }

    def close(self) -> None:
        self._stop = None
        self._plates.clear()
        if self._renderer is not None:
            self._renderer.cache.drop_all()
