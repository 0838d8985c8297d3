"""Violations from tracks: the four rules, once per vehicle each, with their evidence.

`ViolationRules.update(tracks, frame, signal_state)` is called once per frame after the
tracker. Confirmed tracks become vehicles; a new track that starts within `reid_window_s` of
where a vanished vehicle was heading (within `reid_gate` plate sizes of its predicted
position) continues that vehicle, so a plate lost behind a bus is not a second offender; so
does a new track that took over a vehicle's plate in the frames they share and went on where
that vehicle was heading (the tracker gave the whole plate to a new track while the old one
held one row of it).
Each rule fires at most once per vehicle, and none before one of the vehicle's plate boxes
was `min_plate_size_px` big (a track on a 16 x 3 px sliver of a rider's neck crossed a lane
line).
Confidence is the mean plate score of the samples a finding rests on, scaled down when fewer
than twice the rule's minimum back it (and, for speed, by how unsure the measurement is).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from node.capture.frame import Frame
from node.config import RulesConfig
from node.rules.crossrules import RedLightRule, SolidLineRule
from node.rules.motionrules import SpeedingRule, WrongWayRule
from node.rules.signal import SignalLog, SignalState
from node.rules.tracker import CONFIRMED, NESTED, Observation, Track
from node.rules.vehicle import Finding, Measured, Samples, Vehicle, place
from node.rules.zones import Box, Floats, Zones, plate_points

REID_SPEED_SAMPLES = 5  # a vanished vehicle's road speed: over its last samples
DUPLICATE_GATE = 2.0  # a repeat offence this near (x reid_gate) is the same vehicle again
# two tracks whose plate boxes overlap by this much of the smaller one, in this many shared
# frames, follow one plate
TWIN_OVERLAP = 0.5
TWIN_FRAMES = 2
NAMESPACE = uuid.UUID("5b0d7d64-3f0e-4a53-9a4c-2f7f1d1c9e10")


@dataclass(frozen=True)
class Violation:
    """One offence by one vehicle, with what evidence needs to prove it."""

    id: str  # uuid5 of rule, vehicle and time: the same offence always gets the same id
    rule: str  # red_light, solid_line, wrong_way, speeding
    track_id: int  # the vehicle's id (its first track's)
    plate_boxes: tuple[tuple[int, Box], ...]  # (seq, plate box in main pixels), oldest first
    utc_ns: int  # when the offence happened (interpolated between frames)
    mono_ns: int
    seq_before: int  # keep frames seq_before..seq_after from the ring; seq_at shows it
    seq_at: int
    seq_after: int
    measured: Measured
    confidence: float  # 0..1


class Rule(Protocol):
    name: str
    counts: dict[str, int]  # what the rule saw that was not an offence, by reason

    def inactive(self) -> str | None: ...

    def check(self, v: Vehicle) -> Finding | None: ...


class ViolationRules:
    """The rules of one camera (see the module docstring)."""

    def __init__(self, cfg: RulesConfig, zones: Zones) -> None:
        self.cfg, self.zones = cfg, zones
        self.signal_log = SignalLog()
        self.red_light = RedLightRule(cfg.red_light, zones, self.signal_log)
        self.rules: list[Rule] = [
            self.red_light,
            SolidLineRule(cfg.solid_line, zones),
            WrongWayRule(cfg.wrong_way, zones),
            SpeedingRule(cfg.speeding, zones),
        ]
        self.active = [r for r in self.rules if r.inactive() is None]
        self.vehicles: dict[int, Vehicle] = {}  # by track id (several ids may share one)
        self.counts = {r.name: 0 for r in self.rules}
        self.merged = 0
        self.duplicates = 0  # violations dropped as the same offence again
        self._signal: SignalState | None = None

    def update(self, tracks: list[Track], frame: Frame, signal: SignalState) -> list[Violation]:
        """Feed one frame's tracks; the violations found in it."""
        self._signal = signal
        self.signal_log.add(frame.mono_ns, signal)
        live = {t.id for t in tracks}
        matched = {t.id for t in tracks if t.state == CONFIRMED}
        for v in set(self.vehicles.values()):
            if v.ended_ns is None and not v.ids & live:
                v.ended_ns = frame.mono_ns
        # two tracks of one vehicle fed in one frame give it one sample: the track that fed
        # it before keeps it (the other may be a lost track come back on another plate)
        feeds: dict[int, tuple[Vehicle, Track]] = {}
        for t in tracks:
            if t.state != CONFIRMED:
                continue
            v = self.vehicles.get(t.id) or self._vehicle_for(t, matched)
            if id(v) not in feeds or t.id == v.fed_by:
                feeds[id(v)] = (v, t)
        news: list[tuple[Vehicle, list[Observation]]] = []
        for v, t in feeds.values():
            v.fed_by = t.id
            v.velocity = t.velocity
            v.ended_ns = None
            last = v.last_seq
            if new := [o for o in t.history if o.seq > last]:
                news.append((v, new))
        placed = place(self.zones, [o for _, new in news for o in new])
        start = 0
        for v, new in news:
            v.samples = v.samples.then(placed.part(slice(start, start + len(new))))
            start += len(new)
        found = [x for v, _ in news for x in self._judge(v)]
        self._forget(frame.mono_ns)
        return found

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for r in self.rules:
            reason = r.inactive()
            if reason is None and r is self.red_light and self._signal_reason():
                reason = self._signal_reason()
            out[r.name] = "active" if reason is None else f"inactive: {reason}"
        out["violations"] = dict(self.counts)
        out["vehicles"] = len(set(self.vehicles.values()))
        out["merged_tracks"] = self.merged
        out["duplicates_dropped"] = self.duplicates
        out["rule_counts"] = {r.name: dict(r.counts) for r in self.rules}
        return out

    def _signal_reason(self) -> str | None:
        s = self._signal
        if s is None:
            return "no signal state yet"
        return None if s.known else s.reason or "signal phase unknown"

    # --- vehicles --------------------------------------------------------------------------

    def _vehicle_for(self, t: Track, matched: set[int]) -> Vehicle:
        """The vanished vehicle this new track continues, or a new vehicle."""
        v = self._reidentify(t, matched)
        if v is None:
            v = Vehicle(t.id, tuple(lane.name for lane in self.zones.lanes))
        else:
            self.merged += 1
        v.ids.add(t.id)
        self.vehicles[t.id] = v
        return v

    def _reidentify(self, t: Track, matched: set[int]) -> Vehicle | None:
        """A vehicle that was not seen this frame (its tracks ended or lost) and whose plate
        `t` took over in the frames they share (`_handed_over`: the old track lost its plate
        to the new one) and then went on where that vehicle was heading (`_goes_on`), or else
        last seen before `t` began and within the window, whose predicted position is nearest
        `t`'s start (`_miss`), within `reid_gate`."""
        first = t.history[0]
        best, best_d = None, np.inf
        taken: list[tuple[int, int, Vehicle]] = []  # (shared frames, root, vehicle)
        for v in set(self.vehicles.values()):
            if v.ids & matched or not len(v.samples):
                continue
            shared = _handed_over(v.samples, t)
            if shared and self._goes_on(v, t):
                taken.append((shared, v.root, v))
            d = self._miss(v, first.mono_ns, first.box)
            if d is not None and d <= self.cfg.reid_gate and d < best_d:
                best, best_d = v, d
        if taken:  # the most shared frames, then the newest vehicle: the same every run
            return max(taken, key=lambda x: (x[0], x[1]))[2]
        return best

    def _goes_on(self, v: Vehicle, t: Track) -> bool:
        """Whether track `t`, after the frames it shares with vehicle `v`, is where `v` was
        heading (within `reid_gate`): a new plate that touched `v`'s box and went its own way
        is another vehicle."""
        after = [o for o in t.history if o.seq > v.last_seq]
        if not after:
            return False
        d = self._miss(v, after[0].mono_ns, after[0].box)
        return d is not None and d <= self.cfg.reid_gate

    def _miss(self, v: Vehicle, mono_ns: int, box: Box) -> float | None:
        """How far a plate seen at `mono_ns` in `box` is from where vehicle `v` would be by
        then; None when that is not after `v` was last seen or more than `reid_window_s` later.

        With a homography the prediction runs on the road (a vehicle keeps its speed in
        metres, while its plate speeds up on the picture as it comes nearer) and the miss is
        measured in plate widths on the road (`_road_miss`), if the vehicle was last seen
        inside the calibrated area; else on the picture, in plate sizes (the square root of
        the box's area). Beyond the area the mapping is extrapolated: a far wrong-way car,
        boxed loosely, "drove" at 57 km/h from 75 m to 40 m and was re-identified with a
        speeding rider coming into view at 8 m, a lane change nobody made."""
        s = v.samples
        gap = (mono_ns - int(s.mono_ns[-1])) / 1e9
        if not 0 < gap <= self.cfg.reid_window_s:
            return None
        start = plate_points([box])
        x0, y0, x1, y1 = s.boxes[-1]
        h = self.zones.homography
        if h is not None and s.in_area[-1]:
            edge = h.to_world([[x0, y1], [x1, y1]])
            return self._road_miss(s, edge, h.to_world(start)[0], gap)
        size = float(np.sqrt(max(1.0, (x1 - x0) * (y1 - y0))))
        px, py = s.points[-1] + np.multiply(v.velocity, gap)
        return float(np.hypot(start[0, 0] - px, start[0, 1] - py)) / size

    def _duplicate(self, rule: str, v: Vehicle) -> bool:
        """Whether another vehicle that already broke `rule` is `v` itself:

        - it vanished before `v` was first seen and would be where `v` was first seen: the
          same vehicle whose track was lost and not re-identified (within `DUPLICATE_GATE` x
          `reid_gate`: two vehicles committing the same offence in the same place within
          `reid_window_s` of each other is rarer than a missed re-identification);
        - or it was seen in the same frames as `v` with plate boxes of one size overlapping
          by `TWIN_OVERLAP` of the smaller box in `TWIN_FRAMES` of them (`_twins`): two
          tracks on one plate (one lost for a frame or two while the other started, then
          both fed). Two vehicles' plates seen in one frame never overlap that much (a plate
          that covers another hides it)."""
        s = v.samples
        first_box = (
            float(s.boxes[0, 0]),
            float(s.boxes[0, 1]),
            float(s.boxes[0, 2]),
            float(s.boxes[0, 3]),
        )
        for w in set(self.vehicles.values()):
            if w is v or rule not in w.fired or not len(w.samples):
                continue
            if _twins(s, w.samples):
                return True
            d = self._miss(w, int(s.mono_ns[0]), first_box)
            if d is not None and d <= DUPLICATE_GATE * self.cfg.reid_gate:
                return True
        return False

    @staticmethod
    def _road_miss(s: Samples, plate_edge: Floats, start: Floats, gap: float) -> float:
        """How far (in plate widths) a new track's start is from where vehicle samples `s`
        would be `gap` seconds on at its road speed. Across its way the plate's width is
        the unit; along it, the width plus a quarter of the distance driven in the gap (the
        speed is measured, not known).

        Speed and place are medians over the last samples (of each step's speed, and of each
        sample carried on to the last one's time): a track's last box before it was lost is
        often not its plate (half hidden, or a nearer plate the track took for a frame), and
        one such box must not send the prediction across the road."""
        k = max(0, len(s) - REID_SPEED_SAMPLES)
        inside = s.in_area[k:]  # the last one is (see _miss)
        t, road = (s.mono_ns[k:][inside] - s.mono_ns[k]) / 1e9, s.road[k:][inside]
        dt = np.diff(t)
        steps = np.diff(road, axis=0)[dt > 0] / dt[dt > 0, None]
        speed = np.median(steps, axis=0) if len(steps) else np.zeros(2)
        here = np.median(road + (t[-1] - t)[:, None] * speed, axis=0)
        miss = start - (here + speed * gap)
        width = max(0.05, float(np.hypot(*(plate_edge[1] - plate_edge[0]))))
        v = float(np.hypot(*speed))
        if v < 0.5:  # standing: no direction to split by
            return float(np.hypot(*miss)) / width
        way = speed / v
        along = float(miss @ way)
        across = float(np.hypot(*(miss - along * way)))
        return float(np.hypot(across / width, along / (width + 0.25 * v * gap)))

    def _forget(self, now_ns: int) -> None:
        horizon = now_ns - round(self.cfg.reid_window_s * 1e9)
        for tid, v in list(self.vehicles.items()):
            if v.ended_ns is not None and v.ended_ns < horizon:
                del self.vehicles[tid]

    # --- judging ---------------------------------------------------------------------------

    def _judge(self, v: Vehicle) -> list[Violation]:
        if float(v.samples.sizes.max()) < self.cfg.min_plate_size_px:
            return []  # no box the size of a plate yet: judged again if one comes
        out = []
        for rule in self.active:
            if rule.name in v.fired:
                continue
            finding = rule.check(v)
            if finding is not None:
                v.fired.add(rule.name)
                if self._duplicate(rule.name, v):
                    self.duplicates += 1
                    continue
                self.counts[rule.name] += 1
                out.append(self._violation(rule.name, v, finding))
        return out

    def _violation(self, rule: str, v: Vehicle, f: Finding) -> Violation:
        s = v.samples
        seq_at = int(s.seq[f.at])
        before = seq_at - self.cfg.evidence_frames_before
        boxes = tuple(
            (seq, (b[0], b[1], b[2], b[3]))
            for seq, b in zip(s.seq.tolist(), s.boxes.tolist(), strict=True)
            if seq >= before
        )
        vid = uuid.uuid5(NAMESPACE, f"{rule}/{v.root}/{f.utc_ns}")
        return Violation(
            str(vid),
            rule,
            v.root,
            boxes,
            f.utc_ns,
            f.mono_ns,
            max(0, before),
            seq_at,
            seq_at + self.cfg.evidence_frames_after,
            f.measured,
            round(min(1.0, max(0.0, f.confidence)), 3),
        )


