"""The console's audit log: one JSON line per command, appended to a file in the state dir.

`<state_dir>/console-audit.jsonl`, mode 0640, each line fsynced. Rotated to `.1` (one old file
kept) when it passes its size cap; telemetry uploads both. A line says when, on which port, what
command (its word and sub-command), the arguments that are safe to keep, whether the PIN was
unlocked, and the outcome. It never holds a PIN, a PIN hash, or free text a technician typed
that is not a known command (a mistyped line could be a plate number).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

AUDIT_FILE = "console-audit.jsonl"
SECRET_KEY = re.compile(r"(pin|key|secret|token|password|passwd|cred)", re.IGNORECASE)
SAFE_ARG = re.compile(r"[A-Za-z0-9_.:/=+-]{1,128}")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def safe_args(words: list[str]) -> list[str]:
    """The arguments worth keeping: secret config values and odd text are replaced."""
    out: list[str] = []
    previous = ""
    for word in words[:8]:
        key, sep, _ = word.partition("=")
        if SECRET_KEY.search(key) and sep:
            out.append(f"{key}=<redacted>")
        elif SECRET_KEY.search(previous):
            out.append("<redacted>")  # the value after a secret key
        elif SAFE_ARG.fullmatch(word):
            out.append(word)
        else:
            out.append(f"<{len(word)} chars>")
        previous = word
    return out


class AuditLog:
    """Appends audit records to `<state_dir>/console-audit.jsonl`; never raises on I/O."""

    def __init__(self, state_dir: Path, max_bytes: int = 1024 * 1024, port: str = "") -> None:
        self.path = state_dir / AUDIT_FILE
        self.max_bytes = max_bytes
        self.port = port
        self.errors = 0
        self._lock = threading.Lock()

    def record(self, event: str, **fields: Any) -> None:
        line = json.dumps(
            {"ts": utc_now(), "port": self.port, "event": event, **fields},
            ensure_ascii=True,
            separators=(",", ":"),
            default=str,
        )
        with self._lock:
            try:
                self._rotate_if_full()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line.encode("ascii") + b"\n")
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                self.errors += 1  # the console keeps working on a full or read-only disk

    def _rotate_if_full(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_size >= self.max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))

    def command(
        self, words: list[str], outcome: str, unlocked: bool, detail: str = "", **extra: Any
    ) -> None:
        """One command line: `words[0]` must be a known command (the caller checks)."""
        name = words[0]
        args = safe_args(words[1:])
        fields: dict[str, Any] = {"cmd": name, "args": args, "unlocked": unlocked}
        fields["outcome"] = outcome
        if detail:
            fields["detail"] = detail[:200]
        self.record("command", **fields, **extra)


class AuditShipper:
    """The audit records not yet sent to the central, for the telemetry heartbeat.

    `pending()` returns the records appended since the last `sent()` (at most `limit`), and
    remembers where they end; `sent()` (called once the heartbeat carrying them is safely in
    the store) moves the mark, kept in `<state_dir>/console-audit.sent` so a restart does not
    send them again. A rotated log starts over from its beginning."""

    MARK = "console-audit.sent"

    def __init__(self, state_dir: Path, limit: int = 50) -> None:
        self.path = state_dir / AUDIT_FILE
        self.mark_path = state_dir / self.MARK
        self.limit = limit
        self._next: tuple[int, int] | None = None

    def _mark(self) -> tuple[int, int]:
        """(inode, offset) of the first record not yet sent."""
        try:
            inode, offset = self.mark_path.read_text(encoding="ascii").split()
            return int(inode), int(offset)
        except (OSError, ValueError):
            return (0, 0)

    def pending(self) -> list[dict[str, Any]]:
        try:
            st = self.path.stat()
            with self.path.open("rb") as f:
                inode, offset = self._mark()
                if inode != st.st_ino or offset > st.st_size:
                    offset = 0  # a new (rotated) file
                f.seek(offset)
                records: list[dict[str, Any]] = []
                for line in f:
                    if not line.endswith(b"\n") or len(records) >= self.limit:
                        break
                    offset += len(line)
                    with contextlib.suppress(ValueError):
                        records.append(json.loads(line))
        except OSError:
            return []
        self._next = (st.st_ino, offset)
        return records

    def sent(self) -> None:
        if self._next is None:
            return
        tmp = self.mark_path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(f"{self._next[0]} {self._next[1]}\n", encoding="ascii")
            os.replace(tmp, self.mark_path)
        self._next = None
