"""The violation stage: detections → tracks → rules → violation events, once per frame.

It runs after the detector stage in the same worker thread and reads that stage's result for
the frame (`detections(seq)`), so no frame's plates can reach the tracker out of order. The
signal input is asked for its state at the frame's time; a stale or missing signal only
disables the red-light rule (the rules say so in status). Each violation found is handed to
`sink(violation, frame)`, which must not drop it (the evidence path blocks rather than loses).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from node.capture.frame import Frame
from node.infer.detector import FrameDetections
from node.rules.signal import SignalInput
from node.rules.tracker import Tracker
from node.rules.violations import Violation, ViolationRules

log = logging.getLogger(__name__)

Sink = Callable[[Violation, Frame], None]


class ViolationStage:
    """Pipeline stage: track the frame's plates and judge the rules (see the module docstring)."""

    name = "rules"

    def __init__(
        self,
        detections: Callable[[int], FrameDetections | None],
        tracker: Tracker,
        signal: SignalInput,
        rules: ViolationRules,
        sink: Sink | None = None,
        keep: int = 32,
    ) -> None:
        self._detections = detections
        self.tracker, self.signal, self.rules = tracker, signal, rules
        self._sink = sink
        self.recent: deque[Violation] = deque(maxlen=keep)
        self.found = 0
        self.missing_detections = 0
        self._lock = threading.Lock()

    def process(self, frame: Frame) -> None:
        found = self._detections(frame.seq)
        if found is None:  # the detector failed on this frame: the tracker sees a miss
            self.missing_detections += 1
            found = FrameDetections(frame.seq, frame.mono_ns, ())
        self.signal.observe(frame)
        state = self.signal.current(frame.mono_ns)
        tracks = self.tracker.update(found, frame.utc_ns)
        for v in self.rules.update(tracks, frame, state):
            log.info(
                "violation %s: %s, vehicle %d, confidence %.2f",
                v.id,
                v.rule,
                v.track_id,
                v.confidence,
            )
            with self._lock:
                self.recent.append(v)
                self.found += 1
            if self._sink is not None:
                self._sink(v, frame)

    def last(self, n: int) -> list[Violation]:
        with self._lock:
            return list(self.recent)[-n:]

    def stats(self) -> dict[str, Any]:
        return {
            "tracker": self.tracker.stats(),
            "signal": self.signal.stats(),
            "rules": self.rules.status(),
            "violations": self.found,
            "frames_without_detections": self.missing_detections,
        }
