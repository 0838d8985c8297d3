"""`roadnode score-sim`: the whole frame path on `sim://junction`, scored against its truth.

Every frame of the simulated run goes through the real detector, tracker, signal input and
rules in order, on simulated time (the sim's virtual clock), so the score does not depend on
how fast this machine is. Scenes:

- ``default``: the sim's usual traffic (40 vehicles/min, a quarter of them offending);
- ``motorbikes``: 90 vehicles/min, nearly all motorbikes weaving abreast;
- ``night``: dark, low-contrast, noisy pictures (a crude night exposure);
- ``dropped-frames``: 10 % of frames never reach the detector (seeded).

Matching (`match_rule`): a reported violation is true when the sim recorded the same rule for
the vehicle whose plate the reported boxes cover (by IoU with the sim's plate truth), within
`MATCH_WINDOW_S` (a wrong-way report may come any time before: that offence lasts the whole
way), one report per true violation: a second report of the same offence is a duplicate and
counts as a false positive. A true violation counts towards recall when its vehicle showed a
plate the camera could resolve (`MIN_PLATE_PX` wide in the detection stream) around that moment; the
others are reported apart as ``unresolvable`` (a wrong-way motorbike shows no front plate; a
far plate is a few pixels; a lane change within `SOLID_END_M` of where the solid marking ends,
on either side, which the plate plane cannot place to better than that). Violations in the
run's last `TAIL_S` seconds are left out on both sides (`scored`): the rules may not have
judged them yet. The sim's speeders are vehicles above
the limit plus the rule's default tolerance (5 km/h) where the sim reads their speed, the
offence the node enforces.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from node.capture.frame import Frame, PlateTruth
from node.capture.sim import SimSource
from node.capture.simtraffic import RULES, TrueViolation
from node.config import Config
from node.infer.detector import DetectorStage, PlateDetector, stage_boxes
from node.rules.commands import SCENES
from node.rules.signal import FrameSignal
from node.rules.simzones import sim_passes, sim_zones
from node.rules.stage import ViolationStage
from node.rules.tracker import Tracker
from node.rules.violations import Violation, ViolationRules
from node.rules.zones import Zones

MATCH_WINDOW_S = 3.0
TAIL_S = 4.0
MIN_PLATE_PX = 12.0  # plate width in the detection stream below which nobody can find it
MIN_IOU = 0.3


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    rate: float = 40.0
    violations: float = 0.25
    night: bool = False
    drop: float = 0.0


SCENE_SPECS = {
    "default": SceneSpec(),
    "motorbikes": SceneSpec(rate=90.0, violations=0.2),
    "night": SceneSpec(night=True),
    "dropped-frames": SceneSpec(drop=0.10),
}
assert tuple(SCENE_SPECS) == SCENES


def night(image: np.ndarray[Any, Any], rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """A crude night exposure: a quarter of the light, lifted blacks, sensor noise."""
    dark = image.astype(np.float32) * 0.28 + 6.0
    dark += rng.normal(0.0, 4.0, dark.shape[:2])[..., None]
    return np.clip(dark, 0, 255).astype(np.uint8)


def frames(source: SimSource, spec: SceneSpec, seed: int, n: int) -> Iterator[Frame]:
    rng = np.random.default_rng([seed, 7])
    for _ in range(n):
        f = source.read()
        if f is None:
            return
        if spec.drop and rng.random() < spec.drop:
            continue
        if spec.night:
            f = dataclasses.replace(f, lores=night(f.lores, rng))
        yield f


class _Truths:
    """Plate truth of the recent frames, by seq, to say which vehicle a reported box is."""

    def __init__(self, keep: int) -> None:
        self.by_seq: dict[int, tuple[PlateTruth, ...]] = {}
        self.order: deque[int] = deque()
        self.keep = keep
        self.widest: dict[int, dict[int, float]] = {}  # vehicle -> seq -> plate width (lores)

    def add(self, f: Frame, lores_per_main: float) -> None:
        self.by_seq[f.seq] = f.truth or ()
        self.order.append(f.seq)
        while len(self.order) > self.keep:
            self.by_seq.pop(self.order.popleft(), None)
        for t in f.truth or ():
            if t.visible >= 0.5:
                w = (t.box[2] - t.box[0]) * lores_per_main
                self.widest.setdefault(t.vehicle_id, {})[f.seq] = w

    def vehicle_of(self, v: Violation) -> int | None:
        votes: dict[int, int] = {}
        for seq, box in v.plate_boxes:
            best, best_iou = None, MIN_IOU
            for t in self.by_seq.get(seq, ()):
                iou = _iou(box, t.box)
                if iou > best_iou:
                    best, best_iou = t.vehicle_id, iou
            if best is not None:
                votes[best] = votes.get(best, 0) + 1
        return max(votes, key=lambda k: votes[k]) if votes else None

    def resolvable(self, tv: TrueViolation, window: int) -> bool:
        seen = self.widest.get(tv.vehicle_id, {})
        return any(w >= MIN_PLATE_PX for s, w in seen.items() if abs(s - tv.seq) <= window)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def counted(true: Sequence[TrueViolation], seen: Callable[[TrueViolation], bool]) -> set[int]:
    """Indices of the true violations that count towards recall: the camera could see the
    plate (`seen`) and the sim could call the offence (not `unresolvable`). The others count
    neither way: a report of one is not false either."""
    return {i for i, t in enumerate(true) if not t.unresolvable and seen(t)}


def match_rule(
    rule: str, reports: list[tuple[int, int | None]], true: list[TrueViolation], window: int
) -> tuple[dict[int, int], set[int]]:
    """Reports (seq, vehicle) of one rule matched one to one with its true violations.

    A report matches a true violation of the vehicle its boxes cover when their frames are
    at most `window` apart; a wrong-way offence lasts as long as the vehicle drives against
    its lane, so any report up to `window` after the sim records it (at the stop line) counts.
    Reports are taken in order, each by the nearest free true violation. A report whose only
    candidates are taken is a duplicate: the same offence counted twice (a false positive).
    Returns ({report index: true index}, duplicate report indices)."""

    def fits(seq: int, t: TrueViolation) -> bool:
        if rule == "wrong_way":
            return seq <= t.seq + window
        return abs(seq - t.seq) <= window

    matched: dict[int, int] = {}
    duplicates: set[int] = set()
    for k in sorted(range(len(reports)), key=lambda k: reports[k][0]):
        seq, vid = reports[k]
        if vid is None:
            continue
        fitting = [i for i, t in enumerate(true) if t.vehicle_id == vid and fits(seq, t)]
        free = [i for i in fitting if i not in matched.values()]
        if free:
            matched[k] = min(free, key=lambda i: abs(true[i].seq - seq))
        elif fitting:
            duplicates.add(k)
    return matched, duplicates


def scored(
    rule: str,
    reports: Sequence[tuple[int, int | None]],
    true: list[TrueViolation],
    cut: int,
    window: int,
) -> list[int]:
    """Indices of the reports (seq, vehicle) scored against the true violations up to `cut`:
    the reports up to the cut, and a report just after it that matches a true violation before
    it; not a report up to the cut that only matches a true violation after it (a wrong-way
    report comes before the sim records the offence at the stop line), left out like that."""
    near = [k for k, (seq, _) in enumerate(reports) if seq <= cut + window]
    pairs: list[tuple[int, int | None]] = [reports[k] for k in near]
    got, _ = match_rule(rule, pairs, [t for t in true if t.seq <= cut], window)
    late, _ = match_rule(rule, pairs, [t for t in true if t.seq > cut], window)
    return [k for i, k in enumerate(near) if i in got or (reports[k][0] <= cut and i not in late)]


def _stage(cfg: Config, detector: PlateDetector) -> DetectorStage:
    box, area = stage_boxes(cfg.detector, *sim_passes(cfg.capture))
    return DetectorStage(detector, zoom_window=box, area=area)


def score_sim(
    cfg: Config, detector: PlateDetector, seed: int, duration_s: float, scene: str = "default"
) -> dict[str, Any]:
    """Runs the scene for `duration_s` simulated seconds; precision and recall per rule."""
    spec = SCENE_SPECS[scene]
    url = f"sim://junction?seed={seed}&fps=0&rate={spec.rate}&violations={spec.violations}"
    source = SimSource(url, cfg.capture)
    fps = cfg.capture.fps
    n = round(duration_s * fps)
    det_stage = _stage(cfg, detector)
    rules = ViolationRules(cfg.rules, Zones.from_config(sim_zones(cfg.capture)))
    window = round(MATCH_WINDOW_S * fps)
    truths = _Truths(keep=round(30 * fps))
    reported: list[tuple[Violation, int | None]] = []

    def sink(v: Violation, _frame: Frame) -> None:
        reported.append((v, truths.vehicle_of(v)))

    signal = FrameSignal(cfg.signal.stale_after_s)
    stage = ViolationStage(det_stage.result, Tracker(cfg.tracker), signal, rules, sink)
    lores_per_main = cfg.capture.lores_width / cfg.capture.main_width
    began = time.perf_counter()
    source.open(threading.Event())
    processed = 0
    try:
        for f in frames(source, spec, seed, n):
            truths.add(f, lores_per_main)
            det_stage.process(f)
            stage.process(f)
            processed += 1
        true = list(source.true_violations)
    finally:
        source.close()
    wall = time.perf_counter() - began
    last_seq = n - 1
    cut = last_seq - round(TAIL_S * fps)
    per_rule: dict[str, dict[str, Any]] = {}
    for rule in RULES:
        t_rule = [t for t in true if t.rule == rule and t.seq <= cut]
        visible = counted(t_rule, lambda t: truths.resolvable(t, window))
        mine = [(v, vid) for v, vid in reported if v.rule == rule]
        keep = scored(
            rule,
            [(v.seq_at, vid) for v, vid in mine],
            [t for t in true if t.rule == rule],
            cut,
            window,
        )
        r_rule = [mine[k] for k in keep]
        matched, duplicates = match_rule(
            rule, [(v.seq_at, vid) for v, vid in r_rule], t_rule, window
        )
        events = [
            {
                "seq": v.seq_at,
                "track": v.track_id,
                "vehicle": vid,
                "correct": k in matched,
                "duplicate": k in duplicates,
                "confidence": v.confidence,
                "measured": v.measured.as_dict(),
            }
            for k, (v, vid) in enumerate(r_rule)
        ]
        found = set(matched.values())
        missed = [
            {"seq": t_rule[i].seq, "vehicle": t_rule[i].vehicle_id, "kind": t_rule[i].vehicle}
            for i in sorted(visible - found)
        ]
        per_rule[rule] = {
            "events": events,
            "missed": missed,
            "true": len(visible),
            "unresolvable": len(t_rule) - len(visible),
            "reported": len(r_rule),
            "correct": len(matched),
            "duplicates": len(duplicates),
            "precision": round(len(matched) / len(r_rule), 3) if r_rule else None,
            "recall": round(len(found & visible) / len(visible), 3) if visible else None,
        }
    return {
        "scene": scene,
        "seed": seed,
        "duration_s": duration_s,
        "frames": n,
        "processed": processed,
        "model": detector.manifest.label,
        "rules": per_rule,
        "rule_counts": rules.status()["rule_counts"],
        "tracker": stage.tracker.stats(),
        "wall_s": round(wall, 1),
    }


def format_score(s: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "  -  " if x is None else f"{x:5.3f}"

    lines = [
        f"score-sim: scene {s['scene']}, seed {s['seed']}, {s['duration_s']:g} s simulated "
        f"({s['processed']} of {s['frames']} frames processed, {s['wall_s']:g} s wall)",
        f"model {s['model']}",
        f"{'rule':<12}{'true':>6}{'unres.':>8}{'reported':>10}{'correct':>9}"
        f"{'precision':>11}{'recall':>8}",
    ]
    for rule, r in s["rules"].items():
        lines.append(
            f"{rule:<12}{r['true']:>6}{r['unresolvable']:>8}{r['reported']:>10}"
            f"{r['correct']:>9}{pct(r['precision']):>11}{pct(r['recall']):>8}"
        )
    return "\n".join(lines)
