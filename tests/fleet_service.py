"""A stand-in for the node service in the fleet tests: a real control socket (node.control)
whose `status` answer follows the fleet layout on disk, as the real service would after a
restart: the version is the release `releases/current` points at; the detector runs when
`models/current` exists; a file `behaviour.txt` in the current release (or model) makes it
misbehave: `stall` (frames never advance), `down` (no control socket at all),
`detector-failed` (the detector refuses its model).

In process: `FakeService(state_dir)`, `.restart()`. As a process (the agent's
`fleet.restart_command` in the kill tests, run from the repository root):

    python -m tests.fleet_service restart STATE_DIR   (stop the one running, start another)
    python -m tests.fleet_service stop STATE_DIR
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from node.control import ControlError, ControlServer, query

BASE_VERSION = "0.1.0"


class FakeService:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.root = state_dir / "fleet"
        self.started = time.monotonic()
        self.server: ControlServer | None = None
        self.restarts = 0

    def behaviour(self) -> str:
        out = []
        for p in (
            self.root / "releases" / "current" / "wheels" / "behaviour.txt",
            self.root / "models" / "current" / "behaviour.txt",
        ):
            with contextlib.suppress(OSError):
                out.append(p.read_text())
        return " ".join(out)

    def version(self) -> str:
        try:
            return os.readlink(self.root / "releases" / "current")
        except OSError:
            return BASE_VERSION

    def status(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("cmd") != "status":
            return {"ok": False, "error": "unknown command"}
        b = self.behaviour()
        processed = 0 if "stall" in b else int((time.monotonic() - self.started) * 200)
        if "detector-failed" in b:
            detector: dict[str, Any] = {"state": "failed", "error": "model refused"}
        elif (self.root / "models" / "current").exists():
            detector = {"state": "running", "model": os.readlink(self.root / "models" / "current")}
        else:
            detector = {"state": "absent", "error": "no bundled model in this build"}
        frames = {"in": processed, "processed": processed, "dropped": 0}
        return {"ok": True, "version": self.version(), "frames": frames, "detector": detector}

    def start(self) -> None:
        self.started = time.monotonic()
        if "down" in self.behaviour():
            return
        self.server = ControlServer(self.state_dir, self.status)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def restart(self) -> None:
        self.restarts += 1
        self.stop()
        self.start()


def _pidfile(state_dir: Path) -> Path:
    return state_dir / "fake-service.pid"


def stop_process(state_dir: Path) -> None:
    try:
        pid = int(_pidfile(state_dir).read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(250):
            if not _alive(pid):
                break
            time.sleep(0.02)
    _pidfile(state_dir).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaps, as in a container without init, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def restart_process(state_dir: Path) -> int:
    stop_process(state_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fleet_service", "serve", str(state_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # never hold the caller's pipes open
        start_new_session=True,
    )
    _pidfile(state_dir).write_text(str(proc.pid))
    for _ in range(250):  # until it answers (a "down" release never does)
        try:
            query(state_dir, {"cmd": "status"}, timeout=1.0)
            return 0
        except ControlError:
            if proc.poll() is not None:
                return 1
            time.sleep(0.02)
    return 0


def serve(state_dir: Path) -> int:
    service = FakeService(state_dir)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    service.start()
    while not done.wait(0.5):
        if not state_dir.exists():  # its test is over (or crashed): never outlive it
            break
    service.stop()
    return 0


def main(argv: list[str]) -> int:
    action, state_dir = argv[0], Path(argv[1])
    if action == "serve":
        return serve(state_dir)
    if action == "restart":
        return restart_process(state_dir)
    stop_process(state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
