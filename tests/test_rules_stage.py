"""The violation stage in the pipeline: detections → tracker → signal → rules → sink."""

from __future__ import annotations

import dataclasses

import numpy as np

from node.capture.frame import ArrayRef, Frame
from node.config import RulesConfig, TrackerConfig
from node.infer.detector import Detection, FrameDetections
from node.plates.hotlist import HotlistHit
from node.rules.signal import FrameSignal
from node.rules.stage import ViolationStage
from node.rules.tracker import Tracker
from node.rules.violations import Violation, ViolationRules
from node.rules.zones import Zones
from tests.test_violations import FRAME_NS, UTC0, ZONES

IMG = np.zeros((4, 4, 3), np.uint8)


def frame(seq: int, phase: str | None) -> Frame:
    meta: dict[str, float | int | str] = {} if phase is None else {"signal_phase": phase}
    return Frame(seq, seq * FRAME_NS, UTC0 + seq * FRAME_NS, IMG, ArrayRef(IMG), meta)


def plate(x: float, y: float) -> Detection:
    return Detection((x - 20.0, y - 20.0, x + 20.0, y), 0.9)


def run(
    phases: list[str | None], plates: dict[int, list[Detection]], skip: frozenset[int] = frozenset()
) -> tuple[ViolationStage, list[tuple[Violation, Frame]]]:
    got: list[tuple[Violation, Frame]] = []
    results = {
        s: FrameDetections(s, s * FRAME_NS, tuple(plates.get(s, ()))) for s in range(len(phases))
    }
    stage = ViolationStage(
        lambda seq: None if seq in skip else results.get(seq),
        Tracker(TrackerConfig(), utc_offset_ns=UTC0),
        FrameSignal(2.0),
        ViolationRules(RulesConfig(), Zones.from_config(ZONES)),
        lambda v, f: got.append((v, f)),
    )
    for seq, phase in enumerate(phases):
        stage.process(frame(seq, phase))
    return stage, got


# one plate driving up the image at 20 px a frame, across the stop line (y = 500) at frame 10
RUNNER = {s: [plate(600.0, 705.0 - 20.0 * s)] for s in range(30)}


def test_a_red_runner_reaches_the_sink_once_with_its_evidence_frames() -> None:
    stage, got = run(["RED"] * 40, RUNNER)
    assert [v.rule for v, _ in got] == ["red_light"]
    v, f = got[0]
    assert v.seq_before <= v.seq_at <= v.seq_after
    assert 9 <= v.seq_at <= 12  # the crossing, not the frame it was judged in
    assert f.seq >= v.seq_at  # judged once enough frames after the line were seen
    assert v.measured.signal_phase == "RED"
    assert stage.stats()["violations"] == 1
    assert stage.last(5) == [v]


def test_the_same_drive_on_green_is_no_violation() -> None:
    stage, got = run(["GREEN"] * 40, RUNNER)
    assert got == []
    assert stage.stats()["rules"]["rule_counts"]["red_light"]["compliant"] == 1


def test_no_signal_in_the_frames_disables_red_light_and_says_so() -> None:
    stage, got = run([None] * 40, RUNNER)
    assert got == []
    rules = stage.stats()["rules"]
    assert rules["red_light"].startswith("inactive")
    assert "signal_phase" in rules["red_light"]


def test_frames_the_detector_failed_on_count_as_misses_not_crashes() -> None:
    stage, got = run(["RED"] * 40, RUNNER, skip=frozenset({3, 17}))
    assert stage.stats()["frames_without_detections"] == 2
    assert [v.rule for v, _ in got] == ["red_light"]  # two missed frames do not break a track


def test_a_stage_without_a_sink_still_keeps_the_recent_violations() -> None:
    stage = ViolationStage(
        lambda seq: FrameDetections(seq, seq * FRAME_NS, tuple(RUNNER.get(seq, ()))),
        Tracker(TrackerConfig(), utc_offset_ns=UTC0),
        FrameSignal(2.0),
        ViolationRules(RulesConfig(), Zones.from_config(ZONES)),
    )
    for seq in range(40):
        stage.process(dataclasses.replace(frame(seq, "RED")))
    assert [v.rule for v in stage.last(3)] == ["red_light"]


class ReaderDouble:
    """Honours the TrackReader calls the stage makes; 'reads' the crop's shape as the text."""

    def __init__(self, hot_track: int | None = None) -> None:
        self.seen: list[tuple[int, int, tuple[int, ...]]] = []
        self.hot_track = hot_track

    def wants(self, track_id: int, seq: int, width: int) -> bool:
        return seq % 2 == 0 and width >= 30

    def observe(self, track_id: int, seq: int, crop: np.ndarray) -> None:  # type: ignore[type-arg]
        self.seen.append((track_id, seq, crop.shape))

    def best(self, track_id: int) -> object:
        reads = [s for s in self.seen if s[0] == track_id]
        if not reads:
            return None

        class Fused:
            def as_dict(self, per_frame: bool = False) -> dict[str, object]:
                return {"text": "98A-123.45", "reads": len(reads)}

        return Fused()

    def check_hotlist(self, fused: object) -> HotlistHit | None:
        if self.hot_track is None:
            return None
        return HotlistHit("STOLEN", None, "98A12345", "", "98A12345", "98A12345", 0.9, False, False)

    def stats(self) -> dict[str, int]:
        return {"reads": len(self.seen)}


def test_plates_on_confirmed_tracks_are_read_from_the_main_image_and_hits_told_once() -> None:
    reader = ReaderDouble(hot_track=1)
    hits: list[tuple[object, int, int]] = []
    main = np.zeros((1080, 1920, 3), np.uint8)
    results = {s: FrameDetections(s, s * FRAME_NS, tuple(RUNNER.get(s, ()))) for s in range(40)}
    stage = ViolationStage(
        results.get,
        Tracker(TrackerConfig(), utc_offset_ns=UTC0),
        FrameSignal(2.0),
        ViolationRules(RulesConfig(), Zones.from_config(ZONES)),
        reader=reader,
        on_hotlist=lambda hit, fused, tid, frame, crop: hits.append((hit, tid, frame.seq)),
        main_image=lambda f: main,
    )
    for seq in range(40):
        stage.process(frame(seq, "RED"))
    assert reader.seen, "no plate was read"
    assert {tid for tid, _, _ in reader.seen} == {1}
    assert all(seq % 2 == 0 and seq < 30 for _, seq, _ in reader.seen)  # only frames it is seen
    assert all(shape[2] == 3 and shape[1] > 40 for _, _, shape in reader.seen)  # RGB, margin
    assert len(hits) == 1  # once per track, however many reads follow
    assert stage.plate_read(1) == {"text": "98A-123.45", "reads": len(reader.seen)}
    assert stage.stats()["reader"]["reads"] == len(reader.seen)
