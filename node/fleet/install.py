"""Install a verified bundle, switch to it, prove it healthy, then commit or roll back.

Layout under the fleet root (STATE_DIR/fleet):

    releases/<version>/        software: wheels/ (from the bundle), venv/, .complete
    releases/current, previous  links (relative) switched by an atomic rename
    models/<bundle id>/        model files (model.json and what it names), .complete
    models/current, previous
    config/<version>.toml      config as the node runs it; the live config path (the agent's
    config/previous.toml        --config) becomes a link to it, switched by an atomic rename
    config/<version>.hotlist.json  that config's hotlist (from the bundle, or carried over),
                               which its [reader] hotlist names; kept and pruned with it
    journal.json               the update in progress (one step at a time, atomic writes)
    state.json                 current/previous version of each kind, last result, history
    incoming/                  the bundle being processed (kept until committed/rolled back)
    rejected/                  refused bundles, each with a .reason file (the newest 10)

Steps, each recorded in the journal before the next begins:

    accepted → unpacked → installed → switching → switched → restarted → proven → committed
                                           (health failure) → rolling_back → rolled_back

Nothing the node runs changes before `switching`: a crash or power cut until then leaves the
old version untouched, and the next start installs again from the bundle kept in incoming/
(at most MAX_ATTEMPTS times). From `switching` on, the next start finishes the switch,
restarts the service and proves health again, committing or rolling back; a crash during a
rollback is finished by the next start. Every file is fsynced before the switch.

A test hook: ROADNODE_FLEET_KILL_AT=<step> makes the process SIGKILL itself right after that
step is journaled (`switch-half`: between the two link renames).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node import __version__
from node.config import FleetConfig
from node.fleet import KINDS, BundleError, InstallError
from node.fleet.bundle import (
    CONFIG_MEMBER,
    HOTLIST_MEMBER,
    MODEL_MEMBER,
    Limits,
    Manifest,
    Platform,
    Verified,
    check_target,
    cohort,
    extract,
    parse_version,
    trusted_keys,
    verify,
)

log = logging.getLogger(__name__)

MB = 1024 * 1024
JOURNAL = "journal.json"
STATE = "state.json"
MAX_ATTEMPTS = 3
KEEP_REJECTED = 10
HISTORY = 20
KILL_ENV = "ROADNODE_FLEET_KILL_AT"
STEPS = ("accepted", "unpacked", "installed", "switching", "switched", "restarted", "proven")
ROLLBACK_STEPS = ("rolling_back", "rolled_back")
# how much room each kind needs on disk, in multiples of its files (a venv outgrows its wheels)
SPACE_FACTOR = {"software": 4, "model": 2, "config": 2}
SOFTWARE_SLOT = "releases"
MODEL_SLOT = "models"
CONFIG_SLOT = "config"
SLOT_DIR = {"software": SOFTWARE_SLOT, "model": MODEL_SLOT, "config": CONFIG_SLOT}
HOTLIST_SUFFIX = ".hotlist.json"  # config/<version>.hotlist.json goes with config/<version>.toml

Installer = Callable[[Path, Manifest], None]  # (release dir with wheels/, manifest): make venv/
Probe = Callable[[], dict[str, Any]]  # the service's status; raises on no answer


# --- small durable file helpers --------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Write `path` so that it holds either its old or its new bytes, whatever happens."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.error("%s: unreadable (%s); treated as absent", path, e)
        return None
    return doc if isinstance(doc, dict) else None


def switch_link(link: Path, target: str) -> None:
    """Point `link` at `target` by renaming a new link over it (atomic)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def read_link(link: Path) -> str | None:
    try:
        return os.readlink(link)
    except (FileNotFoundError, OSError):
        return None


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kill_hook(step: str) -> None:
    if os.environ.get(KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


# --- the parts that touch the world, injectable ----------------------------------------------


def venv_installer(release: Path, manifest: Manifest) -> None:
    """Production installer: `python -m venv` (seeing system site packages when the agent's
    own venv does: picamera2 on a Pi), then pip installs the requirement offline from the
    bundle's wheels. The venv's `roadnode --version` must then name the bundle's version."""
    venv = release / "venv"
    system_site = _has_system_site_packages()
    args = [sys.executable, "-m", "venv", "--without-pip"]
    args += ["--system-site-packages"] if system_site else []
    _run_checked([*args, str(venv)], 300, "python -m venv")
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    pip += ["--no-index", "--no-cache-dir", "--disable-pip-version-check", "--no-input"]
    pip += ["--find-links", str(release / "wheels"), manifest.requirement]
    _run_checked(pip, 1800, "pip install")
    roadnode = venv / "bin" / "roadnode"
    if roadnode.exists():
        out = _run_checked([str(roadnode), "--version"], 120, "roadnode --version")
        if manifest.version not in out.split():
            raise InstallError(
                f"installed roadnode says {out.strip()!r}, expected {manifest.version}"
            )


def _has_system_site_packages() -> bool:
    try:
        text = (Path(sys.prefix) / "pyvenv.cfg").read_text(encoding="utf-8")
    except OSError:
        return False
    return any(
        line.replace(" ", "").lower() == "include-system-site-packages=true"
        for line in text.splitlines()
    )


def _run_checked(argv: list[str], timeout: float, what: str) -> str:
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise InstallError(f"{what}: {argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise InstallError(f"{what}: no result within {timeout:.0f} s") from None
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    if proc.returncode != 0:
        last = [line for line in out.splitlines() if line.strip()][-1:] or ["no output"]
        raise InstallError(f"{what} failed (exit {proc.returncode}): {last[0][:200]}")
    return out


def command_restarter(command: str) -> Callable[[], None]:
    """Restart the service with `command` (fleet.restart_command); InstallError on failure."""

    def restart() -> None:
        _run_checked(shlex.split(command), 120, "restart")

    return restart


def control_probe(state_dir: Path) -> Probe:
    def probe() -> dict[str, Any]:
        from node.control import query

        return query(state_dir, {"cmd": "status"}, timeout=5.0)

    return probe


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass
class Hooks:
    """What the updater does to the world; tests replace some."""

    restart: Callable[[], None]
    probe: Probe
    installer: Installer = venv_installer
    free_bytes: Callable[[Path], int] = disk_free
    platform: Platform = field(default_factory=Platform.detect)
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    poll_s: float = 1.0  # between health probes


def carries_hotlist(v: Verified) -> bool:
    """A config bundle with a hotlist: plate numbers, never kept on the node once refused."""
    return v.manifest.kind == "config" and any(m.path == HOTLIST_MEMBER for m in v.manifest.files)


def may_hold_hotlist(path: Path, max_members: int = 64) -> bool:
    """An unverified bundle that holds a hotlist, or whose contents cannot be listed (its
    manifest is not to be trusted, so the archive's member names decide; nothing is read)."""
    import tarfile

    try:
        with tarfile.open(path, "r:") as tf:
            for n, info in enumerate(tf):
                if n >= max_members or Path(info.name).name == HOTLIST_MEMBER:
                    return True
    except (OSError, tarfile.TarError):
        return True
    return False


def companion(config_file: Path) -> Path:
    """The hotlist file that goes with config/<version>.toml."""
    return config_file.with_name(config_file.name.removesuffix(".toml") + HOTLIST_SUFFIX)


@dataclass(frozen=True)
class HotlistPlan:
    """The hotlist a new config will use: `source` is copied next to it (None: used where it
    is, or no hotlist); `name` names it in errors; `fresh`: newly delivered (checked for
    staleness too, not only form)."""

    source: Path | None = None
    name: str = ""
    fresh: bool = False


@dataclass(frozen=True)
class Result:
    result: str  # committed, rolled_back, rejected, failed, skipped, nothing
    reason: str = ""
    kind: str = ""
    version: str = ""
    bundle_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "reason": self.reason,
            "kind": self.kind,
            "version": self.version,
            "bundle_id": self.bundle_id,
            "at": utc_now(),
        }


# --- the updater -----------------------------------------------------------------------------


class Updater:
    """One node's updates: `recover()` at start, then `process(bundle)` for each arrival."""

    def __init__(
        self,
        root: Path,
        cfg: FleetConfig,
        node_id: str,
        config_path: Path | None,
        hooks: Hooks,
    ) -> None:
        self.root = root
        self.cfg = cfg
        self.node_id = node_id
        self.config_path = config_path
        self.hooks = hooks
        self.limits = Limits(cfg.max_bundle_mb * MB, cfg.max_members)
        for sub in ("incoming", "rejected", "staging", SOFTWARE_SLOT, MODEL_SLOT, CONFIG_SLOT):
            (root / sub).mkdir(parents=True, exist_ok=True, mode=0o750)

    # --- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        doc = read_json(self.root / STATE) or {}
        doc.setdefault("kinds", {})
        for kind in KINDS:
            doc["kinds"].setdefault(kind, {"current": None, "previous": None})
        doc["kinds"]["software"]["current"] = doc["kinds"]["software"]["current"] or __version__
        doc.setdefault("history", [])
        doc.setdefault("rejected", [])
        return doc

    def installed(self, kind: str) -> str | None:
        current: str | None = self.state()["kinds"][kind]["current"]
        return current

    def _record(self, result: Result, kinds: dict[str, Any] | None = None) -> None:
        doc = self.state()
        if kinds is not None:
            doc["kinds"].update(kinds)
        entry = result.as_dict()
        doc["last"] = entry
        doc["history"] = (doc["history"] + [entry])[-HISTORY:]
        if result.result == "rejected":
            doc["rejected"] = (doc["rejected"] + [entry])[-KEEP_REJECTED:]
        write_json(self.root / STATE, doc)
        level = logging.INFO if result.result in ("committed", "skipped") else logging.WARNING
        log.log(
            level, "update %s: %s %s %s", result.result, result.kind, result.version, result.reason
        )

    def _journal(self, step: str, doc: dict[str, Any]) -> dict[str, Any]:
        doc = {**doc, "step": step, "at": utc_now()}
        write_json(self.root / JOURNAL, doc)
        log.info("update %s %s: %s", doc["kind"], doc["version"], step)
        _kill_hook(step)
        return doc

    # --- arrival -------------------------------------------------------------------------

    def reject(
        self, path: Path, reason: str, result: str = "rejected", keep: bool = True, **what: str
    ) -> Result:
        """Move `path` aside to rejected/ with a .reason file (`keep` false: delete it, keep
        only the reason); record the result."""
        reason = reason.replace(str(path), path.name)  # our folders are no news
        res = Result(result, reason, **what)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        dest = self.root / "rejected" / f"{stamp}-{path.name}"[:200]
        try:
            if not keep:
                path.unlink(missing_ok=True)
            elif path.exists():
                os.replace(path, dest)
            write_atomic(dest.with_name(dest.name + ".reason"), (reason + "\n").encode("utf-8"))
        except OSError as e:
            log.error("%s: cannot move aside: %s; deleting it", path, e.strerror or e)
            path.unlink(missing_ok=True)
        self._prune_rejected()
        self._record(res)
        return res

    def _prune_rejected(self) -> None:
        folder = self.root / "rejected"
        # by name (a UTC stamp first); a bundle not kept has its .reason only
        names = sorted({p.name.removesuffix(".reason") for p in folder.iterdir()})
        for old in names[:-KEEP_REJECTED]:
            (folder / old).unlink(missing_ok=True)
            (folder / (old + ".reason")).unlink(missing_ok=True)

    def trusted(self) -> dict[str, Any]:
        return trusted_keys([self.cfg.key, self.cfg.next_key])

    def check(self, v: Verified) -> None:
        """Everything but the signature and members: target, anti-rollback, disk space."""
        m = v.manifest
        software = self.installed("software") or __version__
        check_target(m, self.node_id, software, self.hooks.platform)
        have = self.installed(m.kind)
        if have is not None and not m.downgrade:
            if parse_version(m.version) == parse_version(have):
                raise BundleError(f"{m.kind} {m.version} is already installed")
            if parse_version(m.version) < parse_version(have):
                raise BundleError(
                    f"{m.kind} {m.version} is older than the installed {have} (anti-rollback; "
                    "only a bundle signed as a downgrade may go back)"
                )
        if m.kind == "config" and self.config_path is None:
            raise BundleError("config bundles need the agent's --config (the live config path)")
        need = m.total_bytes * SPACE_FACTOR[m.kind] + self.cfg.min_free_mb * MB
        free = self.hooks.free_bytes(self.root)
        if free < need:
            raise BundleError(
                f"not enough free space: {free // MB} MB free, {need // MB} MB needed "
                f"({self.cfg.min_free_mb} MB kept free)"
            )

    def process(self, path: Path) -> Result:
        """Verify, install, switch, prove and commit the bundle at `path` (in incoming/), or
        roll back; a refused bundle goes to rejected/. Never raises for a bad bundle."""
        try:
            v = verify(path, self.trusted(), self.limits)
        except BundleError as e:  # kept for a look unless it may hold plate numbers
            return self.reject(path, str(e), keep=not may_hold_hotlist(path))
        what = {"kind": v.manifest.kind, "version": v.manifest.version, "bundle_id": v.bundle_id}
        try:
            self.check(v)
        except BundleError as e:
            return self.reject(path, str(e), keep=not carries_hotlist(v), **what)
        place = cohort(self.node_id, v.bundle_id)
        if place >= v.manifest.rollout_pct:
            pct = v.manifest.rollout_pct
            reason = (
                f"not in the rollout: this node is cohort {place}, the bundle is for 0..{pct - 1}"
            )
            path.unlink(missing_ok=True)
            res = Result("skipped", reason, **what)
            self._record(res)
            return res
        doc = {
            "bundle": str(path),
            "bundle_id": v.bundle_id,
            "kind": v.manifest.kind,
            "version": v.manifest.version,
            "attempt": 1,
            "detector_before": self._detector_state(),
        }
        return self._install(v, self._journal("accepted", doc))

    def _detector_state(self) -> str:
        try:
            status = self.hooks.probe()
        except Exception:  # the service may be down: nothing to keep
            return "unknown"
        detector = status.get("detector")
        return str(detector.get("state", "unknown")) if isinstance(detector, dict) else "unknown"

    # --- install -------------------------------------------------------------------------

    def _install(self, v: Verified, doc: dict[str, Any]) -> Result:
        m = v.manifest
        what = {"kind": m.kind, "version": m.version, "bundle_id": v.bundle_id}
        staging = self.root / "staging" / v.bundle_id[:16]
        remove_tree(staging)
        try:
            extract(v, staging, self.limits)
            doc = self._journal("unpacked", doc)
            new_target, old_target = self._place(v, staging, doc)
            doc = self._journal("installed", {**doc, "new": new_target, "old": old_target})
        except (BundleError, InstallError, OSError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self._clean_new(doc)
            remove_tree(staging)
            (self.root / JOURNAL).unlink(missing_ok=True)
            keep = not carries_hotlist(v)  # a refused hotlist is not kept on the node
            return self.reject(v.path, f"install failed: {reason}", "failed", keep, **what)
        finally:
            remove_tree(staging)
        return self._switch_and_prove(doc)

    def _place(self, v: Verified, staging: Path, doc: dict[str, Any]) -> tuple[str, str | None]:
        """Put the unpacked files where they belong; return the new and old link targets."""
        m = v.manifest
        slot = self.root / SLOT_DIR[m.kind]
        if m.kind == "software":
            final = slot / m.version
            if read_link(slot / "current") == m.version:
                raise InstallError(f"release {m.version} is the current one")
            if read_link(slot / "previous") == m.version:
                (slot / "previous").unlink()
            remove_tree(final)
            final.mkdir(mode=0o755)
            os.rename(staging, final / "wheels")
            self.hooks.installer(final, m)
            self._seal(final)
            return m.version, read_link(slot / "current")
        if m.kind == "model":
            final = slot / v.bundle_id
            remove_tree(final)
            self._check_model(staging)
            os.rename(staging, final)
            self._seal(final)
            return v.bundle_id, read_link(slot / "current")
        return self._place_config(v, staging)

    def _seal(self, folder: Path) -> None:
        """Flush everything under `folder` to disk, then mark it complete."""
        os.sync()
        write_atomic(folder / ".complete", b"ok\n", 0o644)

    def _check_model(self, folder: Path) -> None:
        from node.infer.manifest import read_manifest, read_model_bytes
        from node.infer.runtime import ModelError

        try:
            read_model_bytes(read_manifest(folder / MODEL_MEMBER))
        except ModelError as e:
            raise InstallError(f"model: {e}") from None

    def _place_config(self, v: Verified, staging: Path) -> tuple[str, str | None]:
        """The bundle's config.toml, with this node's own [node] and [fleet] tables kept when
        the bundle has none, validated, then written to config/<version>.toml."""
        import tomli_w

        from node.configload import ConfigError, validate

        assert self.config_path is not None
        slot = self.root / CONFIG_SLOT
        try:
            raw = tomllib.loads((staging / CONFIG_MEMBER).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise InstallError(f"config.toml: not valid TOML: {e}") from None
        local = self._live_config_raw()
        for table in ("node", "fleet"):
            if table not in raw and table in local:
                raw[table] = local[table]
        final = slot / f"{v.manifest.version}.toml"
        hotlist = self._plan_hotlist(raw, local, staging, final)
        try:
            cfg = validate(raw)
        except ConfigError as e:
            raise InstallError(
                f"config.toml invalid: {e.problems[0]}"
                + (f" (and {len(e.problems) - 1} more)" if len(e.problems) > 1 else "")
            ) from None
        if not (cfg.fleet.key or cfg.fleet.next_key):
            raise InstallError("config.toml has no fleet key: it would lock out every update")
        if cfg.reader.hotlist:
            self._check_hotlist(cfg, hotlist)
        old = read_link(self.config_path) if self.config_path.is_symlink() else None
        if old is None and self.config_path.exists():  # a local file: keep it to roll back to
            data = self.config_path.read_bytes()
            keep = slot / f"local-{hashlib.sha256(data).hexdigest()[:12]}.toml"
            write_atomic(keep, data)
            old = str(keep)
        if hotlist.source is not None and hotlist.source != companion(final):
            write_atomic(companion(final), hotlist.source.read_bytes())
        write_atomic(final, tomli_w.dumps(raw).encode("utf-8"))
        return str(final), old

    # --- the hotlist a config bundle carries (or the node keeps) ------------------------------

    def _plan_hotlist(
        self, raw: dict[str, Any], local: dict[str, Any], staging: Path, final: Path
    ) -> HotlistPlan:
        """Settle the new config's [reader] hotlist keys (in `raw`) and say which file to check
        and place next to `final` (docs/fleet-updates.md, "The hotlist"):

        - the bundle holds hotlist.json: it goes to config/<version>.hotlist.json, and the new
          config's `hotlist` names it (config.toml may leave the key out or name hotlist.json);
        - config.toml sets `hotlist`: "" is no hotlist; another value must be an absolute path
          inside the node's state or config folder (a file provisioned on the node), never a
          path a bundle could point anywhere;
        - neither: the node keeps the hotlist it has (copied along with the new config version,
          so a rollback or a pruned old version never takes it away).

        `hotlist_hashed` and `hotlist_salt_file` (a node's own provisioning) are kept from the
        node's config when config.toml does not set them; a salt file it sets must be inside
        the state or config folder too."""
        reader = raw.get("reader", {})
        if not isinstance(reader, dict):
            return HotlistPlan()  # validate() says what is wrong with it
        given = dict(reader)
        mine = local.get("reader") if isinstance(local.get("reader"), dict) else {}
        assert isinstance(mine, dict)
        for key in ("hotlist_hashed", "hotlist_salt_file"):
            if key not in given and key in mine:
                reader[key] = mine[key]
        if isinstance(given.get("hotlist_salt_file"), str) and given["hotlist_salt_file"]:
            self._inside_node(given["hotlist_salt_file"], "hotlist_salt_file")
        member = staging / HOTLIST_MEMBER
        plan = HotlistPlan()
        if member.is_file():
            if given.get("hotlist", HOTLIST_MEMBER) != HOTLIST_MEMBER:
                raise InstallError(
                    f"config.toml [reader] hotlist {given['hotlist']!r}: the bundle carries "
                    f"{HOTLIST_MEMBER}; leave the key out or name {HOTLIST_MEMBER}"
                )
            reader["hotlist"] = str(companion(final))
            plan = HotlistPlan(member, HOTLIST_MEMBER, fresh=True)
        elif "hotlist" in given:
            value = given["hotlist"]
            if value == HOTLIST_MEMBER:
                raise InstallError(
                    f"config.toml [reader] hotlist names {HOTLIST_MEMBER}, which the bundle "
                    "does not hold"
                )
            if isinstance(value, str) and value:
                self._inside_node(value, "hotlist")
                plan = HotlistPlan(None, value, fresh=True)
        elif isinstance(mine.get("hotlist"), str) and mine["hotlist"]:
            kept = Path(mine["hotlist"])
            slot = os.path.realpath(self.root / CONFIG_SLOT)  # however the path is spelt
            if os.path.realpath(kept.parent) == slot:  # a bundle's: goes along, version by version
                reader["hotlist"] = str(companion(final))
                plan = HotlistPlan(kept, f"the node's hotlist ({kept.name})")
            else:  # provisioned on the node by hand: stays where it is
                reader["hotlist"] = str(kept)
                plan = HotlistPlan(None, f"the node's hotlist ({kept})")
        if reader and "reader" not in raw:
            raw["reader"] = reader
        return plan

    def _inside_node(self, value: str, key: str) -> None:
        """Refuse a path from a config bundle that is not an absolute path inside the node's
        state dir or config dir (links resolved), or that is inside the fleet folder (the
        agent's own, pruned)."""
        assert self.config_path is not None
        path = Path(value)
        roots = list(dict.fromkeys([self.root.parent, self.config_path.parent]))
        shown = ", ".join(str(r) for r in roots)
        if not path.is_absolute():
            raise InstallError(
                f"config.toml [reader] {key} {value!r}: must be an absolute path inside {shown}"
            )
        real = Path(os.path.realpath(path))
        if not any(real.is_relative_to(os.path.realpath(r)) for r in roots) or real.is_relative_to(
            os.path.realpath(self.root)
        ):
            raise InstallError(
                f"config.toml [reader] {key} {value!r}: outside the node's folders ({shown}); "
                f"refused (ship a hotlist in the bundle as {HOTLIST_MEMBER})"
            )

    def _check_hotlist(self, cfg: Any, plan: HotlistPlan) -> None:
        """The hotlist the new config names must load as the service will load it (with the
        node's key when hashed); a newly delivered one must not be stale. InstallError naming
        it otherwise: the node keeps its config and hotlist."""
        from node.plates.hotlist import Hotlist, HotlistError

        r = cfg.reader
        name = plan.name or r.hotlist
        if r.hotlist_hashed and not r.hotlist_salt_file:
            raise InstallError(
                f"hotlist refused: {name}: a hashed hotlist needs [reader] hotlist_salt_file "
                "(the key is provisioned on the node, never shipped)"
            )
        path = plan.source or Path(r.hotlist)
        try:
            hotlist = Hotlist.load(path, r.hotlist_salt_file or None, r.hotlist_hashed, name)
            if plan.fresh:
                hotlist.check_current(time.time(), name)
        except HotlistError as e:
            raise InstallError(f"hotlist refused: {e}") from None
        log.info("update config: hotlist %s checked (%d entries)", name, len(hotlist))

    def _live_config_raw(self) -> dict[str, Any]:
        if self.config_path is None:
            return {}
        try:
            return tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return {}

    def _links(self, kind: str) -> tuple[Path, Path]:
        """The (current, previous) links of `kind`."""
        if kind == "config":
            assert self.config_path is not None
            return self.config_path, self.root / CONFIG_SLOT / "previous.toml"
        slot = self.root / SLOT_DIR[kind]
        return slot / "current", slot / "previous"

    def _clean_new(self, doc: dict[str, Any]) -> None:
        """Remove what an unfinished install left (never what a link points at)."""
        if doc.get("manual"):
            return  # a manual rollback installed nothing: its target is the previous release
        kind = doc["kind"]
        slot = self.root / SLOT_DIR[kind]
        current, previous = self._links(kind)
        keep = {read_link(current), read_link(previous)}
        if kind == "software":
            candidate = slot / doc["version"]
        elif kind == "model":
            candidate = slot / doc["bundle_id"]
        else:
            candidate = slot / f"{doc['version']}.toml"
        if candidate.name not in keep and str(candidate) not in keep:
            remove_tree(candidate)
            if kind == "config":
                remove_tree(companion(candidate))

    # --- manual rollback (the technician's `update rollback`) ---------------------------

    def manual_rollback(self, kind: str, request: Path) -> Result:
        """Back to the previous version of `kind`, through the same journal, switch, health
        proof and commit as an update (so a crash or an unhealthy previous version is handled
        the same way: the current one comes back). `request` is deleted when done."""
        current, previous = self._links(kind)
        entry = self.state()["kinds"][kind]
        old, new = read_link(current), read_link(previous)
        if not new or not entry.get("previous"):
            request.unlink(missing_ok=True)
            res = Result("skipped", f"no previous {kind} to roll back to", kind)
            self._record(res)
            return res
        doc = {
            "kind": kind,
            "version": entry["previous"],
            "bundle_id": entry.get("previous_id") or f"rollback-{entry['previous']}",
            "new": new,
            "old": old,
            "bundle": str(request),
            "manual": True,
            "detector_before": self._detector_state(),
        }
        doc = self._journal("installed", doc)
        return self._switch_and_prove(doc)

    # --- switch, prove, commit or roll back ----------------------------------------------

    def _switch(self, doc: dict[str, Any]) -> dict[str, Any]:
        doc = self._journal("switching", doc)
        current, previous = self._links(doc["kind"])
        if doc.get("old"):
            switch_link(previous, doc["old"])
        _kill_hook("switch-half")
        switch_link(current, doc["new"])
        return self._journal("switched", doc)

    def _switch_and_prove(self, doc: dict[str, Any], restart: bool = True) -> Result:
        if doc["step"] in ("installed", "switching"):
            doc = self._switch(doc)
        try:
            if restart:
                self.hooks.restart()
                doc = self._journal("restarted", doc)
            self.prove(doc)
        except InstallError as e:
            return self._roll_back(doc, str(e))
        doc = self._journal("proven", doc)
        return self._commit(doc)

    def prove(self, doc: dict[str, Any]) -> None:
        """Wait up to fleet.health_window_s for the service to show it works; InstallError
        with the last thing that was wrong otherwise."""
        h = self.hooks
        deadline = h.monotonic() + self.cfg.health_window_s
        first: int | None = None
        problem = "no answer from the service yet"
        while True:
            try:
                status = h.probe()
                first, problem = self._judge(status, doc, first)
                if not problem:
                    log.info("update %s %s: healthy", doc["kind"], doc["version"])
                    return
            except Exception as e:  # ControlError, a garbled answer: not healthy yet
                problem = f"service not answering: {e}"
            if h.monotonic() >= deadline:
                raise InstallError(f"not healthy within {self.cfg.health_window_s:g} s: {problem}")
            h.sleep(h.poll_s)

    def _judge(
        self, s: dict[str, Any], doc: dict[str, Any], first: int | None
    ) -> tuple[int | None, str]:
        """(frames seen first, "" when healthy or what is wrong)."""
        if not s.get("ok", True):
            return first, f"status refused: {s.get('error', '?')}"
        if doc["kind"] == "software" and s.get("version") != doc["version"]:
            return first, f"service runs version {s.get('version')!r}, not {doc['version']}"
        frames = s.get("frames")
        processed = frames.get("processed") if isinstance(frames, dict) else None
        if not isinstance(processed, int):
            return first, "no frame counter in the status"
        detector = s.get("detector") if isinstance(s.get("detector"), dict) else {}
        assert isinstance(detector, dict)
        if (doc["kind"] == "model" or doc.get("detector_before") == "running") and detector.get(
            "state"
        ) != "running":
            return (
                first,
                f"detector {detector.get('state', 'missing')}: {detector.get('error', '')}".rstrip(
                    ": "
                ),
            )
        rules = s.get("rules")
        reader = rules.get("reader") if isinstance(rules, dict) else None
        if (
            doc["kind"] == "config"
            and isinstance(reader, dict)
            and reader.get("state") == "failed"
            and str(reader.get("error", "")).startswith("hotlist")
        ):  # the service could not load the new config's hotlist
            return first, f"reader {reader.get('error')}"
        store = s.get("store")
        if isinstance(store, dict) and (
            store.get("state") == "failed" or store.get("writable") is False
        ):
            return first, f"store not writable: {store.get('error', store.get('state'))}"
        if self.cfg.require_uplink:
            up = s.get("uplink")
            if not isinstance(up, dict) or not (
                up.get("reachable") is True or up.get("state") in ("connected", "ok", "idle")
            ):
                return first, "uplink not reachable"
        if first is None:
            return processed, f"frames: {processed}, waiting for them to advance"
        if processed - first < self.cfg.health_frames:
            return first, f"frames advanced {processed - first} of {self.cfg.health_frames}"
        return first, ""

    def _commit(self, doc: dict[str, Any]) -> Result:
        kind = doc["kind"]
        state = self.state()
        entry = state["kinds"][kind]
        if entry.get("current_id") != doc["bundle_id"]:  # not already recorded (a resume)
            entry = {
                "current": doc["version"],
                "current_id": doc["bundle_id"],
                "previous": entry.get("current"),
                "previous_id": entry.get("current_id"),
            }
        if kind == "config":
            entry["live"] = str(self.config_path)
            entry["file"] = doc["new"]
        res = Result("committed", "healthy", kind, doc["version"], doc["bundle_id"])
        self._record(res, {kind: entry})
        self._finish(doc)
        return res

    def _roll_back(self, doc: dict[str, Any], reason: str) -> Result:
        doc = self._journal("rolling_back", {**doc, "reason": reason})
        current, previous = self._links(doc["kind"])
        old = doc.get("old")
        if old:
            switch_link(current, old)
        else:
            current.unlink(missing_ok=True)
        if doc.get("manual"):  # the previous release stays the previous one
            switch_link(previous, doc["new"])
        try:
            self.hooks.restart()
        except InstallError as e:
            reason += f"; restart after rollback failed too: {e}"
        doc = self._journal("rolled_back", doc)
        res = Result("rolled_back", reason, doc["kind"], doc["version"], doc["bundle_id"])
        self._record(res)
        self._clean_new(doc)
        self._finish(doc)
        return res

    def _finish(self, doc: dict[str, Any]) -> None:
        Path(doc["bundle"]).unlink(missing_ok=True)
        (self.root / JOURNAL).unlink(missing_ok=True)
        fsync_dir(self.root)
        self._prune(doc["kind"])

    def _prune(self, kind: str) -> None:
        """Keep fleet.keep_releases of each kind (always the current and previous)."""
        slot = self.root / SLOT_DIR[kind]
        current, previous = self._links(kind)
        keep = {read_link(current), read_link(previous)}
        entries = [
            p
            for p in slot.iterdir()
            if not p.is_symlink()
            and p.name not in ("current", "previous")
            and not p.name.startswith(".")
            and not p.name.endswith(HOTLIST_SUFFIX)  # goes with its config file
            and p.name not in keep
            and str(p) not in keep
        ]
        entries.sort(key=lambda p: p.stat().st_mtime)
        for old in entries[: max(0, len(entries) - (self.cfg.keep_releases - 2))]:
            remove_tree(old)
        if kind == "config":  # a hotlist whose config is gone (pruned, or a crash between)
            for p in slot.glob("*" + HOTLIST_SUFFIX):
                owner = p.with_name(p.name.removesuffix(HOTLIST_SUFFIX) + ".toml")
                if not owner.exists() and not p.name.startswith("."):
                    remove_tree(p)

    # --- recovery ------------------------------------------------------------------------

    def recover(self) -> Result | None:
        """Finish or undo an update a crash interrupted (see the module doc)."""
        doc = read_json(self.root / JOURNAL)
        for stale in (self.root / "staging").iterdir():
            remove_tree(stale)
        if doc is None:
            return None
        step = doc.get("step")
        log.warning(
            "update %s %s was interrupted at %s; recovering",
            doc.get("kind"),
            doc.get("version"),
            step,
        )
        bundle = Path(doc["bundle"])
        if step in ("accepted", "unpacked", "installed"):
            self._clean_new(doc)
            (self.root / JOURNAL).unlink(missing_ok=True)
            if not bundle.exists():
                return None
            if doc.get("attempt", 1) >= MAX_ATTEMPTS:
                return self.reject(
                    bundle,
                    f"install interrupted {MAX_ATTEMPTS} times",
                    "failed",
                    kind=doc["kind"],
                    version=doc["version"],
                    bundle_id=doc["bundle_id"],
                )
            try:
                v = verify(bundle, self.trusted(), self.limits)
                self.check(v)
            except BundleError as e:
                return self.reject(bundle, str(e), kind=doc["kind"], version=doc["version"])
            doc = self._journal("accepted", {**doc, "attempt": doc.get("attempt", 1) + 1})
            return self._install(v, doc)
        if step in ("switching", "switched"):
            return self._switch_and_prove({**doc, "step": "installed"})
        if step == "restarted":
            return self._switch_and_prove(doc, restart=False)
        if step == "proven":
            return self._commit(doc)
        if step == "rolling_back":
            return self._roll_back(doc, doc.get("reason", "interrupted"))
        if step == "rolled_back":
            state = self.state()
            if state.get("last", {}).get("bundle_id") != doc["bundle_id"]:
                self._record(
                    Result(
                        "rolled_back",
                        doc.get("reason", ""),
                        doc["kind"],
                        doc["version"],
                        doc["bundle_id"],
                    )
                )
            self._clean_new(doc)
            self._finish(doc)
            return Result(
                "rolled_back", doc.get("reason", ""), doc["kind"], doc["version"], doc["bundle_id"]
            )
        log.error("journal step %r unknown; left as is", step)
        return None


# --- status ----------------------------------------------------------------------------------


def read_update_status(root: Path) -> dict[str, Any]:
    """What `update_status(state_dir)` returns (see docs/fleet-updates.md)."""
    doc = read_json(root / STATE) or {}
    kinds = doc.get("kinds", {})
    out: dict[str, Any] = {}
    for kind in KINDS:
        entry = kinds.get(kind, {})
        out[kind] = {"current": entry.get("current"), "previous": entry.get("previous")}
    if out["software"]["current"] is None:
        out["software"]["current"] = __version__
    config = kinds.get("config", {})
    if config.get("live") and read_link(Path(config["live"])) != config.get("file"):
        # changed since by hand or by the console's `config apply`
        out["config"]["current"] = f"local (was {config.get('current')})"
    journal = read_json(root / JOURNAL)
    out["in_progress"] = (
        {k: journal.get(k) for k in ("kind", "version", "step", "at", "bundle_id")}
        if journal
        else None
    )
    out["last"] = doc.get("last")
    out["rejected"] = doc.get("rejected", [])[-5:]
    return out
