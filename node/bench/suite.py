"""The measurements of `roadnode bench`. Each returns a JSON-able dict of figures.

How the pipeline is measured without counting the simulator against it (docs/BENCHMARKS.md,
"Method"):

1. `render_cache` renders N frames of `sim://junction` once: the detection-size lores image AND
   the 1920x1080 main image (a camera hands both over as arrays; the simulator would otherwise
   render main inside the detector's zoom pass and the evidence builder). The time this takes
   is the simulator's own, reported apart.
2. `bench_detector` times `PlateDetector.detect` alone on those frames, on 1 and 2 interpreter
   threads: the lores pass and the zoom-window pass, pre (letterbox), invoke and post (decode,
   NMS, mapping). Detector-only fps = 1000 / mean(detector ms per frame).
3. `bench_pipeline` runs the real `Service` (capture thread → ring → queue → detector → tracker
   → rules → evidence worker → store) on a `CachedSource` that replays those frames, offered at
   twice the detector-only rate so the stages never wait for a frame. Pipeline fps = frames the
   stages finished per second, after a warm-up. Efficiency = pipeline fps / detector-only fps.
4. `bench_node` runs `roadnode run` itself as a child process on the live `sim://junction`
   (the shipped config: 10 fps, 1920x1080 main, 960x544 lores): cold start to the first
   processed frame, frames/s, time per stage, drop rate, RSS sampled from /proc/PID/status
   (peak = VmHWM, steady = median of the second half), and the sim's render time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import select
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.capture.frame import Frame
    from node.config import Config
    from node.infer.detector import Box

Log = Callable[[str], None]
SIM_URL = "sim://junction?seed=7&fps=0"  # rendering the cache: unpaced, deterministic
NODE_SIM_URL = "sim://junction?seed=7"  # the child node: paced at capture.fps, like a camera
# the same, handing over every main image as an array as a camera does (memory as on a camera)
CAMERA_SIM_URL = "sim://junction?seed=7&main=array"
LIBRARIES = ("numpy", "ai-edge-litert", "tflite-runtime", "simplejpeg", "cryptography", "pillow")
SCHEMA = 1


@dataclass(frozen=True)
class Sizes:
    """How much of each measurement a run does (`--quick` or full)."""

    cache_frames: int
    detector_passes: int
    pipeline_s: float
    node_s: float
    packets: int
    store_sizes: tuple[int, ...]
    store_ops: int
    drain_packets: int

    @classmethod
    def pick(cls, quick: bool) -> Sizes:
        if quick:
            return cls(8, 12, 4.0, 6.0, 2, (0, 1000), 30, 30)
        return cls(40, 150, 30.0, 60.0, 20, (0, 10_000, 100_000), 200, 300)


# --- small helpers --------------------------------------------------------------------------


def percentiles(samples: Sequence[float], qs: Sequence[float] = (0.5, 0.95)) -> dict[str, float]:
    """{"p50": .., "p95": .., "mean": .., "min": ..} of `samples` (nearest rank), rounded to
    3 places. The minimum is the least disturbed sample on a shared machine."""
    if not samples:
        return {f"p{round(q * 100)}": 0.0 for q in qs} | {"mean": 0.0, "min": 0.0}
    ordered = sorted(samples)
    out = {
        f"p{round(q * 100)}": round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)
        for q in qs
    }
    out["mean"] = round(statistics.fmean(ordered), 3)
    out["min"] = round(ordered[0], 3)
    return out


def proc_status_kb(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (kB) of a process from /proc/PID/status; {} when it is gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def machine_info() -> dict[str, Any]:
    """The machine the figures were measured on: CPU, cores, memory, load, Python, libraries."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        info: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip().lower(), value.strip())
        # x86: "model name"; a Raspberry Pi: "Model" (the board) and "Hardware" (the SoC)
        cpu = info.get("model name") or info.get("model") or info.get("hardware") or cpu
    except OSError:
        pass
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem_gb = round(int(first.split()[1]) / 2**20, 1)
    libs: dict[str, str] = {}
    for name in LIBRARIES:
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            continue
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "arch": platform.machine(),
        "memory_gb": mem_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libraries": libs,
        "load_avg": [round(x, 2) for x in load],
    }


