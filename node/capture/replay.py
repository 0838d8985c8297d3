"""`replay://PATH`: frames from a folder of images or from an MJPEG file, paced like a camera.

URL forms (the path is percent-decoded; `~` is expanded):

- `replay:///abs/dir` - an absolute path (three slashes).
- `replay://relative/dir` - a path relative to the process's working directory (for the
  service, the unit's `WorkingDirectory=`).
- Query keys: `fps=` (frames per second, default `capture.fps`; `0` = as fast as possible),
  `loop=1` (start again at the end instead of ending). Any other key is an error.

A folder replays its `.jpg/.jpeg/.png/.bmp` files (not hidden ones, not recursively) in
natural order (`frame2` before `frame10`). A file replays as MJPEG when it is named
`.mjpeg/.mjpg` or starts with a JPEG SOI marker (so a single `.jpg` file works too): it is
split into JPEG frames by walking their markers from SOI to EOI, read in chunks.

JPEG is decoded with simplejpeg (libjpeg-turbo), anything else with Pillow. A file or frame
that cannot be decoded is logged, counted (`bad_files`) and skipped.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import simplejpeg
from PIL import Image as PILImage

from node.capture.frame import ArrayRef, CaptureError, Frame, Image
from node.config import CaptureConfig

_log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
MJPEG_SUFFIXES = frozenset({".mjpeg", ".mjpg"})
SOI = b"\xff\xd8"
CHUNK_BYTES = 1 << 20
MAX_JPEG_BYTES = 64 << 20  # a frame larger than this is treated as corrupt (no EOI found)
_REBASE_LATE_S = 1.0  # further behind schedule than this: restart the schedule, don't burst

Item = tuple[str, int, bytes | Path]  # (file name, index, JPEG bytes or an image file)


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digit runs by value: frame2 < frame10."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in parts)


def parse_replay_url(url: str, default_fps: float) -> tuple[Path, float, bool]:
    """(path, fps, loop) from a replay URL; CaptureError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "replay":
        raise CaptureError(f"{url}: not a replay:// URL")
    raw = unquote(parts.netloc + parts.path)
    if not raw:
        raise CaptureError(f"{url}: no path (use replay:///abs/dir or replay://relative/dir)")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"fps", "loop"})
    if unknown:
        raise CaptureError(f"{url}: unknown query key {', '.join(unknown)} (known: fps, loop)")
    fps, loop = default_fps, False
    if "fps" in query:
        text = query["fps"][-1]
        try:
            fps = float(text)
        except ValueError:
            raise CaptureError(f"{url}: fps={text!r} is not a number") from None
        if not (0.0 <= fps <= 1000.0):
            raise CaptureError(f"{url}: fps={text} is out of range 0..1000 (0 = unpaced)")
    if "loop" in query:
        text = query["loop"][-1].lower()
        if text not in ("", "0", "1", "true", "false", "yes", "no"):
            raise CaptureError(f"{url}: loop={text!r} must be 0 or 1")
        loop = text in ("", "1", "true", "yes")
    path = Path(os.path.expanduser(raw))
    if not path.exists():
        raise CaptureError(f"{url}: no such file or folder: {path}")
    return path, fps, loop


def is_mjpeg_file(path: Path) -> bool:
    if path.suffix.lower() in MJPEG_SUFFIXES:
        return True
    with path.open("rb") as f:
        return f.read(2) == SOI


def list_images(folder: Path) -> list[Path]:
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: (natural_key(p.name), p.name))