def _shared_boxes(
    seq_a: npt.NDArray[np.int64], boxes_a: Floats, seq_b: npt.NDArray[np.int64], boxes_b: Floats
) -> tuple[Floats, Floats, Floats]:
    """Over the frames two box sequences share, pair by pair: the intersection and the
    smaller and larger area."""
    _, ia, ib = np.intersect1d(seq_a, seq_b, return_indices=True)
    ba, bb = boxes_a[ia], boxes_b[ib]
    inter = np.prod(
        np.clip(np.minimum(ba[:, 2:], bb[:, 2:]) - np.maximum(ba[:, :2], bb[:, :2]), 0, None),
        axis=1,
    )
    area_a = np.prod(np.clip(ba[:, 2:] - ba[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(bb[:, 2:] - bb[:, :2], 0, None), axis=1)
    return inter, np.minimum(area_a, area_b), np.maximum(area_a, area_b)


def _twins(a: Samples, b: Samples) -> bool:
    """Whether two vehicles' samples share frames and in `TWIN_FRAMES` of them (or all, if
    fewer) their plate boxes overlap by `TWIN_OVERLAP` of the smaller one and are alike in
    size (areas within 2x) or one lies inside the other (`NESTED`: the plate, and the plate
    with its surround): one plate followed twice. One stray box that covers a neighbour's
    plate in one frame does not make two riders abreast one."""
    inter, small, large = _shared_boxes(a.seq, a.boxes, b.seq, b.boxes)
    if not len(inter):
        return False
    alike = (large <= 2.0 * small) | (inter >= NESTED * small)
    hit = (small > 0) & (inter >= TWIN_OVERLAP * small) & alike
    return int(np.count_nonzero(hit)) >= min(TWIN_FRAMES, len(inter))


def _handed_over(a: Samples, t: Track) -> int:
    """How many frames track `t` shares with vehicle samples `a` when it took over their
    plate: in every shared frame (`t` began before `a` was last seen) their boxes overlap by
    `TWIN_OVERLAP` of the smaller (sizes may differ: one row of a two-row plate, then the
    whole plate); 0 if not. Two plates seen in one frame never overlap that much."""
    seq = np.array([o.seq for o in t.history], dtype=np.int64)
    boxes = np.array([o.box for o in t.history], dtype=np.float64).reshape(-1, 4)
    inter, small, _ = _shared_boxes(a.seq, a.boxes, seq, boxes)
    if not len(inter) or not np.all((small > 0) & (inter >= TWIN_OVERLAP * small)):
        return 0
    return len(inter)
