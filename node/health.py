"""The board's health: SoC temperature, throttling, disk, memory and clock sync, with alarms.

`Health.sample()` reads every sensor once and returns a dict for `roadnode status` and telemetry;
`Health.active_alarms()` names the alarms that are raised. Each alarm has hysteresis (`Alarm`):
it is raised at one threshold and cleared only past another, so a value that hovers at a
threshold does not flap. docs/operations.md ("Alarms") says what each means and what to do.

Sources, all read without privileges:

- temperature: `/sys/class/thermal/thermal_zone*/temp` (millidegrees); the hottest zone counts.
- throttling: the Raspberry Pi firmware's `get_throttled` bits, from sysfs
  (`/sys/devices/platform/**/get_throttled`) where the kernel exposes it, else `vcgencmd
  get_throttled` where installed; absent elsewhere.
- disk: free space of the state dir's filesystem (what an unprivileged user may use).
- memory: `MemAvailable`/`MemTotal` of `/proc/meminfo`; the process's own `VmRSS` of
  `/proc/self/status`.
- clock: `node.clock.sync_state()` (the kernel's NTP state); when that is unknown,
  `timedatectl show -p NTPSynchronized --value`.

Every path is under `root` (default `/`) and every command is injectable, so tests run the real
code on fake sysfs trees and fake commands. A sensor that cannot be read is reported as None and
leaves its alarm as it was; `sample()` never raises for a missing or garbled sensor.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import math
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config import HealthConfig

log = logging.getLogger(__name__)

MB = 1024 * 1024

# get_throttled bits (Raspberry Pi firmware): the low nibble is "now", bits 16-19 "since boot".
THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm-frequency-capped",
    2: "throttled",
    3: "soft-temperature-limit",
}
SINCE_BOOT_SHIFT = 16
UNDERVOLTAGE_MASK = 0x1
THROTTLED_MASK = 0x2 | 0x4 | 0x8

# One line per alarm: what it means (the console and docs/operations.md show these).
ALARM_HELP: dict[str, str] = {
    "soc_temp_high": "SoC temperature high: the board will throttle, then drop frames",
    "throttled": "the firmware is capping the CPU clock (heat or power): frames may drop",
    "undervoltage": "the supply voltage fell below 4.63 V: check the power supply and cable",
    "disk_low": "little free space in the state dir: evidence may be refused",
    "memory_low": "the system is short of memory: the kernel may kill the node",
    "rss_high": "the node uses more memory than its budget: a leak, or a ring set too large",
    "clock_unsynced": "the clock is not synchronised (or its error bound is large): "
    "evidence timestamps are not trustworthy",
}


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    return trim


def trim_heap() -> bool:
    """Give the C heap's free pages back to the kernel (glibc `malloc_trim(0)`).

    A long-running Python process frees many small buffers in the middle of its heap (frames,
    detections, packets); glibc keeps those pages until asked, so the RSS creeps up to the
    high-water mark of every burst. The service calls this after each health sample (every
    10 s; it takes about a millisecond). False where the C library has no malloc_trim."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class Alarm:
    """One alarm with hysteresis.

    When `raise_at` > `clear_at` it is a *high* alarm: raised when the value reaches `raise_at`,
    cleared when it falls to `clear_at` or below. When `raise_at` < `clear_at` it is a *low*
    alarm (free disk, free memory): raised at or below `raise_at`, cleared at or above
    `clear_at`. Between the two it keeps its state. `hold_s`: once raised, it stays raised at
    least this long after the value last crossed `raise_at` (for flags that flicker, such as
    under-voltage). A value of None (unreadable sensor) leaves the state unchanged.
    """

    def __init__(self, name: str, raise_at: float, clear_at: float, hold_s: float = 0.0) -> None:
        if raise_at == clear_at or math.isnan(raise_at) or math.isnan(clear_at):
            raise ValueError(f"alarm {name}: raise_at and clear_at must differ (hysteresis)")
        if hold_s < 0:
            raise ValueError(f"alarm {name}: hold_s must be 0 or more, got {hold_s}")
        self.name = name
        self.raise_at = raise_at
        self.clear_at = clear_at
        self.hold_s = hold_s
        self.high = raise_at > clear_at
        self.active = False
        self.value: float | None = None
        self.since: float | None = None  # monotonic time it was raised
        self._last_bad: float = -math.inf

    def _past_raise(self, value: float) -> bool:
        return value >= self.raise_at if self.high else value <= self.raise_at

    def _past_clear(self, value: float) -> bool:
        return value <= self.clear_at if self.high else value >= self.clear_at

    def update(self, value: float | None, now: float) -> bool:
        """Feed one reading taken at monotonic time `now`; returns whether the alarm is raised."""
        if value is None or math.isnan(value):
            return self.active
        self.value = value
        if self._past_raise(value):
            self._last_bad = now
            if not self.active:
                self.active = True
                self.since = now
        elif self.active and self._past_clear(value) and now - self._last_bad >= self.hold_s:
            self.active = False
            self.since = None
        return self.active


