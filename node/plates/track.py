"""Reading plates on tracks: `TrackReader` decides when a track is read, keeps its reads and
fuses them; `check_hotlist` turns a fused read into a hotlist hit.

Reading costs a few milliseconds per plate, so it runs on tracks, not on every detection: a
track is read at most once per `every_n_frames` frames, only while its plate crop is at least
`min_plate_px` wide, and at most `max_reads_per_track` times (by then the fused read is as
good as it gets). Tracks not seen for `idle_frames` frames are forgotten, the oldest first,
and never more than `max_tracks` are kept.

Thread-safe: the service may observe from its stage thread and ask `best` from another.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from node.plates.fusion import FusedRead, fuse
from node.plates.hotlist import Hotlist, HotlistHit

if TYPE_CHECKING:
    from node.config import ReaderConfig
    from node.infer.reader import PlateRead


class CropReader(Protocol):
    """What `TrackReader` needs of a reader (`node.infer.reader.PlateReader` is one)."""

    def read_crop(self, crop: npt.NDArray[np.uint8], seq: int = -1) -> PlateRead: ...


@dataclass
class _Track:
    last_read_seq: int = -(10**18)
    last_seen_seq: int = 0
    reads: list[PlateRead] = field(default_factory=list)
    fused: FusedRead | None = None


class TrackReader:
    """Reads each track's plate now and then and keeps one fused read per track."""

    def __init__(
        self,
        reader: CropReader,
        *,
        every_n_frames: int = 3,
        min_plate_px: int = 40,
        max_reads_per_track: int = 12,
        min_confidence: float = 0.8,
        hotlist: Hotlist | None = None,
        fuzzy_hotlist: bool = True,
        max_tracks: int = 512,
        idle_frames: int = 300,
    ) -> None:
        self.reader = reader
        self.every_n_frames = every_n_frames
        self.min_plate_px = min_plate_px
        self.max_reads_per_track = max_reads_per_track
        self.min_confidence = min_confidence
        self.hotlist = hotlist
        self.fuzzy_hotlist = fuzzy_hotlist
        self.max_tracks = max_tracks
        self.idle_frames = idle_frames
        self._tracks: OrderedDict[int, _Track] = OrderedDict()
        self._lock = threading.Lock()
        self.reads_made = 0
        self.read_failures = 0

    @classmethod
    def from_config(
        cls, reader: CropReader, cfg: ReaderConfig, hotlist: Hotlist | None = None
    ) -> TrackReader:
        return cls(
            reader,
            every_n_frames=cfg.every_n_frames,
            min_plate_px=cfg.min_plate_px,
            max_reads_per_track=cfg.max_reads_per_track,
            min_confidence=cfg.min_confidence,
            hotlist=hotlist,
            fuzzy_hotlist=cfg.fuzzy_hotlist,
        )

    def _due(self, track: _Track, seq: int, width: int) -> bool:
        return (
            width >= self.min_plate_px
            and len(track.reads) < self.max_reads_per_track
            and seq - track.last_read_seq >= self.every_n_frames
        )

    def wants(self, track_id: int, seq: int, width: int) -> bool:
        """Whether `observe` would read this track now (so the caller may skip cropping)."""
        with self._lock:
            track = self._tracks.get(track_id)
            return self._due(track or _Track(), seq, width)

    def observe(self, track_id: int, seq: int, crop_rgb: npt.NDArray[np.uint8]) -> None:
        """A plate crop (from `node.infer.reader.crop_plate`) of track `track_id` in frame
        `seq`; read only when the track is due (see the module's doc)."""
        with self._lock:
            track = self._tracks.get(track_id)
            if track is None:
                track = self._tracks[track_id] = _Track()
            track.last_seen_seq = max(track.last_seen_seq, seq)
            self._tracks.move_to_end(track_id)
            self._evict(seq)
            if crop_rgb.ndim < 2 or not self._due(track, seq, int(crop_rgb.shape[1])):
                return
            track.last_read_seq = seq
        try:
            read = self.reader.read_crop(crop_rgb, seq)
        except ValueError:  # a degenerate crop: nothing to read, the track goes on
            self.read_failures += 1
            return
        with self._lock:
            self.reads_made += 1
            track.reads.append(read)
            track.fused = fuse(track.reads)

    def _evict(self, seq: int) -> None:
        while self._tracks:
            oldest_id, oldest = next(iter(self._tracks.items()))
            if len(self._tracks) > self.max_tracks or seq - oldest.last_seen_seq > self.idle_frames:
                del self._tracks[oldest_id]
            else:
                break

    def best(self, track_id: int) -> FusedRead | None:
        """The track's fused read so far (None: not read yet, or nothing readable)."""
        with self._lock:
            track = self._tracks.get(track_id)
            return track.fused if track is not None else None

    def forget(self, track_id: int) -> None:
        with self._lock:
            self._tracks.pop(track_id, None)

    def check_hotlist(self, fused: FusedRead, now_utc_s: float | None = None) -> HotlistHit | None:
        """The hotlist hit for `fused` (None: no hotlist, or no match)."""
        return check_hotlist(
            self.hotlist,
            fused,
            self.min_confidence,
            self.fuzzy_hotlist,
            time.time() if now_utc_s is None else now_utc_s,
        )

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "tracks": len(self._tracks),
                "reads": self.reads_made,
                "read_failures": self.read_failures,
            }


def check_hotlist(
    hotlist: Hotlist | None,
    fused: FusedRead,
    min_confidence: float = 0.8,
    fuzzy: bool = True,
    now_utc_s: float | None = None,
) -> HotlistHit | None:
    """`fused` against `hotlist`: exact, or one character off when its confidence is below
    `min_confidence` (flagged fuzzy)."""
    if hotlist is None:
        return None
    return hotlist.match(
        fused.raw,
        fused.confidence,
        time.time() if now_utc_s is None else now_utc_s,
        min_confidence,
        fuzzy,
        fused.text,
    )


def load_hotlist(cfg: ReaderConfig) -> Hotlist | None:
    """The configured hotlist (None when `[reader] hotlist` is empty); HotlistError when it
    cannot be read (the caller keeps the hotlist it had)."""
    if not cfg.hotlist:
        return None
    return Hotlist.load(cfg.hotlist, cfg.hotlist_salt_file or None, hashed=cfg.hotlist_hashed)


def build_track_reader(cfg: ReaderConfig, hotlist: Hotlist | None = None) -> TrackReader | None:
    """A `TrackReader` over the configured reader model, or None when `[reader] enabled` is
    false. Raises `node.infer.runtime.ModelError` when the model is absent or refused (the
    service then runs without reading, with a warning, as it does without a detector)."""
    if not cfg.enabled:
        return None
    from node.infer.reader import DEFAULT_READER_MANIFEST, PlateReader

    reader = PlateReader(cfg.model or DEFAULT_READER_MANIFEST, num_threads=cfg.threads)
    return TrackReader.from_config(reader, cfg, hotlist)