class JpegScanner:
    """Finds where the JPEG starting at buf[0] ends, walking its markers (resumable).

    Segment lengths are skipped, so an EOI inside an APP segment (an EXIF thumbnail) does not
    end the frame; inside entropy-coded data FF00 (stuffing), RSTn and fill bytes are skipped.
    `feed` returns the end offset (just past EOI), None when more bytes are needed, or -1 when
    the data is not a valid marker sequence (the frame is corrupt).
    """

    def __init__(self) -> None:
        self.pos = 2  # just past SOI
        self.in_scan = False

    def feed(self, buf: bytearray) -> int | None:
        n, p = len(buf), self.pos
        while True:
            if self.in_scan:
                p = buf.find(b"\xff", p)
                if p < 0 or p + 1 >= n:
                    self.pos = n if p < 0 else p
                    return None
                m = buf[p + 1]
                if m == 0x00 or 0xD0 <= m <= 0xD7 or m == 0xFF:
                    p += 1 if m == 0xFF else 2
                    continue
                self.in_scan = False
            if p + 1 >= n:
                self.pos = p
                return None
            if buf[p] != 0xFF:
                return -1
            m = buf[p + 1]
            if m == 0xFF:  # fill byte before a marker
                p += 1
            elif m == 0xD9:
                return p + 2
            elif m == 0xD8:
                return -1  # a new SOI before this frame's EOI
            elif 0xD0 <= m <= 0xD7 or m == 0x01:
                p += 2
            elif p + 3 >= n:
                self.pos = p
                return None
            else:
                length = (buf[p + 2] << 8) | buf[p + 3]
                if length < 2:
                    return -1
                end = p + 2 + length
                if end > n:
                    self.pos = p
                    return None
                self.in_scan = m == 0xDA
                p = end


def split_mjpeg(f: BinaryIO, chunk: int = CHUNK_BYTES) -> Iterator[bytes | None]:
    """JPEG frames of an MJPEG stream, read `chunk` bytes at a time; None for a corrupt frame."""
    buf = bytearray()
    eof = False

    def fill() -> None:
        nonlocal eof
        data = f.read(chunk)
        eof = not data
        buf.extend(data)

    while True:
        start = buf.find(SOI)
        while start < 0 and not eof:
            del buf[: max(0, len(buf) - 1)]  # keep a trailing FF: it may begin an SOI
            fill()
            start = buf.find(SOI)
        if start < 0:
            return
        del buf[:start]
        scanner = JpegScanner()
        end = scanner.feed(buf)
        while end is None and not eof and len(buf) <= MAX_JPEG_BYTES:
            fill()
            end = scanner.feed(buf)
        if end is None or end < 0:
            yield None  # truncated, oversized or corrupt: resync at the next SOI
            del buf[:2]
            continue
        yield bytes(buf[:end])
        del buf[:end]


def decode_image(data: bytes | Path) -> Image:
    """An RGB image from JPEG bytes or an image file; raises on anything undecodable."""
    if isinstance(data, Path) and data.suffix.lower() in (".jpg", ".jpeg"):
        data = data.read_bytes()
    if isinstance(data, bytes):
        try:
            return np.ascontiguousarray(simplejpeg.decode_jpeg(data, colorspace="RGB"))
        except ValueError:
            if not data.startswith(SOI):  # not a JPEG after all: let Pillow try it
                return decode_with_pillow(data)
            raise
    return decode_with_pillow(data)


def decode_with_pillow(data: bytes | Path) -> Image:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    with PILImage.open(source) as im:
        im.load()
        return np.array(im.convert("RGB"), dtype=np.uint8)