@dataclass(frozen=True)
class HealthThresholds(HealthConfig):
    """Alarm thresholds (raise, clear): `[health]` in the config (docs/configuration.md).
    Defaults are for a Raspberry Pi 4/5 with 1 GB or more.

    - SoC temperature: the firmware soft-limits at 80 °C (Pi 4) / 85 °C (Pi 5) and throttles
      hard at 85 °C; raise at 80, clear at 75.
    - throttling and under-voltage: raised while the firmware reports it now, held 300 s.
    - disk: raise below 512 MiB free in the state dir, clear above 1 GiB.
    - memory: raise below 64 MiB available, clear above 128 MiB.
    - RSS: the node's budget is 200 MB; raise at 250 MiB, clear at 200 MiB.
    - clock: raise when unsynchronised or the kernel's error bound reaches 1 s, clear when
      synchronised with a bound of 0.5 s or less.
    """

    @classmethod
    def from_config(cls, cfg: HealthConfig) -> HealthThresholds:
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})

    def alarms(self) -> list[Alarm]:
        """Fresh alarms (all cleared) for these thresholds; raises ValueError on a bad pair."""
        pairs = [
            ("temp", self.temp_raise_c, self.temp_clear_c, True),
            ("disk_free", self.disk_free_raise_mb, self.disk_free_clear_mb, False),
            ("mem_available", self.mem_available_raise_mb, self.mem_available_clear_mb, False),
            ("rss", self.rss_raise_mb, self.rss_clear_mb, True),
            ("clock_error", self.clock_error_raise_s, self.clock_error_clear_s, True),
        ]
        for key, raise_at, clear_at, high in pairs:
            if (raise_at <= clear_at) if high else (raise_at >= clear_at):
                side = "above" if high else "below"
                raise ValueError(
                    f"health thresholds: {key}_raise ({raise_at}) must be {side} "
                    f"{key}_clear ({clear_at})"
                )
        return [
            Alarm("soc_temp_high", self.temp_raise_c, self.temp_clear_c),
            Alarm("throttled", 1.0, 0.0, self.throttle_hold_s),
            Alarm("undervoltage", 1.0, 0.0, self.throttle_hold_s),
            Alarm("disk_low", self.disk_free_raise_mb * MB, self.disk_free_clear_mb * MB),
            Alarm("memory_low", self.mem_available_raise_mb * MB, self.mem_available_clear_mb * MB),
            Alarm("rss_high", self.rss_raise_mb * MB, self.rss_clear_mb * MB),
            Alarm("clock_unsynced", self.clock_error_raise_s, self.clock_error_clear_s),
        ]


@dataclass(frozen=True)
class Throttle:
    """The firmware's get_throttled word, decoded."""

    raw: int
    source: str  # "sysfs" or "vcgencmd"

    @property
    def now(self) -> list[str]:
        return [name for bit, name in THROTTLE_BITS.items() if self.raw >> bit & 1]

    @property
    def since_boot(self) -> list[str]:
        shift = SINCE_BOOT_SHIFT
        return [name for bit, name in THROTTLE_BITS.items() if self.raw >> (bit + shift) & 1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "raw": f"0x{self.raw:x}",
            "now": self.now,
            "since_boot": self.since_boot,
            "source": self.source,
        }


