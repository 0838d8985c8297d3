"""How far the node's wall clock can be trusted: the kernel's NTP state, read without changing it.

Evidence carries its capture time in UTC, and a court needs to know how good that time is.
The kernel keeps the answer, whichever NTP daemon (chrony, systemd-timesyncd, ntpd) disciplines
the clock: `adjtimex(2)` called with `modes = 0` only reads it (no privileges needed).

- `synced` is false when the kernel says the clock is unsynchronised (`STA_UNSYNC` set, or the
  call returns `TIME_ERROR`, which includes a maximum error past 16 s).
- `est_error_s` and `max_error_s` are the daemon's estimated and maximum error (`esterror`,
  `maxerror`, microseconds in the kernel). The kernel grows `maxerror` while nothing updates it.

Off Linux, or when the call fails, the state is "unknown": `synced` false, errors None.
`sync_state()` never raises.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

STA_UNSYNC = 0x0040
TIME_ERROR = 5
UNKNOWN = "unknown"
ADJTIMEX = "adjtimex"


@dataclass(frozen=True)
class ClockState:
    """The wall clock's sync state at one moment."""

    synced: bool
    est_error_s: float | None  # the NTP daemon's estimate; None when unknown
    max_error_s: float | None  # the kernel's bound; None when unknown
    source: str  # "adjtimex" or "unknown"

    def as_dict(self) -> dict[str, Any]:
        return {
            "synced": self.synced,
            "est_error_s": self.est_error_s,
            "max_error_s": self.max_error_s,
            "source": self.source,
        }


UNKNOWN_STATE = ClockState(False, None, None, UNKNOWN)


class _Timeval(ctypes.Structure):
    _fields_: ClassVar[list[tuple[str, Any]]] = [
        ("tv_sec", ctypes.c_long),
        ("tv_usec", ctypes.c_long),
    ]


class _Timex(ctypes.Structure):
    """`struct timex` of <sys/timex.h> as the plain `adjtimex` symbol sees it (longs are the
    machine word, so the layout holds on 64-bit and 32-bit ARM alike)."""

    _fields_: ClassVar[list[tuple[str, Any]]] = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 32),  # the kernel's 11 spare ints, with room to spare
    ]


def interpret(state: int, status: int, maxerror_us: int, esterror_us: int) -> ClockState:
    """The `ClockState` for what adjtimex returned (`state`) and filled in."""
    synced = state != TIME_ERROR and not status & STA_UNSYNC and state >= 0
    return ClockState(synced, max(0, esterror_us) / 1e6, max(0, maxerror_us) / 1e6, ADJTIMEX)


def _libc() -> Any:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def sync_state(libc: Any = None) -> ClockState:
    """The clock's sync state now (see the module docstring); never raises."""
    if not sys.platform.startswith("linux"):
        return UNKNOWN_STATE
    try:
        lib = libc if libc is not None else _libc()
        call = lib.adjtimex
        call.argtypes = [ctypes.POINTER(_Timex)]
        call.restype = ctypes.c_int
        tx = _Timex()  # zeroed: modes = 0 reads only
        state = int(call(ctypes.byref(tx)))
        if state < 0:
            return UNKNOWN_STATE
        return interpret(state, int(tx.status), int(tx.maxerror), int(tx.esterror))
    except Exception:  # a clock we cannot read is "unknown", never a crash
        return UNKNOWN_STATE
