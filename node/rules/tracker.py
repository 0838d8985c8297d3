"""Stable ids for plates across frames: Kalman prediction and ByteTrack-style association.

Each frame, every track's box is predicted to the frame's time. Detections are split by
score: sure ones (`high_score`) are matched first against confirmed and lost tracks, weak
ones (`low_score`..`high_score`) then extend confirmed tracks that are still unmatched, and
what is left is matched against tentative tracks (those with a speed the sure ones first,
those seen once the nearest, sure or weak); a sure detection that matches nothing starts a
tentative track, unless it nests with a box a track took this frame (the same plate found
twice: see `NESTED`); a weak one never does. A pairing is made by IoU
with the predicted box (greedy, best first) or, when the boxes do not overlap at all (a small
plate moving fast; not when a weak detection overlaps the prediction), by the distance
from the detection's centre to the path between the track's last box and its predicted one
(a plate moving away slows down in the picture: it is found short of the prediction),
within `centre_gate` plate sizes plus three standard deviations of the prediction, nearest
first, tracks matched in the previous frame before lost
ones (a cascade, as in DeepSORT: a lost track's prediction drifts and its gate widens, so it
would otherwise win a plate that a fresh track is following). A lost track that stood still
(`STILL`) is paired by overlap only: a plate seen again where it stood overlaps its box, and a
passing plate beside it is another vehicle.

A tentative track seen once does not know its speed yet, so its gate is as far as a plate
goes at `NEW_SPEED` plate sizes a second since it was seen (a motorbike near the camera at
80 km/h moves 8-9 plate sizes in a tenth of a second); such tracks are matched after the
tentative tracks that have a speed, and take the nearest box.

A tentative track is confirmed after `min_hits` matched frames and dropped the first frame
it misses, or the second if it was seen at least twice (it has a speed). A confirmed track
that misses a frame is `lost`, keeps being predicted, and ends after `max_missed` frames
without a match.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from node.config import TrackerConfig
from node.infer.decode import over_smaller
from node.infer.detector import Detection, FrameDetections
from node.rules.kalman import BoxFilters, box_sizes, xyxy_to_cxcywh

Box = tuple[float, float, float, float]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]
Pairs = list[tuple[int, int]]

TENTATIVE, CONFIRMED, LOST = "tentative", "confirmed", "lost"
MAX_SCALE_CHANGE = 2.0  # a centre-gated pairing may not change the plate size more than this
MAX_DT_S = 2.0  # a longer gap between frames is predicted as this long
NESTED = 0.8  # a new box this much inside (or around) a taken one is the same plate
NEW_SPEED = 110.0  # the centre gate of a track seen once: plate sizes a second since then
STILL = 2.0  # a track slower than this many plate sizes a second stands still


@dataclass(frozen=True, slots=True)
class Observation:
    """A track's detection in one frame (box in main-stream pixels)."""

    seq: int
    mono_ns: int
    utc_ns: int
    box: Box
    score: float


@dataclass(frozen=True)
class Track:
    """A snapshot of one track after a frame."""

    id: int
    state: str  # TENTATIVE, CONFIRMED or LOST
    history: tuple[Observation, ...]  # the last `history` matched detections, oldest first
    velocity: tuple[float, float]  # of the box centre, pixels per second
    box: Box  # the filter's estimate for this frame (a prediction when missed)
    hits: int  # frames matched in all
    missed: int  # frames missed since the last match

    @property
    def last(self) -> Observation:
        return self.history[-1]


@dataclass
class _Book:
    """What the tracker keeps per track besides its filter row."""

    id: int
    history: deque[Observation]
    state: str = TENTATIVE
    hits: int = 1
    missed: int = 0