def parse_throttled(text: str) -> int | None:
    """The number in `throttled=0x50005` (vcgencmd) or `50005` (sysfs, hex); None if garbled."""
    value = text.strip().rpartition("=")[2].strip()
    try:
        number = int(value, 16)
    except ValueError:
        return None
    return number if 0 <= number < 1 << 32 else None


def _run(cmd: Sequence[str], timeout_s: float = 3.0) -> str | None:
    """stdout of `cmd`, or None when it is missing, fails or hangs."""
    try:
        done = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _kib_field(text: str | None, key: str) -> int | None:
    """`key:   1234 kB` from a /proc file, in bytes."""
    if text is None:
        return None
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            parts = rest.split()
            if parts and parts[0].isdigit():
                return int(parts[0]) * 1024
            return None
    return None


@dataclass(frozen=True)
class ClockReading:
    """What health needs of the clock; `node.clock.ClockState` has the same fields."""

    synced: bool
    est_error_s: float | None
    max_error_s: float | None
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "synced": self.synced,
            "est_error_s": self.est_error_s,
            "max_error_s": self.max_error_s,
            "source": self.source,
        }


ClockFn = Callable[[], Any]  # returns an object with ClockReading's fields


def _default_clock() -> ClockFn | None:
    try:
        from node.clock import sync_state
    except ImportError:  # the clock module is optional: timedatectl then
        return None
    return sync_state


