"""Wiring: build the pipeline from config, run it, supervise it, report on it.

capture → frame ring → [detector → tracker → rules → evidence → store → uplink, as they land]

The main thread supervises: it tells systemd READY=1 after the first processed frame,
WATCHDOG=1 only while frames advance, STATUS= a summary line; it serves the control socket,
prints progress for the demo, and on SIGTERM/SIGINT stops capture, lets the frame in flight
finish and exits 0 within 5 s.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import textwrap
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from node import __version__
from node.capture import open_source
from node.capture.frame import Frame, FrameSource
from node.capture.framering import KEEP_FULL, FrameRing
from node.config import Config
from node.control import ControlServer
from node.health import Health, HealthThresholds, trim_heap
from node.infer.detector import DetectorStage, build_stage
from node.infer.manifest import DEFAULT_MANIFEST
from node.infer.runtime import ModelError
from node.notify import Notifier
from node.pipeline import Pipeline, Stage
from node.rules.signal import SignalInput, build_signal
from node.rules.stage import Sink, ViolationStage
from node.rules.tracker import Tracker
from node.rules.violations import Violation, ViolationRules
from node.rules.zones import Zones

if TYPE_CHECKING:
    from node.evidence.worker import EvidenceWorker
    from node.store.store import PacketStore
    from node.uplink.telemetry import Heartbeat
    from node.uplink.uploader import Uploader

log = logging.getLogger(__name__)
HEALTH_EVERY_S = 10.0


@dataclass(frozen=True)
class RunOptions:
    state_dir: Path
    duration_s: float | None = None  # None: until stopped (or the source ends)
    progress: TextIO | None = None  # where the once-a-second progress line goes


def prepare_state_dir(path: Path) -> None:
    """Create the state dir (0750) if missing; refuse one that is not a writable directory."""
    path.mkdir(mode=0o750, parents=True, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{path}: state dir is not writable")


class Service:
    """One running node: the pipeline plus its supervision."""

    def __init__(
        self,
        cfg: Config,
        opts: RunOptions,
        source: FrameSource | None = None,
        stages: list[Stage] | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.cfg = cfg
        self.sink = sink
        self.opts = opts
        self.started_mono = time.monotonic()
        self.source = source or open_source(cfg.capture.source, cfg.capture)
        ev = cfg.evidence
        self.ring = FrameRing(
            cfg.ring.seconds,
            cfg.ring.max_mb * 1024 * 1024,
            keep_full=KEEP_FULL + cfg.pipeline.queue_frames,  # never one still waiting
            context_width=max(ev.context_width, ev.overview_width if ev.overview else 0),
            window_margin=ev.plate_margin + 0.25,  # slack around the packet's plate crop
        )
        self.detector: DetectorStage | None = None
        self.detector_error: str | None = None
        self.rules: ViolationStage | None = None
        self.rules_error: str | None = None
        self.reader_error: str | None = None
        self.store: PacketStore | None = None
        self.evidence: EvidenceWorker | None = None
        self.evidence_error: str | None = None
        self._store_stats: dict[str, Any] | None = None
        self.uploader: Uploader | None = None
        self.heartbeat: Heartbeat | None = None
        self.uplink_error: str | None = None
        self._started: set[int] = set()
        if stages is None:
            stages = self._build_stages()
        self.pipeline = Pipeline(self.source, self.ring, stages, cfg.pipeline.queue_frames)
        self.notifier = Notifier()
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.exit_code = 0
        self.stop_hook: Callable[[], None] | None = None  # after evidence, before the uplink
        self.healer = Healer(cfg.service.heal_budget, cfg.service.heal_window_s)
        self.health = Health(opts.state_dir, HealthThresholds.from_config(cfg.health))

    def _build_detector(self) -> DetectorStage | None:
        """The detector stage; on `sim:` sources the sim's zoom window and lores area stand in
        for detector.zoom_window and detector.area when those are not set."""
        if self.source.url.startswith("sim:"):
            from node.rules.simzones import sim_passes

            return build_stage(self.cfg.detector, None, *sim_passes(self.cfg.capture))
        return build_stage(self.cfg.detector)

    def _build_stages(self) -> list[Stage]:
        """The per-frame stages the config asks for; one that cannot be built is left out
        (and said so in status), the rest run."""
        if not self.cfg.detector.model and not DEFAULT_MANIFEST.exists():
            log.warning("no bundled detector model in this build: detector stage absent")
            return []
        try:
            self.detector = self._build_detector()
        except ModelError as e:
            self.detector_error = str(e)
            log.error("detector disabled: %s", e)
        if self.detector is None:
            return []
        try:
            self.rules = self._build_rules(self.detector)
        except OSError as e:  # the signal input's hardware is missing
            self.rules_error = str(e)
            log.error("violation rules disabled: %s", e)
        return [self.detector] + ([self.rules] if self.rules else [])

    def _build_rules(self, detector: DetectorStage) -> ViolationStage:
        """Tracker, signal input and rules. The simulator brings its own zones and signal
        when the config has none (the demo's embedded defaults)."""
        zones_cfg, signal_cfg = self.cfg.zones, self.cfg.signal
        if self.source.url.startswith("sim:"):
            from node.rules.simzones import sim_zones

            if not zones_cfg.stop_line and not zones_cfg.lanes:
                zones_cfg = sim_zones(self.cfg.capture)
                log.info("sim source: using the simulator's zones")
            if signal_cfg.source == "none":
                signal_cfg = replace(signal_cfg, source="frame")
                log.info("sim source: using the simulator's signal phase")
        signal_input: SignalInput = build_signal(signal_cfg)
        reader = self._build_reader()
        if self.sink is None:
            self.sink = self._evidence_sink(signal_input, reader)
        evidence = self.evidence
        return ViolationStage(
            detector.result,
            Tracker(self.cfg.tracker),
            signal_input,
            ViolationRules(self.cfg.rules, Zones.from_config(zones_cfg)),
            self.sink,
            reader=reader,
            on_hotlist=evidence.submit_alert if evidence is not None else None,
            main_image=detector.main_for,
            release=self._release,
        )

    def _release(self, seq: int, boxes: list[Any]) -> None:
        """The rules stage is done with frame `seq`: the ring slims it, the detector lets go
        of its main image."""
        self.ring.release(seq, boxes)
        if self.detector is not None:
            self.detector.done_with(seq)

    def _build_reader(self) -> Any:
        """The plate reader on tracks (and the hotlist), or None: off, or its model refused
        (the node runs on without reading, and says why in status)."""
        from node.infer.runtime import ModelError
        from node.plates.hotlist import HotlistError
        from node.plates.track import build_track_reader, load_hotlist

        try:
            hotlist = load_hotlist(self.cfg.reader)
        except HotlistError as e:
            self.reader_error = f"hotlist: {e}"
            log.error("hotlist not loaded: %s", e)
            hotlist = None
        try:
            return build_track_reader(self.cfg.reader, hotlist)
        except ModelError as e:
            self.reader_error = str(e)
            log.error("plate reader disabled: %s", e)
            return None

    def _evidence_sink(self, signal_input: SignalInput, reader: Any = None) -> Sink | None:
        """Violations → packets → the store. Without keys or a store the rules still run
        (violations are logged and counted) and status says why nothing is stored."""
        from node.evidence import KeyFileError
        from node.evidence.keys import evidence_keys
        from node.evidence.worker import EvidenceWorker
        from node.store.store import PacketStore, StoreError

        ev = self.cfg.evidence
        try:
            key, central = evidence_keys(self.opts.state_dir, ev.node_key, ev.central_key)
            self.store = PacketStore(self.opts.state_dir / "store", self.cfg.store)
        except (KeyFileError, StoreError, OSError) as e:
            self.evidence_error = str(e)
            log.error("evidence disabled: %s", e)
            return None
        if central is None:
            log.warning("evidence.central_key not set: packets are signed but not sealed")
        detector = self.detector

        def model() -> object:
            return detector.detector.manifest if detector is not None else None

        self._build_uplink(self.store, key, central)
        uploader = self.uploader
        on_stored = uploader.upload_now if uploader is not None else None
        worker = EvidenceWorker(self.cfg, self.ring, self.store, key, central, model, on_stored)
        self.evidence = worker

        def sink(violation: Violation, frame: Frame) -> None:
            fused = reader.best(violation.track_id) if reader is not None else None
            plate_read = dict(fused.as_dict(per_frame=True)) if fused is not None else None
            worker.submit(violation, signal_input.current(frame.mono_ns), plate_read)

        return sink

    def detector_status(self) -> dict[str, Any]:
        if self.detector is not None:
            return {"state": "running", **self.detector.stats()}
        if self.detector_error:
            return {"state": "failed", "error": self.detector_error}
        if self.cfg.detector.enabled:
            return {"state": "absent", "error": "no bundled model in this build"}
        return {"state": "disabled"}

    def rules_status(self) -> dict[str, Any]:
        if self.rules is not None:
            out = {"state": "running", **self.rules.stats()}
            if self.reader_error:
                out["reader"] = {"state": "failed", "error": self.reader_error}
            return out
        if self.rules_error:
            return {"state": "failed", "error": self.rules_error}
        return {"state": "absent", "error": "needs the detector"}

    def _start_parts(self) -> None:
        """Start the evidence worker, uploader and heartbeat that exist and are not running."""
        for part in (self.evidence, self.uploader, self.heartbeat):
            if part is not None and id(part) not in self._started:
                part.start()
                self._started.add(id(part))

    def _build_uplink(self, store: PacketStore, key: Any, central: Any) -> None:
        """The uploader and the heartbeat, when `uplink.url` is set. A config the uploader
        cannot use (a missing CA file, say) leaves packets safe in the store and says why."""
        from node.uplink.telemetry import Heartbeat
        from node.uplink.uploader import UplinkError, Uploader

        up = self.cfg.uplink
        if not up.url:
            return
        try:
            self.uploader = Uploader(store, up)
        except UplinkError as e:
            self.uplink_error = str(e)
            log.error("uplink disabled: %s", e)
            return
        if up.heartbeat_minutes > 0:
            from node.console.audit import AuditShipper

            audit = AuditShipper(self.opts.state_dir)

            def telemetry() -> dict[str, Any]:
                """The status, and the console's audit records not yet sent."""
                return {**self.status(), "console_audit": audit.pending()}

            def enqueued(_packet_id: str) -> None:
                audit.sent()
                if self.uploader is not None:
                    self.uploader.upload_now()

            self.heartbeat = Heartbeat(
                store,
                telemetry,
                key,
                self.cfg.node,
                central,
                up.heartbeat_minutes * 60,
                on_enqueued=enqueued,
            )

    def uplink_status(self) -> dict[str, Any]:
        if self.uploader is not None:
            st = self.uploader.status()
            st["link"] = st.pop("state")  # up, down, backoff, window, stopped
            return {"state": "running", **st}
        if self.uplink_error:
            return {"state": "failed", "error": self.uplink_error}
        return {"state": "off", "error": "uplink.url not set"}

    def evidence_status(self) -> dict[str, Any]:
        if self.evidence is None:
            why = self.evidence_error or "needs the rules stage"
            return {"state": "failed" if self.evidence_error else "absent", "error": why}
        out: dict[str, Any] = {"state": "running", **self.evidence.status()}
        if self.store is not None:
            out["store"] = self._store_stats or self.store.stats()
        return out

    # --- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        disk = shutil.disk_usage(self.opts.state_dir)
        return {
            "version": __version__,
            "node_id": self.cfg.node.id,
            "site": self.cfg.node.site,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            **self.pipeline.snapshot(),
            "detector": self.detector_status(),
            "rules": self.rules_status(),
            "healing": self.healer.status(time.monotonic()),
            "evidence": self.evidence_status(),
            "uplink": self.uplink_status(),
            "health": {**self.health.last(), "alarms": self.health.active_alarms()},
            "updates": _updates(self.opts.state_dir),
            "disk": {
                "path": str(self.opts.state_dir),
                "free_bytes": disk.free,
                "total_bytes": disk.total,
            },
        }

    def summary_line(self) -> str:
        c = self.pipeline.counters
        dropped = self.pipeline.queue.dropped + c.shutdown_discarded
        return (
            f"frames {c.frames_in} processed {c.processed} dropped {dropped} "
            f"fps {self.pipeline.fps():.1f}"
        )

    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        if request["cmd"] == "status":
            return {"ok": True, **self.status()}
        if request["cmd"] == "ping":
            return {"ok": True, "version": __version__}
        from node.controlcmds import HANDLERS  # the console's commands (docs/console.md)

        if (handler := HANDLERS.get(request["cmd"])) is not None:
            return handler(self, request)
        return {"ok": False, "error": f"unknown command {request['cmd']!r}"}

    # --- run ---------------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
            self.stop_event.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.request_stop(signal.Signals(signum).name)

    def run(self) -> int:
        """Run until stopped, the duration is over, or the source ends. Returns the exit code."""
        control = ControlServer(self.opts.state_dir, self._control)
        previous = {}
        if threading.current_thread() is threading.main_thread():  # tests run it in threads
            previous = {
                s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)
            }
        try:
            control.start()
            self._start_parts()
            if self.rules is not None:
                self.rules.signal.start()
            self.pipeline.start()
            log.info(
                "running: node %s, source %s, state %s",
                self.cfg.node.id,
                self.source.url,
                self.opts.state_dir,
            )
            self._supervise()
        finally:
            self.notifier.stopping()
            self.pipeline.stop()
            if self.evidence is not None:
                self.evidence.stop()
            if self.stop_hook is not None:
                self.stop_hook()
            for part in (self.heartbeat, self.uploader):
                if part is not None:
                    part.stop()
            if self.store is not None:
                self._store_stats = self.store.stats()  # what status says once it is closed
                self.store.close()
            if self.rules is not None:
                self.rules.signal.close()
            control.close()
            self.notifier.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        log.info("stopped (%s): %s", self.stop_reason, self.summary_line())
        if self.exit_code:
            return self.exit_code
        return 1 if self.pipeline.source_failed else 0

    def _supervise(self) -> None:
        ticks = _Ticker()
        ready = False
        last_ping_processed = 0
        while not self.stop_event.wait(0.1):
            now = time.monotonic()
            processed = self.pipeline.counters.processed
            if not ready and processed > 0:
                self.notifier.ready()
                ready = True
            wd = self.notifier.watchdog_s
            if wd and ticks.due("watchdog", wd / 2, now) and processed > last_ping_processed:
                self.notifier.watchdog()  # only while frames really advance
                last_ping_processed = processed
            if ticks.due("health", HEALTH_EVERY_S, now):
                self.health.sample()  # sensors, alarms with hysteresis (logged on change)
                trim_heap()  # the heap's free pages back to the kernel (steady RSS)
            if ticks.due("status", self.cfg.service.status_interval_s, now):
                self.notifier.status(self.summary_line())
            if self.opts.progress and ticks.due("progress", 1.0, now):
                self._print_progress(now)
            if self.opts.duration_s is not None and now - self.started_mono >= self.opts.duration_s:
                self.request_stop("duration reached")
            elif self.pipeline.idle and not self.pipeline.source_failed:
                self.request_stop("end of source")
            else:
                self._heal(now)

    # --- self-healing ------------------------------------------------------------------------

    def _heal(self, now: float) -> None:
        """Notice a stalled camera, a stuck stage or a broken detector and repair it, within
        the heal budget (see docs/configuration.md, [service])."""
        svc = self.cfg.service
        no_frame_s, busy_s = self.pipeline.stalled_s(now)
        if self.pipeline.source_failed or no_frame_s >= svc.stall_s:
            why = (
                "camera failed"
                if self.pipeline.source_failed
                else f"no frame for {no_frame_s:.0f} s"
            )
            self._try("capture", why, now, self.pipeline.restart_capture)
        elif busy_s >= svc.stall_s:
            self._try(
                "stages",
                f"a frame stuck in the stages for {busy_s:.0f} s",
                now,
                self.pipeline.restart_stages,
            )
        elif (
            self.detector is not None and self.pipeline.consecutive_errors.get("detector", 0) >= 25
        ):
            self._try("detector", "failed on 25 frames in a row", now, self._reload_detector)
        elif (
            self.detector is None
            and self.detector_error
            and self.healer.due("detector", svc.detector_retry_s, now)
        ):
            self._retry_detector()

    def _try(self, what: str, why: str, now: float, action: Callable[[], None]) -> None:
        if not self.healer.may(now):
            return  # waiting out the spacing between heals
        if self.healer.spent(now):
            self.exit_code = 3
            self.request_stop(f"self-healing budget spent ({what}: {why})")
            log.error("giving up: %s: %s, after %d heals", what, why, self.healer.total)
            return
        log.warning("healing %s: %s", what, why)
        self.healer.record(what, why, now)
        try:
            action()
        except Exception as e:  # the next heal tries again, within the budget
            self.healer.last_error = f"{what}: {type(e).__name__}: {e}"
            log.error("healing %s failed: %s", what, e)

    def _reload_detector(self) -> None:
        assert self.detector is not None
        self.detector.detector.reload(self.cfg.detector.model or DEFAULT_MANIFEST)
        self.pipeline.consecutive_errors["detector"] = 0

    def _retry_detector(self) -> None:
        """A model refused at start (missing, bad hash) may have been fixed by an update."""
        try:
            stage = self._build_detector()
        except ModelError as e:
            self.detector_error = str(e)
            return
        if stage is None:
            return
        log.info("detector loaded on retry: %s", stage.detector.manifest.label)
        self.detector, self.detector_error = stage, None
        try:
            self.rules = self._build_rules(stage)
        except OSError as e:
            self.rules_error = str(e)
        self.pipeline.stages = [stage] + ([self.rules] if self.rules else [])
        if self.rules is not None:
            self.rules.signal.start()
        self._start_parts()

    def _print_progress(self, now: float) -> None:
        assert self.opts.progress is not None
        print(
            f"[{now - self.started_mono:6.1f}s] {self.summary_line()} "
            f"queue {len(self.pipeline.queue)}/{self.pipeline.queue.capacity}",
            file=self.opts.progress,
            flush=True,
        )


