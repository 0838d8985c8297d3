"""Signal inputs: serial lines (through a real pty and loop://), GPIO, plan, frames, staleness."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import serial

from node.capture.frame import ArrayRef, Frame
from node.config import SignalConfig
from node.rules.serialsignal import MAX_LINE, SerialSignal, checksum, format_line, parse_line
from node.rules.signal import (
    AMBER,
    DAY_NS,
    GREEN,
    RED,
    UNKNOWN,
    FrameSignal,
    GpioSignal,
    NoSignal,
    PhaseBook,
    PlanSignal,
    SysfsLevel,
    build_signal,
)

NOW_UTC = 1_750_000_000_000_000_000  # a fixed wall clock for the parser tests, ns
NOW_MS = NOW_UTC // 1_000_000
S = 1_000_000_000


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Clock:
    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def test_the_documented_example_line() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "signal-protocol.md").read_text()
    assert "PHASE 3 RED 1750000000000 *73" in doc
    assert format_line("3", "RED", 1_750_000_000_000) == b"PHASE 3 RED 1750000000000 *73\r\n"
    assert checksum(b" 3 RED 1750000000000") == 0x73
    got = parse_line(b"PHASE 3 RED 1750000000000 *73\r")
    assert not isinstance(got, str)
    assert (got.group, got.phase, got.utc_ns) == ("3", RED, 1_750_000_000_000_000_000)


@pytest.mark.parametrize(
    ("line", "outcome"),
    [
        (format_line("1", "RED", NOW_MS).strip(), "accepted"),
        (format_line("1", "GREEN", NOW_MS).strip().lower(), "garbage"),
        (b"PHASE 1 RED " + str(NOW_MS).encode() + b" *00", "checksum"),
        (format_line("1", "BLUE", NOW_MS).strip(), "unknown_phase"),
        (format_line("2", "RED", NOW_MS).strip(), "other_group"),
        (format_line("1", "RED", NOW_MS + 2_500).strip(), "future"),
        (format_line("1", "RED", NOW_MS - 5_100).strip(), "too_old"),
        (b"\xffPHASE 1 RED", "garbage"),
        (b"hello", "garbage"),
        (b"  ", "empty"),
    ],
)
def test_each_line_is_judged(line: bytes, outcome: str) -> None:
    sig = SerialSignal(SignalConfig(), mono_clock=Clock(5 * S), utc_clock=Clock(NOW_UTC))
    assert sig.feed_line(line) == outcome
    state = sig.current(5 * S)
    assert state.phase == (RED if outcome == "accepted" else UNKNOWN)
    if outcome not in ("accepted", "empty"):
        assert sig.stats()[outcome] == 1


def test_refused_lines_never_change_the_phase_and_order_is_kept() -> None:
    mono = Clock(10 * S)
    sig = SerialSignal(SignalConfig(), mono_clock=mono, utc_clock=Clock(NOW_UTC))
    assert sig.feed_line(format_line("1", "RED", NOW_MS - 1000)) == "accepted"
    for bad in (b"PHASE 1 GREEN 1 *00", format_line("1", "GREEN", NOW_MS + 9_000)):
        sig.feed_line(bad)
    assert sig.feed_line(format_line("1", "GREEN", NOW_MS - 2000)) == "out_of_order"
    mono.ns += S // 2
    state = sig.current(mono.ns)
    assert (state.phase, state.stale) == (RED, False)
    assert state.phase_age_s == pytest.approx(0.5)  # from its arrival: transit time not counted
    assert sig.stats()["accepted"] == 1


def test_stale_signal_is_unknown_and_says_for_how_long() -> None:
    mono = Clock(100 * S)
    sig = SerialSignal(SignalConfig(stale_after_s=2.0), mono_clock=mono, utc_clock=Clock(NOW_UTC))
    assert sig.current(mono.ns).reason == "no signal received"
    sig.feed_line(format_line("1", "RED", NOW_MS))
    assert sig.current(mono.ns + 2 * S).phase == RED
    late = sig.current(mono.ns + 12_300_000_000)
    assert (late.phase, late.stale, late.known) == (UNKNOWN, True, False)
    assert late.reason == "signal stale for 12.3 s"
    assert late.info_age_s == pytest.approx(12.3)


def test_phase_age_counts_from_the_first_report_of_the_phase() -> None:
    book = PhaseBook("test", stale_after_s=2.0)
    book.report(RED, 1000 * S, 50 * S)
    book.report(RED, 1001 * S, 51 * S)
    assert book.state(51 * S + S // 2).phase_age_s == pytest.approx(1.5)
    book.report(GREEN, 1002 * S, 52 * S)
    assert book.state(52 * S).phase_age_s == 0.0
    book.report(GREEN, 1010 * S, 60 * S)  # after a stale spell: nobody saw GREEN begin
    assert book.state(60 * S).phase_age_s == 0.0


@pytest.fixture
def loop_port() -> Iterator[serial.SerialBase]:
    port = serial.serial_for_url("loop://", timeout=0.05)
    yield port
    port.close()


def test_loop_url_lines_reach_the_phase(loop_port: serial.SerialBase) -> None:
    sig = SerialSignal(SignalConfig(), opener=lambda: loop_port)
    sig.start()
    try:
        now_ms = time.time_ns() // 1_000_000
        loop_port.write(b"noise\r\n" + format_line("1", "AMBER", now_ms)[:-2])  # no line end yet
        time.sleep(0.1)
        assert sig.current(time.monotonic_ns()).phase == UNKNOWN
        loop_port.write(
            b"\r\n" + b"X" * (MAX_LINE + 40) + b"\r\n" + format_line("1", "RED", now_ms)
        )
        wait_for(lambda: sig.stats()["accepted"] == 2)
        assert sig.current(time.monotonic_ns()).phase == RED
        assert (sig.stats()["garbage"], sig.stats()["overlong"]) == (1, 1)
    finally:
        sig.close()


def test_real_pty_and_reconnect_when_the_port_disappears() -> None:
    ptys: list[tuple[int, int]] = []

    def new_pty() -> str:
        master, slave = os.openpty()
        ptys.append((master, slave))
        return os.ttyname(slave)

    names = [new_pty()]
    cfg = SignalConfig(source="serial", serial_url=names[0], reconnect_max_s=1.0)
    sig = SerialSignal(
        cfg,
        opener=lambda: serial.serial_for_url(names[-1], timeout=0.05),
        first_backoff_s=0.05,
    )
    sig.start()
    try:
        wait_for(lambda: sig.stats().get("connects") == 1)
        now_ms = time.time_ns() // 1_000_000
        os.write(ptys[0][0], b"PHASE 1 RED 12 *99\r\n" + format_line("1", "GREEN", now_ms))
        wait_for(lambda: sig.stats()["accepted"] == 1)
        assert sig.stats()["checksum"] == 1
        assert sig.current(time.monotonic_ns()).phase == GREEN
        for fd in ptys[0]:  # the adapter is unplugged
            os.close(fd)
        wait_for(lambda: "disconnects" in sig.stats())
        names.append(new_pty())  # ... and plugged in again, under a new name
        wait_for(lambda: sig.stats().get("connects") == 2)
        os.write(ptys[1][0], format_line("1", "RED", time.time_ns() // 1_000_000))
        wait_for(lambda: sig.stats()["accepted"] == 2)
        assert sig.current(time.monotonic_ns()).phase == RED
        assert "last_error" in sig.stats()
    finally:
        sig.close()
        for fd in ptys[1]:
            os.close(fd)


def test_reader_backs_off_while_the_port_cannot_be_opened() -> None:
    calls: list[float] = []

    def opener() -> serial.SerialBase:
        calls.append(time.monotonic())
        raise serial.SerialException("could not open port /dev/ttyUSB9")

    sig = SerialSignal(SignalConfig(reconnect_max_s=1.0), opener=opener, first_backoff_s=0.05)
    sig.start()
    try:
        wait_for(lambda: len(calls) >= 4)
    finally:
        sig.close()
    gaps = np.diff(calls[:4])  # pauses of 0.05, 0.1 and 0.2 s (a wait never ends early)
    assert gaps[0] >= 0.045
    assert gaps[2] >= 0.19
    assert int(sig.stats()["open_failures"]) >= 4


def test_plan_signal_at_known_times() -> None:
    plan = PlanSignal(30.0, 3.0, 27.0, offset_s=10.0, utc_offset_ns=0)
    midnight = 20_000 * DAY_NS

    def at(seconds: float) -> tuple[str, float]:
        p = plan.phase_at(midnight + round(seconds * S))
        return p.phase, (midnight + round(seconds * S) - p.since_utc_ns) / S

    assert at(10.0) == (GREEN, 0.0)
    assert at(39.5) == (GREEN, 29.5)
    assert at(41.0) == (AMBER, 1.0)
    assert at(45.0) == (RED, 2.0)
    assert at(70.0) == (GREEN, 0.0)
    assert at(5.0) == (RED, 22.0)  # before today's start: yesterday's cycles run on
    state = plan.current(midnight + 45 * S)
    assert (state.phase, state.phase_age_s, state.stale) == (RED, 2.0, False)


class Level:
    def __init__(self, high: bool = False) -> None:
        self.high = high
        self.broken = False

    def read_level(self) -> bool:
        if self.broken:
            raise OSError("gpio read failed")
        return self.high


def test_gpio_lamps() -> None:
    red, amber = Level(), Level()
    sig = GpioSignal(red, amber, stale_after_s=1.0, utc_offset_ns=0)
    assert sig.current(1 * S).phase == GREEN
    amber.high = True
    assert sig.current(2 * S).phase == AMBER
    red.high = True
    assert sig.current(3 * S).phase == RED
    assert sig.current(4 * S).phase_age_s == pytest.approx(1.0)
    red.broken = True
    assert sig.current(4 * S + S // 2).phase == RED  # one bad read: still fresh
    assert sig.current(5 * S + S // 2).phase == UNKNOWN
    assert sig.stats()["read_errors"] == 2
    no_amber = GpioSignal(Level(), None, 1.0, utc_offset_ns=0)
    assert no_amber.current(S).phase == GREEN  # amber not wired: counts as green
    inverted = GpioSignal(Level(high=False), None, 1.0, active_low=True, utc_offset_ns=0)
    assert inverted.current(S).phase == RED


def test_sysfs_level(tmp_path: Path) -> None:
    (tmp_path / "gpio17").mkdir()
    (tmp_path / "gpio17" / "value").write_text("1\n")
    assert SysfsLevel(17, tmp_path).read_level() is True
    with pytest.raises(FileNotFoundError):
        SysfsLevel(18, tmp_path).read_level()


def sim_frame(seq: int, meta: dict[str, float | int | str]) -> Frame:
    image = np.zeros((4, 4, 3), np.uint8)
    return Frame(seq, seq * S // 10, NOW_UTC + seq * S // 10, image, ArrayRef(image), meta)


def test_frame_signal_reads_the_simulator_phase() -> None:
    sig = FrameSignal(stale_after_s=1.0)
    assert sig.current(0).reason == "no signal_phase in the frames"
    for seq in range(5):
        sig.observe(sim_frame(seq, {"signal_phase": RED}))
    state = sig.current(4 * S // 10)
    assert state.phase == RED
    assert state.phase_age_s == pytest.approx(0.4)
    sig.observe(sim_frame(5, {"signal_phase": "PURPLE"}))
    sig.observe(sim_frame(6, {}))
    assert (sig.stats()["invalid"], sig.stats()["missing"]) == (1, 1)
    assert sig.current(20 * S // 10).phase == UNKNOWN


def test_build_signal_for_each_source() -> None:
    base = SignalConfig()
    assert isinstance(build_signal(base), NoSignal)
    assert build_signal(base).current(0).reason.startswith("no signal source configured")
    assert isinstance(build_signal(dataclasses.replace(base, source="frame")), FrameSignal)
    assert isinstance(build_signal(dataclasses.replace(base, source="plan")), PlanSignal)
    serial_cfg = dataclasses.replace(base, source="serial", serial_url="loop://")
    assert isinstance(build_signal(serial_cfg), SerialSignal)
    with pytest.raises(OSError, match="gpio"):
        build_signal(dataclasses.replace(base, source="gpio", gpio_red_line=-1))
