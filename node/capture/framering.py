"""`FrameRing`: the last N seconds of frames, for pre-event evidence.

Bounded in time (frames older than `seconds` before the newest are dropped) and in memory
(the oldest are dropped while the ring holds more than `max_bytes`), like picamera2's
CircularOutput2 keeps a time-bounded deque. Thread-safe: capture writes, evidence reads.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque

import numpy as np

from node.capture.frame import Frame, Image

KEEP_LORES = 2  # the newest frames keep their detection image (the console's live view)
NO_LORES: Image = np.zeros((0, 0, 3), np.uint8)


class FrameRing:
    """See the module docstring. Frames older than the newest `keep_lores` drop their lores
    (detection) image: evidence is made from the main stream, and 40 lores frames are 60 MB
    of a 1 GB board's memory."""

    def __init__(self, seconds: float, max_bytes: int, keep_lores: int = KEEP_LORES) -> None:
        if seconds <= 0 or max_bytes <= 0:
            raise ValueError("FrameRing: seconds and max_bytes must be positive")
        self.span_ns = int(seconds * 1e9)
        self.max_bytes = max_bytes
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self.keep_lores = keep_lores
        self._lock = threading.Lock()

    def push(self, frame: Frame) -> None:
        with self._lock:
            self._frames.append(frame)
            self._bytes += frame.nbytes
            k = self.keep_lores + 1
            if len(self._frames) >= k and self._frames[-k].lores.size:
                old = self._frames[-k]
                self._frames[-k] = dataclasses.replace(old, lores=NO_LORES)
                self._bytes -= old.lores.nbytes
            horizon = frame.mono_ns - self.span_ns
            while self._frames and (
                self._frames[0].mono_ns < horizon
                or (self._bytes > self.max_bytes and len(self._frames) > 1)
            ):
                self._bytes -= self._frames.popleft().nbytes

    def window(self, start_ns: int, end_ns: int) -> list[Frame]:
        """Frames with `start_ns <= mono_ns <= end_ns`, oldest first."""
        with self._lock:
            return [f for f in self._frames if start_ns <= f.mono_ns <= end_ns]

    def by_seq(self, first: int, last: int) -> list[Frame]:
        """Frames with `first <= seq <= last`, oldest first."""
        with self._lock:
            return [f for f in self._frames if first <= f.seq <= last]

    def latest(self) -> Frame | None:
        with self._lock:
            return self._frames[-1] if self._frames else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes
