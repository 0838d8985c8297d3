"""Telemetry: every N minutes a small signed heartbeat packet, the central's view of the fleet.

`Heartbeat(store, status, key, node, central_pub, interval_s)` runs a thread that, every
`interval_s`, calls `status()` (the service's status dict), keeps what the central needs
(`heartbeat_fields`: uptime, fps, queue depth, disk, temperature, versions, last errors, the
uplink's counters) and appends a packet of kind `heartbeat` at `PRIORITY_TELEMETRY` to the
store: signed (and sealed when a central key is set) like every packet, no parts, typically
1 to 2 kB. The store refuses telemetry first when it fills up; a refused heartbeat is counted,
never retried (the next one says more).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node import __version__
from node.evidence import KIND_HEARTBEAT, PRIORITY_TELEMETRY, PacketError
from node.store import PacketStore, StoreError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    from node.config import NodeConfig

log = logging.getLogger(__name__)

MAX_STATUS_BYTES = 16_384  # a status bigger than this is cut to its known fields
THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")
# what the central wants from the service's status, by key (anything else is left out)
FIELDS = (
    "uptime_s",
    "fps",
    "frames",
    "queues",
    "store",
    "uplink",
    "disk",
    "detector",
    "stage_errors",
    "last_error",
    "last_errors",
    "health",
    "version",
    "versions",
    "source",
    "rules",
    "evidence",
    "healing",
    "updates",
    "console_audit",
)
UNCUT = ("console_audit",)  # bounded by its producer; never dropped by the size cut


def system_figures(directory: Path) -> dict[str, Any]:
    """What the board says about itself: disk under `directory`, CPU temperature, load."""
    out: dict[str, Any] = {}
    try:
        du = shutil.disk_usage(directory)
        out["disk"] = {"free_bytes": du.free, "total_bytes": du.total}
    except OSError:
        out["disk"] = None
    try:
        out["temperature_c"] = round(int(THERMAL.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        out["temperature_c"] = None
    try:
        out["load"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        out["load"] = None
    return out


def heartbeat_fields(status: Mapping[str, Any], directory: Path) -> dict[str, Any]:
    """The manifest fields of a heartbeat: the known keys of `status`, the board's figures
    and the software version; bounded to MAX_STATUS_BYTES of JSON."""
    picked = {k: status[k] for k in FIELDS if k in status and k not in UNCUT}
    text = json.dumps(picked, default=str)
    if len(text) > MAX_STATUS_BYTES:
        small = {k: v for k, v in picked.items() if len(json.dumps(v, default=str)) < 2048}
        picked = small | {"truncated": sorted(set(picked) - set(small))}
    picked |= {k: status[k] for k in UNCUT if k in status}
    picked = json.loads(json.dumps(picked, default=str))  # plain JSON types only
    return {
        "telemetry": {
            **picked,
            "system": system_figures(directory),
            "software_version": __version__,
            "sent_utc_ns": time.time_ns(),
        }
    }


class Heartbeat:
    """A thread that enqueues a signed heartbeat every `interval_s` (first one at start)."""

    def __init__(
        self,
        store: PacketStore,
        status: Callable[[], Mapping[str, Any]],
        key: Ed25519PrivateKey,
        node: NodeConfig,
        central_pub: X25519PublicKey | None,
        interval_s: float,
        *,
        on_enqueued: Callable[[str], None] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"heartbeat interval must be positive, got {interval_s}")
        self.store = store
        self.status = status
        self.key = key
        self.node = node
        self.central_pub = central_pub
        self.interval_s = interval_s
        self.on_enqueued = on_enqueued
        self.counts = {"enqueued": 0, "refused": 0, "failed": 0}
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self.interval_s)

    def beat(self) -> str | None:
        """Build and enqueue one heartbeat now; its packet id, or None when it failed."""
        from node.evidence.packet import build
        from node.store import StoreFull

        try:
            fields = heartbeat_fields(self.status(), self.store.directory)
            packet = build(
                KIND_HEARTBEAT,
                PRIORITY_TELEMETRY,
                fields,
                {},
                self.key,
                self.node,
                self.central_pub,
            )
            self.store.append(
                packet.id,
                packet.data,
                priority=packet.priority,
                kind=packet.kind,
                created_utc_ns=packet.created_utc_ns,
            )
        except StoreFull as e:
            self.counts["refused"] += 1
            self.last_error = str(e)
            return None
        except (StoreError, PacketError) as e:
            self.counts["failed"] += 1
            self.last_error = str(e)
            log.warning("heartbeat not enqueued: %s", e)
            return None
        except Exception as e:  # the status callable is the service's: never kill the thread
            self.counts["failed"] += 1
            self.last_error = f"{type(e).__name__}: {e}"
            log.exception("heartbeat failed")
            return None
        self.counts["enqueued"] += 1
        if self.on_enqueued is not None:
            self.on_enqueued(packet.id)
        return packet.id
