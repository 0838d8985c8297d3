"""The inbox: a folder where bundles are dropped (by a fleet agent, scp, a USB stick).

A `watchdog` observer (inotify on Linux, polling where inotify fails) reports what happens in
the folder; `Inbox.ready()` returns the files that are complete:

- names that are temporary are never taken: starting with `.` (rsync, scp -T), ending with
  `.part`, `.partial`, `.tmp`, `.crdownload`, `.swp` or `~`;
- only regular files (no links, folders, fifos), at most one level deep (the folder itself);
- a file written in place must have been **closed** after its last write (inotify's
  IN_CLOSE_WRITE), and its size and mtime unchanged for `settle_s`; a file renamed into the
  folder (the atomic way to drop one) or found at start only needs the settle time. A file
  held open and written slowly is therefore never taken half-written, however long it pauses.

The observer only speeds things up: `ready()` also looks at the folder itself each call, so a
lost event (inotify queue overflow) delays a bundle by one settle time, never forever.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".swp", "~")


def is_temporary(name: str) -> bool:
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES)


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float  # monotonic time the size/mtime were first seen like this
    closed: bool  # closed after its last write, moved in, or found at start


class Inbox:
    """Watch `folder` for complete bundles. Use as a context manager (starts the observer)."""

    def __init__(
        self, folder: Path, settle_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.folder = folder
        self.settle_s = settle_s
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}
        self._observer: Any = None
        folder.mkdir(parents=True, exist_ok=True, mode=0o770)
        for entry in os.scandir(folder):  # present before we watched: no close event will come
            self._note(entry.name, closed=True)

    # --- watchdog --------------------------------------------------------------------------

    def start(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        inbox = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                inbox._event(event.event_type, _fs(event.src_path), _fs(event.dest_path))

        try:
            observer: Any = Observer(timeout=0.25)
            observer.schedule(Handler(), str(self.folder), recursive=False)
            observer.start()
        except OSError as e:  # inotify limits: poll instead
            log.warning("inbox: inotify unavailable (%s); polling %s", e, self.folder)
            observer = PollingObserver(timeout=0.25)
            observer.schedule(Handler(), str(self.folder), recursive=False)
            observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def __enter__(self) -> Inbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _event(self, kind: str, src: str, dest: str) -> None:
        folder = str(self.folder)
        if kind == "moved":
            if os.path.dirname(src) == folder:
                self._forget(os.path.basename(src))
            if os.path.dirname(dest) == folder:
                self._note(os.path.basename(dest), closed=True)  # renamed in: complete
            return
        if os.path.dirname(src) != folder:
            return
        name = os.path.basename(src)
        if kind in ("created", "modified"):
            self._note(name, closed=False)
        elif kind == "closed":  # IN_CLOSE_WRITE: the writer closed it
            self._note(name, closed=True)
        elif kind == "deleted":
            self._forget(name)

    # --- bookkeeping -----------------------------------------------------------------------

    def _forget(self, name: str) -> None:
        with self._lock:
            self._seen.pop(name, None)

    def _note(self, name: str, closed: bool | None) -> None:
        """Record what `name` looks like now. `closed`: True = closed after writing (or
        renamed in, or found at start), False = being written, None = no news (a scan)."""
        if is_temporary(name):
            return
        try:
            st = os.lstat(self.folder / name)
        except FileNotFoundError:
            self._forget(name)
            return
        if not stat.S_ISREG(st.st_mode):
            return
        now = self.clock()
        with self._lock:
            old = self._seen.get(name)
            if old is None:
                self._seen[name] = _Seen(st.st_size, st.st_mtime_ns, now, closed is not False)
                return
            if (old.size, old.mtime_ns) != (st.st_size, st.st_mtime_ns):
                old.size, old.mtime_ns, old.since = st.st_size, st.st_mtime_ns, now
            if closed is not None:
                old.closed = closed

    def ready(self) -> list[Path]:
        """Complete bundles, oldest first. Looks at the folder too (events may be lost: a file
        seen only by this scan needs just the settle time)."""
        names = set()
        for entry in os.scandir(self.folder):
            names.add(entry.name)
            self._note(entry.name, closed=None)
        now = self.clock()
        with self._lock:
            for gone in set(self._seen) - names:
                del self._seen[gone]
            ordered = sorted(self._seen.items(), key=lambda kv: kv[1].since)
            return [
                self.folder / name
                for name, seen in ordered
                if seen.closed and now - seen.since >= self.settle_s
            ]

    def taken(self, path: Path) -> None:
        """`path` was moved out of the inbox."""
        self._forget(path.name)


def _fs(path: bytes | str) -> str:
    return os.fsdecode(path)
