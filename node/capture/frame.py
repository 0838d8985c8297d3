"""What a frame source hands to the pipeline: `Frame`, and the `FrameSource` interface.

A frame carries two views of one instant: `lores` (the detection stream, an RGB array small
enough to run the detector on every frame) and `main` (the full-resolution evidence stream).
`main` is a `MainRef`: a camera or a replayed file hands over the array it already holds
(`ArrayRef`), while the simulator hands over a recipe that renders the full-resolution image
only when evidence asks for it, so the pre-event ring stays cheap. Once the stages are done
with a camera frame, the ring swaps its array for a `KeptRef`: what evidence uses of it (the
whole picture at context width as a JPEG, full-resolution windows around its plates).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import simplejpeg
from PIL import Image as PILImage

Image = npt.NDArray[np.uint8]
"""An RGB image, shape (height, width, 3), dtype uint8, C-contiguous."""


class CaptureError(Exception):
    """A frame source could not be opened or read; the message names the source."""


@runtime_checkable
class MainRef(Protocol):
    """A cheap reference to a full-resolution (main stream) image."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, 3) of the image `array()` returns."""
        ...

    @property
    def nbytes(self) -> int:
        """Memory this reference holds now (not what `array()` would allocate)."""
        ...

    def array(self) -> Image:
        """The full-resolution RGB image (may render or decode on demand)."""
        ...


@dataclass(frozen=True, slots=True)
class ArrayRef:
    """A main image that is already in memory."""

    image: Image

    @property
    def shape(self) -> tuple[int, int, int]:
        h, w, c = self.image.shape
        return (int(h), int(w), int(c))

    @property
    def nbytes(self) -> int:
        return int(self.image.nbytes)

    def array(self) -> Image:
        return self.image


Window = tuple[int, int, int, int]
"""An integer box (x0, y0, x1, y1) in main-stream pixels, x1 and y1 exclusive."""


@dataclass(frozen=True, slots=True)
class KeptRef:
    """A main image after the ring let the full frame go (`node.capture.framering`): the
    whole picture as a JPEG, `context_size` large once decoded (context frames and overviews
    are made at that width or smaller) and full-resolution `windows` around the plates the detector
    found in it (plate crops). A few hundred kB instead of 6 MB for 1920x1080."""

    full_shape: tuple[int, int, int]
    jpeg: bytes
    context_size: tuple[int, int]  # (width, height) of the JPEG
    windows: tuple[tuple[Window, Image], ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.full_shape

    @property
    def nbytes(self) -> int:
        return len(self.jpeg) + sum(int(px.nbytes) for _, px in self.windows)

    def context(self) -> Image:
        """The whole picture at `context_size` (the JPEG may hold the detection stream at
        its own, slightly different, aspect: brought to the main image's here)."""
        out: Image = simplejpeg.decode_jpeg(self.jpeg, colorspace="RGB")
        if (out.shape[1], out.shape[0]) != self.context_size:
            pic = PILImage.fromarray(out).resize(self.context_size, PILImage.Resampling.BOX)
            out = np.asarray(pic, dtype=np.uint8)
        return out

    def region(self, box: Window) -> Image | None:
        """Full-resolution pixels of `box`, or None when no window holds all of it."""
        x0, y0, x1, y1 = box
        for (wx0, wy0, wx1, wy1), px in self.windows:
            if wx0 <= x0 and wy0 <= y0 and x1 <= wx1 and y1 <= wy1:
                return np.ascontiguousarray(px[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0])
        return None

    def array(self) -> Image:
        """The picture at full size: the context image scaled up, the windows pasted in
        (sharp only inside them; `region` says where)."""
        h, w, _ = self.full_shape
        up = PILImage.fromarray(self.context()).resize((w, h), PILImage.Resampling.BILINEAR)
        out = np.array(up, dtype=np.uint8)
        for (x0, y0, x1, y1), px in self.windows:
            out[y0:y1, x0:x1] = px
        return out


def picture(ref: MainRef) -> Image:
    """The whole picture at the best resolution `ref` holds without scaling up: the full
    array, or a kept frame's context image."""
    return ref.context() if isinstance(ref, KeptRef) else ref.array()


@dataclass(frozen=True, slots=True)
class PlateTruth:
    """Ground truth for one plate in a simulated frame, in main-stream pixel coordinates."""

    vehicle_id: int
    text: str
    layout: str  # "car1" (one row), "car2" (two rows), "moto" (motorbike, two rows)
    color: str  # "white", "yellow", "blue", "red"
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in main pixels
    visible: float  # fraction of the plate not covered by a nearer vehicle, 0..1


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured instant. Crosses stage boundaries; never mutated."""

    seq: int
    mono_ns: int  # time.monotonic_ns() domain, for intervals
    utc_ns: int  # wall-clock UTC nanoseconds, for evidence
    lores: Image
    main: MainRef
    meta: dict[str, float | int | str] = field(default_factory=dict)
    truth: tuple[PlateTruth, ...] | None = None  # only simulated sources know the truth

    @property
    def lores_to_main(self) -> tuple[float, float]:
        """Scale factors (sx, sy) that map lores pixel coordinates to main pixel coordinates."""
        mh, mw, _ = self.main.shape
        lh, lw = self.lores.shape[:2]
        return (mw / lw, mh / lh)

    @property
    def nbytes(self) -> int:
        """Memory the frame holds (lores + main reference)."""
        return int(self.lores.nbytes) + self.main.nbytes


class FrameSource(Protocol):
    """A source of frames, chosen by URL (`picam://0`, `replay:///dir`, `sim://junction`).

    Lifecycle: `open(stop)` once, `read()` until it returns None (end of stream) or `stop` is
    set, then `close()`. `read()` paces itself (a camera by its sensor, replay and sim by their
    fps) and waits only on `stop`, so setting `stop` makes it return promptly.
    """

    @property
    def url(self) -> str: ...

    @property
    def fps(self) -> float:
        """Nominal frames per second (0 means as fast as possible)."""
        ...

    def open(self, stop: threading.Event) -> None: ...

    def read(self) -> Frame | None:
        """The next frame; None at end of stream or when `stop` is set.

        Raises CaptureError when the source failed and could not recover by itself.
        """
        ...

    def stats(self) -> dict[str, float | int | str]:
        """Source counters for status (e.g. reconnects, stalls)."""
        ...

    def close(self) -> None: ...
