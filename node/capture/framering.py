"""`FrameRing`: the last N seconds of frames, for pre-event evidence.

Bounded in time (frames older than `seconds` before the newest are dropped) and in memory
(the oldest are dropped while the ring holds more than `max_bytes`), like picamera2's
CircularOutput2 keeps a time-bounded deque. Thread-safe: capture writes, evidence reads.

What a frame costs the ring. A camera frame carries its 1920x1080 main image as an array
(6.2 MB as RGB): 4 s at 10 frames/s would be 250 MB of a 1 GB board. Evidence uses only two
things of an older frame: the whole picture at context width (960 px: context frames and the
overview are made at that width or smaller) and full-resolution pixels around the plates
(the plate crop). So once the stages are done with a frame (`release`, called by the rules
stage with the frame's plate boxes), `slim` swaps its main array for a `KeptRef`: the
picture at `context_width` as a JPEG (quality `CONTEXT_QUALITY`, ~0.1-0.2 MB) and the
full-resolution windows around those boxes (`window_margin` plate sizes each side). A camera
frame the stages never reach (dropped from a full queue: `drop`) leaves the ring at once: it
has no plate boxes, and the processed frames around it serve as context pictures. As a guard
against a stuck stage, a frame neither released nor dropped is slimmed, without windows, once
`keep_full` newer frames have arrived. `slim` runs in the capture thread after it has
handed the new frame to the detector (a camera thread otherwise waits for the sensor), and
encodes outside the lock.

A main that is already cheap (the simulator's, rendered on demand, or an array under
`SLIM_FROM_BYTES`) is kept as it is. Every
frame older than the newest `keep_lores` also drops its lores (detection) image: evidence is
made from the main stream, and 40 lores frames are 60 MB.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np
import simplejpeg
from PIL import Image as PILImage

from node.capture.frame import ArrayRef, Frame, Image, KeptRef, Window

log = logging.getLogger(__name__)

KEEP_LORES = 1  # the newest frame keeps its detection image and main (the console's live view)
KEEP_FULL = 8  # guard: a frame never released nor dropped is slimmed after this many newer ones
# (the service adds the detection queue's length: a frame waiting there is not slimmed)
CONTEXT_WIDTH = 960
CONTEXT_QUALITY = 90  # packets re-encode context frames at 70 and below: little is lost
WINDOW_MARGIN = 0.75  # plate sizes each side (packets crop evidence.plate_margin, 0.5)
MIN_WINDOW_MARGIN_PX = 12
SLIM_FROM_BYTES = 1 << 20  # a main array smaller than this is kept as it is
NO_LORES: Image = np.zeros((0, 0, 3), np.uint8)

Box = Sequence[float]


def windows_of(boxes: Iterable[Box], margin: float, shape: tuple[int, ...]) -> list[Window]:
    """Integer windows around `boxes` (main pixels): `margin` box sizes each side, at least
    `MIN_WINDOW_MARGIN_PX`, clipped to an image of `shape`."""
    h, w = shape[:2]
    out = []
    for box in boxes:
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        mx = max(MIN_WINDOW_MARGIN_PX, margin * (x1 - x0))
        my = max(MIN_WINDOW_MARGIN_PX, margin * (y1 - y0))
        wx0, wy0 = max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my)))
        wx1, wy1 = min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my)))
        if wx1 > wx0 and wy1 > wy0:
            out.append((wx0, wy0, wx1, wy1))
    return out


def keep(
    image: Image,
    windows: Sequence[Window],
    width: int = CONTEXT_WIDTH,
    quality: int = CONTEXT_QUALITY,
    lores: Image | None = None,
) -> KeptRef:
    """What the ring keeps of a full `image`: the picture `width` wide (never wider than it
    is) as a JPEG, and copies of its `windows`. A `lores` image (the frame's detection
    stream) exactly `width` wide and within 2 % of the main image's aspect stands in for
    scaling `image` down: the camera's ISP made it from the same picture, for free; it is
    encoded as it is, and `KeptRef.context` brings it to the main image's aspect when a packet
    asks (rarely), not on every frame."""
    h, w = image.shape[:2]
    small = image
    size = (min(width, w), max(1, round(h * min(width, w) / w)))
    if width < w:
        if (
            lores is not None
            and lores.ndim == 3
            and lores.shape[1] == width
            and abs(lores.shape[0] - size[1]) <= 0.02 * size[1]
        ):
            small = lores
        else:
            pic = PILImage.fromarray(image)
            if w // width >= 2:  # an integer box average first: 3x faster than resizing
                pic = pic.reduce(w // width)
            if pic.size != size:
                pic = pic.resize(size, PILImage.Resampling.BOX)
            small = np.asarray(pic)
    jpeg = simplejpeg.encode_jpeg(
        np.ascontiguousarray(small), quality=quality, colorspace="RGB", colorsubsampling="420"
    )
    kept = tuple(
        (win, np.ascontiguousarray(image[win[1] : win[3], win[0] : win[2]])) for win in windows
    )
    return KeptRef((int(h), int(w), 3), bytes(jpeg), size, kept)


def _heavy(frame: Frame) -> bool:
    """The frame's main is a big array the ring slims once the stages are done with it."""
    return isinstance(frame.main, ArrayRef) and frame.main.nbytes >= SLIM_FROM_BYTES


