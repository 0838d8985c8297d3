"""The frame ring slims camera frames the stages are done with, and packets lose nothing by it.

A camera frame carries its 1920x1080 main image as an array (6.2 MB); the ring keeps, of a
frame released by the rules stage, the picture at context width as a JPEG and full-resolution
windows around its plates. These tests use real simulator frames turned into arrays (what a
camera or a replayed file hands over) and build real packets from the slimmed ring.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from node.capture.frame import ArrayRef, Frame, KeptRef
from node.capture.framering import KEEP_FULL, FrameRing, keep, windows_of
from node.evidence.images import downscale
from node.evidence.packet import from_violation, verify
from tests.test_evidence_violation import CFG, CLOCK, KEY, KEYS, SIGNAL, Model, sim_case

W, H = 1920, 1080


def camera_frame(seq: int, rng: np.random.Generator | None = None) -> Frame:
    """A frame as a camera hands it over: lores and main both arrays (noise: JPEG-hard)."""
    rng = rng or np.random.default_rng(seq)
    main = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    lores = np.ascontiguousarray(main[::2, ::2])
    return Frame(seq, seq * 100_000_000, 0, lores, ArrayRef(main))


def as_camera(frames: tuple[Frame, ...]) -> list[Frame]:
    """Simulator frames with their main rendered into an array and a 960x544 lores scaled
    from it, as picamera2 hands them over (the ISP scales lores to the detector's size)."""
    out = []
    for f in frames:
        main = f.main.array()
        small = Image.fromarray(main).resize((960, 544), Image.Resampling.BOX)
        lores = np.asarray(small)
        out.append(dataclasses.replace(f, main=ArrayRef(main), lores=lores))
    return out


def test_a_released_frame_keeps_context_and_sharp_plate_windows() -> None:
    ring = FrameRing(seconds=10.0, max_bytes=2**30, keep_lores=2)
    plate = (800.0, 600.0, 880.0, 620.0)
    frames = [camera_frame(i) for i in range(4)]
    for f in frames:
        ring.push(f)
    ring.release(1, [plate])
    ring.push(camera_frame(4))
    assert ring.slim() == 2  # the capture thread slims after handing a frame on
    kept = {f.seq: f for f in ring.by_seq(0, 9)}
    assert isinstance(kept[0].main, KeptRef)  # never released, but older than the released 1
    assert isinstance(kept[1].main, KeptRef)
    assert all(isinstance(kept[s].main, ArrayRef) for s in (2, 3, 4))  # not done with yet
    k1 = kept[1].main
    assert isinstance(k1, KeptRef)
    assert k1.shape == (H, W, 3)
    assert k1.context_size == (960, 540)
    assert kept[1].lores.size == 0
    # the plate and its surround are the camera's own pixels, byte for byte
    x0, y0, x1, y1 = 780, 590, 900, 630
    region = k1.region((x0, y0, x1, y1))
    assert region is not None
    assert np.array_equal(region, frames[1].main.array()[y0:y1, x0:x1])
    assert k1.region((0, 0, 100, 100)) is None  # elsewhere only the context picture is kept
    assert k1.region((700, 590, 900, 630)) is None  # nor beyond the window's margin
    k0 = kept[0].main
    assert isinstance(k0, KeptRef)
    assert k0.region((x0, y0, x1, y1)) is None  # released without boxes: no windows
    context = k1.context()
    assert context.shape == (540, 960, 3)
    full = k1.array()  # for callers that want a full-size picture: sharp inside the window
    assert full.shape == (H, W, 3)
    assert np.array_equal(full[y0:y1, x0:x1], region)


def test_the_ring_of_a_camera_stays_small() -> None:
    """4 s at 10 frames/s of 1920x1080 frames: 250 MB as arrays, about 10 MB slimmed."""
    ring = FrameRing(seconds=4.0, max_bytes=2**30)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    base[:, :, :] = base[:1, :1, :]  # a flat picture, like a road, with one busy patch
    base[500:540, 900:1000] = rng.integers(0, 256, (40, 100, 3), dtype=np.uint8)
    for seq in range(60):
        lores = np.ascontiguousarray(base[::2, ::2])
        ring.push(Frame(seq, seq * 100_000_000, 0, lores, ArrayRef(base.copy())))
        ring.release(seq, [(910.0, 505.0, 990.0, 535.0)])
        ring.slim()
    frames = ring.by_seq(0, 59)
    assert len(frames) == 41  # still 4 s of frames
    slim = [f for f in frames if isinstance(f.main, KeptRef)]
    assert len(slim) == 41 - 1  # all but the newest (the console's live view)
    full_mb = 41 * (base.nbytes + base[::2, ::2].nbytes) / 2**20
    assert full_mb > 250
    assert ring.nbytes / 2**20 < 10  # one whole frame (7.8 MB) and 40 slim ones
    assert ring.kept == 59


def test_frames_no_stage_reaches_are_slimmed_after_keep_full() -> None:
    ring = FrameRing(seconds=10.0, max_bytes=2**30, keep_lores=2)
    for seq in range(KEEP_FULL + 3):
        ring.push(camera_frame(seq))
    assert ring.slim() == 3
    kinds = [type(f.main) for f in ring.by_seq(0, 99)]
    assert kinds == [KeptRef] * 3 + [ArrayRef] * KEEP_FULL


def test_small_and_simulated_mains_are_kept_as_they_are() -> None:
    ring = FrameRing(seconds=10.0, max_bytes=2**30, keep_lores=1)
    small = np.zeros((120, 160, 3), np.uint8)
    for seq in range(5):
        ring.push(Frame(seq, seq, 0, small[::2, ::2].copy(), ArrayRef(small)))
        ring.release(seq)
        assert ring.slim() == 0
    assert all(isinstance(f.main, ArrayRef) for f in ring.by_seq(0, 9))
    assert ring.kept == 0


def test_windows_are_clipped_to_the_picture() -> None:
    wins = windows_of([(-5.0, 10.0, 40.0, 30.0), (1900.0, 1070.0, 1930.0, 1090.0)], 0.5, (H, W))
    assert wins == [(0, 0, 63, 42), (1885, 1058, 1920, 1080)]  # 12 px at least, 0.5 box sizes
    kept = keep(np.zeros((H, W, 3), np.uint8), wins)
    assert [px.shape for _, px in kept.windows] == [(42, 63, 3), (22, 35, 3)]
    assert simplejpeg.decode_jpeg_header(kept.jpeg)[:2] == (540, 960)


def test_the_context_comes_from_the_lores_stream_when_it_is_context_wide() -> None:
    """The ISP's lores image stands in for scaling 6 MB down (brought to the main's aspect);
    a lores of another width does not."""
    main = np.zeros((H, W, 3), np.uint8)
    lores = np.full((544, 960, 3), 200, np.uint8)
    from_lores = keep(main, [], lores=lores)
    assert from_lores.context_size == (960, 540)
    assert abs(float(from_lores.context().mean()) - 200) < 2
    narrow = keep(main, [], lores=np.full((272, 480, 3), 200, np.uint8))
    assert float(narrow.context().mean()) < 2  # scaled from the main image instead


def test_a_packet_from_slimmed_frames_has_the_same_plate_crop() -> None:
    """The violation packet built from the ring after slimming: the plate crop is the very
    same JPEG as from the whole frames, the context frames the same size and nearly the same
    pixels, and the manifest says the crop is at full resolution."""
    v, sim_frames = sim_case()
    frames = as_camera(sim_frames)
    boxes = dict(v.plate_boxes)
    ring = FrameRing(seconds=30.0, max_bytes=2**31, keep_lores=1)
    for f in frames:
        ring.push(f)
        ring.release(f.seq, [boxes[f.seq]] if f.seq in boxes else [])
    ring.push(dataclasses.replace(frames[-1], seq=frames[-1].seq + 1))
    ring.slim()
    slim = ring.by_seq(v.seq_before, v.seq_after)
    by_seq = {f.seq: f for f in frames}
    assert slim
    assert all(isinstance(f.main, KeptRef) for f in slim)
    whole = verify(
        from_violation(v, frames, CFG, KEY, None, Model(), SIGNAL, clock=CLOCK).data, KEYS
    )
    thin = verify(from_violation(v, slim, CFG, KEY, None, Model(), SIGNAL, clock=CLOCK).data, KEYS)
    assert thin.manifest["plate"] == whole.manifest["plate"]
    assert thin.manifest["plate"]["full_resolution"] is True
    assert thin.parts["plate.jpg"] == whole.parts["plate.jpg"]
    assert sorted(thin.parts) == sorted(whole.parts)
    for a, b in zip(thin.manifest["context"], whole.manifest["context"], strict=True):
        assert (a["seq"], a["width"], a["height"], a["scale"]) == (
            b["seq"],
            b["width"],
            b["height"],
            b["scale"],
        )
        truth, _ = downscale(by_seq[a["seq"]].main.array(), a["width"])
        err_thin = np.abs(simplejpeg.decode_jpeg(thin.parts[a["part"]]) - truth.astype(int))
        err_whole = np.abs(simplejpeg.decode_jpeg(whole.parts[b["part"]]) - truth.astype(int))
        # one more JPEG generation (at quality 90) costs little next to the packet's own
        assert float(err_thin.mean()) < 1.25 * float(err_whole.mean()) + 0.5


def test_a_packet_says_when_no_frame_kept_the_plate_sharp() -> None:
    v, sim_frames = sim_case()
    frames = as_camera(sim_frames)
    ring = FrameRing(seconds=30.0, max_bytes=2**31, keep_lores=1)
    for f in frames:
        ring.push(f)
        ring.release(f.seq)  # no plate boxes: no windows
    ring.push(dataclasses.replace(frames[-1], seq=frames[-1].seq + 1))
    ring.slim()
    slim = ring.by_seq(v.seq_before, v.seq_after)
    built = from_violation(v, slim, CFG, KEY, None, Model(), SIGNAL, clock=CLOCK)
    assert built.plate_scaled  # the evidence worker counts and logs it
    got = verify(built.data, KEYS)
    plate = got.manifest["plate"]
    assert plate["full_resolution"] is False
    x0, y0, x1, y1 = plate["crop_box"]
    image = simplejpeg.decode_jpeg(got.parts["plate.jpg"])
    assert image.shape == (y1 - y0, x1 - x0, 3)  # still the crop's size, scaled up


class Releasing:
    """The last stage, as the rules stage is: tells the ring it is done with each frame."""

    name = "releasing"

    def __init__(self, ring: FrameRing) -> None:
        self.ring = ring

    def process(self, frame: Frame) -> None:
        self.ring.release(frame.seq, [(100.0, 100.0, 160.0, 120.0)])


def test_the_pipeline_slims_what_its_stages_released() -> None:
    from tests.sourcedouble import CountingSource

    ring = FrameRing(seconds=60.0, max_bytes=2**31)
    source = CountingSource(fps=0, size=(960, 540), limit=30)  # main 1920x1080 arrays
    pipe = run_pipeline(ring, source, Releasing(ring), 64)
    frames = ring.by_seq(0, 99)
    assert len(frames) == 30
    kept = [f.main for f in frames if isinstance(f.main, KeptRef)]
    # the capture thread slims at each new frame what was released before it: all but the
    # last few (released after the last frame came in, or the newest)
    assert len(kept) >= 30 - KEEP_FULL
    assert all(k.region((90, 90, 170, 130)) is not None for k in kept)  # the plate windows
    ring_status = pipe.snapshot()["ring"]  # type: ignore[attr-defined]
    assert isinstance(ring_status, dict)
    assert ring_status["kept"] == len(kept)


class SlowReleasing(Releasing):
    """A rules stage that takes `seconds` a frame, and remembers what it processed."""

    def __init__(self, ring: FrameRing, seconds: float) -> None:
        super().__init__(ring)
        self.seconds = seconds
        self.seen: list[int] = []

    def process(self, frame: Frame) -> None:
        time.sleep(self.seconds)
        self.seen.append(frame.seq)
        super().process(frame)


def run_pipeline(ring: FrameRing, source: object, stage: object, queue: int) -> object:
    from node.pipeline import Pipeline

    pipe = Pipeline(source, ring, [stage], queue_frames=queue)  # type: ignore[arg-type, list-item]
    pipe.start()
    try:
        deadline = time.monotonic() + 60
        while not pipe.idle:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        pipe.stop()
    return pipe


def test_a_slow_stage_keeps_the_windows_of_every_frame_it_processed() -> None:
    """Frames waiting in a long queue are not slimmed before the stages see them; frames the
    queue drops leave the ring at once (no plate boxes, and no JPEG to spend on them)."""
    from tests.sourcedouble import CountingSource

    queue = 16
    ring = FrameRing(seconds=60.0, max_bytes=2**31, keep_full=KEEP_FULL + queue)
    stage = SlowReleasing(ring, 0.06)
    source = CountingSource(fps=40, size=(960, 540), limit=80)
    pipe = run_pipeline(ring, source, stage, queue)
    ring.slim()  # what the capture thread does at its next frame, had the source gone on
    frames = {f.seq: f for f in ring.by_seq(0, 999)}
    processed = set(stage.seen)
    assert len(processed) < 80  # the stage is slower than the camera: the queue dropped frames
    assert set(frames) == processed  # every processed frame is kept, no dropped one
    assert pipe.queue.dropped == ring.status()["dropped"] == 80 - len(processed)  # type: ignore[attr-defined]
    newest = max(frames)
    for seq, f in frames.items():
        if seq == newest:
            continue  # the newest stays whole
        assert isinstance(f.main, KeptRef), seq
        assert f.main.region((90, 90, 170, 130)) is not None, seq  # its plate window


def test_a_frame_that_cannot_be_slimmed_stays_whole_and_capture_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from node.capture import framering
    from tests.sourcedouble import CountingSource

    def broken(*_args: object, **_kw: object) -> KeptRef:
        raise MemoryError("no room for the JPEG")

    monkeypatch.setattr(framering, "keep", broken)
    ring = FrameRing(seconds=60.0, max_bytes=2**31)
    source = CountingSource(fps=0, size=(960, 540), limit=20)
    pipe = run_pipeline(ring, source, Releasing(ring), 64)
    assert pipe.counters.frames_in == 20  # type: ignore[attr-defined]
    assert not pipe.source_failed  # type: ignore[attr-defined]
    assert all(isinstance(f.main, ArrayRef) for f in ring.by_seq(0, 99))  # all still there
    status = ring.status()
    assert status["kept"] == 0
    assert status["slim_errors"] == 19  # each tried once (the newest is not due yet)
    assert "MemoryError: no room for the JPEG" in str(status["last_error"])


def test_a_source_that_starts_over_is_not_taken_for_released() -> None:
    ring = FrameRing(seconds=1000.0, max_bytes=2**31)
    for seq in range(5):
        ring.push(camera_frame(seq))
    ring.release(4)
    ring.slim()
    for seq in range(3):  # reopened: sequence numbers from 0 again, nothing processed yet
        ring.push(dataclasses.replace(camera_frame(seq), mono_ns=10**10 + seq))
    assert ring.slim() == 0
    assert [type(f.main) for f in ring.by_seq(0, 2)][-3:] == [ArrayRef] * 3
