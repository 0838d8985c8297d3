"""The frame pipeline: capture thread → bounded queue → stage worker.

The capture thread reads the source, keeps every frame in the pre-event ring, and offers it to
the detection queue. That queue is bounded and drops at the FRONT: when the stages fall
behind, the oldest waiting frame is dropped (and counted) so the newest is always processed
next and memory never grows with backlog. The worker runs the frame stages in order.

A stage that is not built yet is simply absent from `stages`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from node.capture.frame import CaptureError, Frame, FrameSource
from node.capture.framering import FrameRing

log = logging.getLogger(__name__)
T = TypeVar("T")


class Stage(Protocol):
    """A per-frame stage of the pipeline (detector, tracker, ...)."""

    @property
    def name(self) -> str: ...

    def process(self, frame: Frame) -> None: ...


class DropFrontQueue(Generic[T]):
    """A bounded FIFO that, when full, drops its oldest item to admit a new one."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("DropFrontQueue: capacity must be at least 1")
        self.capacity = capacity
        self.dropped = 0
        self._items: deque[tuple[T, int]] = deque()
        self._cond = threading.Condition()

    def put(self, item: T) -> T | None:
        """Queue `item`; returns the item dropped to make room, if one was."""
        dropped = None
        with self._cond:
            if len(self._items) >= self.capacity:
                dropped = self._items.popleft()[0]
                self.dropped += 1
            self._items.append((item, time.monotonic_ns()))
            self._cond.notify()
        return dropped

    def get(self, timeout: float) -> tuple[T, int] | None:
        """The oldest item and when it was put, or None after `timeout` seconds."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def clear(self) -> int:
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class LatencyWindow:
    """The last `size` latency samples of one stage; p50/p95 on demand."""

    def __init__(self, size: int = 512) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._samples.append(seconds)

    def percentiles_ms(self) -> dict[str, float]:
        with self._lock:
            samples = sorted(self._samples)
        if not samples:
            return {"p50_ms": 0.0, "p95_ms": 0.0, "n": 0}

        def pick(q: float) -> float:
            return round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1e3, 3)

        return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "n": len(samples)}


@dataclass
class Counters:
    frames_in: int = 0
    processed: int = 0
    shutdown_discarded: int = 0
    stage_errors: int = 0
    last_error: str | None = None


class Pipeline:
    """Runs `source` → ring → queue → `stages` on two threads until stopped or exhausted."""

    def __init__(
        self, source: FrameSource, ring: FrameRing, stages: Sequence[Stage], queue_frames: int
    ) -> None:
        self.source = source
        self.ring = ring
        self.stages = list(stages)
        self.queue: DropFrontQueue[Frame] = DropFrontQueue(queue_frames)
        self.counters = Counters()
        self.latency = {
            name: LatencyWindow()
            for name in ["capture", "queue", *(s.name for s in self.stages), "total"]
        }
        self.stop_event = threading.Event()
        self.source_done = threading.Event()  # end of stream, or the source failed
        self.source_failed = False
        self._done_times: deque[int] = deque(maxlen=256)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._capture_quit = threading.Event()  # set: this capture thread is superseded
        self._stage_quit = threading.Event()
        self.last_frame_mono = time.monotonic()  # when the last frame came in (or start)
        self.stage_busy_since: float | None = None  # a frame is in the stages since then
        self.consecutive_errors: dict[str, int] = {}
        self.restarts = {"capture": 0, "stages": 0}

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.source.open(self.stop_event)
        self.last_frame_mono = time.monotonic()
        self._spawn("capture", self._capture_loop, self._capture_quit)
        self._spawn("stages", self._stage_loop, self._stage_quit)

    def _spawn(
        self, name: str, target: Callable[[threading.Event], None], quit_: threading.Event
    ) -> None:
        thread = threading.Thread(target=target, args=(quit_,), name=name, daemon=True)
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def restart_capture(self) -> None:
        """Reconnect the source: the old capture thread is told to quit (and abandoned if it
        hangs in `read()`), the source is closed and opened again, a new thread reads it.
        CaptureError if the source cannot be opened (the caller tries again later)."""
        self._capture_quit.set()
        try:
            self.source.close()
        except Exception as e:  # a wedged camera may fail to close; opening again decides
            log.warning("closing the source before reconnecting failed: %s", e)
        self._capture_quit = threading.Event()
        self.restarts["capture"] += 1
        self.source.open(self.stop_event)
        self.source_failed = False
        self.source_done.clear()
        self.last_frame_mono = time.monotonic()
        self._spawn("capture", self._capture_loop, self._capture_quit)

    def restart_stages(self) -> None:
        """A new stage worker; the stuck one is told to quit and abandoned."""
        self._stage_quit.set()
        self._stage_quit = threading.Event()
        self.stage_busy_since = None
        self.restarts["stages"] += 1
        self._spawn("stages", self._stage_loop, self._stage_quit)

    def stalled_s(self, now: float) -> tuple[float, float]:
        """(seconds since the last frame came in, seconds the current frame has been in the
        stages) — the supervisor's measures of no progress."""
        busy = self.stage_busy_since
        return now - self.last_frame_mono, 0.0 if busy is None else now - busy

    def stop(self, timeout: float = 3.0) -> None:
        """Stop capture, let the frame in flight finish, discard what still waits."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.counters.shutdown_discarded += self.queue.clear()
        self.source.close()

    @property
    def idle(self) -> bool:
        """The source is done and every frame it gave has been processed or dropped."""
        c = self.counters
        return self.source_done.is_set() and c.frames_in == c.processed + self.queue.dropped

    # --- threads -----------------------------------------------------------------------------

    def _capture_loop(self, quit_: threading.Event) -> None:
        try:
            while not self.stop_event.is_set():
                frame = self.source.read()
                if quit_.is_set():
                    return  # superseded by a reconnect: leave the state to the new thread
                if frame is None:
                    break
                self.last_frame_mono = time.monotonic()
                self.latency["capture"].add((time.monotonic_ns() - frame.mono_ns) / 1e9)
                self.ring.push(frame)
                if (dropped := self.queue.put(frame)) is not None:
                    self.ring.drop(dropped.seq)  # never processed: its main can go now
                self.counters.frames_in += 1
                self.ring.slim()  # frames the stages are done with give up their main array
        except CaptureError as e:
            if not quit_.is_set():
                self.source_failed = True
                self.counters.last_error = f"capture: {e}"
                log.error("capture failed: %s", e)
        finally:
            if not quit_.is_set():
                self.source_done.set()

    def _stage_loop(self, quit_: threading.Event) -> None:
        while not self.stop_event.is_set() and not quit_.is_set():
            got = self.queue.get(timeout=0.1)
            if got is None:
                continue
            frame, queued_ns = got
            now = time.monotonic_ns()
            self.latency["queue"].add((now - queued_ns) / 1e9)
            self.stage_busy_since = time.monotonic()
            for stage in self.stages:
                t0 = time.perf_counter()
                try:
                    stage.process(frame)
                    self.consecutive_errors[stage.name] = 0
                except Exception as e:  # a stage fault must not stop the node
                    self.counters.stage_errors += 1
                    n = self.consecutive_errors.get(stage.name, 0) + 1
                    self.consecutive_errors[stage.name] = n
                    self.counters.last_error = f"{stage.name}: {type(e).__name__}: {e}"
                    if n <= 3 or n % 100 == 0:  # the log does not flood with a broken stage
                        log.exception(
                            "stage %s failed on frame %d (%d in a row)", stage.name, frame.seq, n
                        )
                if quit_.is_set():
                    return  # superseded while stuck: the frame is the new worker's loss
                window = self.latency.get(stage.name) or self.latency.setdefault(
                    stage.name, LatencyWindow()
                )
                window.add(time.perf_counter() - t0)
            self.stage_busy_since = None
            done = time.monotonic_ns()
            self.latency["total"].add((done - frame.mono_ns) / 1e9)
            with self._lock:
                self._done_times.append(done)
            self.counters.processed += 1

    # --- figures -----------------------------------------------------------------------------

    def fps(self, window_s: float = 3.0) -> float:
        """Processed frames per second over the last `window_s` seconds."""
        now = time.monotonic_ns()
        with self._lock:
            recent = [t for t in self._done_times if now - t <= window_s * 1e9]
        if len(recent) < 2:
            return 0.0
        span = (recent[-1] - recent[0]) / 1e9
        return (len(recent) - 1) / span if span > 0 else 0.0

    def snapshot(self) -> dict[str, object]:
        c = self.counters
        return {
            "frames": {
                "in": c.frames_in,
                "processed": c.processed,
                "dropped": self.queue.dropped + c.shutdown_discarded,
            },
            "fps": round(self.fps(), 2),
            "latency": {name: w.percentiles_ms() for name, w in self.latency.items()},
            "queues": {"detect": {"depth": len(self.queue), "capacity": self.queue.capacity}},
            "ring": self.ring.status(),
            "stage_errors": c.stage_errors,
            "restarts": dict(self.restarts),
            "last_error": c.last_error,
            "source": {"url": self.source.url, **self.source.stats()},
        }