def iou_matrix(a: Floats, b: Floats) -> Floats:
    """IoU of every box in `a` (T, 4) with every box in `b` (D, 4), as (T, D)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.asarray(np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0))


def greedy(score: Floats, allowed: npt.NDArray[np.bool_], best_high: bool = True) -> Pairs:
    """Pairs (row, col) taken best score first, each row and column at most once."""
    rows, cols = np.nonzero(allowed)
    order = np.argsort(-score[rows, cols] if best_high else score[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs: Pairs = []
    for r, c in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


class Tracker:
    """Turns each frame's detections into tracks with stable ids (see the module docstring)."""

    def __init__(self, cfg: TrackerConfig, utc_offset_ns: int | None = None) -> None:
        self.cfg = cfg
        self._kf = BoxFilters()
        self._books: list[_Book] = []
        self._ids = itertools.count(1)
        self._last_mono: int | None = None
        # for frames that come without a wall-clock time: utc = mono + offset
        self._utc_offset = (
            time.time_ns() - time.monotonic_ns() if utc_offset_ns is None else utc_offset_ns
        )
        self.counts = {
            "frames": 0,
            "created": 0,
            "confirmed": 0,
            "ended": 0,
            "untracked": 0,
            "nested": 0,
        }

    def update(self, frame: FrameDetections, utc_ns: int | None = None) -> list[Track]:
        """Feed one frame's detections; the tracks after it (tentative, confirmed and lost)."""
        self.counts["frames"] += 1
        dt = 0.0 if self._last_mono is None else (frame.mono_ns - self._last_mono) / 1e9
        self._last_mono = frame.mono_ns
        self._kf.predict(min(max(dt, 0.0), MAX_DT_S))
        utc = frame.mono_ns + self._utc_offset if utc_ns is None else utc_ns
        dets = [d for d in frame.detections if d.score >= self.cfg.low_score]
        matches, fresh = self._associate(dets)
        fresh = self._not_nested(fresh, dets, matches)
        rows = np.array([r for r, _ in matches], dtype=np.intp)
        self._kf.update(rows, np.array([dets[d].box for _, d in matches]).reshape(-1, 4))
        for r, d in matches:
            det = dets[d]
            self._books[r].history.append(
                Observation(frame.seq, frame.mono_ns, utc, det.box, det.score)
            )
        self._age([r for r, _ in matches])
        self._start([dets[d] for d in fresh], frame, utc)
        return self.tracks()

    def tracks(self) -> list[Track]:
        boxes, vel = self._kf.boxes(), self._kf.x[:, 4:6]
        return [
            Track(
                b.id,
                b.state,
                tuple(b.history),
                (float(vel[i, 0]), float(vel[i, 1])),
                (float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
                b.hits,
                b.missed,
            )
            for i, b in enumerate(self._books)
        ]

    def stats(self) -> dict[str, int]:
        live = {s: sum(b.state == s for b in self._books) for s in (TENTATIVE, CONFIRMED, LOST)}
        return {**self.counts, **{f"tracks_{state}": n for state, n in live.items()}}

    # --- association -----------------------------------------------------------------------

    def _associate(self, dets: list[Detection]) -> tuple[Pairs, list[int]]:
        """(track row, detection index) pairs, and the sure detections left unmatched."""
        cfg = self.cfg
        states = [b.state for b in self._books]
        high = [i for i, d in enumerate(dets) if d.score >= cfg.high_score]
        low = [i for i, d in enumerate(dets) if d.score < cfg.high_score]
        boxes = np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4)
        fed = [r for r, s in enumerate(states) if s != TENTATIVE]
        # a track whose prediction a weak detection overlaps well is left to the second
        # stage: the centre-distance fallback would give it a sure box beside its plate (a
        # false plate on the bumper below it, the next rider's) and the weak one is its own
        overlapped = self._overlapped(fed, low, boxes, cfg.low_match_iou)
        matches = self._match(fed, high, boxes, cfg.match_iou, overlapped)
        taken_r = {r for r, _ in matches}
        rest = [r for r in fed if r not in taken_r and states[r] == CONFIRMED]
        matches += self._match(rest, low, boxes, cfg.low_match_iou)
        taken_d = {d for _, d in matches}
        high_left = [d for d in high if d not in taken_d]
        new: Pairs = []
        # new tracks take weak detections too (a rider coming into view fast near the camera
        # is often found at 0.4-0.5: its track would start anew on each sure frame and never
        # be confirmed before it crossed a line). Tracks with a speed go first, sure boxes
        # before weak ones; then tracks seen once take the nearest box left, sure or weak:
        # with no speed, a sure box of the next rider coming into view beside it is no
        # likelier theirs than the weak one of their own plate
        stages = (
            (False, high, cfg.match_iou),
            (False, low, cfg.low_match_iou),
            (True, high + low, cfg.match_iou),
        )
        for once, stage, min_iou in stages:
            taken_r = {r for r, _ in new}
            tentative = [
                r
                for r, s in enumerate(states)
                if s == TENTATIVE and (self._books[r].hits == 1) == once and r not in taken_r
            ]
            left = [d for d in stage if d not in taken_d]
            got = self._match(tentative, left, boxes, min_iou)
            new += got
            taken_d |= {d for _, d in got}
        return matches + new, [d for d in high_left if d not in taken_d]

    def _not_nested(self, fresh: list[int], dets: list[Detection], matches: Pairs) -> list[int]:
        """The unmatched detections, less those nested with a box a track took this frame or
        with a surer one of them: a plate found twice (tight and with its surround, or one row
        of a two-row plate and the whole plate) would start a second track of the same
        vehicle. Two plates never nest."""
        taken = [dets[d].box for _, d in matches]
        keep: list[int] = []
        for d in sorted(fresh, key=lambda d: -dets[d].score):
            box = np.array([dets[d].box], dtype=np.float64)
            if taken and over_smaller(box, np.array(taken, dtype=np.float64)).max() > NESTED:
                self.counts["nested"] += 1
                continue
            taken.append(dets[d].box)
            keep.append(d)
        return keep

    def _overlapped(
        self, rows: list[int], cols: list[int], boxes: Floats, min_iou: float
    ) -> set[int]:
        """The track rows whose predicted box one of the detections `cols` overlaps by at
        least `min_iou`."""
        if not rows or not cols:
            return set()
        iou = iou_matrix(self._kf.boxes()[np.array(rows, dtype=np.intp)], boxes[cols])
        return {rows[i] for i in np.flatnonzero(iou.max(axis=1) >= min_iou)}

    def _match(
        self,
        rows: list[int],
        cols: list[int],
        boxes: Floats,
        min_iou: float,
        by_overlap_only: Collection[int] = (),
    ) -> Pairs:
        """Greedy by IoU with the predicted boxes, then by centre distance for the rest (not
        for the rows in `by_overlap_only`)."""
        if not rows or not cols:
            return []
        r, c = np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp)
        pred, det = self._kf.boxes()[r], boxes[c]
        iou = iou_matrix(pred, det)
        pairs = greedy(iou, iou >= min_iou)
        # the centre stage, tracks seen last frame first: a lost track's prediction has drifted
        # and its gate widened, so it would win a plate that a fresh track is following
        for fresh in (True, False):
            got_r, got_c = {p for p, _ in pairs}, {q for _, q in pairs}
            left = [
                i
                for i in range(len(r))
                if i not in got_r
                and (self._books[rows[i]].missed == 0) == fresh
                and rows[i] not in by_overlap_only
            ]
            if not fresh and left:
                # a lost track that stood still is matched by overlap only: a stopped
                # vehicle's plate seen again after a rider passed in front of it is where it
                # was; the rider's is not it
                speed = np.hypot(*self._kf.x[r[left], 4:6].T) / box_sizes(
                    xyxy_to_cxcywh(pred[left])
                )
                left = [i for i, moving in zip(left, speed >= STILL, strict=True) if moving]
            left_r = np.array(left, dtype=np.intp)
            left_c = np.array([j for j in range(len(c)) if j not in got_c], dtype=np.intp)
            if len(left_r) and len(left_c):
                ratio = self._gate_ratio(r[left_r], det[left_c])
                near = greedy(ratio, ratio <= 1.0, best_high=False)
                pairs += [(int(left_r[i]), int(left_c[j])) for i, j in near]
        return [(rows[i], cols[j]) for i, j in pairs]

    def _gate_ratio(self, rows: Ints, det: Floats) -> Floats:
        """Centre distance over the gate radius for each (track, detection); > 1 = outside.

        Pairs whose plate size differs by more than `MAX_SCALE_CHANGE` from the track's last
        detected box are outside. The last box, not the filter's prediction: a two-row plate
        boxed whole, then one row, has a prediction half a row high (the filter carries the
        shrinking on) that its next whole box would fail. (A lost plate coming nearer fast
        may outgrow its last box by 2x while it is lost: a new track then starts, and
        re-identification joins it to the vehicle.) The gate is in plate sizes of whichever of
        the two is larger."""
        pred = xyxy_to_cxcywh(self._kf.boxes()[rows])
        obs = xyxy_to_cxcywh(det)
        last = xyxy_to_cxcywh(np.array([self._books[i].history[-1].box for i in rows]))
        ls, ds = box_sizes(last), box_sizes(obs)
        ps = np.maximum(box_sizes(pred), ls)
        # the filter's uncertainty widens the gate for a track seen a while ago, but never past
        # twice the plain gate: a plate does not jump lanes, the gate would catch a neighbour
        base = self.cfg.centre_gate * ps
        radius = base + np.minimum(3.0 * self._kf.centre_sigma()[rows], base)
        first = np.array(
            [self._books[i].hits == 1 and self._books[i].state == TENTATIVE for i in rows],
            dtype=bool,
        )
        since = np.array([self._books[i].history[-1].mono_ns for i in rows], dtype=np.float64)
        elapsed = np.clip((self._last_mono or 0) - since, 0.0, MAX_DT_S * 1e9) / 1e9
        radius = np.where(first, np.maximum(radius, NEW_SPEED * elapsed * ps), radius)
        # distance to the path from the last box to the prediction: a plate moving away slows
        # down in the picture (its picture speed falls with the square of its distance), so
        # it is found short of a constant-velocity prediction, on that path
        a, b = last[:, None, :2], pred[:, None, :2]
        ab = b - a
        t = np.clip(
            np.sum((obs[None, :, :2] - a) * ab, axis=2) / np.maximum(np.sum(ab * ab, axis=2), 1e-9),
            0.0,
            1.0,
        )
        near = a + t[:, :, None] * ab
        dist = np.hypot(near[:, :, 0] - obs[None, :, 0], near[:, :, 1] - obs[None, :, 1])
        scale = ds[None, :] / ls[:, None]
        ok = (scale <= MAX_SCALE_CHANGE) & (scale >= 1.0 / MAX_SCALE_CHANGE)
        return np.asarray(np.where(ok, dist / radius[:, None], np.inf))

    # --- life cycle ------------------------------------------------------------------------

    def _age(self, matched: list[int]) -> None:
        """Count hits and misses; confirm, lose and end tracks."""
        hit = set(matched)
        keep = np.ones(len(self._books), dtype=bool)
        for r, b in enumerate(self._books):
            if r in hit:
                b.hits, b.missed = b.hits + 1, 0
                if b.state != CONFIRMED and b.hits >= self.cfg.min_hits:
                    self.counts["confirmed"] += b.state == TENTATIVE
                    b.state = CONFIRMED
            elif b.state == TENTATIVE:
                # seen twice (it has a speed), it may miss one frame: a weaving rider near the
                # camera, detected in its first two frames, missed in its third
                keep[r] = b.hits >= 2 and b.missed == 0
                b.missed += 1
            else:
                b.missed += 1
                b.state = LOST
                if b.missed > self.cfg.max_missed:
                    keep[r] = False
                    self.counts["ended"] += 1
        self._kf.keep(keep)
        self._books = [b for b, k in zip(self._books, keep.tolist(), strict=True) if k]

    def _start(self, dets: list[Detection], frame: FrameDetections, utc: int) -> None:
        room = max(0, self.cfg.max_tracks - len(self._books))
        self.counts["untracked"] += max(0, len(dets) - room)
        dets = sorted(dets, key=lambda d: -d.score)[:room]
        if not dets:
            return
        self._kf.add(np.array([d.box for d in dets], dtype=np.float64))
        for d in dets:
            obs = Observation(frame.seq, frame.mono_ns, utc, d.box, d.score)
            book = _Book(next(self._ids), deque([obs], maxlen=self.cfg.history))
            if self.cfg.min_hits <= 1:
                book.state = CONFIRMED
                self.counts["confirmed"] += 1
            self._books.append(book)
            self.counts["created"] += 1