def _updates(state_dir: Path) -> dict[str, Any]:
    """Installed versions and the last update's result (node.fleet; files only)."""
    from node.fleet import update_status

    try:
        return update_status(state_dir)
    except (OSError, ValueError) as e:
        return {"error": f"update state unreadable: {e}"}


class Healer:
    """The heal budget: at most `budget` heals per `window_s`, spaced 1, 2, 4, ... s apart."""

    def __init__(self, budget: int, window_s: float) -> None:
        self.budget, self.window_s = budget, window_s
        self.times: deque[float] = deque()
        self.total = 0
        self.by_kind: dict[str, int] = {}
        self.last: str | None = None
        self.last_error: str | None = None
        self._ticks = _Ticker()

    def _recent(self, now: float) -> int:
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()
        return len(self.times)

    def may(self, now: float) -> bool:
        n = self._recent(now)
        return not self.times or now - self.times[-1] >= min(2.0 ** (n - 1), 60.0)

    def spent(self, now: float) -> bool:
        return self._recent(now) >= self.budget

    def due(self, job: str, every_s: float, now: float) -> bool:
        return self._ticks.due(job, every_s, now)

    def record(self, what: str, why: str, now: float) -> None:
        self.times.append(now)
        self.total += 1
        self.by_kind[what] = self.by_kind.get(what, 0) + 1
        self.last = f"{what}: {why}"

    def status(self, now: float) -> dict[str, Any]:
        return {
            "heals": self.total,
            "recent": self._recent(now),
            "budget": self.budget,
            "by_kind": dict(self.by_kind),
            "last": self.last,
            "last_error": self.last_error,
        }


