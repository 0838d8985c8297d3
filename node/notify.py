"""systemd notifications (sd_notify) through the `sdnotify` library.

A no-op when `NOTIFY_SOCKET` is unset (not started by systemd with `Type=notify`).
"""

from __future__ import annotations

import os

import sdnotify


class Notifier:
    """Sends READY=1, WATCHDOG=1 and STATUS= datagrams to systemd."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s: float | None = int(usec) / 1e6 if usec.isdigit() and mine else None

    def _send(self, state: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(state)

    def ready(self) -> None:
        self._send("READY=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def status(self, line: str) -> None:
        self._send("STATUS=" + line.replace("\n", " "))

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def close(self) -> None:
        sock = getattr(self._notifier, "socket", None)
        if sock is not None:
            sock.close()
        self._notifier = None
