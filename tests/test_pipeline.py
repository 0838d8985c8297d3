"""Pipeline: bounded queue drops at the front, slow stages cost frames not memory, ring bounds."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np

from node.capture.frame import ArrayRef, Frame
from node.capture.framering import FrameRing
from node.pipeline import DropFrontQueue, LatencyWindow, Pipeline
from tests.sourcedouble import CountingSource, SlowStage


def wait_until(pred: object, timeout: float = 5.0) -> None:
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_drop_front_queue_keeps_newest() -> None:
    q: DropFrontQueue[int] = DropFrontQueue(3)
    for i in range(5):
        q.put(i)
    assert q.dropped == 2
    assert len(q) == 3
    got = [q.get(0.01) for _ in range(4)]
    assert [g[0] if g else None for g in got] == [2, 3, 4, None]


def test_latency_percentiles() -> None:
    w = LatencyWindow(size=100)
    for ms in range(1, 101):
        w.add(ms / 1000)
    p = w.percentiles_ms()
    assert (p["p50_ms"], p["p95_ms"], p["n"]) == (51.0, 96.0, 100)
    w2 = LatencyWindow(size=10)
    for ms in range(100):
        w2.add(ms / 1000)
    assert w2.percentiles_ms()["p50_ms"] == 95.0  # only the last 10 samples count


def frame_at(seq: int, mono_ns: int, nbytes: int = 1000) -> Frame:
    lores = np.zeros(nbytes, np.uint8).reshape(1, -1, 1)
    return Frame(seq, mono_ns, 0, lores, ArrayRef(np.zeros((1, 1, 3), np.uint8)))


def test_ring_bounded_in_time() -> None:
    ring = FrameRing(seconds=1.0, max_bytes=10**9)
    for i in range(30):
        ring.push(frame_at(i, i * 100_000_000))  # 10 fps
    assert len(ring) == 11  # frames within 1 s of the newest: 1.9 s .. 2.9 s
    assert [f.seq for f in ring.window(2_500_000_000, 2_700_000_000)] == [25, 26, 27]
    latest = ring.latest()
    assert latest is not None
    assert latest.seq == 29


def test_ring_bounded_in_memory() -> None:
    ring = FrameRing(seconds=100.0, max_bytes=10_000, keep_lores=100)
    for i in range(50):
        ring.push(frame_at(i, i, nbytes=1000))
    assert ring.nbytes <= 10_000
    assert len(ring) == 9  # 9 x (1000 + 3) bytes fit, a 10th does not
    latest = ring.latest()
    assert latest is not None
    assert latest.seq == 49


def test_ring_drops_the_lores_of_all_but_the_newest_frames() -> None:
    ring = FrameRing(seconds=100.0, max_bytes=10**9, keep_lores=3)
    for i in range(10):
        ring.push(frame_at(i, i, nbytes=1000))
    sizes = [f.lores.size for f in ring.window(0, 100)]
    assert sizes == [0] * 7 + [1000] * 3  # evidence needs the main stream only
    assert ring.nbytes == 10 * 3 + 3 * 1000  # the main refs (3 bytes each) and 3 lores
    assert [f.seq for f in ring.by_seq(0, 9)] == list(range(10))  # every frame is still kept


def test_fast_stages_process_every_frame() -> None:
    source = CountingSource(fps=0, limit=200)
    stage = SlowStage(0.0)
    pipe = Pipeline(source, FrameRing(1.0, 10**8), [stage], queue_frames=256)
    pipe.start()
    wait_until(lambda: pipe.idle)
    pipe.stop()
    assert pipe.counters.frames_in == 200
    assert stage.seen == list(range(200))
    assert pipe.snapshot()["frames"] == {"in": 200, "processed": 200, "dropped": 0}
    assert source.closed


def test_slow_stage_drops_oldest_and_memory_stays_flat() -> None:
    source = CountingSource(fps=400, size=(320, 240))
    stage = SlowStage(0.02)  # 50 frames/s against 400 offered
    pipe = Pipeline(source, FrameRing(0.5, 4 * 10**6), [stage], queue_frames=4)
    tracemalloc.start()
    try:
        pipe.start()
        wait_until(lambda: pipe.counters.frames_in > 150)
        early, _ = tracemalloc.get_traced_memory()
        wait_until(lambda: pipe.counters.frames_in > 900, timeout=15)
        late, _ = tracemalloc.get_traced_memory()
    finally:
        pipe.stop()
        tracemalloc.stop()
    snap = pipe.snapshot()
    frames = snap["frames"]
    assert isinstance(frames, dict)
    assert frames["dropped"] > frames["in"] // 2  # most frames were dropped and counted
    assert frames["in"] == frames["processed"] + frames["dropped"]
    assert len(pipe.queue) == 0
    # newest frames win: the stage saw increasing sequence numbers with gaps
    assert stage.seen == sorted(stage.seen)
    assert stage.seen[-1] - stage.seen[0] > len(stage.seen)
    # 750 more frames of 230 KB each went through; memory grew by less than 2 MB
    assert late - early < 2 * 10**6, f"memory grew by {late - early} bytes"


def test_stage_exception_is_counted_not_fatal() -> None:
    class Boom(SlowStage):
        def process(self, frame: Frame) -> None:
            super().process(frame)
            if frame.seq % 2:
                raise ValueError("odd frame")

    source = CountingSource(fps=0, limit=10)
    stage = Boom(0.0, name="boom")
    pipe = Pipeline(source, FrameRing(1.0, 10**8), [stage], queue_frames=16)
    pipe.start()
    wait_until(lambda: pipe.idle)
    pipe.stop()
    assert pipe.counters.processed == 10
    assert pipe.counters.stage_errors == 5
    assert pipe.counters.last_error == "boom: ValueError: odd frame"
