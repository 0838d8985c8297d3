"""`bench_store`: append/s, claim/s and ack/s of the packet store at several fill levels.

Called by `roadnode bench`. Each level runs in a fresh store under `directory`, pre-filled with
that many small ready packets (written without per-packet fsync, so filling is quick), then
times `ops` real durable appends of `packet_bytes` each, `ops` single claims and `ops` acks.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from node.config import StoreConfig
from node.store.store import PacketStore


def bench_store(
    directory: Path,
    sizes: tuple[int, ...] = (0, 10_000, 100_000),
    *,
    ops: int = 200,
    packet_bytes: int = 150_000,
) -> dict[str, Any]:
    """Figures per fill level: {"levels": [{"packets", "open_s", "append_per_s",
    "claim_per_s", "ack_per_s"}...], "ops", "packet_bytes"}."""
    directory = Path(directory)
    cfg = StoreConfig(max_mb=1_000_000, min_free_mb=0, keep_acked_hours=0.0)
    data = os.urandom(packet_bytes)
    levels = []
    for n in sizes:
        where = directory / f"bench-{n}"
        shutil.rmtree(where, ignore_errors=True)
        with PacketStore(where, cfg) as store:
            store._bulk_fill(n)
        t = time.perf_counter()
        store = PacketStore(where, cfg)  # reopen: recovery scan over n files
        open_s = time.perf_counter() - t
        try:
            t = time.perf_counter()
            for i in range(ops):
                store.append(
                    f"bench-{i:05d}", data, priority=1, kind="bench", created_utc_ns=time.time_ns()
                )
            append_s = time.perf_counter() - t
            t = time.perf_counter()
            claimed = [store.claim(1)[0] for _ in range(ops)]
            claim_s = time.perf_counter() - t
            t = time.perf_counter()
            for c in claimed:
                store.ack(c.id)
            ack_s = time.perf_counter() - t
        finally:
            store.close()
        shutil.rmtree(where, ignore_errors=True)
        levels.append(
            {
                "packets": n,
                "open_s": round(open_s, 3),
                "append_per_s": round(ops / append_s, 1),
                "claim_per_s": round(ops / claim_s, 1),
                "ack_per_s": round(ops / ack_s, 1),
            }
        )
        logging.getLogger(__name__).info("store bench: %s", levels[-1])
    return {"ops": ops, "packet_bytes": packet_bytes, "levels": levels}
