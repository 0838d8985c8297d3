"""The clock's sync state: read from the kernel without changing it, never raising."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import pytest

from node import clock
from node.clock import STA_UNSYNC, TIME_ERROR, ClockState, interpret, sync_state


def test_interpret_unsync_flag_and_time_error_mean_unsynced() -> None:
    ok = interpret(0, 0x2001, 120_000, 1_500)  # TIME_OK, STA_PLL | STA_NANO-ish bits
    assert ok == ClockState(True, 0.0015, 0.12, "adjtimex")
    assert not interpret(0, STA_UNSYNC, 120_000, 1_500).synced
    assert not interpret(TIME_ERROR, 0, 120_000, 1_500).synced
    assert interpret(1, 0, 10, 10).synced  # TIME_INS (leap second pending) is still synced


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex is Linux only")
def test_real_kernel_answers_with_sane_errors() -> None:
    state = sync_state()
    assert state.source == "adjtimex"
    assert state.est_error_s is not None
    assert state.max_error_s is not None
    # The kernel caps maxerror at NTP_PHASE_LIMIT (16 s): a misread struct would not fit.
    assert 0.0 <= state.est_error_s <= 16.0
    assert 0.0 <= state.max_error_s <= 16.0
    assert isinstance(state.synced, bool)


class FakeLibc:
    """A libc whose adjtimex fills the struct the way the kernel does."""

    def __init__(self, ret: int, status: int, maxerror: int, esterror: int) -> None:
        self.calls: list[int] = []

        def adjtimex(ref: Any) -> int:
            tx = ref._obj
            self.calls.append(int(tx.modes))
            tx.status, tx.maxerror, tx.esterror = status, maxerror, esterror
            tx.freq = 123_456  # fields around them are filled too
            return ret

        self.adjtimex = adjtimex


def test_reads_the_fields_the_call_filled_and_asks_to_change_nothing() -> None:
    libc = FakeLibc(0, 0, 250_000, 4_000)
    assert sync_state(libc) == ClockState(True, 0.004, 0.25, "adjtimex")
    assert libc.calls == [0]  # modes = 0: read only
    assert sync_state(FakeLibc(0, STA_UNSYNC, 16_000_000, 16_000_000)).synced is False


def test_failures_are_unknown_never_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        @property
        def adjtimex(self) -> Any:
            raise AttributeError("no adjtimex in this libc")

    assert sync_state(Broken()) == clock.UNKNOWN_STATE
    assert sync_state(FakeLibc(-1, 0, 0, 0)) == clock.UNKNOWN_STATE
    monkeypatch.setattr(sys, "platform", "darwin")
    assert sync_state() == ClockState(False, None, None, "unknown")


def test_struct_has_room_for_the_kernel_struct() -> None:
    # glibc's struct timex is 208 bytes on LP64 and 128 on ILP32; ours may only be larger.
    assert ctypes.sizeof(clock._Timex) >= (208 if ctypes.sizeof(ctypes.c_long) == 8 else 128)
    assert clock._Timex.maxerror.offset == 3 * ctypes.sizeof(ctypes.c_long)


def test_as_dict_is_json_ready() -> None:
    assert ClockState(False, None, None, "unknown").as_dict() == {
        "synced": False,
        "est_error_s": None,
        "max_error_s": None,
        "source": "unknown",
    }
