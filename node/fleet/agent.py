"""`roadnode agent`: the fleet agent's loop.

At start it finishes or undoes an update a crash interrupted (`Updater.recover`), then, until
SIGTERM: bundles that the inbox says are complete are moved into incoming/; the desired
state is polled when due (fleet.url set); every bundle in incoming/ is processed in turn
(verified, installed, proven, committed or rolled back). After a config bundle is committed
the agent reads its config again (the fleet keys may have rotated).

`--once` does one round (recover, the inbox files complete within one settle time, one poll)
and exits: 0 when every bundle was committed or skipped (or there was none), 1 otherwise.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from node.config import Config
from node.fleet import ROLLBACK_REQUEST, fleet_root
from node.fleet.inbox import Inbox, is_temporary
from node.fleet.install import (
    Hooks,
    Installer,
    Result,
    Updater,
    command_restarter,
    control_probe,
    fsync_dir,
    venv_installer,
)

log = logging.getLogger(__name__)

TICK_S = 0.5
ERROR_WAIT_S = 30.0
GOOD = ("committed", "skipped")


@dataclass(frozen=True)
class AgentOptions:
    state_dir: Path
    config_path: Path | None
    overrides: tuple[str, ...] = ()
    once: bool = False


class Agent:
    def __init__(
        self,
        opts: AgentOptions,
        installer: Installer = venv_installer,
        hooks_factory: Callable[[Config], Hooks] | None = None,
    ) -> None:
        self.opts = opts
        self.installer = installer
        self.hooks_factory = hooks_factory
        self.root = fleet_root(opts.state_dir)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.stop_event = threading.Event()
        self.results: list[Result] = []
        self._configure()

    def _configure(self) -> None:
        from node.configload import load

        self.cfg = load(self.opts.config_path, self.opts.overrides)
        fc = self.cfg.fleet
        if self.hooks_factory is not None:
            hooks = self.hooks_factory(self.cfg)
        else:
            hooks = Hooks(
                restart=command_restarter(fc.restart_command),
                probe=control_probe(self.opts.state_dir),
                installer=self.installer,
            )
        self.updater = Updater(self.root, fc, self.cfg.node.id, self.opts.config_path, hooks)
        self.puller = None
        if fc.url:
            from node.fleet.pull import Puller

            self.puller = Puller(self.root, fc, self.cfg.node.id)
        if not (fc.key or fc.next_key):
            log.warning("no fleet key configured (fleet.key): every bundle will be refused")

    @property
    def inbox_dir(self) -> Path:
        return Path(self.cfg.fleet.inbox) if self.cfg.fleet.inbox else self.root / "inbox"

    def request_stop(self, *_: object) -> None:
        self.stop_event.set()

    def run(self) -> int:
        result = self.updater.recover()
        if result is None:
            self._rollback_requested()
        if result is not None:
            self.results.append(result)
        with Inbox(self.inbox_dir, self.cfg.fleet.settle_s) as inbox:
            if self.opts.once:
                deadline = time.monotonic() + self.cfg.fleet.settle_s + TICK_S
                while time.monotonic() < deadline and not self.stop_event.is_set():
                    self._take(inbox)
                    self._process_incoming()
                    if not self._waiting(inbox):
                        break
                    self.stop_event.wait(0.1)
                if self.puller is not None:
                    self._poll()
                self._process_incoming()
            else:
                while not self.stop_event.is_set():
                    try:
                        self._round(inbox)
                    except Exception:  # the agent is how a broken node gets fixed: go on
                        log.exception("agent round failed; trying again in %.0f s", ERROR_WAIT_S)
                        self.stop_event.wait(ERROR_WAIT_S)
                    self.stop_event.wait(TICK_S)
        if self.opts.once:
            return 0 if all(r.result in GOOD for r in self.results) else 1
        return 0

    def _round(self, inbox: Inbox) -> None:
        self._rollback_requested()
        self._take(inbox)
        if self.puller is not None and self.puller.due():
            self._poll()
        self._process_incoming()

    def _rollback_requested(self) -> None:
        """A technician's `update rollback` (the console writes ROLLBACK_REQUEST: the kind)."""
        request = self.root / ROLLBACK_REQUEST
        try:
            kind = request.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return
        if kind not in ("software", "model", "config"):
            log.error("rollback request for %r refused: not software, model or config", kind)
            request.unlink(missing_ok=True)
            return
        log.warning("rollback of %s requested from the console", kind)
        self.results.append(self.updater.manual_rollback(kind, request))

    def _waiting(self, inbox: Inbox) -> bool:
        return any(not is_temporary(p.name) and p.is_file() for p in inbox.folder.iterdir())

    def _take(self, inbox: Inbox) -> None:
        """Move the inbox's complete files into incoming/."""
        for path in inbox.ready():
            dest = self.root / "incoming" / path.name
            try:
                _move(path, dest)
            except OSError as e:
                log.error("inbox: cannot take %s: %s", path.name, e.strerror or e)
                continue
            log.info("inbox: took %s", path.name)

    def _poll(self) -> None:
        assert self.puller is not None
        self.puller.poll(self.updater.installed, self.root / "incoming")

    def _process_incoming(self) -> None:
        incoming = self.root / "incoming"
        for path in sorted(incoming.iterdir(), key=_mtime):
            if self.stop_event.is_set() and not self.opts.once:
                return
            if is_temporary(path.name) or not path.is_file():
                continue
            digest = _sha256_of(path) if self.puller is not None else ""
            result = self.updater.process(path)
            self.results.append(result)
            if self.puller is not None and digest:
                self.puller.processed(digest)
            if result.result == "committed" and result.kind == "config":
                log.info("config changed by the fleet: reading it again")
                self._configure()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _sha256_of(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def _move(src: Path, dest: Path) -> None:
    """Rename, or (another filesystem: a USB stick's inbox) copy, fsync, rename, delete."""
    try:
        os.replace(src, dest)
    except OSError as e:
        if e.errno != 18:  # EXDEV
            raise
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(src, tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        src.unlink()
    fsync_dir(dest.parent)


def run_agent(opts: AgentOptions, installer: Installer = venv_installer) -> int:
    agent = Agent(opts, installer)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("agent: %s, stopping", signal.Signals(signum).name)
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return agent.run()
