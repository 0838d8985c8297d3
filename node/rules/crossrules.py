"""Rules about crossing a line: the stop line on red, and solid lane lines.

A crossing is a step between two consecutive samples of a vehicle's plate point that passes
through the line segment. It is judged only once the plate has been seen on the near side
for `min_frames` samples before it and on the far side for `min_frames` after it, so a box
that jitters over a line is not an offence.
"""

from __future__ import annotations

import numpy as np

from node.config import RedLightConfig, SolidLineConfig
from node.rules.signal import AMBER, RED, SignalLog
from node.rules.vehicle import Finding, Measured, Samples, Vehicle, interpolate, support
from node.rules.zones import Bools, Floats, Zones, crossing_fraction


def last_crossing(
    a: Samples, col: int, p: tuple[float, float], q: tuple[float, float]
) -> tuple[int, int]:
    """(k, sign) of the newest step k → k+1 that crosses segment p-q, whose `side_of` is
    column `col` of `a.sides`; (-1, 0) if none. Same answer as `zones.crossings`, but only
    the steps that change side are looked at (usually none or one)."""
    neg = a.sides[:, col] < 0.0
    for k in np.nonzero(neg[:-1] != neg[1:])[0][::-1].tolist():
        (x0, y0), (x1, y1) = a.points[k].tolist(), a.points[k + 1].tolist()
        sx, sy = x1 - x0, y1 - y0
        ta = sx * (p[1] - y0) - sy * (p[0] - x0)
        tb = sx * (q[1] - y0) - sy * (q[0] - x0)
        if ta * tb <= 0.0:  # the step passes between the segment's ends
            return k, 1 if neg[k] else -1
    return -1, 0


def run_before(pre: Bools, k: int) -> int:
    """How many samples up to and including k are on the near side without a break."""
    breaks = np.nonzero(~pre[: k + 1])[0]
    return k + 1 if not len(breaks) else k - int(breaks[-1])


def normal(p: tuple[float, float], q: tuple[float, float]) -> Floats:
    """Unit normal of p→q pointing to the side `side_of` calls positive."""
    d = np.subtract(q, p, dtype=np.float64)
    return np.array([-d[1], d[0]]) / float(np.hypot(*d))


class RedLightRule:
    """The plate crosses the stop line, in its lane's direction, on red (past the grace time)
    or, if so configured, on amber."""

    name = "red_light"

    def __init__(self, cfg: RedLightConfig, zones: Zones, log: SignalLog) -> None:
        self.cfg, self.zones, self.log = cfg, zones, log
        self.counts = {"crossings": 0, "compliant": 0, "signal_unknown": 0, "outside_lanes": 0}

    def inactive(self) -> str | None:
        """Why the rule cannot run with this configuration, or None."""
        if not self.cfg.enabled:
            return "disabled (rules.red_light.enabled)"
        if self.zones.stop_line is None:
            return "no zones.stop_line"
        if not self.zones.lanes:
            return "no zones.lanes (they give the direction of travel)"
        return None

    def check(self, v: Vehicle) -> Finding | None:
        a, n_min, line = v.samples, self.cfg.min_frames, self.zones.stop_line
        if line is None or len(a) < 2 * n_min:
            return None
        col = self.zones.segments[(line.a, line.b)]
        k, sign = last_crossing(a, col, line.a, line.b)
        if k < 0 or v.judged.get(self.name) == int(a.seq[k + 1]):
            return None
        side = a.sides[:, col]
        pre = side < 0 if sign > 0 else side >= 0
        before, after = run_before(pre, k), int((~pre[k + 1 :]).sum())
        if before < n_min or after < n_min:
            return None
        v.judged[self.name] = int(a.seq[k + 1])
        lane = int(a.lanes[k + 1]) if a.lanes[k + 1] >= 0 else int(a.lanes[k])
        if lane < 0:
            self.counts["outside_lanes"] += 1
            return None
        if sign * float(normal(line.a, line.b) @ self.zones.lanes[lane].direction) <= 0:
            return None  # against the lane's direction: the wrong-way rule's business
        self.counts["crossings"] += 1
        frac = float(crossing_fraction(line.a, line.b, a.points[k], a.points[k + 1])[0])
        mono, utc = interpolate(a, k, frac)
        state = self.log.at(mono)
        if not state.known:
            self.counts["signal_unknown"] += 1
            return None
        red = state.phase == RED and state.phase_age_s > self.cfg.grace_s
        if not (red or (state.phase == AMBER and self.cfg.amber_is_violation)):
            self.counts["compliant"] += 1
            return None
        used = before + after
        measured = Measured(
            lane=v.lane_name(lane),
            signal_phase=state.phase,
            signal_age_s=state.phase_age_s,
            frames=used,
        )
        window = a.scores[k + 1 - before : k + 1 + after]
        return Finding(k + 1, mono, utc, measured, support(window, used, n_min))


class SolidLineRule:
    """The plate crosses a solid line and stays across: seen `min_frames` samples clear of it
    (by `margin_plate_widths`) on each side, and not back on the first side since."""

    name = "solid_line"

    def __init__(self, cfg: SolidLineConfig, zones: Zones) -> None:
        self.cfg, self.zones = cfg, zones
        self.counts: dict[str, int] = {}

    def inactive(self) -> str | None:
        if not self.cfg.enabled:
            return "disabled (rules.solid_line.enabled)"
        if not self.zones.solid_lines:
            return "no zones.solid_lines"
        return None

    def check(self, v: Vehicle) -> Finding | None:
        a, n_min = v.samples, self.cfg.min_frames
        if len(a) < 2 * n_min:
            return None
        margin = np.maximum(self.cfg.margin_plate_widths * a.widths, 1e-9)
        for line in self.zones.solid_lines:
            for p, q in zip(line[:-1].tolist(), line[1:].tolist(), strict=True):
                found = self._crossed(v, a, (p[0], p[1]), (q[0], q[1]), margin)
                if found is not None:
                    return found
        return None

    def _crossed(
        self,
        v: Vehicle,
        a: Samples,
        p: tuple[float, float],
        q: tuple[float, float],
        margin: Floats,
    ) -> Finding | None:
        col = self.zones.segments[(p, q)]
        k, sign = last_crossing(a, col, p, q)
        if k < 0:
            return None
        side = a.sides[:, col] * sign  # positive: the far side
        near, far = side <= -margin, side >= margin
        before, after = int(near[: k + 1].sum()), int(far[k + 1 :].sum())
        if near[k + 1 :].any():
            return None  # went back
        if before < self.cfg.min_frames or after < self.cfg.min_frames:
            return None
        frac = float(crossing_fraction(p, q, a.points[k], a.points[k + 1])[0])
        mono, utc = interpolate(a, k, frac)
        lane = int(a.lanes[k]) if a.lanes[k] >= 0 else int(a.lanes[k + 1])
        measured = Measured(lane=v.lane_name(lane), frames=before + after)
        return Finding(
            k + 1, mono, utc, measured, support(a.scores, before + after, self.cfg.min_frames)
        )
