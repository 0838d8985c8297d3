"""The signal phase from the controller's serial line (protocol: docs/signal-protocol.md).

    PHASE <group> RED|AMBER|GREEN <utc-ms> *<checksum>\\r\\n

`<checksum>` is two hex digits: the XOR of every byte after the word `PHASE` up to, not
including, the space before `*`. A line that is malformed, too long, fails its checksum,
names an unknown phase, or is stamped too far in the future or the past is ignored and
counted by reason; it never changes the phase. A reader thread owns the port and reopens it
with growing pauses when it fails or disappears.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

import serial

from node.capture.frame import Frame
from node.config import SignalConfig
from node.rules.signal import PHASES, PhaseBook, SignalState

log = logging.getLogger(__name__)

MAX_LINE = 80  # bytes, without the line end
FIRST_BACKOFF_S = 0.5
READ_TIMEOUT_S = 0.2
_LINE = re.compile(rb"PHASE( ([A-Za-z0-9_-]{1,16}) ([A-Z]{1,12}) ([0-9]{1,15})) \*([0-9A-Fa-f]{2})")
Opener = Callable[[], serial.SerialBase]


def checksum(body: bytes) -> int:
    """XOR of the bytes of `body`."""
    return reduce(lambda a, b: a ^ b, body, 0)


def format_line(group: str, phase: str, utc_ms: int) -> bytes:
    """One protocol line, with its checksum and CR LF (what a controller sends)."""
    body = f" {group} {phase} {utc_ms}".encode("ascii")
    return b"PHASE" + body + b" *%02X\r\n" % checksum(body)


@dataclass(frozen=True, slots=True)
class PhaseReport:
    group: str
    phase: str
    utc_ns: int


def parse_line(line: bytes) -> PhaseReport | str:
    """A well-formed line's report, or why it is not one: garbage, checksum or unknown_phase."""
    m = _LINE.fullmatch(line.rstrip(b"\r\n"))
    if m is None:
        return "garbage"
    body, group, phase, ms, given = m.groups()
    if checksum(body) != int(given, 16):
        return "checksum"
    if phase.decode() not in PHASES:
        return "unknown_phase"
    return PhaseReport(group.decode(), phase.decode(), int(ms) * 1_000_000)


class SerialSignal:
    """`SignalInput` reading protocol lines from a pyserial URL on its own thread."""

    def __init__(
        self,
        cfg: SignalConfig,
        opener: Opener | None = None,
        mono_clock: Callable[[], int] = time.monotonic_ns,
        utc_clock: Callable[[], int] = time.time_ns,
        first_backoff_s: float = FIRST_BACKOFF_S,
    ) -> None:
        self.cfg = cfg
        self.book = PhaseBook("serial", cfg.stale_after_s)
        self._open = opener or self._open_url
        self._mono, self._utc = mono_clock, utc_clock
        self._first_backoff = first_backoff_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_report_ns = 0
        self._got_lines = False  # in the current connection
        self.last_error = ""

    def _open_url(self) -> serial.SerialBase:
        return serial.serial_for_url(
            self.cfg.serial_url, baudrate=self.cfg.serial_baud, timeout=READ_TIMEOUT_S
        )

    # --- SignalInput -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="signal-serial", daemon=True)
            self._thread.start()

    def observe(self, frame: Frame) -> None:
        return None

    def current(self, now_mono_ns: int) -> SignalState:
        return self.book.state(now_mono_ns)

    def stats(self) -> dict[str, int | float | str]:
        out = self.book.stats()
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    # --- lines -----------------------------------------------------------------------------

    def feed_line(self, line: bytes) -> str:
        """Handle one received line (without its LF); returns what became of it."""
        if not line.strip():
            return "empty"
        got = parse_line(line)
        outcome = got if isinstance(got, str) else self._judge(got)
        if outcome == "accepted" and not isinstance(got, str):
            self.book.report(got.phase, got.utc_ns, self._mono())
        else:
            self.book.count(outcome)
        return outcome

    def _judge(self, report: PhaseReport) -> str:
        """'accepted', or why a well-formed report is not acted on."""
        if report.group != self.cfg.serial_group:
            return "other_group"
        now = self._utc()
        if report.utc_ns > now + self.cfg.max_future_s * 1e9:
            return "future"
        if report.utc_ns < now - self.cfg.max_age_s * 1e9:
            return "too_old"
        if report.utc_ns < self._last_report_ns:
            return "out_of_order"
        self._last_report_ns = report.utc_ns
        return "accepted"

    # --- the reader thread -----------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._first_backoff
        while not self._stop.is_set():
            try:
                port = self._open()
            except (serial.SerialException, OSError, ValueError) as e:
                self._failed("open_failures", e)
            else:
                self.book.count("connects")
                try:
                    self._read(port)
                    backoff = self._first_backoff
                except (serial.SerialException, OSError) as e:
                    self._failed("disconnects", e)
                    backoff = self._first_backoff if self._got_lines else backoff
                finally:
                    port.close()
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, self.cfg.reconnect_max_s)

    def _failed(self, what: str, e: Exception) -> None:
        self.book.count(what)
        message = f"{what.replace('_', ' ')}: {e}"
        if message != self.last_error:
            log.warning("signal serial %s: %s", self.cfg.serial_url or "port", message)
        self.last_error = message

    def _read(self, port: serial.SerialBase) -> None:
        """Read lines until stopped; SerialException/OSError when the port fails."""
        buf = bytearray()
        skipping = False  # inside an overlong line: drop bytes up to its end
        self._got_lines = False
        while not self._stop.is_set():
            chunk = port.read(max(1, getattr(port, "in_waiting", 0)))
            if not chunk:
                continue
            buf += chunk
            while (end := buf.find(b"\n")) >= 0:
                line, buf = bytes(buf[:end]), buf[end + 1 :]
                if skipping:
                    skipping = False
                elif len(line) > MAX_LINE:
                    self.book.count("overlong")
                else:
                    self.feed_line(line)
                    self._got_lines = True
            if len(buf) > MAX_LINE:
                if not skipping:
                    self.book.count("overlong")
                skipping, buf = True, bytearray()
