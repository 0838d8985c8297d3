"""Crash safety: a real process appending and acking is SIGKILLed 200 times at random moments
(while it opens and recovers the store, too); after each kill the store is reopened and every
packet whose append returned is there and intact, no acked packet comes back, nothing twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import StoreConfig
from node.store import PacketStore
from tests.store_crash_child import payload

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "store_crash_child.py"
ROUNDS = 200


@pytest.fixture
def zygote() -> Iterator[subprocess.Popen[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-S", str(CHILD)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()


def run_and_kill(
    zygote: subprocess.Popen[str], directory: Path, round_no: int, delay: float
) -> list[str]:
    """Fork a worker, SIGKILL it after `delay` seconds, return the lines it completed."""
    assert zygote.stdin is not None
    assert zygote.stdout is not None
    log_file = directory.parent / "worker.log"
    zygote.stdin.write(f"{round_no} {directory} {log_file}\n")
    zygote.stdin.flush()
    pid = int(zygote.stdout.readline())
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    assert zygote.stdout.readline() == "done\n"  # reaped: it holds nothing any more
    return log_file.read_text().splitlines()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(
    tmp_path: Path, zygote: subprocess.Popen[str]
) -> None:
    directory = tmp_path / "store"
    rng = random.Random(5)
    appended: set[str] = set()
    acked: set[str] = set()
    acking: set[str] = set()  # acks started: when cut short, the packet may be acked or not
    killed_opening = killed_working = 0
    for round_no in range(ROUNDS):
        lines = run_and_kill(zygote, directory, round_no, rng.uniform(0.0, 0.12))
        for line in lines:
            tag, _, packet_id = line.partition(" ")
            assert tag != "X", f"round {round_no}: worker read wrong bytes for {packet_id}"
            if tag == "P":
                assert packet_id not in appended
                appended.add(packet_id)
            elif tag == "a":
                acking.add(packet_id)
            elif tag == "A":
                acked.add(packet_id)
        killed_opening += lines[:1] != ["O"]
        killed_working += len(lines) > 1

        with PacketStore(directory, StoreConfig()) as store:
            stats = store.stats()
            assert stats["states"]["in_flight"]["count"] == 0  # in flight -> ready on open
            assert stats["states"]["quarantined"]["count"] == 0, stats["quarantined"]
            claimed = store.claim(100_000)
            ids = [c.id for c in claimed]
            assert len(ids) == len(set(ids)), f"round {round_no}: duplicates"
            back = acked & set(ids)
            assert not back, f"round {round_no}: acked packets came back: {sorted(back)[:5]}"
            missing = (appended - acked) - set(ids) - acking
            assert not missing, f"round {round_no}: appended packets lost: {sorted(missing)[:5]}"
            for c in claimed:
                assert store.read(c.id) == payload(c.id), f"round {round_no}: {c.id} damaged"
            assert stats["states"]["ready"]["count"] == len(ids)
    # the kills landed both while the store was opening (recovering) and while it worked
    assert killed_opening >= 5
    assert killed_working >= ROUNDS // 2
    assert len(appended) > 200
    assert len(acked) > 100
