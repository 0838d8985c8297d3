"""Rules about how a vehicle moves: against its lane, and too fast.

Distances and speeds are on the road plane, in metres, through the zones' homography; the
wrong-way rule may fall back to pixels when configured to. Speed comes from the speed trap
(time between crossing its two lines) or from a robust straight-line fit of road position
against time over the last `window_s` of the track; either way with its uncertainty.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from node.config import SpeedingConfig, WrongWayConfig
from node.rules.crossrules import last_crossing
from node.rules.vehicle import Finding, Measured, Samples, Vehicle, interpolate, support
from node.rules.zones import Floats, Zones, crossing_fraction, side_of

KMH = 3.6
MAX_STEP_SHARE = 0.5  # wrong way: no one step may make more than this share of the way
MAX_FORWARD_SHARE = 0.4  # wrong way: a track that first went this share of it the right way


def lane_road_directions(zones: Zones) -> list[Floats]:
    """Each lane's direction of travel on the road plane (unit), taken at its centroid."""
    h = zones.homography
    out = []
    for lane in zones.lanes:
        if h is None:
            out.append(lane.direction)
            continue
        c = lane.polygon.mean(axis=0)
        w = h.to_world(np.stack([c, c + 20.0 * lane.direction]))
        d = w[1] - w[0]
        out.append(d / float(np.hypot(*d)))
    return out


class WrongWayRule:
    """The plate moves against its lane's direction for `min_distance_m` (on the road), step
    by step: a way made mostly in one step (`MAX_STEP_SHARE`), or after first going the right
    way (`MAX_FORWARD_SHARE`), is a track that swapped to another vehicle, not a wrong-way
    driver. In metres only inside the calibrated area (beyond it the mapping is extrapolated):
    calibrate it over the stretch where this rule is enforced."""

    name = "wrong_way"

    def __init__(self, cfg: WrongWayConfig, zones: Zones) -> None:
        self.cfg, self.zones = cfg, zones
        self.metres = zones.homography is not None
        self.directions = lane_road_directions(zones)
        self.counts: dict[str, int] = {}

    def inactive(self) -> str | None:
        if not self.cfg.enabled:
            return "disabled (rules.wrong_way.enabled)"
        if not self.zones.lanes:
            return "no zones.lanes"
        if not self.metres and not self.cfg.allow_pixels:
            return "no zones.homography_points (and rules.wrong_way.allow_pixels is off)"
        return None

    def check(self, v: Vehicle) -> Finding | None:
        a = v.samples
        if not len(a) or a.lanes[-1] < 0:
            return None
        lane = int(a.lanes[-1])
        # only inside the calibrated area (all of it without a homography): beyond it the
        # mapping is extrapolated and a pixel of a far plate's jitter is metres
        idx = np.nonzero((a.lanes == lane) & a.in_area)[0]
        if len(idx) < self.cfg.min_frames:
            return None
        where = a.road if self.metres else a.points
        progress = where[idx] @ self.directions[lane]
        against = median3(progress[:3]) - median3(progress[-3:])
        wanted = self.cfg.min_distance_m if self.metres else self.cfg.min_distance_px
        if against < wanted:
            return None
        if -float(np.diff(progress).min()) > MAX_STEP_SHARE * against:
            # most of the way in one step: a track that jumped to a nearer vehicle behind,
            # not a vehicle driving the wrong way (it backs a little every frame)
            self.counts["jump"] = self.counts.get("jump", 0) + 1
            return None
        whole = where[a.in_area] @ self.directions[lane]  # every lane
        if float(whole.max()) - median3(whole[:3]) > MAX_FORWARD_SHARE * wanted:
            # it went the right way first: a plate that stopped and was covered, whose track
            # went on with the plate of a wrong-way vehicle passing over it (that vehicle is
            # judged on its own track), or a driver who turned: not this rule's evidence
            self.counts["reversal"] = self.counts.get("reversal", 0) + 1
            return None
        m = Measured(lane=v.lane_name(lane), frames=len(idx))
        if self.metres:
            m = Measured(lane=m.lane, frames=m.frames, distance_m=against)
        else:
            m = Measured(lane=m.lane, frames=m.frames, distance_px=against)
        at = len(a) - 1
        conf = support(a.scores[idx], len(idx), self.cfg.min_frames)
        return Finding(at, int(a.mono_ns[at]), int(a.utc_ns[at]), m, conf)


