"""Worker processes for the crash test (tests/test_store_crash.py).

`python -S tests/store_crash_child.py` is a zygote: it imports the store once, then for each
line `ROUND STORE_DIR LOG_FILE` on stdin forks a worker and prints the worker's pid; the test
SIGKILLs that pid at a random moment, and the zygote prints `done` once it has reaped it.
Forking from a warm process puts each kill within milliseconds of the store's work instead of
Python's start-up.

A worker opens the store (recovering from the last kill), then loops: claim a few ready packets,
ack most of them (one is released), append new ones. It writes `A id` (acked) or `P id`
(appended) to its log file with one write(2) after each call returns, so the test knows which
calls completed before the kill; `a id` is written just before an ack starts.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

from node.config import StoreConfig
from node.store import PacketStore


def payload(packet_id: str) -> bytes:
    """The bytes of a test packet, derived from its id (0 to 16 KiB)."""
    seed = hashlib.sha256(packet_id.encode()).digest()
    size = seed[0] * 64 + seed[1] % 64
    return (seed * (size // 32 + 1))[:size]


def work(directory: Path, round_no: int, log_fd: int) -> None:
    def say(line: str) -> None:
        os.write(log_fd, f"{line}\n".encode())

    cfg = StoreConfig(keep_acked_hours=1.0 if round_no % 2 else 0.0)
    store = PacketStore(directory, cfg)
    say("O")
    n = 0
    while True:
        for i, claimed in enumerate(store.claim(3)):
            if i == 2:
                store.release(claimed.id)
                continue
            if store.read(claimed.id) != payload(claimed.id):
                say(f"X {claimed.id}")
            say(f"a {claimed.id}")  # an ack cut short may or may not count
            store.ack(claimed.id)
            say(f"A {claimed.id}")
        for _ in range(3):
            packet_id = f"r{round_no}-{n}"
            n += 1
            store.append(
                packet_id,
                payload(packet_id),
                priority=n % 4,
                kind="crash",
                created_utc_ns=time.time_ns(),
            )
            say(f"P {packet_id}")


def zygote() -> None:
    for line in sys.stdin:
        round_no, directory, log_file = line.split()
        log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        pid = os.fork()
        if pid == 0:
            try:
                work(Path(directory), int(round_no), log_fd)
            finally:
                os._exit(1)
        os.close(log_fd)
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("done", flush=True)


if __name__ == "__main__":
    zygote()