class Health:
    """Reads the board's sensors and keeps the alarms. Safe to call from several threads."""

    def __init__(
        self,
        state_dir: Path,
        thresholds: HealthThresholds | None = None,
        *,
        root: Path = Path("/"),
        vcgencmd: Sequence[str] | None = None,
        timedatectl: Sequence[str] | None = None,
        clock: ClockFn | None = None,
        use_clock_module: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`vcgencmd`/`timedatectl`: the commands to run (default: found on PATH when `root` is
        `/`, else none). `clock`: a function returning the clock state (default
        `node.clock.sync_state` unless `use_clock_module` is false)."""
        self.state_dir = state_dir
        self.thresholds = thresholds or HealthThresholds()
        self.root = root
        real = root == Path("/")
        self.vcgencmd = vcgencmd if vcgencmd is not None else _which("vcgencmd", real)
        if self.vcgencmd is not None:
            self.vcgencmd = [*self.vcgencmd, "get_throttled"]
        self.timedatectl = timedatectl if timedatectl is not None else _which("timedatectl", real)
        if clock is None and use_clock_module:
            clock = _default_clock()
        self.clock = clock
        self.monotonic = monotonic
        self._alarms = {a.name: a for a in self.thresholds.alarms()}
        self._lock = threading.Lock()
        self._last: dict[str, Any] = {}

    # --- sensors -----------------------------------------------------------------------------

    def soc_temp(self) -> tuple[float | None, dict[str, float]]:
        """The hottest thermal zone in °C, and every readable zone by its type."""
        zones: dict[str, float] = {}
        base = self.root / "sys/class/thermal"
        try:
            entries = sorted(base.glob("thermal_zone*"))
        except OSError:
            entries = []
        for zone in entries:
            text = _read(zone / "temp")
            try:
                milli = int((text or "").strip())
            except ValueError:
                continue
            if not -50_000 <= milli <= 200_000:  # a sensor error code, not a temperature
                continue
            kind = (_read(zone / "type") or zone.name).strip() or zone.name
            key = kind if kind not in zones else f"{kind}:{zone.name}"
            zones[key] = milli / 1000.0
        return (max(zones.values()) if zones else None), zones

    def throttle(self) -> Throttle | None:
        platform = self.root / "sys/devices/platform"
        for pattern in ("*/get_throttled", "*/*/get_throttled"):
            try:
                found = sorted(platform.glob(pattern))
            except OSError:
                found = []
            for path in found:
                raw = parse_throttled(_read(path) or "")
                if raw is not None:
                    return Throttle(raw, "sysfs")
        if self.vcgencmd:
            out = _run(self.vcgencmd)
            raw = parse_throttled(out) if out and "throttled=" in out else None
            if raw is not None:
                return Throttle(raw, "vcgencmd")
        return None

    def disk(self) -> dict[str, Any] | None:
        try:
            usage = shutil.disk_usage(self.state_dir)
        except OSError:
            return None
        return {"path": str(self.state_dir), "free_bytes": usage.free, "total_bytes": usage.total}

    def memory(self) -> dict[str, int | None]:
        meminfo = _read(self.root / "proc/meminfo")
        status = _read(self.root / "proc/self/status")
        return {
            "available_bytes": _kib_field(meminfo, "MemAvailable"),
            "total_bytes": _kib_field(meminfo, "MemTotal"),
            "rss_bytes": _kib_field(status, "VmRSS"),
        }

    def clock_state(self) -> ClockReading:
        if self.clock is not None:
            try:
                s = self.clock()
                reading = ClockReading(bool(s.synced), s.est_error_s, s.max_error_s, str(s.source))
            except Exception as e:  # a broken clock reader means "unknown", never a crash
                log.debug("clock state unreadable: %s", e)
            else:
                if reading.source != "unknown":
                    return reading
        if self.timedatectl:
            out = _run([*self.timedatectl, "show", "-p", "NTPSynchronized", "--value"])
            answer = (out or "").strip()
            if answer in ("yes", "no"):
                return ClockReading(answer == "yes", None, None, "timedatectl")
        return ClockReading(False, None, None, "unknown")

    # --- the sample --------------------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        """Read every sensor, update the alarms; the result is JSON-ready."""
        temp, zones = self.soc_temp()
        throttle = self.throttle()
        disk = self.disk()
        mem = self.memory()
        clock = self.clock_state()
        if not clock.synced:
            clock_error: float | None = math.inf
        elif clock.max_error_s is not None:
            clock_error = clock.max_error_s
        else:
            clock_error = 0.0  # synced, no bound known (timedatectl)
        values: dict[str, float | None] = {
            "soc_temp_high": temp,
            "throttled": None if throttle is None else float(bool(throttle.raw & THROTTLED_MASK)),
            "undervoltage": (
                None if throttle is None else float(bool(throttle.raw & UNDERVOLTAGE_MASK))
            ),
            "disk_low": None if disk is None else float(disk["free_bytes"]),
            "memory_low": _float(mem["available_bytes"]),
            "rss_high": _float(mem["rss_bytes"]),
            "clock_unsynced": clock_error,
        }
        with self._lock:
            now = self.monotonic()
            for name, value in values.items():
                alarm = self._alarms[name]
                was = alarm.active
                if alarm.update(value, now) != was:
                    self._log_change(alarm, value)
            result = {
                "soc_temp_c": temp,
                "thermal_zones": zones,
                "throttle": None if throttle is None else throttle.as_dict(),
                "disk": disk,
                "memory": mem,
                "clock": clock.as_dict(),
                "alarms": self._active(),
            }
            self._last = result
        return result

    def last(self) -> dict[str, Any]:
        """The last sample (empty before the first); no sensor is read."""
        with self._lock:
            return dict(self._last)

    def active_alarms(self) -> list[str]:
        """Names of the raised alarms, in a fixed order."""
        with self._lock:
            return self._active()

    def _active(self) -> list[str]:
        return [name for name, alarm in self._alarms.items() if alarm.active]

    def _log_change(self, alarm: Alarm, value: float | None) -> None:
        shown = "n/a" if value is None else f"{value:g}"
        if alarm.active:
            log.warning(
                "alarm raised: %s (value %s): %s", alarm.name, shown, ALARM_HELP[alarm.name]
            )
        else:
            log.info("alarm cleared: %s (value %s)", alarm.name, shown)


def _float(value: int | None) -> float | None:
    return None if value is None else float(value)


def _which(name: str, real: bool) -> list[str] | None:
    """The command on PATH, only when reading the real system (never for a fake root)."""
    if not real:
        return None
    path = shutil.which(name, path=os.environ.get("PATH", os.defpath))
    return [path] if path else None