class _Ticker:
    """Remembers when each periodic job last ran."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, job: str, every_s: float, now: float) -> bool:
        if now - self._last.get(job, float("-inf")) >= every_s:
            self._last[job] = now
            return True
        return False


_INDENT = " " * 13


def final_summary(service: Service) -> list[str]:
    """The lines `roadnode run` prints when it ends."""
    s = service.status()
    f = s["frames"]
    lat = s["latency"]
    elapsed = s["uptime_s"]
    lines = [
        f"roadnode {__version__} summary ({service.stop_reason}, {elapsed:.1f} s)",
        f"  source     {service.source.url}",
        f"  frames     {f['in']} captured, {f['processed']} processed, {f['dropped']} dropped",
        f"  rate       {f['processed'] / elapsed if elapsed else 0:.1f} frames/s processed",
        f"  latency    capture p50 {lat['capture']['p50_ms']:.1f} ms, "
        f"end-to-end p95 {lat['total']['p95_ms']:.1f} ms",
    ]
    d = s["detector"]
    if d["state"] == "running":
        p50 = lat["detector"]["p50_ms"]
        lines.append(
            f"  detector   {d['plates']} plates in {d['frames']} frames, p50 {p50:.1f} ms "
            f"({d['model']}, {d['backend']})"
        )
    else:
        lines.append(f"  detector   {d['state']}" + (f": {d['error']}" if "error" in d else ""))
    r = s["rules"]
    if r["state"] == "running":
        per_rule = ", ".join(f"{k} {n}" for k, n in r["rules"]["violations"].items())
        lines.append(f"  violations {r['violations']} ({per_rule})")
        inactive = [f"{k} {v}" for k, v in r["rules"].items() if str(v).startswith("inactive")]
        for line in inactive:
            lines.extend(
                textwrap.wrap(line, 80, initial_indent=" " * 13, subsequent_indent=" " * 15)
            )
    else:
        lines.append(f"  rules      {r['state']}: {r.get('error', '')}")
    e = s["evidence"]
    if e["state"] == "running":
        stored_mb = e["bytes"] / 1e6
        where = service.opts.state_dir / "store"
        lines.append(f"  evidence   {e['stored']} packets stored ({stored_mb:.1f} MB) in {where}")
        trouble = {k: e[k] for k in ("no_frames", "lost", "queued") if e[k]}
        if trouble:
            lines.append(" " * 13 + ", ".join(f"{k} {v}" for k, v in trouble.items()))
    else:
        lines.append(f"  evidence   {e['state']}: {e['error']}")
    u = s["uplink"]
    if u["state"] == "running":
        lines.append(f"  uplink     {u['acked']} packets acked by {u['url']} (link {u['link']})")
    else:
        lines.append(f"  uplink     {u['state']}: {u['error']}")
    source_stats = ", ".join(f"{k} {v}" for k, v in service.source.stats().items())
    lines.extend(
        textwrap.wrap(source_stats, 80, initial_indent=" " * 13, subsequent_indent=" " * 13)
    )
    if s["last_error"]:
        lines.append(f"  last error {s['last_error']}")
    return lines