def resolve_model(model: Path | None, cfg: Config) -> Path | None:
    """The manifest to benchmark: --model, else detector.model, else the bundled one; None
    when there is none (the detector rows then say "no model")."""
    from node.infer.manifest import DEFAULT_MANIFEST

    if model is None and not cfg.detector.enabled:
        return None  # detector.enabled = false: measured like a build without a model
    for candidate in (model, Path(cfg.detector.model) if cfg.detector.model else None):
        if candidate is not None:
            return candidate
    return DEFAULT_MANIFEST if DEFAULT_MANIFEST.exists() else None


def with_model(cfg: Config, model: Path | None) -> Config:
    if model is None:
        return cfg
    return dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, model=str(model)))


# --- the frame cache and the source that replays it ----------------------------------------


@dataclass(frozen=True)
class FrameCache:
    """Pre-rendered simulator frames (lores + main arrays) and what rendering them cost."""

    url: str
    frames: tuple[Frame, ...]
    open_s: float  # the sim's open(): background drawn, traffic warmed up
    lores_ms: dict[str, float]  # per frame: one traffic step + lores render + truth
    main_ms: dict[str, float]  # per frame: the 1920x1080 main render

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "frames": len(self.frames),
            "open_s": round(self.open_s, 3),
            "lores_render_ms": self.lores_ms,
            "main_render_ms": self.main_ms,
        }


def render_cache(cfg: Config, count: int, url: str = SIM_URL) -> FrameCache:
    """`count` sim frames with their main images rendered into arrays, timed apart."""
    from node.capture.frame import ArrayRef
    from node.capture.sim import SimSource

    src = SimSource(url, cfg.capture)
    t0 = time.perf_counter()
    src.open(threading.Event())
    open_s = time.perf_counter() - t0
    frames: list[Frame] = []
    lores_s: list[float] = []
    main_s: list[float] = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            frame = src.read()
            t1 = time.perf_counter()
            if frame is None:
                break
            main = frame.main.array()
            main_s.append((time.perf_counter() - t1) * 1e3)
            lores_s.append((t1 - t0) * 1e3)
            frames.append(dataclasses.replace(frame, main=ArrayRef(main)))
    finally:
        src.close()
    return FrameCache(url, tuple(frames), open_s, percentiles(lores_s), percentiles(main_s))


class CachedSource:
    """A `FrameSource` that replays a `FrameCache` in a loop at `fps`, with fresh sequence
    numbers and clock stamps (the tracker sees time advance; vehicles jump back at the loop)."""

    def __init__(self, cache: FrameCache, fps: float) -> None:
        self._cache = cache
        self._fps = fps
        self._stop: threading.Event | None = None
        self._seq = 0
        self._t0 = 0.0

    @property
    def url(self) -> str:
        return f"{self._cache.url}&cached={len(self._cache.frames)}"  # still a sim:// URL

    @property
    def fps(self) -> float:
        return self._fps

    def open(self, stop: threading.Event) -> None:
        self._stop, self._seq, self._t0 = stop, 0, time.monotonic()

    def read(self) -> Frame | None:
        stop = self._stop
        if stop is None or stop.is_set():
            return None
        delay = self._t0 + self._seq / self._fps - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return None
        if delay < -1.0:  # far behind: restart the cadence rather than burst
            self._t0 = time.monotonic() - self._seq / self._fps
        cached = self._cache.frames[self._seq % len(self._cache.frames)]
        frame = dataclasses.replace(
            cached, seq=self._seq, mono_ns=time.monotonic_ns(), utc_ns=time.time_ns()
        )
        self._seq += 1
        return frame

    def stats(self) -> dict[str, float | int | str]:
        return {"frames": self._seq, "cached": len(self._cache.frames), "render_ms_avg": 0.0}

    def close(self) -> None:
        self._stop = None


# --- detector --------------------------------------------------------------------------------


def sim_boxes(cfg: Config) -> tuple[Box | None, Box | None]:
    """The zoom window and lores area the live stage uses on the sim."""
    from node.infer.detector import stage_boxes
    from node.rules.simzones import sim_passes

    return stage_boxes(cfg.detector, *sim_passes(cfg.capture))


