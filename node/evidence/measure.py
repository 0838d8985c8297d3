"""Packet sizes on the simulator: violation packets built from the sim's true violations.

`measure_sizes()` runs `sim://junction`, turns each true violation whose plate is in view into
a `Violation` (plate boxes from the ground truth, so no detector is needed), builds its
packet with `from_violation` and reports the size distribution. For docs/packet-format.md and
the benchmarks.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from node.capture.frame import Frame
from node.capture.sim import SimSource
from node.capture.simtraffic import TrueViolation
from node.clock import ClockState
from node.config import Config
from node.evidence.packet import BuiltPacket, from_violation
from node.rules.signal import SignalState
from node.rules.vehicle import Measured
from node.rules.violations import Violation

SIM_URL = "sim://junction?seed=5&fps=0&rate=90&violations=0.5"
SIM_NAMESPACE = uuid.UUID("0b7f3c3e-52f4-4a4e-8d7e-6f1c2f7a9b21")


@dataclass(frozen=True)
class SizeReport:
    """Packet sizes in bytes."""

    sizes: tuple[int, ...]
    part_medians: dict[str, float]  # median bytes of each part name
    main: tuple[int, int]  # main stream width, height
    sealed: bool

    @property
    def count(self) -> int:
        return len(self.sizes)

    @property
    def median(self) -> float:
        return float(statistics.median(self.sizes))

    @property
    def p90(self) -> float:
        ordered = sorted(self.sizes)
        return float(ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))])

    @property
    def max(self) -> int:
        return max(self.sizes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "median_bytes": self.median,
            "p90_bytes": self.p90,
            "max_bytes": self.max,
            "min_bytes": min(self.sizes),
            "part_median_bytes": self.part_medians,
            "main": list(self.main),
            "sealed": self.sealed,
        }


def _violation(tv: TrueViolation, window: dict[int, Frame], cfg: Config) -> Violation | None:
    before = max(0, tv.seq - cfg.rules.evidence_frames_before)
    after = tv.seq + cfg.rules.evidence_frames_after
    boxes = []
    for seq in sorted(window):
        truth = window[seq].truth or ()
        for p in truth:
            if p.text == tv.plate and p.visible >= 0.5 and before <= seq <= tv.seq:
                boxes.append((seq, p.box))
    if not boxes or tv.seq not in window:
        return None
    at = window[tv.seq]
    vid = uuid.uuid5(SIM_NAMESPACE, f"{tv.rule}/{tv.vehicle_id}/{tv.seq}")
    measured = Measured(signal_phase=str(at.meta.get("signal_phase")), frames=len(boxes))
    return Violation(
        str(vid), tv.rule, tv.vehicle_id, tuple(boxes), at.utc_ns, at.mono_ns,
        before, tv.seq, after, measured, 1.0,
    )  # fmt: skip


def sim_violations(url: str, cfg: Config) -> Iterator[tuple[Violation, list[Frame]]]:
    """Violations built from the sim's ground truth, each with the frames of its window."""
    src = SimSource(url, cfg.capture)
    src.open(threading.Event())
    keep = cfg.rules.evidence_frames_before + cfg.rules.evidence_frames_after + 2
    ring: deque[Frame] = deque(maxlen=keep)
    pending: list[TrueViolation] = []
    done = 0
    try:
        while (frame := src.read()) is not None:
            ring.append(frame)
            new = src.true_violations[done:]
            done += len(new)
            pending += new
            due = [tv for tv in pending if frame.seq >= tv.seq + cfg.rules.evidence_frames_after]
            for tv in due:
                pending.remove(tv)
                window = {f.seq: f for f in ring}
                v = _violation(tv, window, cfg)
                if v is not None:
                    yield v, [window[s] for s in sorted(window)]
    finally:
        src.close()


def measure_sizes(
    count: int = 50,
    url: str = SIM_URL,
    cfg: Config | None = None,
    key: Ed25519PrivateKey | None = None,
    central_pub: X25519PublicKey | None = None,
) -> SizeReport:
    """Sizes of `count` violation packets on the simulator (`cfg` defaults: a 1920x1080 main
    stream; a small detection stream, which packets do not use, to run faster)."""
    if cfg is None:
        capture = dataclasses.replace(Config().capture, lores_width=320, lores_height=180)
        cfg = dataclasses.replace(Config(), capture=capture)
    key = key or Ed25519PrivateKey.generate()
    clock = ClockState(True, 0.002, 0.05, "adjtimex")
    signal = SignalState("RED", 3.0, 0.1, False, "frame")
    built: list[BuiltPacket] = []
    for v, frames in sim_violations(url, cfg):
        built.append(from_violation(v, frames, cfg, key, central_pub, None, signal, clock=clock))
        if len(built) >= count:
            break
    if not built:
        raise RuntimeError(f"{url}: no violation with its plate in view")
    names = sorted({n for b in built for n in b.part_sizes})
    medians = {
        n: float(statistics.median(b.part_sizes[n] for b in built if n in b.part_sizes))
        for n in names
    }
    main = (cfg.capture.main_width, cfg.capture.main_height)
    return SizeReport(tuple(b.size for b in built), medians, main, central_pub is not None)