class FrameRing:
    """See the module docstring."""

    def __init__(
        self,
        seconds: float,
        max_bytes: int,
        keep_lores: int = KEEP_LORES,
        keep_full: int = KEEP_FULL,
        context_width: int = CONTEXT_WIDTH,
        window_margin: float = WINDOW_MARGIN,
    ) -> None:
        if seconds <= 0 or max_bytes <= 0:
            raise ValueError("FrameRing: seconds and max_bytes must be positive")
        self.span_ns = int(seconds * 1e9)
        self.max_bytes = max_bytes
        self.keep_lores = keep_lores
        self.keep_full = max(keep_full, keep_lores)
        self.context_width = context_width
        self.window_margin = window_margin
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self._released = -1  # frames up to this seq are done with (stages go in order)
        self._boxes: dict[int, list[Box]] = {}  # plate boxes of released heavy frames
        self._busy: set[int] = set()  # frames being slimmed now
        self._failed: set[int] = set()  # frames that could not be slimmed (kept whole)
        self.kept = 0  # frames swapped for a KeptRef
        self.dropped = 0  # heavy frames the detection queue dropped, let go at once
        self.errors = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def push(self, frame: Frame) -> None:
        """Keep `frame` (cheap: the slimming is `slim`'s)."""
        with self._lock:
            if self._frames and frame.seq <= self._frames[-1].seq:  # the source started over
                self._released, self._boxes = -1, {}
            self._frames.append(frame)
            self._bytes += frame.nbytes
            self._evict(frame.mono_ns - self.span_ns)
            self._drop_lores()

    def slim(self) -> int:
        """Swap the main array of every frame that is due for a `KeptRef` (JPEG encoding,
        outside the lock); the capture thread calls it after handing the frame on. A frame
        that cannot be slimmed (no memory, an encoder error) is counted and kept whole until
        it ages out; this never raises. Returns how many frames were slimmed."""
        with self._lock:
            todo = self._due()
        done = 0
        for old, boxes in todo:
            try:
                main = old.main
                assert isinstance(main, ArrayRef)
                wins = windows_of(boxes, self.window_margin, main.shape)
                kept = keep(main.image, wins, self.context_width, lores=old.lores)
                slim = dataclasses.replace(old, main=kept, lores=NO_LORES)
            except Exception as e:  # the frame stays whole; evidence still has it
                with self._lock:
                    self._busy.discard(old.seq)
                    self._failed.add(old.seq)
                    self.errors += 1
                    self.last_error = f"frame {old.seq}: {type(e).__name__}: {e}"
                if self.errors <= 3 or self.errors % 100 == 0:
                    log.error("frame ring: cannot slim frame %d: %s", old.seq, e)
                continue
            with self._lock:
                self._busy.discard(old.seq)
                done += self._swap(old, slim)
        return done

    def release(self, seq: int, boxes: Iterable[Box] = ()) -> None:
        """The stages are done with frame `seq` (and with every earlier one: frames are
        processed in order); `boxes` are its plates in main pixels, kept sharp."""
        with self._lock:
            self._released = max(self._released, seq)
            if any(f.seq == seq and _heavy(f) for f in reversed(self._frames)):
                self._boxes[seq] = list(boxes)

    def drop(self, seq: int) -> None:
        """Frame `seq` will never reach the stages (the detection queue dropped it). A heavy
        one leaves the ring at once: it has no plate boxes, so evidence would use it only as
        a context picture, and the processed frames around it serve for that (a packet takes
        the nearest kept frame); slimming it would cost a JPEG encoding per dropped frame
        exactly when the machine is too busy. A cheap one (the sim's) stays. Not cumulative:
        an older frame may still be with the stages."""
        with self._lock:
            for i in range(len(self._frames) - 1, -1, -1):
                f = self._frames[i]
                if f.seq == seq:
                    if _heavy(f) and seq not in self._busy:
                        del self._frames[i]
                        self._bytes -= f.nbytes
                        self.dropped += 1
                    return
                if f.seq < seq:
                    return

    def status(self) -> dict[str, int | str | None]:
        with self._lock:
            return {
                "frames": len(self._frames),
                "bytes": self._bytes,
                "kept": self.kept,
                "dropped": self.dropped,
                "slim_errors": self.errors,
                "last_error": self.last_error,
            }

    def _due(self) -> list[tuple[Frame, list[Box]]]:
        """Frames whose full main can go now, with their plate boxes (lock held). An
        unreleased frame goes after `keep_full` newer ones only as a guard (a stuck stage)."""
        out = []
        n = len(self._frames)
        for i, f in enumerate(self._frames):
            if i >= n - self.keep_lores:
                break
            if not _heavy(f) or f.seq in self._busy or f.seq in self._failed:
                continue
            if f.seq <= self._released or i < n - self.keep_full:
                out.append((f, self._boxes.pop(f.seq, [])))
                self._busy.add(f.seq)
        if self._frames:  # forget what is older than the ring
            oldest = self._frames[0].seq
            if self._failed and min(self._failed) < oldest:
                self._failed.difference_update([s for s in self._failed if s < oldest])
            if self._boxes and min(self._boxes) < oldest:
                self._boxes = {s: b for s, b in self._boxes.items() if s >= oldest}
        return out

    def _drop_lores(self) -> None:
        """Frames past the newest `keep_lores` whose main is cheap give up their lores."""
        k = self.keep_lores + 1
        if len(self._frames) >= k:
            old = self._frames[-k]
            if old.lores.size and not _heavy(old):
                self._frames[-k] = dataclasses.replace(old, lores=NO_LORES)
                self._bytes -= old.lores.nbytes

    def _evict(self, horizon: int) -> None:
        while self._frames and (
            self._frames[0].mono_ns < horizon
            or (self._bytes > self.max_bytes and len(self._frames) > 1)
        ):
            self._bytes -= self._frames.popleft().nbytes

    def _swap(self, old: Frame, slim: Frame) -> int:
        for i, f in enumerate(self._frames):
            if f is old:
                self._frames[i] = slim
                self._bytes += slim.nbytes - old.nbytes
                self.kept += 1
                return 1
        return 0  # aged out while it was being slimmed

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
