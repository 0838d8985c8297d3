"""The traffic-signal phase, from wherever the junction tells it, and how sure we are of it.

Sources: a serial line from the signal controller (`node.rules.serialsignal`), lamp levels
on GPIO, a fixed-time plan, or the simulator's frames. Each answers `current(now_mono_ns)`
with a `SignalState`. A phase nobody has confirmed for `stale_after_s` is UNKNOWN, and so is
one never received: the red-light rule then stands down. Nothing is ever guessed.

The age of a phase is a lower bound: it is counted from the first report of that phase the
node received (or the plan's own switch time), so a late or missed report makes a phase look
younger than it is, never older, and the red-light grace time errs for the driver.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from node.capture.frame import Frame
from node.config import SignalConfig

RED, AMBER, GREEN, UNKNOWN = "RED", "AMBER", "GREEN", "UNKNOWN"
PHASES = (RED, AMBER, GREEN)
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True, slots=True)
class SignalPhase:
    """A phase as last reported: on since `since_utc_ns`, reported as of `at_utc_ns`."""

    phase: str  # RED, AMBER or GREEN
    since_utc_ns: int
    received_mono_ns: int  # when the node got the latest report
    source: str
    at_utc_ns: int = 0  # the latest report's own time; 0 = `since_utc_ns`

    def age_s(self, now_mono_ns: int) -> float:
        """How long the phase has been on at `now_mono_ns`, at least."""
        at = self.at_utc_ns or self.since_utc_ns
        return (at - self.since_utc_ns + now_mono_ns - self.received_mono_ns) / 1e9


@dataclass(frozen=True, slots=True)
class SignalState:
    """What the rules may rely on at one instant."""

    phase: str  # RED, AMBER, GREEN or UNKNOWN
    phase_age_s: float  # how long the phase has been on, at least; 0 when UNKNOWN
    info_age_s: float  # since the last report; inf when there was none
    stale: bool  # True whenever phase is UNKNOWN
    source: str
    reason: str = ""  # why the phase is UNKNOWN

    @property
    def known(self) -> bool:
        return self.phase != UNKNOWN


def unknown(source: str, reason: str, info_age_s: float = float("inf")) -> SignalState:
    return SignalState(UNKNOWN, 0.0, info_age_s, True, source, reason)


class SignalInput(Protocol):
    """A source of the signal phase. `start()` once, `observe()` every frame, `close()`."""

    def start(self) -> None: ...

    def observe(self, frame: Frame) -> None:
        """Sources that read the frames take what they need; the others ignore it."""
        ...

    def current(self, now_mono_ns: int) -> SignalState: ...

    def stats(self) -> dict[str, int | float | str]: ...

    def close(self) -> None: ...


class PhaseBook:
    """The latest phase of a reporting source, its staleness, and report counters (locked)."""

    def __init__(self, source: str, stale_after_s: float) -> None:
        self.source = source
        self.stale_after_s = stale_after_s
        self.latest: SignalPhase | None = None
        self.counts: dict[str, int] = {"accepted": 0}
        self._lock = threading.Lock()

    def report(self, phase: str, at_utc_ns: int, received_mono_ns: int) -> None:
        """A report of `phase` as of `at_utc_ns`: a new phase starts then; the same one goes on.

        After a stale spell the phase counts from the report, as nobody saw it begin."""
        with self._lock:
            old = self.latest
            fresh = old is not None and not self._stale(old, received_mono_ns)
            since = (
                old.since_utc_ns if fresh and old is not None and old.phase == phase else at_utc_ns
            )
            self.latest = SignalPhase(phase, since, received_mono_ns, self.source, at_utc_ns)
            self.counts["accepted"] += 1

    def count(self, reason: str) -> None:
        with self._lock:
            self.counts[reason] = self.counts.get(reason, 0) + 1

    def _stale(self, p: SignalPhase, now_mono_ns: int) -> bool:
        return (now_mono_ns - p.received_mono_ns) / 1e9 > self.stale_after_s

    def state(self, now_mono_ns: int, missing: str = "no signal received") -> SignalState:
        with self._lock:
            p = self.latest
        if p is None:
            return unknown(self.source, missing)
        info_age = (now_mono_ns - p.received_mono_ns) / 1e9
        if self._stale(p, now_mono_ns):
            return unknown(self.source, f"signal stale for {info_age:.1f} s", info_age)
        return SignalState(p.phase, max(0.0, p.age_s(now_mono_ns)), info_age, False, self.source)

    def stats(self) -> dict[str, int | float | str]:
        with self._lock:
            out: dict[str, int | float | str] = {"source": self.source, **self.counts}
            out["phase"] = self.latest.phase if self.latest else UNKNOWN
        return out


class _Quiet:
    """No lifecycle and no frames needed."""

    def start(self) -> None:
        return None

    def observe(self, frame: Frame) -> None:
        return None

    def close(self) -> None:
        return None


class NoSignal(_Quiet):
    """`signal.source = "none"`: the phase is always UNKNOWN."""

    def current(self, now_mono_ns: int) -> SignalState:
        return unknown("none", "no signal source configured (signal.source = none)")

    def stats(self) -> dict[str, int | float | str]:
        return {"source": "none"}


class PlanSignal(_Quiet):
    """A fixed-time plan: green, amber, red, repeating from `offset_s` after UTC midnight.

    The cycle restarts at that moment every day, as a controller on a daily sync does."""

    def __init__(
        self,
        green_s: float,
        amber_s: float,
        red_s: float,
        offset_s: float = 0.0,
        utc_offset_ns: int | None = None,
    ) -> None:
        self.bounds_ns = [round(s * 1e9) for s in (green_s, green_s + amber_s)]
        self.cycle_ns = round((green_s + amber_s + red_s) * 1e9)
        self.offset_ns = round(offset_s * 1e9)
        self.utc_offset_ns = _utc_offset(utc_offset_ns)

    def phase_at(self, utc_ns: int) -> SignalPhase:
        ref = utc_ns - utc_ns % DAY_NS + self.offset_ns
        if ref > utc_ns:
            ref -= DAY_NS
        into = (utc_ns - ref) % self.cycle_ns
        green, amber = self.bounds_ns
        phase, began = (
            (GREEN, 0) if into < green else (AMBER, green) if into < amber else (RED, amber)
        )
        since = utc_ns - into + began
        return SignalPhase(phase, since, utc_ns - self.utc_offset_ns, "plan", utc_ns)

    def current(self, now_mono_ns: int) -> SignalState:
        p = self.phase_at(now_mono_ns + self.utc_offset_ns)
        return SignalState(p.phase, p.age_s(now_mono_ns), 0.0, False, "plan")

    def stats(self) -> dict[str, int | float | str]:
        return {"source": "plan", "cycle_s": self.cycle_ns / 1e9}


class FrameSignal(_Quiet):
    """The phase the simulator writes into each frame (`frame.meta["signal_phase"]`)."""

    def __init__(self, stale_after_s: float, key: str = "signal_phase") -> None:
        self.key = key
        self.book = PhaseBook("frame", stale_after_s)

    def observe(self, frame: Frame) -> None:
        value = frame.meta.get(self.key)
        if value is None:
            self.book.count("missing")
        elif value not in PHASES:
            self.book.count("invalid")
        else:
            self.book.report(str(value), frame.utc_ns, frame.mono_ns)

    def current(self, now_mono_ns: int) -> SignalState:
        return self.book.state(now_mono_ns, f"no {self.key} in the frames")

    def stats(self) -> dict[str, int | float | str]:
        return self.book.stats()


class LevelInput(Protocol):
    """One GPIO input line."""

    def read_level(self) -> bool:
        """True when the line is high; OSError when it cannot be read."""
        ...


class GpioSignal(_Quiet):
    """Lamp levels: red lit = RED; else amber lit = AMBER (with an amber line); else GREEN.

    Levels are read on each `current()` call, so a change is seen at the next frame; a line
    that cannot be read is counted and, after `stale_after_s`, makes the phase UNKNOWN."""

    def __init__(
        self,
        red: LevelInput,
        amber: LevelInput | None,
        stale_after_s: float,
        active_low: bool = False,
        utc_offset_ns: int | None = None,
    ) -> None:
        self.red, self.amber, self.active_low = red, amber, active_low
        self.book = PhaseBook("gpio", stale_after_s)
        self.utc_offset_ns = _utc_offset(utc_offset_ns)

    def current(self, now_mono_ns: int) -> SignalState:
        try:
            lit_red = self.red.read_level() != self.active_low
            lit_amber = self.amber is not None and self.amber.read_level() != self.active_low
        except OSError:
            self.book.count("read_errors")
        else:
            phase = RED if lit_red else AMBER if lit_amber else GREEN
            self.book.report(phase, now_mono_ns + self.utc_offset_ns, now_mono_ns)
        return self.book.state(now_mono_ns, "GPIO lines never read")

    def stats(self) -> dict[str, int | float | str]:
        return self.book.stats()

    def close(self) -> None:
        for line in (self.red, self.amber):
            closer = getattr(line, "close", None)
            if closer is not None:
                closer()


class SysfsLevel:
    """A line exported through /sys/class/gpio (older kernels)."""

    def __init__(self, line: int, root: Path = Path("/sys/class/gpio")) -> None:
        self.path = root / f"gpio{line}" / "value"

    def read_level(self) -> bool:
        return self.path.read_text(encoding="ascii").strip() == "1"


class GpiodLevel:
    """A line read through libgpiod's Python binding (v2 API), imported only when used."""

    def __init__(self, chip: str, line: int) -> None:
        try:
            gpiod: Any = importlib.import_module("gpiod")
            self._line_mod: Any = importlib.import_module("gpiod.line")
        except ImportError as e:
            raise OSError(f"GPIO: the gpiod module is not installed ({e})") from None
        settings = gpiod.LineSettings(direction=self._line_mod.Direction.INPUT)
        self.line = line
        self._request: Any = gpiod.request_lines(chip, consumer="roadnode", config={line: settings})

    def read_level(self) -> bool:
        return bool(self._request.get_value(self.line) == self._line_mod.Value.ACTIVE)

    def close(self) -> None:
        self._request.release()