def bench_detector(
    manifest: Path | None,
    cfg: Config,
    cache: FrameCache,
    passes: int,
    log: Log,
    thread_counts: tuple[int, ...] = (1, 2),
) -> dict[str, Any]:
    """Invoke/pre/post p50/p95 per pass on 1 and 2 threads, and the per-frame detector time
    (the live stage's lores pass + zoom pass) the efficiency is computed against."""
    if manifest is None:
        return {"state": "no model", "float": _float_note()}
    from node.infer.detector import DetectorStage, PlateDetector
    from node.infer.runtime import ModelError

    box, area = sim_boxes(cfg)
    out: dict[str, Any] = {
        "state": "ok",
        "zoom_window": list(box) if box else None,
        "area": list(area) if area else None,
    }
    for threads in thread_counts:
        try:
            t0 = time.perf_counter()
            det = PlateDetector(manifest, threads=threads)
            load_s = time.perf_counter() - t0
        except ModelError as e:
            return {"state": "model refused", "error": str(e), "float": _float_note()}
        out["model"] = det.manifest.label
        out["backend"] = det.backend
        out["input"] = f"{det.manifest.input_width}x{det.manifest.input_height}"
        pre: list[float] = []
        invoke: list[float] = []
        post: list[float] = []
        frame_ms: list[float] = []
        invoke_frame_ms: list[float] = []
        n = len(cache.frames)
        stage = DetectorStage(det, zoom_window=box, area=area)
        for i in range(passes + 3):
            frame = cache.frames[i % n]
            t0 = time.perf_counter()
            stage.process(frame)
            total = (time.perf_counter() - t0) * 1e3
            if i < 3:
                continue  # warm-up: first invokes allocate and page in the weights
            for t in stage.passes:
                pre.append(t.pre_ms)
                invoke.append(t.invoke_ms)
                post.append(t.post_ms)
            frame_ms.append(total)
            invoke_frame_ms.append(sum(t.invoke_ms for t in stage.passes))
        per_frame = percentiles(frame_ms)
        out[f"threads_{threads}"] = {
            "load_s": round(load_s, 3),
            "passes": len(invoke),
            "invoke_ms": percentiles(invoke),
            "pre_ms": percentiles(pre),
            "post_ms": percentiles(post),
            "frame_ms": per_frame,
            "frame_invoke_ms": percentiles(invoke_frame_ms),
            "fps": round(1000.0 / per_frame["mean"], 2) if per_frame["mean"] else 0.0,
        }
        row = out[f"threads_{threads}"]
        log(
            f"detector, {threads} thread(s): invoke p50 {row['invoke_ms']['p50']} ms, "
            f"{row['fps']} frames/s detector-only"
        )
    out["float"] = _float_note()
    return out


def _float_note() -> dict[str, str]:
    return {
        "state": "not shipped",
        "note": "the node ships only the int8 .tflite (tools/detector/export.py); the float "
        "model's figures are measured at export time by tools/detector/card.py",
    }


# --- pipeline on the cached frames ---------------------------------------------------------


def bench_pipeline(
    cfg: Config, cache: FrameCache, detector_fps: float, seconds: float, work: Path, log: Log
) -> dict[str, Any]:
    """The whole service on the cached frames, offered at twice the detector-only rate."""
    from node.service import RunOptions, Service, prepare_state_dir

    fps = min(240.0, max(30.0, 2.0 * detector_fps))
    state = work / "pipeline-state"
    shutil.rmtree(state, ignore_errors=True)
    prepare_state_dir(state)
    service = Service(cfg, RunOptions(state), source=CachedSource(cache, fps))
    runner = threading.Thread(target=service.run, name="bench-service", daemon=True)
    runner.start()
    warm = min(3.0, seconds / 3)
    time.sleep(warm)
    c = service.pipeline.counters
    t0, p0, in0, d0 = time.monotonic(), c.processed, c.frames_in, service.pipeline.queue.dropped
    time.sleep(seconds)
    t1, p1, in1, d1 = time.monotonic(), c.processed, c.frames_in, service.pipeline.queue.dropped
    status = service.status()
    service.request_stop("bench done")
    runner.join(15.0)
    shutil.rmtree(state, ignore_errors=True)
    processed = p1 - p0
    pipeline_fps = processed / (t1 - t0) if t1 > t0 else 0.0
    out = {
        "offered_fps": round(fps, 1),
        "seconds": round(t1 - t0, 2),
        "processed": processed,
        "fps": round(pipeline_fps, 2),
        "offered": in1 - in0,
        "dropped": d1 - d0,
        "stages": [s.name for s in service.pipeline.stages],
        "latency_ms": status["latency"],
        "detector": status["detector"],
        "rules": _pick(status["rules"], ("state", "violations", "tracks", "error")),
        "evidence": _pick(status["evidence"], ("state", "stored", "lost", "no_frames", "error")),
        "stage_errors": status["stage_errors"],
        "last_error": status["last_error"],
    }
    log(f"pipeline on cached frames: {out['fps']} frames/s")
    return out


