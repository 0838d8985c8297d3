"""The evidence worker: violation → packet (from the frame ring) → the offline store.

The rules stage hands each violation to `submit`, which blocks when the worker is behind
(evidence is never dropped to back-pressure; the detector then waits, and the capture queue
drops frames instead). The worker waits until the ring holds the frames after the offence
(`seq_after`, at most `FRAMES_WAIT_S`), builds the signed (and, with a central key, sealed)
packet and appends it to the store, which makes it durable before `append` returns.

Faults degrade, never crash: a violation whose frames are gone is counted as
`no_frames`; a store that refuses (full, disk error) is retried with a growing wait, up to
`STORE_TRIES` times, and then counted as `lost` with an error log naming the packet.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from node.capture.frame import Frame
from node.capture.framering import FrameRing
from node.config import Config
from node.evidence import PacketError
from node.rules.signal import SignalState
from node.rules.violations import Violation

log = logging.getLogger(__name__)

FRAMES_WAIT_S = 5.0
STORE_TRIES = 5
QUEUE_DEPTH = 32


class Appender(Protocol):
    """What the worker needs of the store (`node.store.store.PacketStore` honours it)."""

    def append(
        self, packet_id: str, data: bytes, *, priority: int, kind: str, created_utc_ns: int
    ) -> None: ...


@dataclass(frozen=True)
class Job:
    violation: Violation
    signal: SignalState | None


class EvidenceWorker:
    """See the module docstring."""

    def __init__(
        self,
        cfg: Config,
        ring: FrameRing,
        store: Appender,
        key: Any,
        central_pub: Any,
        model_info: Callable[[], Any],
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self.on_stored = on_stored
        self.cfg, self.ring, self.store = cfg, ring, store
        self.key, self.central_pub, self.model_info = key, central_pub, model_info
        self.queue: queue.Queue[Job | None] = queue.Queue(QUEUE_DEPTH)
        self.counts = {"built": 0, "stored": 0, "no_frames": 0, "retries": 0, "lost": 0}
        self.bytes = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="evidence", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, violation: Violation, signal: SignalState | None) -> None:
        """Queue a violation; blocks while the worker is `QUEUE_DEPTH` behind."""
        while not self._stop.is_set():
            try:
                self.queue.put(Job(violation, signal), timeout=0.5)
                return
            except queue.Full:
                continue
        log.error("violation %s arrived while stopping: not stored", violation.id)
        self.counts["lost"] += 1

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued (within `timeout`), then stop."""
        deadline = time.monotonic() + timeout
        while not self.queue.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)  # wakes the thread if it waits for work
        self._thread.join(max(0.1, deadline - time.monotonic()))
        if not self.queue.empty():
            log.error("stopping with %d violations not yet stored", self.queue.qsize())

    def status(self) -> dict[str, Any]:
        return {
            **self.counts,
            "queued": self.queue.qsize(),
            "bytes": self.bytes,
            "last_error": self.last_error,
        }

    # --- the thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.queue.get()
            if job is None:
                return
            try:
                self._handle(job)
            except Exception as e:  # one bad violation must not stop the evidence path
                self.counts["lost"] += 1
                self.last_error = f"{job.violation.id}: {type(e).__name__}: {e}"
                log.exception("evidence for violation %s failed", job.violation.id)

    def _frames(self, v: Violation) -> list[Frame]:
        deadline = time.monotonic() + FRAMES_WAIT_S
        while not self._stop.is_set():
            latest = self.ring.latest()
            if latest is None or latest.seq >= v.seq_after or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return self.ring.by_seq(v.seq_before, v.seq_after)

    def _handle(self, job: Job) -> None:
        from node.evidence.packet import from_violation

        v = job.violation
        try:
            packet = from_violation(
                v,
                self._frames(v),
                self.cfg,
                self.key,
                self.central_pub,
                self.model_info(),
                job.signal,
            )
        except PacketError as e:
            self.counts["no_frames"] += 1
            self.last_error = str(e)
            log.error("no evidence packet for violation %s: %s", v.id, e)
            return
        self.counts["built"] += 1
        wait = 1.0
        for attempt in range(1, STORE_TRIES + 1):
            try:
                self.store.append(
                    packet.id,
                    packet.data,
                    priority=packet.priority,
                    kind=packet.kind,
                    created_utc_ns=packet.created_utc_ns,
                )
            except Exception as e:  # StoreFull, StoreError, OSError: the store says why
                self.last_error = f"store: {e}"
                if attempt == STORE_TRIES:
                    self.counts["lost"] += 1
                    log.error(
                        "violation %s lost: the store refused it %d times: %s", v.id, attempt, e
                    )
                    return
                self.counts["retries"] += 1
                log.warning("store refused violation %s (%s); retrying in %.0f s", v.id, e, wait)
                if self._stop.wait(wait):
                    wait = 0.0
                wait = min(wait * 2, 30.0)
                continue
            self.counts["stored"] += 1
            self.bytes += len(packet.data)
            if self.on_stored is not None:
                self.on_stored()  # the uplink sends it now, not at its next poll
            log.info("violation %s stored (%s, %d bytes)", v.id, v.rule, len(packet.data))
            return
