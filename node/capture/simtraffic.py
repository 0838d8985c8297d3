"""Traffic on the simulated approach: the signal, vehicles, their driving, and true violations.

Vehicles are points on the road plane (`x` lateral, `z` distance of the face nearest the
camera) advanced by a fixed time step. Law-abiding drivers keep their lane slot, follow the
vehicle ahead and stop at the stop line on amber/red when they can. Offenders break exactly
one rule by intent, but the record of violations is made from what actually happens
(a front crossing the stop line on red, a centre crossing a solid lane line, a wrong-way
vehicle passing the stop line, a speed above the limit at the speed check), so it is the
ground truth whatever the cause.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from node.capture.platerender import PlateSpec, random_plate_color, random_plate_text
from node.capture.simscene import LANE_DIVIDERS, LANE_W, ROAD_HALF, SOLID_Z, STOP_LINE_W, STOP_Z

RULES = ("red_light", "solid_line", "wrong_way", "speeding")
SPEED_LIMIT = 50.0 / 3.6  # m/s
# speeding is an offence above the limit plus the enforced tolerance (rules.speeding's default
# 5 km/h): a rider slowed by traffic to 52 km/h is not a speeder anywhere that fines
SPEEDING_OVER = SPEED_LIMIT + 5.0 / 3.6
SPEED_CHECK_Z = 12.0  # speed is read when a vehicle's rear passes this distance
SPAWN_Z = 3.0
# A camera places a plate on the road through the plate plane (0.5 m up); the sim's plates
# sit 0.40-0.56 m up, so near where the solid marking ends (about 20 m out, the camera 6 m
# up) a plate is placed up to 0.35 m off along the road, and its box a pixel or two (0.1 m)
# more. A lane change within this of the marking's end is one no camera can call.
SOLID_END_M = 0.5
CHANGE_Z = (9.0, 12.0)  # where solid-line offenders start their lane change (rear z)
EXIT_Z = 82.0
BRAKE = 4.0  # comfortable deceleration, m/s^2
MAX_BRAKE = 8.0
LANE_CENTRES = tuple(-ROAD_HALF + LANE_W * (i + 0.5) for i in range(3))
MAX_VIOLATIONS = 10_000  # the record keeps the most recent ones
WRONG_WAY_X = (LANE_CENTRES[0], ROAD_HALF - 0.3)  # cars keep left, motorbikes hug the kerb


@dataclass(frozen=True, slots=True)
class TrueViolation:
    """A violation that really happened in the simulation."""

    vehicle_id: int
    rule: str  # one of RULES
    plate: str  # the vehicle's plate text
    seq: int  # frame at which it happened
    vehicle: str  # "motorbike", "car" or "truck"
    # the camera cannot tell whether it happened: a lane change within `SOLID_END_M` of where
    # the solid marking ends, on either side (scored as neither a miss nor a false report)
    unresolvable: bool = False


@dataclass(frozen=True, slots=True)
class Signal:
    """A fixed-time signal: GREEN, then AMBER, then RED, repeating from t = 0."""

    green_s: float = 12.0
    amber_s: float = 3.0
    red_s: float = 10.0

    def phase(self, t: float) -> str:
        c = t % (self.green_s + self.amber_s + self.red_s)
        if c < self.green_s:
            return "GREEN"
        return "AMBER" if c < self.green_s + self.amber_s else "RED"


@dataclass(frozen=True, slots=True)
class Kind:
    name: str  # "motorbike", "car", "truck"
    body: str  # body style seen from behind
    front: str  # body style seen from the front (wrong way)
    length: float
    width: float
    speed_kmh: tuple[float, float]
    gap: float  # standstill gap to the vehicle ahead


KINDS = (
    Kind("motorbike", "moto_rear", "moto_front", 1.9, 0.75, (25.0, 45.0), 0.8),
    Kind("car", "sedan_rear", "car_front", 4.5, 1.8, (30.0, 48.0), 2.0),
    Kind("car", "suv_rear", "car_front", 4.8, 1.9, (30.0, 46.0), 2.0),
    Kind("truck", "truck_rear", "car_front", 7.0, 2.3, (25.0, 40.0), 2.5),
)
KIND_WEIGHTS = (0.72, 0.14, 0.09, 0.05)


@dataclass(slots=True)
class Vehicle:
    """One vehicle's state (mutable; the renderer gets immutable snapshots)."""

    vid: int
    kind: Kind
    variant: int  # picks the colour scheme of the body picture
    plate: PlateSpec
    offence: str | None
    x: float
    z: float
    speed: float
    wanted: float  # desired speed, m/s
    base_x: float  # lateral slot the vehicle keeps
    weave: tuple[float, float, float]  # amplitude m, angular speed rad/s, phase
    direction: int = 1  # +1 away from the camera, -1 towards it (wrong way)
    change_at: float = math.inf  # z at which a solid-line offender starts its lane change
    going: bool | None = None  # at amber/red: True drives on (too close to stop), False stops
    speed_read: bool = False

    @property
    def body(self) -> str:
        return self.kind.body if self.direction > 0 else self.kind.front

    @property
    def front_z(self) -> float:
        return self.z + self.kind.length


