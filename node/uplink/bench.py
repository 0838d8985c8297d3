"""How fast the uploader drains the store to the reference ingest over loopback.

`bench_drain(count, size, sealed)` builds `count` real signed packets of about `size` bytes
(one random part each), appends them to a fresh store, starts a local ingest (which verifies
every packet and stores it durably) and an uploader, and times the drain from the uploader's
start to the ingest's last stored packet. Both ends fsync, so the figure includes the disk.
"""

from __future__ import annotations

import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def machine() -> str:
    """One line naming the machine: CPU model, cores, architecture, Python."""
    model = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
        model = info.get("model name") or info.get("hardware") or info.get("model") or model
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    )


def bench_drain(
    count: int = 300,
    size: int = 120_000,
    *,
    sealed: bool = False,
    directory: Path | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Drain `count` packets of about `size` bytes to a loopback ingest; the figures."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from node.config import NodeConfig, StoreConfig, UplinkConfig
    from node.evidence import PRIORITY_VIOLATION
    from node.evidence.packet import build
    from node.store import PacketStore
    from node.uplink.ingest import IngestServer
    from node.uplink.retry import RetryPolicy
    from node.uplink.uploader import Uploader

    with tempfile.TemporaryDirectory(dir=directory, prefix="bench-uplink-") as tmp:
        root = Path(tmp)
        node = NodeConfig(id="bench-node")
        key = Ed25519PrivateKey.generate()
        central = X25519PrivateKey.generate() if sealed else None
        store = PacketStore(root / "store", StoreConfig(keep_acked_hours=0.0, min_free_mb=0))
        total = 0
        for _ in range(count):
            p = build(
                "violation",
                PRIORITY_VIOLATION,
                {"bench": True},
                {"blob.bin": os.urandom(max(0, size - 1500))},
                key,
                node,
                central.public_key() if central else None,
            )
            store.append(
                p.id, p.data, priority=p.priority, kind=p.kind, created_utc_ns=p.created_utc_ns
            )
            total += p.size
        done = threading.Event()
        stored = [0]

        def on_result(_pid: str, status: str) -> None:
            if status == "stored":
                stored[0] += 1
                if stored[0] >= count:
                    done.set()

        ingest = IngestServer(
            root / "central", {node.id: key.public_key()}, central, on_result=on_result
        ).start()
        cfg = UplinkConfig(url=ingest.url, allow_plain_http=True, idle_poll_s=0.2)
        uploader = Uploader(store, cfg, policy=RetryPolicy(0.05, 0.5, 1.0))
        t0 = time.perf_counter()
        uploader.start()
        finished = done.wait(timeout_s)
        seconds = time.perf_counter() - t0
        uploader.stop()
        ingest.stop()
        status = uploader.status()
        store.close()
    return {
        "packets": count,
        "bytes": total,
        "sealed": sealed,
        "stored": stored[0],
        "finished": finished,
        "seconds": round(seconds, 3),
        "packets_per_s": round(stored[0] / seconds, 1),
        "mb_per_s": round(total * stored[0] / max(count, 1) / seconds / 1e6, 2),
        "retries": status["retries"],
        "machine": machine(),
    }


def format_bench(r: dict[str, Any]) -> str:
    return (
        f"drained {r['stored']}/{r['packets']} packets ({r['bytes'] / 1e6:.1f} MB, "
        f"{'sealed' if r['sealed'] else 'not sealed'}) in {r['seconds']:.2f} s: "
        f"{r['packets_per_s']:.1f} packets/s, {r['mb_per_s']:.2f} MB/s\n"
        f"machine: {r['machine']}"
    )