def median3(x: Floats) -> float:
    """`np.median` of at most 3 values, without its overhead (the rules call it per frame)."""
    v = sorted(x.tolist())
    n = len(v)
    return float(v[n // 2]) if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0


def fit_speed(t: Floats, road: Floats, pos_sigma: Floats) -> tuple[float, float] | None:
    """(speed, its standard deviation) in m/s from positions (N, 2) at times t (N,).

    Least squares, refitted once without points more than 3 robust sigmas off the line. The
    position noise along the direction of travel is the residuals' or, if larger, `pos_sigma`
    (pixel quantisation on the road); the speed's sigma is the slope's standard error."""
    keep = np.ones(len(t), dtype=bool)
    for _ in range(2):  # sums, not .mean() / np.median: this runs per vehicle per frame
        tt, rr, ps = t[keep], road[keep], pos_sigma[keep]
        n = len(tt)
        tc = tt - tt.sum() / n
        stt = float(tc @ tc)
        if n < 3 or stt <= 0:
            return None
        rc = rr - rr.sum(axis=0) / n
        slope = (tc @ rc) / stt
        resid = rc - tc[:, None] * slope
        r = np.hypot(resid[:, 0], resid[:, 1])
        rs = np.sort(r)
        median = float(rs[n // 2]) if n % 2 else float(rs[n // 2 - 1] + rs[n // 2]) / 2.0
        inliers = r <= max(3.0 * 1.4826 * median, 3.0 * float(ps.sum()) / n)
        if inliers.all():
            break
        keep[np.nonzero(keep)[0][~inliers]] = False
    speed = float(np.hypot(*slope))
    along = resid @ (slope / speed if speed > 0 else np.array([0.0, 1.0]))
    noise2 = max(float(along @ along) / max(1, n - 2), float(ps @ ps) / n)
    return speed, math.sqrt(noise2 / stt)


class SpeedReading(NamedTuple):
    at: int  # the sample the reading is placed at
    mono_ns: int
    utc_ns: int
    speed: float  # m/s
    sigma: float  # m/s
    used: int  # samples (fit) or frames between the lines (trap)
    method: str


class SpeedingRule:
    """Faster than the lane's limit plus `tolerance_kmh`, measured sure enough: the speed
    less `sigma_margin` sigmas is over it, and sigma is at most `max_sigma_kmh`."""

    name = "speeding"

    def __init__(self, cfg: SpeedingConfig, zones: Zones) -> None:
        self.cfg, self.zones = cfg, zones
        trap, h = zones.speed_trap is not None, zones.homography is not None
        auto = "trap" if trap else "homography" if h else None
        self.method = auto if cfg.method == "auto" else cfg.method
        self.counts = {"too_unsure": 0}

    def inactive(self) -> str | None:
        if not self.cfg.enabled:
            return "disabled (rules.speeding.enabled)"
        if self.method is None:
            return "no zones.speed_trap and no zones.homography_points"
        if self.method == "trap" and self.zones.speed_trap is None:
            return "rules.speeding.method = trap, but no zones.speed_trap"
        if self.method == "homography" and self.zones.homography is None:
            return "rules.speeding.method = homography, but no zones.homography_points"
        return None

    def limit(self, lane: int) -> float:
        return self.zones.lanes[lane].speed_limit_kmh if lane >= 0 else self.cfg.default_limit_kmh

    def check(self, v: Vehicle) -> Finding | None:
        if self.method == "homography" and self.zones.homography is not None:
            reading = self._fitted(v.samples)
        else:
            reading = self._trapped(v) if self.method == "trap" else None
        return None if reading is None else self._judge(v, reading)

    def _judge(self, v: Vehicle, r: SpeedReading) -> Finding | None:
        a = v.samples
        kmh, sigma = r.speed * KMH, r.sigma * KMH
        lane = int(a.lanes[r.at])
        limit = self.limit(lane)
        if kmh - self.cfg.sigma_margin * sigma <= limit + self.cfg.tolerance_kmh:
            return None
        if sigma > self.cfg.max_sigma_kmh:
            self.counts["too_unsure"] += 1
            return None
        m = Measured(
            lane=v.lane_name(lane),
            speed_kmh=kmh,
            speed_sigma_kmh=sigma,
            limit_kmh=limit,
            method=r.method,
            frames=r.used,
        )
        sure = 1.0 - 0.5 * sigma / self.cfg.max_sigma_kmh
        conf = support(a.scores, r.used, self.cfg.min_frames) * sure
        return Finding(r.at, r.mono_ns, r.utc_ns, m, conf)

    def _fitted(self, a: Samples) -> SpeedReading | None:
        """The speed fitted over the last `window_s`, placed at the window's middle sample;
        over `min_frames - 1` frame intervals if that is longer (a board processing 5 frames/s
        has 4 samples in 0.6 s). The frame interval is the median step of the last samples,
        so a track's gaps do not widen the window. Only samples inside the calibrated area
        count: outside it the mapping is extrapolated."""
        if not len(a):
            return None
        steps = np.diff(a.mono_ns[-self.cfg.min_frames :])
        frame_ns = float(np.median(steps)) if len(steps) else 0.0
        window_ns = max(self.cfg.window_s * 1e9, (self.cfg.min_frames - 1) * frame_ns)
        recent = a.mono_ns >= a.mono_ns[-1] - window_ns
        recent &= a.in_area  # outside the calibrated area the mapping is extrapolated
        idx = np.nonzero(recent)[0]
        if not len(idx):
            return None
        t = a.seconds()[idx]
        if len(idx) < self.cfg.min_frames or t[-1] - t[0] < self.cfg.window_s / 2:
            return None
        fit = fit_speed(t, a.road[idx], self.cfg.pixel_sigma * a.m_per_px[idx])
        if fit is None:
            return None
        at = int(idx[len(idx) // 2])
        mono, utc = int(a.mono_ns[at]), int(a.utc_ns[at])
        return SpeedReading(at, mono, utc, *fit, len(idx), "homography")

    def _trapped(self, v: Vehicle) -> SpeedReading | None:
        """The speed from the newest crossings of both trap lines, once per pair."""
        trap, a = self.zones.speed_trap, v.samples
        if trap is None or len(a) < 2:
            return None
        times = []
        for line in (trap.line_a, trap.line_b):
            k, _ = last_crossing(a, self.zones.segments[(line.a, line.b)], line.a, line.b)
            if k < 0:
                return None
            frac = float(crossing_fraction(line.a, line.b, a.points[k], a.points[k + 1])[0])
            s = side_of(line.a, line.b, a.points[k : k + 2])
            dt = (a.mono_ns[k + 1] - a.mono_ns[k]) / 1e9
            across = abs(float(s[1] - s[0])) / dt if dt > 0 else 0.0  # px/s across the line
            sigma_t = self.cfg.pixel_sigma / across if across > 0 else math.inf
            times.append((k, *interpolate(a, k, frac), sigma_t))
        (ka, ma, _, sa), (kb, mb, _, sb) = times
        last = max(ka, kb)
        if v.judged.get(self.name) == int(a.seq[last + 1]) or ma == mb:
            return None
        v.judged[self.name] = int(a.seq[last + 1])
        span = abs(mb - ma) / 1e9
        speed = trap.distance_m / span
        k, mono, utc, _ = times[0] if ka > kb else times[1]
        return SpeedReading(
            k + 1, mono, utc, speed, speed * math.hypot(sa, sb) / span, abs(kb - ka) + 1, "trap"
        )
