"""node/health.py on fake sysfs/proc trees and fake commands (real files, real subprocesses)."""

from __future__ import annotations

import json
import logging
import math
import shutil
import stat
from pathlib import Path

import pytest

from node.clock import ClockState
from node.health import (
    MB,
    Alarm,
    Health,
    HealthThresholds,
    parse_throttled,
)

MEMINFO = """MemTotal:        3884320 kB
MemFree:          123456 kB
MemAvailable:    {avail} kB
Buffers:           12345 kB
"""
STATUS = """Name:\tpython3
VmPeak:\t  400000 kB
VmRSS:\t  {rss} kB
RssAnon:\t   90000 kB
"""


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def fake_root(
    tmp_path: Path,
    temps: dict[str, str] | None = None,
    avail_kb: int = 2_000_000,
    rss_kb: int = 100_000,
    throttled: str | None = None,
) -> Path:
    root = tmp_path / "root"
    thermal = root / "sys/class/thermal"
    thermal.mkdir(parents=True, exist_ok=True)
    for i, (kind, value) in enumerate((temps or {"cpu-thermal": "52100\n"}).items()):
        zone = thermal / f"thermal_zone{i}"
        zone.mkdir(exist_ok=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(value)
    proc = root / "proc/self"
    proc.mkdir(parents=True, exist_ok=True)
    (root / "proc/meminfo").write_text(MEMINFO.format(avail=avail_kb))
    (proc / "status").write_text(STATUS.format(rss=rss_kb))
    if throttled is not None:
        fw = root / "sys/devices/platform/soc/soc:firmware"
        fw.mkdir(parents=True, exist_ok=True)
        (fw / "get_throttled").write_text(throttled)
    return root


def set_temp(root: Path, milli: int, zone: int = 0) -> None:
    (root / f"sys/class/thermal/thermal_zone{zone}/temp").write_text(f"{milli}\n")


def set_meminfo(root: Path, avail_kb: int) -> None:
    (root / "proc/meminfo").write_text(MEMINFO.format(avail=avail_kb))


def set_rss(root: Path, rss_kb: int) -> None:
    (root / "proc/self/status").write_text(STATUS.format(rss=rss_kb))


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return [str(path)]


def synced(max_error: float = 0.05) -> ClockState:
    return ClockState(True, 0.01, max_error, "adjtimex")


def health(tmp_path: Path, root: Path, mono: Clock | None = None, **kw: object) -> Health:
    kw.setdefault("clock", synced)
    return Health(tmp_path, root=root, monotonic=mono or Clock(), **kw)  # type: ignore[arg-type]


# --- Alarm ------------------------------------------------------------------------------------


def test_high_alarm_has_hysteresis() -> None:
    a = Alarm("t", raise_at=80, clear_at=75)
    assert a.update(79.9, 0) is False
    assert a.update(80.0, 1) is True
    assert a.update(77.0, 2) is True  # between the thresholds: stays raised
    assert a.update(79.9, 3) is True
    assert a.update(75.0, 4) is False
    assert a.update(79.0, 5) is False  # between the thresholds: stays clear


def test_low_alarm_has_hysteresis() -> None:
    a = Alarm("disk", raise_at=100, clear_at=200)
    assert a.update(150, 0) is False
    assert a.update(100, 1) is True
    assert a.update(199, 2) is True
    assert a.update(200, 3) is False
    assert a.update(101, 4) is False


def test_unknown_value_keeps_the_state() -> None:
    a = Alarm("t", 80, 75)
    a.update(90, 0)
    assert a.update(None, 1) is True
    assert a.update(math.nan, 2) is True
    b = Alarm("t", 80, 75)
    assert b.update(None, 0) is False


def test_hold_keeps_a_flickering_flag_raised() -> None:
    a = Alarm("uv", 1.0, 0.0, hold_s=300)
    assert a.update(1, 0) is True
    assert a.update(0, 100) is True  # clear, but not for 300 s yet
    assert a.update(1, 200) is True  # flickers again: the hold restarts
    assert a.update(0, 450) is True
    assert a.update(0, 500) is False
    assert a.since is None


def test_alarm_needs_a_band() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        Alarm("x", 5, 5)
    with pytest.raises(ValueError, match="below"):
        HealthThresholds(disk_free_raise_mb=2048, disk_free_clear_mb=1024).alarms()
    with pytest.raises(ValueError, match="above"):
        HealthThresholds(temp_raise_c=70, temp_clear_c=75).alarms()


# --- sensors ----------------------------------------------------------------------------------


def test_sample_reads_the_fake_tree(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        temps={"cpu-thermal": "52100\n", "gpu-thermal": "61500\n", "broken": "garbage"},
        avail_kb=1_500_000,
        rss_kb=123_456,
        throttled="50005\n",
    )
    s = health(tmp_path, root).sample()
    assert s["soc_temp_c"] == 61.5  # the hottest zone
    assert s["thermal_zones"] == {"cpu-thermal": 52.1, "gpu-thermal": 61.5}
    assert s["memory"] == {
        "available_bytes": 1_500_000 * 1024,
        "total_bytes": 3_884_320 * 1024,
        "rss_bytes": 123_456 * 1024,
    }
    assert s["throttle"] == {
        "raw": "0x50005",
        "now": ["under-voltage", "throttled"],
        "since_boot": ["under-voltage", "throttled"],
        "source": "sysfs",
    }
    usage = shutil.disk_usage(tmp_path)
    assert s["disk"]["path"] == str(tmp_path)
    assert s["disk"]["total_bytes"] == usage.total
    assert s["clock"] == {
        "synced": True,
        "est_error_s": 0.01,
        "max_error_s": 0.05,
        "source": "adjtimex",
    }
    assert s["alarms"] == ["throttled", "undervoltage"]
    json.dumps(s)  # status and telemetry send it as JSON


def test_missing_sensors_are_none_and_raise_nothing(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    h = Health(tmp_path, root=root, clock=synced)
    s = h.sample()
    assert s["soc_temp_c"] is None
    assert s["thermal_zones"] == {}
    assert s["throttle"] is None
    assert s["memory"] == {"available_bytes": None, "total_bytes": None, "rss_bytes": None}
    assert s["alarms"] == []
    assert h.active_alarms() == []


def test_sensor_error_codes_are_not_temperatures(tmp_path: Path) -> None:
    root = fake_root(tmp_path, temps={"cpu-thermal": "-274000\n", "other": "\n"})
    s = health(tmp_path, root).sample()
    assert s["soc_temp_c"] is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("throttled=0x0\n", 0),
        ("throttled=0x50005\n", 0x50005),
        ("80008", 0x80008),
        ("throttled=zz", None),
        ("", None),
        ("throttled=0x1ffffffff", None),
    ],
)
def test_parse_throttled(text: str, value: int | None) -> None:
    assert parse_throttled(text) == value


