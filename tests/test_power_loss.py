"""Power loss: `roadnode run` killed with SIGKILL at random moments, again and again.

After every kill the node starts cleanly on the same state dir, says it is healthy, and the
store holds every packet it had before, intact (`queue check`)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.control import ControlError, query
from node.infer.manifest import DEFAULT_MANIFEST

KILLS = 6


def start(state: Path) -> subprocess.Popen[bytes]:
    args = [
        "run",
        "--state-dir",
        str(state),
        "--source",
        "sim://junction?seed=3&rate=120&violations=1",
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "node", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def healthy(state: Path, timeout: float = 60.0) -> dict[str, object]:
    """The status once frames flow, or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = query(state, {"cmd": "status"}, timeout=2.0)
            if s["frames"]["processed"] > 0:
                return s
        except (ControlError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError("the node did not come up healthy after a kill")


def stored_ids(state: Path) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "node", "queue", "check", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"queue check after a kill: {out.stdout}{out.stderr}"
    blobs = state / "store" / "blobs"
    acked = state / "store" / "acked"
    return {p.name for d in (blobs, acked) if d.exists() for p in d.iterdir()}


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_MANIFEST.exists(), reason="needs the bundled detector")
def test_kill_9_at_random_moments_then_restart(tmp_path: Path) -> None:
    rng = random.Random(20261128)
    state = tmp_path / "state"
    before: set[str] = set()
    for _ in range(KILLS):
        proc = start(state)
        try:
            status = healthy(state)
            assert status["detector"]["state"] == "running"  # type: ignore[index]
            assert status["evidence"]["state"] == "running"  # type: ignore[index]
            time.sleep(rng.uniform(1.0, 6.0))
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        now = stored_ids(state)
        assert before <= now, f"packets lost by a kill: {sorted(before - now)}"
        before = now
    assert before, "no packet was stored between the kills: nothing was at stake"
    proc = start(state)  # and once more: it comes up and stops cleanly
    try:
        healthy(state)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    out = subprocess.run(
        [sys.executable, "-m", "node", "queue", "--json", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout)["states"]["quarantined"]["count"] == 0