class Traffic:
    """The vehicles on the approach, advanced one frame at a time."""

    def __init__(self, rng: np.random.Generator, per_min: float, offend: float, dt: float) -> None:
        self.rng = rng
        self.per_min = per_min
        self.offend = offend
        self.dt = dt
        self.signal = Signal()
        self.vehicles: list[Vehicle] = []
        self.violations: deque[TrueViolation] = deque(maxlen=MAX_VIOLATIONS)
        self.spawned = 0
        self._pending: list[tuple[Kind, str | None]] = []
        self.left: list[Vehicle] = []  # vehicles that left during the last step

    def step(self, t: float, seq: int) -> None:
        """Advances from time t - dt to t; events are stamped with frame `seq`."""
        self.left = []
        phase = self.signal.phase(t)
        arrivals = int(self.rng.poisson(self.per_min / 60.0 * self.dt))
        for _ in range(arrivals):
            self._pending.append(self._new_arrival())
        self._pending = self._pending[-30:]
        self._pending = [a for a in self._pending if not self._try_spawn(*a, phase)]
        order = sorted(self.vehicles, key=lambda v: v.z)
        targets = {v.vid: self._target_speed(v, order, phase) for v in order}
        for v in order:
            self._move(v, targets[v.vid], t, seq, phase)
        keep = [v for v in self.vehicles if SPAWN_Z - 1.5 < v.z < EXIT_Z]
        self.left = [v for v in self.vehicles if not SPAWN_Z - 1.5 < v.z < EXIT_Z]
        self.vehicles = keep

    def _new_arrival(self) -> tuple[Kind, str | None]:
        kind = KINDS[int(self.rng.choice(len(KINDS), p=KIND_WEIGHTS))]
        offence = None
        if self.rng.random() < self.offend:
            offence = RULES[int(self.rng.integers(len(RULES)))]
        return (kind, offence)

    def _slots(self, kind: Kind, offence: str | None) -> list[float]:
        """Candidate lateral positions, in order of preference."""
        if offence == "wrong_way":
            return [WRONG_WAY_X[kind.name == "motorbike"]]
        if kind.name != "motorbike":
            p = (0.45, 0.45, 0.1) if kind.name == "car" else (0.3, 0.5, 0.2)
            lanes = self.rng.choice(3, size=3, replace=False, p=p)
            return [LANE_CENTRES[int(i)] for i in lanes]
        slots = [c + d for c in LANE_CENTRES for d in (-0.9, 0.0, 0.8)]
        if offence == "solid_line":  # start beside a lane line, to cross it soon
            slots = [d + s for d in LANE_DIVIDERS for s in (-0.75, 0.75)]
        return [slots[int(i)] for i in self.rng.permutation(len(slots))]

    def _try_spawn(self, kind: Kind, offence: str | None, phase: str) -> bool:
        """Puts a waiting arrival on the road if there is room; False if it must wait."""
        if offence == "wrong_way":  # needs its whole corridor empty
            x = self._slots(kind, offence)[0]
            if any(self._overlap(v, x, kind.width) for v in self.vehicles):
                return False
            self._spawn(kind, offence, x, EXIT_Z - 2.0, phase)
            return True
        if (offence == "red_light" and phase != "RED") or (
            offence == "speeding" and phase != "GREEN"
        ):
            return False  # red-light runners arrive on red, speeders on green
        options = []
        for x in self._slots(kind, offence):
            ahead = [v for v in self.vehicles if self._overlap(v, x, kind.width)]
            if any(v.direction < 0 for v in ahead):  # keep clear of a wrong-way vehicle
                continue
            gap = min((v.z for v in ahead), default=math.inf) - SPAWN_Z - kind.length - kind.gap
            if gap > (STOP_Z if offence == "red_light" else 0.5):  # a runner needs a clear run
                options.append((gap, x, ahead))
        if not options:
            return False
        gap, x, ahead = max(options, key=lambda o: o[0]) if offence else options[0]
        self._spawn(kind, offence, x, SPAWN_Z, phase, gap, ahead)
        return True

    def _spawn(
        self,
        kind: Kind,
        offence: str | None,
        x: float,
        z: float,
        phase: str,
        gap: float = math.inf,
        ahead: list[Vehicle] | None = None,
    ) -> None:
        rng = self.rng
        lo, hi = (65.0, 80.0) if offence == "speeding" else kind.speed_kmh
        wanted = float(rng.uniform(lo, hi)) / 3.6
        if offence == "wrong_way":
            wanted = float(rng.uniform(18.0, 30.0)) / 3.6
        layout = (
            "moto" if kind.name == "motorbike" else ("car2" if kind.name == "truck" else "car1")
        )
        if kind.name == "car" and rng.random() < 0.3:
            layout = "car2"
        color = random_plate_color(rng)
        if kind.name == "truck":
            color = "yellow"
        plate = PlateSpec(random_plate_text(layout, rng), layout, color)
        amp = float(rng.uniform(0.03, 0.2 if kind.name == "motorbike" else 0.05))
        weave = (amp, float(rng.uniform(0.4, 1.2)), float(rng.uniform(0.0, 2 * math.pi)))
        speed = min(wanted, self._safe_speed(gap, min((v.speed for v in ahead or []), default=0.0)))
        stopping = offence != "red_light" and phase != "GREEN"
        if stopping:
            speed = min(speed, self._safe_speed(STOP_Z - STOP_LINE_W - 0.2 - z - kind.length, 0.0))
        vid = self.spawned + 1
        self.spawned = vid
        v = Vehicle(
            vid, kind, int(rng.integers(1 << 16)), plate, offence, x, z, speed, wanted, x, weave
        )
        v.going = False if stopping else None
        if offence == "wrong_way":
            v.direction, v.speed = -1, wanted
        elif offence == "solid_line":
            # in full view of the camera (plates show from about 7.3 m), well before the
            # stop line: the whole lane change is on camera
            v.change_at = float(rng.uniform(*CHANGE_Z))
        self.vehicles.append(v)

    @staticmethod
    def _safe_speed(gap: float, lead_speed: float) -> float:
        """The fastest speed from which one can still stop within `gap` behind the leader."""
        return math.sqrt(max(0.0, lead_speed**2 + 2 * BRAKE * max(gap, 0.0)))

    @staticmethod
    def _overlap(v: Vehicle, x: float, width: float) -> bool:
        return abs(v.x - x) < (v.kind.width + width) / 2.0 + 0.15

    def _target_speed(self, v: Vehicle, order: list[Vehicle], phase: str) -> float:
        if v.direction < 0:
            return v.wanted
        target = v.wanted
        for lead in order:
            if lead.z > v.z and lead.direction > 0 and self._overlap(lead, v.x, v.kind.width):
                gap = lead.z - v.front_z - v.kind.gap
                target = min(target, self._safe_speed(gap, lead.speed))
                break
        line_gap = STOP_Z - STOP_LINE_W - 0.2 - v.front_z
        if phase == "GREEN" or v.offence == "red_light" or line_gap < -0.2:
            v.going = None
            return target
        if v.going is None:  # the signal just turned: stop if one comfortably can
            v.going = v.speed**2 / (2 * BRAKE) > line_gap + 0.5
        if not v.going:
            target = min(target, self._safe_speed(line_gap, 0.0))
        return target

    def _move(self, v: Vehicle, target: float, t: float, seq: int, phase: str) -> None:
        dt = self.dt
        accel = 3.0 if v.kind.name == "motorbike" else 2.2
        v.speed = min(max(target, v.speed - MAX_BRAKE * dt), v.speed + accel * dt)
        v.speed = max(0.0, v.speed)
        old_z, old_front, old_x = v.z, v.front_z, v.x
        v.z += v.direction * v.speed * dt
        if v.direction > 0 and v.z >= v.change_at:
            divider = min(LANE_DIVIDERS, key=lambda d: abs(d - v.base_x))
            shift = 1.5 if v.kind.name == "motorbike" else LANE_W
            v.base_x += shift if divider > v.base_x else -shift
            v.change_at = math.inf
        amp, omega, phi = v.weave
        step = 2.0 * dt
        wobble = amp * math.sin(omega * t + phi) if v.speed > 1.0 else 0.0
        v.x += max(-step, min(step, v.base_x + wobble - v.x))
        self._record(v, seq, phase, (old_z, old_front, old_x))

    def _record(self, v: Vehicle, seq: int, phase: str, old: tuple[float, float, float]) -> None:
        old_z, old_front, old_x = old
        line = STOP_Z - STOP_LINE_W
        if v.direction > 0 and old_front < line <= v.front_z and phase == "RED":
            self._violation(v, "red_light", seq)
        if v.direction < 0 and old_z >= STOP_Z > v.z:
            self._violation(v, "wrong_way", seq)
        if v.direction > 0 and old_z < SPEED_CHECK_Z <= v.z and not v.speed_read:
            v.speed_read = True
            if v.speed > SPEEDING_OVER:
                self._violation(v, "speeding", seq)
        # judged at the rear (where the plate is, all a camera behind the traffic can see),
        # where it crosses the lane line: a truck whose rear is still beside a solid line when
        # it crosses it has crossed it
        if v.direction > 0:
            for d in LANE_DIVIDERS:
                if (old_x - d) * (v.x - d) < 0:
                    at = old_z + (v.z - old_z) * (d - old_x) / (v.x - old_x)
                    if SOLID_Z[0] <= at < SOLID_Z[1] + SOLID_END_M:
                        near_end = abs(at - SOLID_Z[1]) < SOLID_END_M
                        self._violation(v, "solid_line", seq, unresolvable=near_end)

    def _violation(self, v: Vehicle, rule: str, seq: int, unresolvable: bool = False) -> None:
        if seq >= 0:
            self.violations.append(
                TrueViolation(v.vid, rule, v.plate.text, seq, v.kind.name, unresolvable)
            )
