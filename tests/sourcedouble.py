"""A test double for `FrameSource`: numbered solid-colour frames at a set pace."""

from __future__ import annotations

import threading
import time

import numpy as np

from node.capture.frame import ArrayRef, Frame


class CountingSource:
    """Honours the FrameSource interface; frame `seq` has every lores pixel == seq % 256.

    `stall_after`: stop delivering frames after that many (read() then waits for stop),
    like a camera that hangs. `limit`: end of stream after that many frames.
    """

    def __init__(
        self,
        fps: float = 100.0,
        size: tuple[int, int] = (64, 48),
        limit: int | None = None,
        stall_after: int | None = None,
    ) -> None:
        self._fps = fps
        self.size = size
        self.limit = limit
        self.stall_after = stall_after
        self.seq = 0
        self.opened = self.closed = False
        self._stop = threading.Event()
        self._next = 0.0

    @property
    def url(self) -> str:
        return "double://counting"

    @property
    def fps(self) -> float:
        return self._fps

    def open(self, stop: threading.Event) -> None:
        self._stop = stop
        self.opened = True
        self._next = time.monotonic()

    def read(self) -> Frame | None:
        if self.limit is not None and self.seq >= self.limit:
            return None
        if self.stall_after is not None and self.seq >= self.stall_after:
            self._stop.wait()
            return None
        if self._fps > 0:
            self._next += 1.0 / self._fps
            if self._stop.wait(max(0.0, self._next - time.monotonic())):
                return None
        w, h = self.size
        lores = np.full((h, w, 3), self.seq % 256, np.uint8)
        main = np.full((h * 2, w * 2, 3), self.seq % 256, np.uint8)
        frame = Frame(self.seq, time.monotonic_ns(), time.time_ns(), lores, ArrayRef(main))
        self.seq += 1
        return frame

    def stats(self) -> dict[str, float | int | str]:
        return {"delivered": self.seq}

    def close(self) -> None:
        self.closed = True


class SlowStage:
    """A stage that takes `seconds` per frame and remembers which frames it saw."""

    def __init__(self, seconds: float, name: str = "slow") -> None:
        self.seconds = seconds
        self._name = name
        self.seen: list[int] = []

    @property
    def name(self) -> str:
        return self._name

    def process(self, frame: Frame) -> None:
        time.sleep(self.seconds)
        self.seen.append(frame.seq)