def _utc_offset(given: int | None) -> int:
    return time.time_ns() - time.monotonic_ns() if given is None else given


def build_signal(cfg: SignalConfig) -> SignalInput:
    """The signal input `cfg` asks for (not started); OSError if its hardware is missing."""
    if cfg.source == "frame":
        return FrameSignal(cfg.stale_after_s)
    if cfg.source == "plan":
        return PlanSignal(cfg.plan_green_s, cfg.plan_amber_s, cfg.plan_red_s, cfg.plan_offset_s)
    if cfg.source == "serial":
        from node.rules.serialsignal import SerialSignal

        return SerialSignal(cfg)
    if cfg.source == "gpio":
        lines = [cfg.gpio_red_line, cfg.gpio_amber_line]
        red: LevelInput | None
        amber: LevelInput | None
        if cfg.gpio_backend == "sysfs":
            red, amber = (SysfsLevel(n) if n >= 0 else None for n in lines)
        else:
            red, amber = (GpiodLevel(cfg.gpio_chip, n) if n >= 0 else None for n in lines)
        if red is None:
            raise OSError("signal.gpio_red_line: needed when signal.source = 'gpio'")
        return GpioSignal(red, amber, cfg.stale_after_s, cfg.gpio_active_low)
    return NoSignal()


class SignalLog:
    """The states the rules were given, by frame time, to ask what the phase was at an instant.

    A crossing is judged a few frames after it happened, at a time between two frames."""

    def __init__(self, keep_s: float = 30.0) -> None:
        self.keep_ns = round(keep_s * 1e9)
        self._entries: deque[tuple[int, SignalState]] = deque()

    def add(self, mono_ns: int, state: SignalState) -> None:
        self._entries.append((mono_ns, state))
        while self._entries and self._entries[0][0] < mono_ns - self.keep_ns:
            self._entries.popleft()

    def at(self, mono_ns: int) -> SignalState:
        """The state at `mono_ns`: from the first later entry if its phase had begun by then,
        else the last earlier entry's phase, aged; UNKNOWN if neither knows."""
        before = after = None
        for t, state in self._entries:
            if t <= mono_ns:
                before = (t, state)
            else:
                after = (t, state)
                break
        if after is not None and after[1].known:
            age = after[1].phase_age_s - (after[0] - mono_ns) / 1e9
            if age >= 0.0:
                return dataclasses.replace(after[1], phase_age_s=age)
        if before is not None and before[1].known:
            age = before[1].phase_age_s + (mono_ns - before[0]) / 1e9
            return dataclasses.replace(before[1], phase_age_s=age)
        if before is not None:
            return before[1]
        return unknown("log", "no signal state recorded for that time")
