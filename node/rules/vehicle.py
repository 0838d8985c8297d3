"""What the rules remember of one vehicle, and what a rule reports when it finds an offence.

A vehicle is one or more tracks (a track lost and found again is merged into the vehicle it
continues). Its samples are the tracks' detections as arrays: the plate box and score, the
plate's bottom-centre (the point the zones are drawn for), the lane that point is in and,
with a homography, its road-plane position. `place()` computes the geometry of all the new
samples of a frame, of every vehicle, in one go.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import numpy.typing as npt

from node.rules.kalman import box_sizes, xyxy_to_cxcywh
from node.rules.tracker import Observation
from node.rules.zones import Bools, Floats, Zones, plate_points

MEMORY = 256  # samples kept per vehicle
Int64s = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Samples:
    """A vehicle's samples, oldest first."""

    seq: Int64s
    mono_ns: Int64s
    utc_ns: Int64s
    boxes: Floats  # (N, 4) plate boxes, main-stream pixels
    scores: Floats
    points: Floats  # (N, 2) plate bottom-centres, pixels
    lanes: Int64s  # index into the zones' lanes; -1 = none
    road: Floats  # (N, 2) road-plane metres; NaN without a homography
    m_per_px: Floats  # road metres one pixel can move the point; NaN without a homography
    sides: Floats  # (N, S) signed pixel distance from each of the zones' segments
    in_area: Bools  # inside the homography's calibrated area (all True without one)

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def widths(self) -> Floats:
        return np.asarray(self.boxes[:, 2] - self.boxes[:, 0])

    @property
    def sizes(self) -> Floats:
        """The boxes' plate sizes as the tracker measures them (geometric-mean side, pixels)."""
        return box_sizes(xyxy_to_cxcywh(self.boxes))

    def seconds(self) -> Floats:
        """Sample times in seconds from the first sample."""
        return np.asarray((self.mono_ns - self.mono_ns[0]) / 1e9)

    def part(self, index: slice | npt.NDArray[np.intp]) -> Samples:
        return Samples(*(getattr(self, f.name)[index] for f in fields(self)))

    @classmethod
    def empty(cls) -> Samples:
        ints, floats = np.zeros(0, np.int64), np.zeros(0)
        return cls(ints, ints, ints, np.zeros((0, 4)), floats, np.zeros((0, 2)), ints,
                   np.zeros((0, 2)), floats, np.zeros((0, 0)), np.zeros(0, bool))  # fmt: skip

    def then(self, new: Samples, keep: int = MEMORY) -> Samples:
        """These samples followed by `new`, the newest `keep` of them."""
        if not len(self):
            return new.part(slice(-keep, None))
        joined = (
            np.concatenate([getattr(self, f.name), getattr(new, f.name)]) for f in fields(self)
        )
        return Samples(*(a[-keep:] for a in joined))


def place(zones: Zones, observations: list[Observation]) -> Samples:
    """Samples for `observations` (of any vehicles): plate points, lanes, road positions."""
    boxes = np.array([o.box for o in observations], dtype=np.float64).reshape(-1, 4)
    points = plate_points(boxes)
    road = np.full_like(points, np.nan)
    mpp = np.full(len(points), np.nan)
    if zones.homography is not None and len(points):
        road, mpp = zones.homography.to_world(points), zones.homography.metres_per_pixel(points)
    return Samples(
        np.array([o.seq for o in observations], dtype=np.int64),
        np.array([o.mono_ns for o in observations], dtype=np.int64),
        np.array([o.utc_ns for o in observations], dtype=np.int64),
        boxes,
        np.array([o.score for o in observations], dtype=np.float64),
        points,
        zones.lane_index(points),
        road,
        mpp,
        zones.sides(points),
        zones.in_area(points),
    )


@dataclass(frozen=True)
class Measured:
    """The figures behind a violation; None = not measured by this rule."""

    lane: str | None = None
    signal_phase: str | None = None
    signal_age_s: float | None = None
    speed_kmh: float | None = None
    speed_sigma_kmh: float | None = None
    limit_kmh: float | None = None
    method: str | None = None  # how the speed was measured: trap or homography
    distance_m: float | None = None
    distance_px: float | None = None
    frames: int | None = None  # samples the finding rests on

    def as_dict(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = round(value, 3) if isinstance(value, float) else value
        return out


@dataclass(frozen=True)
class Finding:
    """A rule's verdict: the offence happened at sample `at` (or between it and the one before)."""

    at: int
    mono_ns: int
    utc_ns: int
    measured: Measured
    confidence: float


@dataclass(eq=False)
class Vehicle:
    root: int  # the first track's id: the vehicle's id
    lane_names: tuple[str, ...]
    ids: set[int] = field(default_factory=set)
    samples: Samples = field(default_factory=Samples.empty)
    fired: set[str] = field(default_factory=set)
    judged: dict[str, int] = field(default_factory=dict)  # rule → last crossing seq judged
    velocity: tuple[float, float] = (0.0, 0.0)  # of the newest track, pixels per second
    ended_ns: int | None = None  # when its last track ended (None: still tracked)
    fed_by: int = -1  # the track whose plate it took last

    @property
    def last_seq(self) -> int:
        return int(self.samples.seq[-1]) if len(self.samples) else -1

    def lane_name(self, index: int) -> str | None:
        return self.lane_names[index] if index >= 0 else None


def interpolate(a: Samples, k: int, fraction: float) -> tuple[int, int]:
    """(mono_ns, utc_ns) `fraction` of the way from sample k to sample k + 1."""
    mono, utc = int(a.mono_ns[k]), int(a.utc_ns[k])
    mono += round(fraction * (int(a.mono_ns[k + 1]) - mono))
    utc += round(fraction * (int(a.utc_ns[k + 1]) - utc))
    return mono, utc


def support(scores: Floats, used: int, wanted: int) -> float:
    """Confidence from evidence: the mean plate score, scaled down when fewer than twice the
    minimum number of samples back the finding."""
    mean = float(np.clip(scores.mean(), 0.0, 1.0)) if len(scores) else 0.0
    return mean * min(1.0, used / max(1, 2 * wanted))
