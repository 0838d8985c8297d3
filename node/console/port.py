"""The console on a serial port: open, serve sessions, and reopen when the port goes away.

The port is opened with pyserial's `serial_for_url` (so `/dev/ttyGS0`, `/dev/serial0`,
`/dev/ttyUSB0`, `rfc2217://...` and `loop://` all work). A pulled cable or a USB adapter that
disappears ends the session (`SerialException` or `OSError`); the console then tries to open
the port again, waiting 0.5 s, 1 s, 2 s ... up to `console.reopen_max_s`, for as long as it
runs. Each successful open starts a new session (locked, with a banner). The staged-config
revert timer keeps running while no port is open: an edit that cut the technician off still
undoes itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from node.console.session import Context, Session

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.1
WRITE_TIMEOUT_S = 2.0
FIRST_BACKOFF_S = 0.5
QUIET_LOG_S = 60.0  # while the port stays away, say so at most this often

Opener = Callable[[str, int], Any]


def open_serial(url: str, baud: int) -> Any:
    import serial

    return serial.serial_for_url(
        url,
        baudrate=baud,
        timeout=READ_TIMEOUT_S,
        write_timeout=WRITE_TIMEOUT_S,
        xonxoff=False,
        rtscts=False,
    )


class Console:
    """Serves `ctx` on the port at `url` until `stop` is set."""

    def __init__(
        self,
        ctx: Context,
        url: str,
        stop: threading.Event,
        opener: Opener = open_serial,
    ) -> None:
        self.ctx = ctx
        self.url = url
        self.stop = stop
        self.opener = opener
        self.baud = ctx.cfg.console.baud
        self.sessions = 0  # ports opened so far
        self.losses = 0  # ports lost so far
        self.session: Session | None = None
        self._worked = False

    def run(self) -> None:
        backoff = FIRST_BACKOFF_S
        last_complaint = float("-inf")
        while not self.stop.is_set():
            self._poll_staged()
            try:
                port = self.opener(self.url, self.baud)
            except (OSError, ValueError, ImportError) as e:  # SerialException is an OSError
                now = time.monotonic()
                if now - last_complaint >= QUIET_LOG_S:
                    log.warning("console port %s: cannot open: %s (retrying)", self.url, e)
                    last_complaint = now
                self.stop.wait(backoff)
                backoff = min(backoff * 2, self.ctx.cfg.console.reopen_max_s)
                continue
            last_complaint = float("-inf")
            self.sessions += 1
            log.info("console on %s at %d baud", self.url, self.baud)
            self.ctx.audit.record("port_open", sessions=self.sessions)
            self._worked = False
            try:
                self._serve(port)
            except (OSError, ValueError) as e:  # SerialException, EIO, a closed fd
                if self._worked:
                    backoff = FIRST_BACKOFF_S  # the port worked: this loss starts afresh
                self.losses += 1
                log.warning("console port %s lost: %s", self.url, e)
                self.ctx.audit.record("port_lost", error=str(e)[:120])
                self.stop.wait(backoff)
                backoff = min(backoff * 2, self.ctx.cfg.console.reopen_max_s)
            finally:
                self.session = None
                with contextlib.suppress(Exception):
                    port.close()

    def _serve(self, port: Any) -> None:
        """Run a session on an open port until stopped; raises when the port fails."""
        session = Session(self.ctx, port.write)
        self.session = session
        session.banner()
        while not self.stop.is_set():
            data = port.read(max(1, port.in_waiting))
            if data:
                self._worked = True
                session.feed(data)
            session.tick()
            self._poll_staged()

    def _poll_staged(self) -> None:
        try:
            lines = self.ctx.staged.poll()
        except Exception as e:  # the revert failed: say so, try again on the next poll
            log.error("config revert failed: %s", e)
            self.ctx.audit.record("config_revert_failed", error=str(e)[:120])
            return
        if lines is None:
            return
        log.warning("console: %s", "; ".join(lines))
        self.ctx.audit.record("config_auto_revert", outcome="reverted")
        if self.session is not None:
            self.session.notice(lines)
