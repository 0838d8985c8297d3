"""The violation stage: detections → tracks → rules → violation events, once per frame.

It runs after the detector stage in the same worker thread and reads that stage's result for
the frame (`detections(seq)`), so no frame's plates can reach the tracker out of order. The
signal input is asked for its state at the frame's time; a stale or missing signal only
disables the red-light rule (the rules say so in status). Each violation found is handed to
`sink(violation, frame)`, which must not drop it (the evidence path blocks rather than loses).

With a plate reader, each track whose fused read is on the hotlist is a hotlist hit, once per
track: it is kept (the last `ALERTS_KEPT`, as `HotlistAlert`: time, track, reason code, exact or
fuzzy, confidence; never the plate text) for the console, and handed to `on_hotlist`, which
makes the alert packet.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.capture.frame import Frame
from node.infer.detector import FrameDetections
from node.plates.hotlist import HotlistHit
from node.rules.signal import SignalInput
from node.rules.tracker import CONFIRMED, Track, Tracker
from node.rules.violations import Violation, ViolationRules

log = logging.getLogger(__name__)

Sink = Callable[[Violation, Frame], None]
# (hit, fused read, track id, frame, plate crop RGB): a wanted plate was read
HotlistSink = Callable[[Any, Any, int, Frame, Any], None]
ALERTS_KEPT = 50


@dataclass(frozen=True, slots=True)
class HotlistAlert:
    """A hotlist hit as the node keeps it for the console: when, which track, the entry's
    reason code, whether the read matched exactly or one character off (`fuzzy`), and the
    fused read's confidence. Deliberately no plate text and no image (those go to the central
    in the alert packet only)."""

    mono_ns: int  # the frame's monotonic time (for ages)
    utc_ns: int  # the frame's UTC time
    track_id: int
    reason: str
    fuzzy: bool
    confidence: float

    @property
    def match(self) -> str:
        return "fuzzy" if self.fuzzy else "exact"

    @classmethod
    def of(cls, hit: HotlistHit, track_id: int, frame: Frame) -> HotlistAlert:
        """From a hotlist hit (it carries the fused read's confidence)."""
        return cls(frame.mono_ns, frame.utc_ns, track_id, hit.reason, hit.fuzzy, hit.confidence)


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
        reader: Any = None,
        on_hotlist: HotlistSink | None = None,
        main_image: Callable[[Frame], Any] | None = None,
        release: Callable[[int, list[Any]], None] | None = None,
    ) -> None:
        """`reader`: a `node.plates.track.TrackReader` (plates read on confirmed tracks);
        `on_hotlist` is told once per track when its fused read is on the hotlist (the hit is
        kept for `alerts` with or without it);
        `main_image(frame)` gives the frame's main image (default `frame.main.array()`);
        `release(seq, boxes)` is told when a frame is done with, with its plate boxes (the
        frame ring then keeps only what evidence needs of it: `FrameRing.release`)."""
        self._release = release
        self.reader, self.on_hotlist = reader, on_hotlist
        self._main_image = main_image or (lambda f: f.main.array())
        self._alerted: set[int] = set()
        self.read_errors = 0
        self._detections = detections
        self.tracker, self.signal, self.rules = tracker, signal, rules
        self._sink = sink
        self.recent: deque[Violation] = deque(maxlen=keep)
        self.found = 0
        self.recent_alerts: deque[HotlistAlert] = deque(maxlen=ALERTS_KEPT)
        self.alerts_found = 0
        self.missing_detections = 0
        self._lock = threading.Lock()

    def process(self, frame: Frame) -> None:
        found = self._detections(frame.seq)
        if found is None:  # the detector failed on this frame: the tracker sees a miss
            self.missing_detections += 1
            found = FrameDetections(frame.seq, frame.mono_ns, ())
        try:
            self._process(frame, found)
        finally:
            if self._release is not None:
                self._release(frame.seq, [d.box for d in found.detections])

    def _process(self, frame: Frame, found: FrameDetections) -> None:
        self.signal.observe(frame)
        state = self.signal.current(frame.mono_ns)
        tracks = self.tracker.update(found, frame.utc_ns)
        if self.reader is not None:
            self._read_plates(tracks, frame)
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

    def _read_plates(self, tracks: list[Track], frame: Frame) -> None:
        """Read the plates of confirmed tracks seen in this frame (the reader decides which
        are due: every few frames, big enough, not read too often already)."""
        from node.infer.reader import crop_plate

        image = None
        for t in tracks:
            if t.state != CONFIRMED or t.history[-1].seq != frame.seq:
                continue
            box = t.history[-1].box
            if not self.reader.wants(t.id, frame.seq, int(box[2] - box[0])):
                continue
            try:
                image = self._main_image(frame) if image is None else image
                crop = crop_plate(image, box)
                self.reader.observe(t.id, frame.seq, crop)
            except (ValueError, OSError) as e:  # a box off the picture, a broken frame
                self.read_errors += 1
                log.debug("plate read of track %d failed: %s", t.id, e)
                continue
            fused = self.reader.best(t.id)
            if fused is None or t.id in self._alerted:
                continue
            hit = self.reader.check_hotlist(fused)
            if hit is not None:
                self._alerted.add(t.id)
                log.warning("hotlist hit on track %d", t.id)  # no plate text in the log
                with self._lock:
                    self.recent_alerts.append(HotlistAlert.of(hit, t.id, frame))
                    self.alerts_found += 1
                if self.on_hotlist is not None:
                    self.on_hotlist(hit, fused, t.id, frame, crop)

    def plate_read(self, track_id: int) -> dict[str, Any] | None:
        """The fused read of a track, for its evidence packet (None: not read)."""
        if self.reader is None:
            return None
        fused = self.reader.best(track_id)
        return None if fused is None else dict(fused.as_dict(per_frame=True))

    def last(self, n: int) -> list[Violation]:
        with self._lock:
            return list(self.recent)[-n:]

    def alerts(self, n: int) -> list[HotlistAlert]:
        """The last `n` hotlist hits kept (at most `ALERTS_KEPT`), newest first."""
        with self._lock:
            return list(self.recent_alerts)[::-1][:n] if n > 0 else []

    def stats(self) -> dict[str, Any]:
        return {
            "tracker": self.tracker.stats(),
            "signal": self.signal.stats(),
            "rules": self.rules.status(),
            "violations": self.found,
            "hotlist_alerts": self.alerts_found,
            "frames_without_detections": self.missing_detections,
            "reader": (
                {"state": "running", **self.reader.stats(), "errors": self.read_errors}
                if self.reader is not None
                else {"state": "off"}
            ),
        }