def test_vcgencmd_where_sysfs_has_no_throttle_word(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    vcgencmd = script(tmp_path, "vcgencmd", 'test "$1" = get_throttled && echo throttled=0x80008')
    s = health(tmp_path, root, vcgencmd=vcgencmd).sample()
    assert s["throttle"]["source"] == "vcgencmd"
    assert s["throttle"]["now"] == ["soft-temperature-limit"]
    assert s["throttle"]["since_boot"] == ["soft-temperature-limit"]
    assert s["alarms"] == ["throttled"]


def test_a_failing_vcgencmd_means_no_reading(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    failing = script(tmp_path, "vcgencmd", "echo 'VCHI initialization failed' >&2; exit 255")
    assert health(tmp_path, root, vcgencmd=failing).sample()["throttle"] is None
    garbled = script(tmp_path, "vcgencmd2", "echo error=1 error_msg=nope")
    assert health(tmp_path, root, vcgencmd=garbled).sample()["throttle"] is None
    missing = [str(tmp_path / "no-such-vcgencmd")]
    assert health(tmp_path, root, vcgencmd=missing).sample()["throttle"] is None


# --- alarms through sample() ------------------------------------------------------------------


def test_temperature_alarm_raises_high_and_clears_low(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = fake_root(tmp_path)
    h = health(tmp_path, root)
    caplog.set_level(logging.INFO, logger="node.health")
    for milli, expected in [
        (79_000, []),
        (80_500, ["soc_temp_high"]),
        (76_000, ["soc_temp_high"]),
        (74_900, []),
        (79_900, []),
    ]:
        set_temp(root, milli)
        assert h.sample()["alarms"] == expected, milli
        assert h.active_alarms() == expected
    raised = [r for r in caplog.records if "alarm raised: soc_temp_high" in r.getMessage()]
    cleared = [r for r in caplog.records if "alarm cleared: soc_temp_high" in r.getMessage()]
    assert len(raised) == 1
    assert raised[0].levelno == logging.WARNING
    assert len(cleared) == 1


def test_memory_and_rss_alarms(tmp_path: Path) -> None:
    root = fake_root(tmp_path, avail_kb=200 * 1024, rss_kb=150 * 1024)
    h = health(tmp_path, root)
    assert h.sample()["alarms"] == []
    set_meminfo(root, 60 * 1024)
    set_rss(root, 260 * 1024)
    assert h.sample()["alarms"] == ["memory_low", "rss_high"]
    set_meminfo(root, 100 * 1024)  # between 64 and 128 MiB: still low
    set_rss(root, 210 * 1024)  # between 200 and 250 MiB: still high
    assert h.sample()["alarms"] == ["memory_low", "rss_high"]
    set_meminfo(root, 129 * 1024)
    set_rss(root, 199 * 1024)
    assert h.sample()["alarms"] == []


def test_disk_alarm_on_the_real_state_dir(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    free_mb = shutil.disk_usage(tmp_path).free / MB
    # thresholds around the real free space: above it raises, far below it clears
    low = HealthThresholds(disk_free_raise_mb=free_mb * 4, disk_free_clear_mb=free_mb * 8)
    h = health(tmp_path, root, thresholds=low)
    assert "disk_low" in h.sample()["alarms"]
    ok = HealthThresholds(disk_free_raise_mb=free_mb / 8, disk_free_clear_mb=free_mb / 4)
    assert "disk_low" not in health(tmp_path, root, thresholds=ok).sample()["alarms"]
    gone = Health(tmp_path / "no-such-dir", root=root, clock=synced).sample()
    assert gone["disk"] is None


def test_undervoltage_is_held_after_it_stops(tmp_path: Path) -> None:
    root = fake_root(tmp_path, throttled="1\n")
    clock = Clock()
    h = health(tmp_path, root, clock)
    fw = root / "sys/devices/platform/soc/soc:firmware/get_throttled"
    assert h.sample()["alarms"] == ["undervoltage"]
    fw.write_text("10000\n")  # under-voltage since boot, not now
    clock.t += 299
    assert h.sample()["alarms"] == ["undervoltage"]
    clock.t += 2
    s = h.sample()
    assert s["alarms"] == []
    assert s["throttle"]["since_boot"] == ["under-voltage"]


def test_clock_alarm_from_the_clock_module(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    state = {"now": ClockState(False, None, None, "adjtimex")}
    h = health(tmp_path, root, clock=lambda: state["now"])
    assert h.sample()["alarms"] == ["clock_unsynced"]
    state["now"] = ClockState(True, 0.2, 0.8, "adjtimex")  # synced, bound between 0.5 and 1
    assert h.sample()["alarms"] == ["clock_unsynced"]
    state["now"] = ClockState(True, 0.1, 0.4, "adjtimex")
    assert h.sample()["alarms"] == []
    state["now"] = ClockState(True, 0.5, 1.5, "adjtimex")  # the bound grew: not trustworthy
    assert h.sample()["alarms"] == ["clock_unsynced"]


def test_clock_falls_back_to_timedatectl(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    answer = tmp_path / "answer"
    answer.write_text("no\n")
    timedatectl = script(
        tmp_path,
        "timedatectl",
        f'test "$*" = "show -p NTPSynchronized --value" || exit 3; cat {answer}',
    )
    unknown = ClockState(False, None, None, "unknown")
    h = health(tmp_path, root, clock=lambda: unknown, timedatectl=timedatectl)
    s = h.sample()
    assert s["clock"] == {
        "synced": False,
        "est_error_s": None,
        "max_error_s": None,
        "source": "timedatectl",
    }
    assert s["alarms"] == ["clock_unsynced"]
    answer.write_text("yes\n")
    s = h.sample()
    assert s["clock"]["synced"] is True
    assert s["alarms"] == []
    # no clock module at all: timedatectl alone
    h2 = Health(tmp_path, root=root, use_clock_module=False, timedatectl=timedatectl)
    assert h2.sample()["clock"]["source"] == "timedatectl"


def test_no_clock_source_is_unknown_and_alarmed(tmp_path: Path) -> None:
    root = fake_root(tmp_path)

    def broken() -> ClockState:
        raise OSError("adjtimex: operation not permitted")

    h = health(tmp_path, root, clock=broken)
    s = h.sample()
    assert s["clock"]["source"] == "unknown"
    assert s["alarms"] == ["clock_unsynced"]


def test_real_system_sample_never_raises(tmp_path: Path) -> None:
    """On this machine's real /proc and /sys: whatever is there is read, nothing raises."""
    s = Health(tmp_path).sample()
    assert s["memory"]["rss_bytes"] is not None
    assert s["memory"]["rss_bytes"] > 0
    assert s["memory"]["available_bytes"] is not None
    assert s["clock"]["source"] in ("adjtimex", "timedatectl", "unknown")
    json.dumps(s)


def test_trim_heap_gives_freed_heap_pages_back() -> None:
    """Buffers freed in the middle of the C heap stay resident until malloc_trim; the
    service calls `trim_heap` every health sample so the steady RSS does not keep them."""
    from node.health import trim_heap

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    blocks = [bytearray(60_000) for _ in range(1500)]  # 90 MB of heap, below mmap's threshold
    for b in blocks:
        b[::4096] = b"\x01" * len(b[::4096])  # touch every page
    pin = blocks[-1]  # the heap's top stays in use: glibc's own trim cannot release below it
    del blocks
    before = rss_mb()
    assert trim_heap() is True
    after = rss_mb()
    assert before - after > 40, f"RSS {before:.0f} -> {after:.0f} MB"
    assert len(pin) == 60_000


def test_the_service_config_sets_the_alarm_thresholds(tmp_path: Path) -> None:
    """`[health]` reaches the alarms: an RSS raised at 300 MB is not raised at 260 MB."""
    from node.config import HealthConfig
    from node.health import Health, HealthThresholds

    t = HealthThresholds.from_config(HealthConfig(rss_raise_mb=300.0, rss_clear_mb=250.0))
    assert (t.rss_raise_mb, t.rss_clear_mb, t.temp_raise_c) == (300.0, 250.0, 80.0)
    alarms = {a.name: a for a in t.alarms()}
    assert alarms["rss_high"].raise_at == 300.0 * 1024 * 1024
    h = Health(tmp_path, t)
    assert h.thresholds.rss_raise_mb == 300.0