def _pick(d: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: d[k] for k in keys if k in d}


def profile_stages(cfg: Config, cache: FrameCache, frames: int, out: Path, work: Path) -> str:
    """cProfile of the stage worker's work (detector + rules, evidence sink off) on the cached
    frames, run in this thread; the top functions by cumulative and own time go to `out`."""
    import cProfile
    import io
    import pstats

    from node.service import RunOptions, Service, prepare_state_dir

    state = work / "profile-state"
    prepare_state_dir(state)
    service = Service(cfg, RunOptions(state), source=CachedSource(cache, 30.0), sink=_no_sink)
    stages = service.pipeline.stages
    seq = 0

    def run() -> None:
        nonlocal seq
        for _ in range(frames):
            f = cache.frames[seq % len(cache.frames)]
            f = dataclasses.replace(f, seq=seq, mono_ns=time.monotonic_ns())
            seq += 1
            for stage in stages:
                stage.process(f)

    run()  # warm-up outside the profile
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(run)
    wall = time.perf_counter() - t0
    text = io.StringIO()
    text.write(f"{frames} frames through {[s.name for s in stages]} in {wall:.2f} s\n")
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(25)
    out.write_text(text.getvalue())
    shutil.rmtree(state, ignore_errors=True)
    return f"{frames / wall:.1f} frames/s under the profiler"


def _no_sink(_violation: object, _frame: object) -> None:
    return None


# --- the node itself: cold start, live sim, memory -----------------------------------------


def node_command(
    config: Path | None,
    overrides: Sequence[str],
    state: Path,
    seconds: float,
    url: str = NODE_SIM_URL,
) -> list[str]:
    cmd = [sys.executable, "-m", "node", "run", "--state-dir", str(state)]
    cmd += ["--duration", f"{seconds:g}", "--source", url]
    if config is not None:
        cmd += ["--config", str(config)]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


UNIT_ENVIRONMENT = {  # systemd/roadnode.service, Environment= (tests/test_bench.py checks it)
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "1048576",
    "MALLOC_TRIM_THRESHOLD_": "1048576",
}


class _NodeChild:
    """`roadnode run` as a child process, with a systemd-style notify socket we listen on."""

    def __init__(self, cmd: list[str], state: Path) -> None:
        self.state = state
        self.notify_path = state.parent / f"{state.name}.notify"
        self.notify_path.unlink(missing_ok=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        # as systemd/roadnode.service runs it: its Environment= (heap settings), unless the
        # caller's environment says otherwise
        env = {**UNIT_ENVIRONMENT, **os.environ}
        env |= {"NOTIFY_SOCKET": str(self.notify_path), "PYTHONUNBUFFERED": "1"}
        env.pop("WATCHDOG_USEC", None)
        self.log_path = state.parent / f"{state.name}.log"
        self._log = self.log_path.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.ready_s: float | None = None

    def poll_notify(self, timeout: float) -> None:
        readable, _, _ = select.select([self.notify], [], [], timeout)
        if readable:
            data = self.notify.recv(4096)
            if self.ready_s is None and b"READY=1" in data.split(b"\n"):
                self.ready_s = time.monotonic() - self.started

    def status(self) -> dict[str, Any] | None:
        from node.control import ControlError, query

        try:
            reply = query(self.state, {"cmd": "status"}, timeout=2.0)
        except ControlError:
            return None
        return reply if reply.get("ok") else None

    def close(self) -> int:
        try:
            code = self.proc.wait(30.0)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            code = self.proc.wait(10.0)
        self.notify.close()
        self.notify_path.unlink(missing_ok=True)
        self._log.close()
        return code

    def tail(self, lines: int = 5) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])


