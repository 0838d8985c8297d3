"""Run inside a private mount namespace with a tiny tmpfs at argv[1] (tests/test_store_small_fs).

Fills the store on the real small filesystem until the kernel says ENOSPC, then frees space
and appends again. Prints one JSON line with what happened."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from node.config import StoreConfig
from node.store.store import PacketStore, StoreError

root = Path(sys.argv[1])
cfg = StoreConfig(max_mb=1000, min_free_mb=0, low_disk_mb=0, keep_acked_hours=0.0)
store = PacketStore(root / "store", cfg)
kept: list[str] = []
error = ""
for i in range(200):
    pid = f"pkt-{i:04d}"
    try:
        store.append(
            pid, bytes([i % 251]) * 150_000, priority=1, kind="violation", created_utc_ns=i
        )
    except StoreError as e:
        error = str(e)
        break
    kept.append(pid)
report = store.check()
intact = [store.read(p) == bytes([int(p[4:]) % 251]) * 150_000 for p in kept]
claimed = [c.id for c in store.claim(2)]
for pid in claimed:  # the uplink delivers two: acked and deleted, space returns
    store.ack(pid)
after = ""
try:
    store.append("pkt-after", b"x" * 150_000, priority=1, kind="violation", created_utc_ns=10**6)
except StoreError as e:
    after = str(e)
stats = store.stats()
store.close()
reopened = PacketStore(root / "store", cfg)
ready = reopened.stats()["states"]["ready"]["count"]
reopened.close()
print(
    json.dumps(
        {
            "kept": len(kept),
            "error": error,
            "check_ok": report.ok,
            "check_bad": list(report.bad),
            "intact": all(intact),
            "after": after,
            "ready": stats["states"]["ready"]["count"],
            "ready_reopened": ready,
        }
    )
)
