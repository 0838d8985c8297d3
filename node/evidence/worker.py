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

from node.capture.frame import Frame, picture
from node.capture.framering import FrameRing
from node.config import Config
from node.evidence import PacketError
from node.health import trim_heap
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
    plate_read: dict[str, Any] | None = None


@dataclass(frozen=True)
class AlertJob:
    """A hotlist hit: plate crop and context frame go into a top-priority alert packet."""

    hit: Any
    fused: Any
    track_id: int
    frame: Frame
    crop: Any


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
        self.queue: queue.Queue[Job | AlertJob | None] = queue.Queue(QUEUE_DEPTH)
        self.counts = {"built": 0, "stored": 0, "no_frames": 0, "retries": 0, "lost": 0}
        self.counts["alerts"] = 0
        self.counts["plate_scaled"] = 0  # packets whose plate crop is not full resolution
        self.bytes = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="evidence", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(
        self,
        violation: Violation,
        signal: SignalState | None,
        plate_read: dict[str, Any] | None = None,
    ) -> None:
        """Queue a violation; blocks while the worker is `QUEUE_DEPTH` behind."""
        if not self._put(Job(violation, signal, plate_read)):
            log.error("violation %s arrived while stopping: not stored", violation.id)
            self.counts["lost"] += 1

    def submit_alert(self, hit: Any, fused: Any, track_id: int, frame: Frame, crop: Any) -> None:
        """Queue a hotlist alert (built and stored ahead of everything the uplink holds)."""
        if not self._put(AlertJob(hit, fused, track_id, frame, crop)):
            log.error("hotlist alert for track %d arrived while stopping: not stored", track_id)
            self.counts["lost"] += 1

    def _put(self, job: Job | AlertJob) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(job, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued (within `timeout`), then stop."""
        deadline = time.monotonic() + timeout
        while not self.queue.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)  # wakes the thread if it waits for work
        self._thread.join(max(0.1, deadline - time.monotonic()))
        left = [job for job in list(self.queue.queue) if job is not None]  # not the wake-up
        if left:
            log.error("stopping with %d violations not yet stored", len(left))

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
            what = f"alert {job.track_id}" if isinstance(job, AlertJob) else job.violation.id
            try:
                if isinstance(job, AlertJob):
                    self._alert(job)
                else:
                    self._handle(job)
            except Exception as e:  # one bad violation must not stop the evidence path
                self.counts["lost"] += 1
                self.last_error = f"{what}: {type(e).__name__}: {e}"
                log.exception("evidence for %s failed", what)
            del job
            # building a packet is the node's biggest burst of allocations (decoded frames,
            # JPEGs, the sealed file): its pages go back to the kernel now, not at the next
            # health sample, so the RSS does not sit at the burst's high-water mark
            trim_heap()

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
                plate_read=job.plate_read,
            )
        except PacketError as e:
            self.counts["no_frames"] += 1
            self.last_error = str(e)
            log.error("no evidence packet for violation %s: %s", v.id, e)
            return
        self.counts["built"] += 1
        if packet.plate_scaled:
            self.counts["plate_scaled"] += 1
            log.warning(
                "violation %s: no frame near the offence kept the plate at full resolution; "
                "the packet's plate crop is scaled up from the context picture",
                v.id,
            )
        self._store(packet, v.id, v.rule)

    def _alert(self, job: AlertJob) -> None:
        from node.evidence.images import downscale, encode
        from node.plates.alert import make_alert

        f = job.frame
        crop = encode(job.crop, (90, 80), 400_000).data
        context, _ = downscale(picture(f.main), self.cfg.evidence.context_width)
        frame_jpeg = encode(context, (70, 50), 200_000).data
        packet = make_alert(
            job.fused,
            crop,
            frame_jpeg,
            hit=job.hit,
            key=self.key,
            node=self.cfg.node,
            central_public_key=self.central_pub,
            track_id=job.track_id,
            seq=f.seq,
            utc_ns=f.utc_ns,
        )
        self.counts["alerts"] += 1
        self._store(packet, packet.id, "hotlist alert")

    def _store(self, packet: Any, v_id: str, rule: str) -> None:
        """Append `packet`, retrying a refusing store with a growing wait; count a loss."""
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
                    log.error("packet %s lost: store refused it %d times: %s", v_id, attempt, e)
                    return
                self.counts["retries"] += 1
                log.warning("store refused packet %s (%s); retrying in %.0f s", v_id, e, wait)
                if self._stop.wait(wait):
                    wait = 0.0
                wait = min(wait * 2, 30.0)
                continue
            self.counts["stored"] += 1
            self.bytes += len(packet.data)
            if self.on_stored is not None:
                self.on_stored()  # the uplink sends it now, not at its next poll
            log.info("packet %s stored (%s, %d bytes)", v_id, rule, len(packet.data))
            return