def run_node(
    config: Path | None,
    overrides: Sequence[str],
    seconds: float,
    work: Path,
    log: Log,
    sample_every_s: float = 1.0,
    url: str = NODE_SIM_URL,
) -> dict[str, Any]:
    """Start `roadnode run` on the live sim (`url`); cold start, RSS curve, status near the
    end."""
    state = work / "node-state"
    shutil.rmtree(state, ignore_errors=True)
    child = _NodeChild(node_command(config, overrides, state, seconds, url), state)
    first_frame_s: float | None = None
    samples: list[tuple[float, int]] = []  # (seconds since start, VmRSS kB)
    hwm_kb = 0
    last: dict[str, Any] | None = None
    next_sample = 0.0
    try:
        while child.proc.poll() is None:
            now = time.monotonic() - child.started
            child.poll_notify(0.02)
            if first_frame_s is None:
                s = child.status()
                if s is not None and s["frames"]["processed"] > 0:
                    first_frame_s = time.monotonic() - child.started
            if now >= next_sample:
                kb = proc_status_kb(child.proc.pid)
                if "VmRSS" in kb:
                    samples.append((round(now, 1), kb["VmRSS"]))
                    hwm_kb = max(hwm_kb, kb.get("VmHWM", 0))
                next_sample += sample_every_s
            if now >= seconds - 1.5 and last is None and first_frame_s is not None:
                last = child.status()
                if last is not None:
                    log(f"node on {url}: {_node_line(last)}")
            if now > seconds + 60:
                child.proc.terminate()
    finally:
        code = child.close()
    if last is None:
        return {"state": "failed", "exit": code, "error": child.tail()}
    half = [kb for t, kb in samples if t >= seconds / 2]
    out: dict[str, Any] = {
        "state": "ok",
        "url": url,
        "seconds": seconds,
        "exit": code,
        "cold_start_s": round(first_frame_s, 3) if first_frame_s is not None else None,
        "ready_s": round(child.ready_s, 3) if child.ready_s is not None else None,
        "rss": {
            "peak_mb": round(hwm_kb / 1024, 1),
            "steady_mb": round(statistics.median(half) / 1024, 1) if half else None,
            "samples": len(samples),
            "curve": [[t, round(kb / 1024, 1)] for t, kb in samples],
        },
        **_node_figures(last),
    }
    return out


def _node_figures(s: dict[str, Any]) -> dict[str, Any]:
    f = s["frames"]
    offered = max(1, f["in"])
    return {
        "frames": f,
        "fps": s["fps"],
        "drop_rate": round(f["dropped"] / offered, 4),
        "latency_ms": s["latency"],
        "ring": s["ring"],
        "source": s["source"],
        "detector": s["detector"],
        "evidence": _pick(
            s["evidence"], ("state", "stored", "lost", "no_frames", "plate_scaled", "error")
        ),
    }


def _node_line(s: dict[str, Any]) -> str:
    f = s["frames"]
    return f"fps {s['fps']}, frames in {f['in']} processed {f['processed']} dropped {f['dropped']}"


