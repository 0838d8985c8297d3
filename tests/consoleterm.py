"""Test helpers for the console: a terminal on a real pty pair, a fake clock, a fake runner."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from node.config import Config
from node.console import build_context
from node.console.port import Console
from node.console.session import Context
from node.console.system import RunResult

PIN = "4711-ok"


class FakeClock:
    """A clock the test moves by hand (monotonic and wall clock alike)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class FakeRunner:
    """Records the commands the console runs; answers like a machine with systemd."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.answers: dict[str, RunResult] = {
            "systemctl is-active": RunResult(3, "inactive\n"),
        }

    def __call__(self, argv: list[str], timeout: float) -> RunResult:
        self.calls.append(list(argv))
        key = " ".join(argv[:2])
        return self.answers.get(key, RunResult(0, ""))

    def ran(self, *argv: str) -> int:
        return sum(1 for c in self.calls if c == list(argv))


class Terminal:
    """The technician's end: the master side of a pty, read and written like a terminal."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.buf = b""

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, marker: bytes, timeout: float = 10.0) -> str:
        """Everything up to and including `marker` (consumed); fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {marker!r}; got {self.buf[-600:]!r}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                self.buf += chunk
        cut = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out.decode("ascii")

    def command(self, line: str, prompt: bytes = b"t1> ", end: bytes = b"\r") -> str:
        """Type `line` and Enter; the output up to the next prompt (echo included)."""
        self.send(line.encode("ascii") + end)
        return self.expect(prompt)


def make_pty(link: Path) -> Terminal:
    """A new pty pair whose slave `link` points to (like a udev symlink to a USB port)."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.close(slave)  # the console opens it by path; the test keeps only the master
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(name)
    os.replace(tmp, link)
    return Terminal(master)


@contextmanager
def running_console(
    cfg: Config,
    state_dir: Path,
    config_path: Path | None,
    link: Path,
    clock: FakeClock,
    runner: FakeRunner,
) -> Iterator[tuple[Console, Context]]:
    ctx = build_context(
        cfg, state_dir, config_path, str(link), clock=clock, wall=clock, runner=runner
    )
    stop = threading.Event()
    console = Console(ctx, str(link), stop)
    thread = threading.Thread(target=console.run, daemon=True)
    thread.start()
    try:
        yield console, ctx
    finally:
        stop.set()
        thread.join(5)
        assert not thread.is_alive(), "console did not stop"