def fit_within(width: int, height: int, max_w: int, max_h: int) -> tuple[int, int]:
    """Largest size with the same aspect ratio that fits in (max_w, max_h); never larger."""
    scale = min(max_w / width, max_h / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def make_lores(image: Image, max_w: int, max_h: int) -> Image:
    h, w = image.shape[:2]
    size = fit_within(w, h, max_w, max_h)
    if size == (w, h):
        return image
    # reducing_gap=1.0: box-reduce by the whole factor first, then bilinear the rest; about
    # 2x faster than plain bilinear at 1920x1080 -> 960x540, good enough for detection.
    small = PILImage.fromarray(image).resize(size, PILImage.Resampling.BILINEAR, reducing_gap=1.0)
    return np.array(small, dtype=np.uint8)


class ReplaySource:
    """A `FrameSource` replaying an image folder or an MJPEG file (see the module doc)."""

    def __init__(self, url: str, cfg: CaptureConfig) -> None:
        self._url = url
        self._cfg = cfg
        self._path, self._fps, self._loop = parse_replay_url(url, cfg.fps)
        self._stop: threading.Event | None = None
        self._items: Iterator[Item] | None = None
        self._file: BinaryIO | None = None
        self._seq = 0
        self._frames = 0
        self._bad = 0
        self._passes = 0
        self._good_in_pass = 0
        self._t0 = 0.0
        self._paced = 0

    @property
    def url(self) -> str:
        return self._url

    @property
    def fps(self) -> float:
        return self._fps

    def open(self, stop: threading.Event) -> None:
        try:
            if self._path.is_dir() and not list_images(self._path):
                raise CaptureError(f"{self._url}: no .jpg/.jpeg/.png/.bmp images in {self._path}")
            if not self._path.is_dir() and not is_mjpeg_file(self._path):
                raise CaptureError(f"{self._url}: {self._path} is neither a folder nor MJPEG")
            self._items = self._start_pass()
        except OSError as exc:
            raise CaptureError(f"{self._url}: cannot read {self._path}: {exc}") from exc
        self._stop = stop

    def read(self) -> Frame | None:
        stop = self._stop
        if stop is None or self._items is None:
            raise CaptureError(f"{self._url}: read() before open() or after close()")
        while not stop.is_set():
            try:
                item = next(self._items, None)
            except OSError as exc:
                raise CaptureError(f"{self._url}: cannot read {self._path}: {exc}") from exc
            if item is None:
                if not self._loop:
                    return None
                if self._good_in_pass == 0:
                    _log.warning("%s: no decodable frame in a whole pass; ending", self._url)
                    return None
                self._items = self._start_pass()
                continue
            name, index, data = item
            try:
                image = decode_image(data)
            except Exception as exc:
                self._bad += 1
                _log.warning("%s: skipping %s #%d: %s", self._url, name, index, exc)
                continue
            self._good_in_pass += 1
            lores = make_lores(image, self._cfg.lores_width, self._cfg.lores_height)
            if not self._wait_for_slot(stop):
                return None
            return self._frame(image, lores, name, index)
        return None

    def stats(self) -> dict[str, float | int | str]:
        return {
            "frames": self._frames,
            "bad_files": self._bad,
            "passes": self._passes,
            "fps": self._fps,
            "path": str(self._path),
        }

    def close(self) -> None:
        self._items = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def _start_pass(self) -> Iterator[Item]:
        self._passes += 1
        self._good_in_pass = 0
        if self._path.is_dir():
            paths = list_images(self._path)
            return ((p.name, i, p) for i, p in enumerate(paths))
        if self._file is not None:
            self._file.close()
        self._file = self._path.open("rb")
        return self._mjpeg_items(self._file)

    def _mjpeg_items(self, f: BinaryIO) -> Iterator[Item]:
        for index, jpeg in enumerate(split_mjpeg(f)):
            if jpeg is None:
                self._bad += 1
                _log.warning("%s: skipping corrupt frame #%d", self._url, index)
                continue
            yield self._path.name, index, jpeg

    def _wait_for_slot(self, stop: threading.Event) -> bool:
        """Wait until this frame's slot in the schedule; False when stop was set."""
        if self._fps <= 0:
            return not stop.is_set()
        period = 1.0 / self._fps
        now = time.monotonic()
        if self._paced == 0 or now - (self._t0 + self._paced * period) > _REBASE_LATE_S:
            self._t0, self._paced = now, 0
        due = self._t0 + self._paced * period
        self._paced += 1
        delay = due - now
        if delay > 0:
            return not stop.wait(delay)
        return not stop.is_set()

    def _frame(self, image: Image, lores: Image, name: str, index: int) -> Frame:
        self._seq += 1
        self._frames += 1
        meta: dict[str, float | int | str] = {"file": name, "index": index}
        return Frame(
            seq=self._seq,
            mono_ns=time.monotonic_ns(),
            utc_ns=time.time_ns(),
            lores=lores,
            main=ArrayRef(image),
            meta=meta,
        )