def soak(
    config: Path | None, overrides: Sequence[str], seconds: float, work: Path, log: Log
) -> dict[str, Any]:
    """`roadnode run` for `seconds` on the sim handing over every main image as an array, as
    a camera does (the harder case for memory: the ring slims real 6 MB frames), RSS sampled
    every 10 s."""
    every = 10.0 if seconds >= 60 else max(1.0, seconds / 10)
    out = run_node(config, overrides, seconds, work, log, sample_every_s=every, url=CAMERA_SIM_URL)
    curve = out.get("rss", {}).get("curve", [])
    if len(curve) >= 4:
        quarter = max(1, len(curve) // 4)
        second = [mb for _, mb in curve[quarter : 2 * quarter]]
        final = [mb for _, mb in curve[-quarter:]]
        out["rss"]["growth_mb"] = round(statistics.median(final) - statistics.median(second), 1)
    return out


# --- packets, store, uplink ----------------------------------------------------------------


def bench_packets(count: int, log: Log) -> dict[str, Any]:
    """Build `count` sealed violation packets from the sim's true violations (main images
    rendered beforehand, so the build time is the packet's: crops, JPEG, sign, seal)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from node.capture.frame import ArrayRef
    from node.clock import ClockState
    from node.config import Config
    from node.evidence.measure import SIM_URL as PACKET_URL
    from node.evidence.measure import SizeReport, sim_violations
    from node.evidence.packet import from_violation
    from node.rules.signal import SignalState

    capture = dataclasses.replace(Config().capture, lores_width=320, lores_height=180)
    cfg = dataclasses.replace(Config(), capture=capture)
    key = Ed25519PrivateKey.generate()
    central = X25519PrivateKey.generate().public_key()
    clock = ClockState(True, 0.002, 0.05, "adjtimex")
    signal = SignalState("RED", 3.0, 0.1, False, "frame")
    times: list[float] = []
    sizes: list[int] = []
    parts: dict[str, list[int]] = {}
    for v, frames in sim_violations(PACKET_URL, cfg):
        rendered = [dataclasses.replace(f, main=ArrayRef(f.main.array())) for f in frames]
        t0 = time.perf_counter()
        built = from_violation(v, rendered, cfg, key, central, None, signal, clock=clock)
        times.append((time.perf_counter() - t0) * 1e3)
        sizes.append(built.size)
        for name, n in built.part_sizes.items():
            parts.setdefault(name, []).append(n)
        if len(sizes) >= count:
            break
    if not sizes:
        return {"state": "failed", "error": f"{PACKET_URL}: no violation with its plate in view"}
    medians = {k: float(statistics.median(v)) for k, v in sorted(parts.items())}
    report = SizeReport(tuple(sizes), medians, (capture.main_width, capture.main_height), True)
    out = {"state": "ok", "build_ms": percentiles(times), **report.as_dict()}
    log(f"packets: build p50 {out['build_ms']['p50']} ms, median {report.median / 1e3:.0f} kB")
    return out


def bench_store_levels(work: Path, sizes: tuple[int, ...], ops: int, log: Log) -> dict[str, Any]:
    from node.store.bench import bench_store

    out = bench_store(work / "store", sizes, ops=ops)
    levels = out["levels"]
    base = levels[0] if levels else None
    if base is not None:
        for level in levels:
            level["slowdown"] = {
                op: round(base[f"{op}_per_s"] / level[f"{op}_per_s"], 2)
                if level[f"{op}_per_s"]
                else None
                for op in ("append", "claim", "ack")
            }
    log("store: " + ", ".join(f"{lv['packets']}: append {lv['append_per_s']}/s" for lv in levels))
    return {"state": "ok", **out}


def bench_uplink(work: Path, count: int, log: Log) -> dict[str, Any]:
    """The uploader's drain to the loopback ingest (node/uplink/bench.py), if this build has it."""
    try:
        from node.uplink.bench import bench_drain
    except (ImportError, AttributeError) as e:
        return {"state": "not available in this build", "error": f"{type(e).__name__}: {e}"}
    out = bench_drain(count, 120_000, sealed=True, directory=work, timeout_s=300.0)
    out.pop("machine", None)
    log(f"uplink drain: {out['packets_per_s']} packets/s, {out['mb_per_s']} MB/s")
    return {"state": "ok" if out["finished"] else "unfinished", **out}


# --- the whole suite -----------------------------------------------------------------------

TARGETS = {
    "efficiency": (">=", 0.85),
    "pipeline_fps": (">=", 25.0),
    "cold_start_s": ("<=", 3.0),
    "store_slowdown_100k": ("<=", 2.0),
    "drain_packets_per_s": (">=", 50.0),
    "steady_rss_mb": ("<=", 200.0),
    "steady_rss_camera_mb": ("<=", 200.0),
}


def targets(r: dict[str, Any]) -> dict[str, Any]:
    """Each target of issue 10 (and issue 9's RSS) against what was measured; None when the
    figure could not be measured in this run (no model, a section failed)."""
    pipe, node = r.get("pipeline", {}), r.get("node", {})
    levels = r.get("store", {}).get("levels", [])
    at_100k = [lv for lv in levels if lv["packets"] >= 100_000]
    slowdown = max(at_100k[0]["slowdown"].values(), default=None) if at_100k else None
    got: dict[str, float | None] = {
        "efficiency": pipe.get("efficiency"),
        "pipeline_fps": pipe.get("fps") if pipe.get("state", "ok") == "ok" else None,
        "cold_start_s": node.get("cold_start_s"),
        "store_slowdown_100k": slowdown,
        "drain_packets_per_s": r.get("uplink", {}).get("packets_per_s"),
        "steady_rss_mb": node.get("rss", {}).get("steady_mb"),
        "steady_rss_camera_mb": r.get("camera", {}).get("rss", {}).get("steady_mb"),
    }
    out: dict[str, Any] = {}
    for name, (op, want) in TARGETS.items():
        value = got[name]
        met = None if value is None else (value >= want if op == ">=" else value <= want)
        out[name] = {"target": f"{op} {want:g}", "measured": value, "met": met}
    return out


def guarded(name: str, fn: Callable[[], dict[str, Any]], log: Log) -> dict[str, Any]:
    """Run one section; a failure is recorded in its result and the suite goes on."""
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # a benchmark reports what broke instead of stopping
        log(f"{name}: FAILED: {type(e).__name__}: {e}")
        out = {"state": "failed", "error": f"{type(e).__name__}: {e}"}
    out["bench_s"] = round(time.perf_counter() - t0, 2)
    return out


def run_suite(
    cfg: Config,
    quick: bool,
    model: Path | None,
    work: Path,
    log: Log,
    config_path: Path | None = None,
    overrides: Sequence[str] = (),
    profile: Path | None = None,
) -> dict[str, Any]:
    """Every measurement, in a fixed order; the JSON document `roadnode bench` writes."""
    sizes = Sizes.pick(quick)
    manifest = resolve_model(model, cfg)
    cfg = with_model(cfg, manifest)
    started = time.time()
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "quick": quick,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": machine_info(),
        "model": str(manifest) if manifest else None,
    }
    result.update(_in_process(cfg, sizes, manifest, work, log, profile))
    node_overrides = list(overrides)
    if manifest is not None:
        node_overrides.append(f"detector.model={json.dumps(str(manifest.resolve()))}")
    result["node"] = guarded(
        "node", lambda: run_node(config_path, node_overrides, sizes.node_s, work, log), log
    )
    result["camera"] = guarded(
        "camera",
        lambda: run_node(config_path, node_overrides, sizes.node_s, work, log, url=CAMERA_SIM_URL),
        log,
    )
    result["packets"] = guarded("packets", lambda: bench_packets(sizes.packets, log), log)
    result["store"] = guarded(
        "store", lambda: bench_store_levels(work, sizes.store_sizes, sizes.store_ops, log), log
    )
    result["uplink"] = guarded("uplink", lambda: bench_uplink(work, sizes.drain_packets, log), log)
    result["targets"] = targets(result)
    result["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["elapsed_s"] = round(time.time() - started, 1)
    return result


def _in_process(
    cfg: Config, sizes: Sizes, manifest: Path | None, work: Path, log: Log, profile: Path | None
) -> dict[str, Any]:
    """The sections measured in this process on pre-rendered frames (freed on return: their
    main images are ~6 MB a frame)."""
    result: dict[str, Any] = {}
    log(f"rendering {sizes.cache_frames} sim frames (lores + 1920x1080 main)")
    cache = render_cache(cfg, sizes.cache_frames)
    result["sim_render"] = cache.stats()
    result["detector"] = guarded(
        "detector",
        lambda: bench_detector(manifest, cfg, cache, sizes.detector_passes, log),
        log,
    )
    two = result["detector"].get("threads_2", {})
    detector_fps = float(two.get("fps", 0.0))
    if manifest is None:
        result["pipeline"] = {"state": "no model", "note": "no detector: nothing to compare"}
    else:
        result["pipeline"] = guarded(
            "pipeline",
            lambda: {
                "state": "ok",
                **bench_pipeline(cfg, cache, detector_fps, sizes.pipeline_s, work, log),
            },
            log,
        )
        pipe = result["pipeline"]
        if pipe.get("state") == "ok" and detector_fps > 0:
            # detector-only again right after, so a change in the machine's load during the
            # pipeline run shows (and is averaged) instead of skewing the ratio
            again = bench_detector(manifest, cfg, cache, sizes.detector_passes, log, (2,))
            after = float(again.get("threads_2", {}).get("fps", 0.0)) or detector_fps
            pipe["detector_fps"] = {"before": detector_fps, "after": after}
            pipe["efficiency"] = round(pipe["fps"] / ((detector_fps + after) / 2), 3)
            log(f"pipeline efficiency {pipe['efficiency']}")
        if profile is not None:
            log(f"profiling the stages into {profile}")
            result["profile"] = {"file": str(profile)}
            result["profile"]["note"] = profile_stages(cfg, cache, 60, profile, work)
    return result
