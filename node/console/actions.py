"""The console's commands: what each one prints, and which of them change state (PIN).

Each command is `run(session, args) -> lines`. Figures come from the running service (through
its control socket) or from the machine; a subsystem that is not in this build, or a service
that is down, is said to be so. Nothing here prints plate text: violations are shown by rule,
time and measured figures only, hotlist alerts by time, track, reason code and match kind
(the plate goes to the central in the alert packet, not to the console).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.console.session import ActionError, NotReportedError, ServiceDownError, wrap
from node.console.staged import StageError, get_value, toml_value
from node.console.system import (
    cellular_lines,
    disk_lines,
    interface_lines,
    log_lines,
    temp_lines,
    time_lines,
)

if TYPE_CHECKING:
    from node.console.session import Session

Lines = list[str]


def _never(_args: list[str]) -> bool:
    return False


def _always(_args: list[str]) -> bool:
    return True


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    details: str
    run: Callable[[Session, list[str]], Lines]
    changes: Callable[[list[str]], bool] = _never  # needs the PIN, given its arguments
    open_: bool = False  # allowed even when every command needs the PIN


def _count(args: list[str], default: int, hi: int, what: str = "N") -> int:
    if not args:
        return default
    if len(args) > 1 or not args[0].isdigit() or not 1 <= int(args[0]) <= hi:
        raise ActionError(f"{what}: must be a whole number 1..{hi}, got {' '.join(args)!r}")
    return int(args[0])


def _not_running(e: ServiceDownError) -> Lines:
    return [*wrap(str(e), 9), "         `service start` starts it, `logs` shows why it stopped"]


def _ask_recent(s: Session, cmd: str, args: list[str], part: str) -> dict[str, Any] | Lines:
    """The service's answer to `cmd` for the last N (`args`, default 10, at most 100), or
    the lines to print instead: the service is down, or its `part` (detector, rules) is not
    running."""
    n = _count(args, 10, 100)
    try:
        reply: dict[str, Any] = s.ctx.ask(cmd, n=n)
    except ServiceDownError as e:
        return _not_running(e)
    if not reply.get("available"):
        p = reply.get(part, {})
        return wrap(f"{cmd}: {part} {p.get('state', 'absent')}: {p.get('error', '')}", 9)
    return reply


# --- status ----------------------------------------------------------------------------------


def cmd_status(s: Session, _args: list[str]) -> Lines:
    ctx = s.ctx
    lines: Lines = []
    try:
        reply = ctx.ask("status")
    except ServiceDownError as e:
        lines += _not_running(e)
    else:
        from node.cli import format_status

        reply.pop("ok", None)
        try:
            lines += format_status(reply).splitlines()
        except (KeyError, TypeError, ValueError):  # a status shape this console does not know
            lines += [f"service  running, pid {reply.get('pid', '?')}"]
        rules = reply.get("rules")
        if isinstance(rules, dict):
            state = rules.get("state", "?")
            count = rules.get("violations", "")
            lines.append(f"rules    {state}" + (f", {count} violations" if count != "" else ""))
            alerts = rules.get("hotlist_alerts")
            if isinstance(alerts, int) and not isinstance(alerts, bool) and alerts > 0:
                hits = "hit" if alerts == 1 else "hits"
                lines.append(f"alerts   {alerts} hotlist {hits} (`alerts` lists them)")
    unit = ctx.cfg.console.service_unit
    result = ctx.runner(["systemctl", "is-active", unit], 5.0)
    if result.code != 127:
        lines.append(f"systemd  {unit} {result.output.strip() or result.code}")
    pending = ctx.staged.pending_s
    if pending is not None:
        lines.append(f"config   applied, NOT confirmed: reverts in {pending:.0f} s")
    return lines


# --- camera, aim -----------------------------------------------------------------------------


def cmd_camera(s: Session, args: list[str]) -> Lines:
    if args and args[0] == "snapshot":
        return _snapshot(s, args[1:])
    if args:
        raise ActionError(f"camera: unknown argument {args[0][:20]!r}; try `help camera`")
    try:
        reply = s.ctx.ask("camera")
    except ServiceDownError as e:
        return _not_running(e)
    lines = [
        f"source   {reply['source']}",
        f"fps      {reply['fps']:.1f} (asked {reply['fps_asked']:g})",
    ]
    frame = reply.get("frame")
    if not frame:
        return [*lines, "frame    none yet (camera starting or stalled)"]
    mw, mh = frame["main"]
    lw, lh = frame["lores"]
    lines += [
        f"frame    #{frame['seq']}, {frame['age_s']:.2f} s old, main {mw}x{mh}, lores {lw}x{lh}",
        f"image    brightness {frame['brightness']:.0f}/255, sharpness {frame['sharpness']:.0f}"
        " (lores; compare while focusing)",
    ]
    meta = frame.get("meta") or {}
    if meta:
        lines += wrap("exposure " + ", ".join(f"{k} {v}" for k, v in sorted(meta.items())), 9)
    else:
        lines.append("exposure not reported by this source")
    return lines


SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\.jpe?g")


def export_path(target: str, export_dirs: list[Path]) -> Path:
    """Where a snapshot may be written: under one of `export_dirs`, a new .jpg file."""
    if "\x00" in target or not target.startswith("/"):
        raise ActionError(f"{target[:40]}: give an absolute path, e.g. /media/usb0/aim.jpg")
    path = Path(target)
    if path.is_dir():
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = path / f"snapshot-{stamp}.jpg"
    if not SNAPSHOT_NAME.fullmatch(path.name):
        raise ActionError(f"{path.name[:40]}: the file name must be letters, digits, ._- and .jpg")
    try:
        folder = path.parent.resolve(strict=True)
    except OSError:
        raise ActionError(f"{path.parent}: no such folder (is the USB stick mounted?)") from None
    roots = [d.resolve() for d in export_dirs]
    if not any(folder == r or r in folder.parents for r in roots):
        allowed = ", ".join(str(d) for d in export_dirs)
        raise ActionError(f"{folder}: snapshots may only be written under {allowed}")
    return folder / path.name


def _snapshot(s: Session, args: list[str]) -> Lines:
    from node.console.preview import ascii_preview, decode_jpeg
    from node.controlcmds import SNAPSHOT_DIR
    from node.controlcmds import SNAPSHOT_NAME as LATEST

    if len(args) > 1:
        raise ActionError("camera snapshot: at most one PATH")
    ctx = s.ctx
    dirs = [Path(d) for d in ctx.cfg.console.export_dirs.split(":") if d]
    dest = export_path(args[0], dirs) if args else None
    try:
        reply = ctx.ask("snapshot")
    except ServiceDownError as e:
        return _not_running(e)
    expected = ctx.state_dir / SNAPSHOT_DIR / LATEST
    if Path(str(reply.get("path"))) != expected:  # never read a path the socket names
        raise ActionError(f"snapshot: the service wrote {reply.get('path')!r}, not {expected}")
    data = expected.read_bytes()
    image = decode_jpeg(data, min_width=160)
    lines = ascii_preview(image, 78)
    lines.append(
        f"#{reply['seq']} {reply['width']}x{reply['height']}, {reply['age_s']:.2f} s old, "
        f"sharpness {reply['sharpness']:.0f} (full image)"
    )
    if dest is not None:
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
        except FileExistsError:
            raise ActionError(f"{dest}: already exists; give another name") from None
        except OSError as e:
            raise ActionError(f"{dest}: cannot write: {e.strerror or e}") from None
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        lines.append(f"wrote {dest} ({len(data)} bytes)")
    return lines


def _aim_line(ctx_ask: Callable[..., dict[str, Any]]) -> Lines:
    reply = ctx_ask("aim")
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    frame = reply.get("frame")
    sharp = f"frame sharp {frame['sharpness']:.0f}" if frame else "no frame"
    if not reply.get("available"):
        detector = reply.get("detector", {})
        why = detector.get("error") or detector.get("state", "absent")
        return [f"{stamp} {sharp} | detector {detector.get('state', 'absent')}: {why}"]
    plates = reply.get("plates") or []
    if not plates:
        return [f"{stamp} {sharp} | no plates"]
    shown = ", ".join(
        f"{p['w']}x{p['h']}px" + (f" sharp {p['sharpness']:.0f}" if "sharpness" in p else "")
        for p in plates[:4]
    )
    more = f" +{len(plates) - 4}" if len(plates) > 4 else ""
    return [f"{stamp} {sharp} | {len(plates)} plates: {shown}{more}"]


def cmd_aim(s: Session, args: list[str]) -> Lines:
    if args:
        raise ActionError("aim: takes no arguments")
    first = _aim_line(s.ctx.ask)  # fails here, before going live, when the service is down
    s.start_live(lambda: _aim_line(s.ctx.ask))
    return ["aim: one line a second (plate sizes in main-stream pixels); any key stops", *first]


# --- detections, violations, signal, queue ---------------------------------------------------


def cmd_detections(s: Session, args: list[str]) -> Lines:
    reply = _ask_recent(s, "detections", args, "detector")
    if isinstance(reply, list):
        return reply
    found = reply["detections"]
    if not found:
        return [f"no plates in the last {reply['frames_kept']} frames"]
    lines = []
    for r in found:
        plates = ", ".join(
            f"{p['box'][2] - p['box'][0]:.0f}x{p['box'][3] - p['box'][1]:.0f}px {p['score']:.2f}"
            for p in r["plates"]
        )
        lines += wrap(f"#{r['seq']:<8} {r['age_s']:6.1f} s ago  {plates}", 26)
    return lines


def cmd_violations(s: Session, args: list[str]) -> Lines:
    reply = _ask_recent(s, "violations", args, "rules")
    if isinstance(reply, list):
        return reply
    per_rule = ", ".join(f"{k} {v}" for k, v in reply["per_rule"].items()) or "none"
    lines = [f"total    {reply['total']} ({per_rule})"]
    for rule, state in reply["rules"].items():
        lines += wrap(f"{rule:<12} {state}", 13)
    for v in reply["last"]:
        measured = ", ".join(f"{k} {x}" for k, x in v["measured"].items())
        lines += wrap(
            f"{v['age_s']:7.1f} s ago  {v['rule']:<11} conf {v['confidence']:.2f}  {measured}",
            15,
        )
    if not reply["last"]:
        lines.append("no violations since the service started")
    return lines


def cmd_alerts(s: Session, args: list[str]) -> Lines:
    reply = _ask_recent(s, "alerts", args, "rules")
    if isinstance(reply, list):
        return reply
    found = reply["alerts"]
    if not found:
        why = ""
        if not reply.get("reading", True):
            why = "; plate reading is off"
        elif not reply.get("hotlist", True):
            why = "; no hotlist is loaded"
        return [f"no hotlist alerts since the service started{why}"]
    total = reply["total"]
    lines = [f"total    {total} hotlist alert{'' if total == 1 else 's'}; newest first, times UTC"]
    for a in found:
        utc = str(a["utc"])[:19].replace("T", " ")
        lines += wrap(
            f"{a['age_s']:7.1f} s ago  {utc}  track {a['track']:<5} {a['reason']:<10} "
            f"{a['match']:<5} conf {a['confidence']:.2f}",
            15,
        )
    return lines


def cmd_signal(s: Session, _args: list[str]) -> Lines:
    try:
        reply = s.ctx.ask("signal")
    except ServiceDownError as e:
        return _not_running(e)
    if not reply.get("available"):
        r = reply.get("rules", {})
        return wrap(f"signal: not read while the rules are {r.get('state', 'absent')}", 9)
    age = reply["phase_age_s"]
    info = reply["info_age_s"]
    lines = [
        f"phase    {reply['phase']}" + (f" for {age:.1f} s (at least)" if age else ""),
        f"source   {reply['source']}, last report "
        + ("never" if info is None else f"{info:.1f} s ago"),
    ]
    if reply.get("reason"):
        lines += wrap(f"why      {reply['reason']}", 9)
    stats = reply.get("stats") or {}
    if stats:
        lines += wrap("counts   " + ", ".join(f"{k} {v}" for k, v in stats.items()), 9)
    return lines


def _flatten(prefix: str, value: Any) -> Lines:
    if isinstance(value, dict):
        out: Lines = []
        for k, v in value.items():
            out += _flatten(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    return [f"{prefix:<28} {value}"]


def cmd_queue(s: Session, _args: list[str]) -> Lines:
    if importlib.util.find_spec("node.store") is None:
        return ["queue: the packet store is not in this build"]
    ctx = s.ctx
    argv = [sys.executable, "-m", "node", "queue", "--json", "--state-dir", str(ctx.state_dir)]
    result = ctx.runner(argv, 20.0)
    if result.code != 0:
        first = result.output.strip().splitlines()[-1:] or [f"exit {result.code}"]
        raise ActionError(f"queue: {first[0]}")
    try:
        data = json.loads(result.output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ActionError("queue: `roadnode queue --json` gave no JSON") from None
    return _flatten("", data)


def cmd_net(s: Session, _args: list[str]) -> Lines:
    ctx = s.ctx
    lines = interface_lines() + cellular_lines(ctx.runner)
    try:
        reply = ctx.ask("uplink")
        reply.pop("ok", None)
        lines += _flatten("uplink", reply)
    except ServiceDownError:
        lines.append("uplink   not known: the service is not running")
    except NotReportedError:
        lines.append("uplink   ingest reachability and last upload: not in this build")
    return lines


# --- the machine -----------------------------------------------------------------------------


def cmd_time(_s: Session, _args: list[str]) -> Lines:
    return time_lines()


def cmd_disk(s: Session, _args: list[str]) -> Lines:
    ctx = s.ctx
    paths = [("state", ctx.state_dir), ("root", Path("/"))]
    if ctx.config_path is not None:
        paths.append(("config", ctx.config_path.parent))
    dirs = [Path(d) for d in ctx.cfg.console.export_dirs.split(":") if d]
    return disk_lines(paths, dirs)


def cmd_temp(s: Session, _args: list[str]) -> Lines:
    return temp_lines(s.ctx.runner)


def cmd_logs(s: Session, args: list[str]) -> Lines:
    n = _count(args, 20, 500)
    ctx = s.ctx
    log_file = ctx.log_file or ctx.state_dir / "roadnode.log"
    out: Lines = []
    for line in log_lines(ctx.runner, ctx.cfg.console.service_unit, n, log_file):
        out += wrap(line, 4)
    return out


# --- config ----------------------------------------------------------------------------------

CONFIG_CHANGES = {"set", "apply", "confirm", "revert"}


def cmd_config(s: Session, args: list[str]) -> Lines:
    staged = s.ctx.staged
    if not args:
        raise ActionError("config: show|get KEY|set KEY VALUE|diff|apply|confirm|revert")
    verb, rest = args[0], args[1:]
    try:
        if verb == "show":
            return _config_show(s, rest)
        if verb == "get":
            if len(rest) != 1:
                raise ActionError("config get: one KEY, e.g. `config get capture.fps`")
            return _config_get(s, rest[0])
        if verb == "set":
            if len(rest) == 1 and "=" in rest[0]:
                rest = rest[0].split("=", 1)
            if len(rest) < 2:
                raise ActionError("config set: KEY VALUE, e.g. `config set capture.fps 12`")
            return staged.set(rest[0], " ".join(rest[1:]))
        if verb == "diff":
            return staged.diff()
        if verb == "apply":
            return staged.apply()
        if verb == "confirm":
            return staged.confirm()
        if verb == "revert":
            return staged.revert()
    except StageError as e:
        return [*wrap(f"error: {e}", 7), *(f"  {p}" for p in e.problems)]
    raise ActionError(f"config: unknown sub-command {verb[:20]!r}; try `help config`")


def _config_show(s: Session, rest: list[str]) -> Lines:
    staged = s.ctx.staged
    if rest:
        cfg = staged.effective()
        value = get_value_checked(cfg, rest[0])
        import dataclasses

        if not dataclasses.is_dataclass(value):
            return [f"{rest[0]} = {_shown(rest[0], value)}"]
        out = [f"[{rest[0]}]"]
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if not dataclasses.is_dataclass(v):
                out += wrap(f"{f.name} = {_shown(f.name, v)}", 4)
        return out
    text = staged.text()
    if not text:
        return [f"{staged.path}: no file; the built-in defaults apply"]
    head = [f"# {staged.path}" + (" (with staged changes)" if staged.staged else "")]
    return head + [_hide_pin(line) for line in text.splitlines()]


def get_value_checked(cfg: Any, key: str) -> Any:
    from node.console.staged import field_type

    field_type(key)  # StageError naming the closest key
    return get_value(cfg, key)


def _shown(key: str, value: Any) -> str:
    if "pin" in key.split(".")[-1] and isinstance(value, str):
        return "<set>" if value else "<not set>"
    try:
        return toml_value(value)
    except StageError:
        return str(value)


def _hide_pin(line: str) -> str:
    key = line.split("=", 1)[0].strip()
    return f"{key} = <redacted>" if "=" in line and "pin" in key else line


def _config_get(s: Session, key: str) -> Lines:
    cfg = s.ctx.staged.effective()
    from node.config import Config

    value = get_value_checked(cfg, key)
    default = get_value(Config(), key)
    note = "default" if value == default else f"default {_shown(key, default)}"
    staged = " (staged)" if s.ctx.staged.staged is not None else ""
    return [f"{key} = {_shown(key, value)}  ({note}){staged}"]


# --- actions on the unit ---------------------------------------------------------------------


def cmd_upload(s: Session, args: list[str]) -> Lines:
    if args != ["now"]:
        raise ActionError("upload: `upload now`")
    try:
        reply = s.ctx.ask("upload_now")
    except ServiceDownError as e:
        return _not_running(e)
    reply.pop("ok", None)
    return ["upload started", *_flatten("", reply)]


def cmd_update(s: Session, args: list[str]) -> Lines:
    if args not in (["status"], ["rollback"]):
        raise ActionError("update: `update status` or `update rollback`")
    if args == ["rollback"]:
        from node.fleet import request_rollback, update_status

        software = (update_status(s.ctx.state_dir).get("software") or {}).get("previous")
        if not software:
            return ["update rollback: no previous software version to go back to"]
        request_rollback(s.ctx.state_dir, "software")
        return [
            f"rollback to software {software} requested: the fleet agent switches, restarts",
            "the node and proves it healthy (else it comes back). `update status` shows it.",
        ]
    from node.fleet import update_status

    st = update_status(s.ctx.state_dir)
    lines = []
    for kind in ("software", "model", "config"):
        v = st.get(kind) or {}
        lines.append(
            f"{kind:<9} current {v.get('current') or '-'}  previous {v.get('previous') or '-'}"
        )
    if st.get("in_progress"):
        p = st["in_progress"]
        lines.append(f"updating  {p.get('kind')} {p.get('version')}: step {p.get('step')}")
    last = st.get("last")
    if last:
        lines.append(f"last      {last.get('result')} {last.get('kind')} {last.get('version')}")
        if last.get("reason"):
            lines.append(f"          {str(last['reason'])[:68]}")
    else:
        lines.append("last      no update yet")
    return lines


def cmd_service(s: Session, args: list[str]) -> Lines:
    if len(args) != 1 or args[0] not in ("status", "start", "stop", "restart"):
        raise ActionError("service: `service status|start|stop|restart`")
    unit = s.ctx.cfg.console.service_unit
    if args[0] == "status":
        result = s.ctx.runner(
            ["systemctl", "show", unit, "-p", "ActiveState,SubState,NRestarts,MainPID"], 10.0
        )
        if result.code == 127:
            raise ActionError("service: no systemd (systemctl) on this machine")
        up = "answers on its control socket" if s.ctx.service_up() else "does NOT answer"
        return [*result.output.strip().splitlines(), f"service {up}"]
    result = s.ctx.runner(["systemctl", args[0], unit], 60.0)
    if result.code != 0:
        raise ActionError(f"systemctl {args[0]} {unit}: {result.output.strip() or result.code}")
    return [f"{unit}: {args[0]} done"]


def cmd_reboot(s: Session, args: list[str]) -> Lines:
    if args:
        raise ActionError("reboot: takes no arguments")

    def answer(text: str) -> Lines:
        if text.strip().lower() != "yes":
            return ["not rebooted"]
        s.ctx.audit.record("reboot", outcome="confirmed")
        result = s.ctx.runner(["systemctl", "reboot"], 30.0)
        if result.code != 0:
            raise ActionError(f"systemctl reboot: {result.output.strip() or result.code}")
        return ["rebooting; the console comes back in about a minute"]

    s.prompt_for("reboot the unit now? type yes: ", answer)
    return []


def cmd_unlock(s: Session, _args: list[str]) -> Lines:
    return ["unlocked: commands that change state are allowed until `lock` or idle"]


def cmd_lock(s: Session, _args: list[str]) -> Lines:
    s.lock()
    return ["locked"]


def cmd_exit(s: Session, _args: list[str]) -> Lines:
    s.lock()
    s.editor.clear()
    return ["bye (locked). Press Enter for a new session."]


def cmd_help(s: Session, args: list[str]) -> Lines:
    import difflib

    if not args:
        lines = ["commands (* = the PIN is needed, for some forms; `help CMD` for more):"]
        for c in COMMANDS.values():
            star = "*" if any(c.changes(p) for p in _PIN_PROBES) else " "
            lines.append(f" {star}{c.usage:<34} {c.summary}"[:80])
        return lines
    name = args[0].lower()
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.5)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        raise ActionError(f"help: no command {name[:24]!r}{hint}")
    return [f"usage: {command.usage}", *wrap(command.summary), *command.details.splitlines()]


_PIN_PROBES: tuple[list[str], ...] = (
    ["set"],
    ["snapshot", "PATH"],
    ["restart"],
    ["rollback"],
    ["now"],
    [],
)


def _config_changes(args: list[str]) -> bool:
    return bool(args) and args[0] in CONFIG_CHANGES


def _sub_changes(*verbs: str) -> Callable[[list[str]], bool]:
    return lambda args: bool(args) and args[0] in verbs


def _snapshot_changes(args: list[str]) -> bool:
    return len(args) >= 2 and args[0] == "snapshot"  # writing a picture out needs the PIN


_COMMANDS = [
    Command("help", "help [CMD]", "list the commands, or explain one", "", cmd_help, open_=True),
    Command(
        "status",
        "status",
        "service health: frames, fps, detector, disk",
        "Asks the service; when it is down, says so and why to look at `logs`.",
        cmd_status,
    ),
    Command(
        "camera",
        "camera [snapshot [PATH]]",
        "fps, exposure, sharpness, aiming picture",
        "`camera snapshot` prints a coarse picture of the latest frame for aiming and its\n"
        "sharpness. `camera snapshot /media/usb0/aim.jpg` also writes the full JPEG there\n"
        "(PIN; only under console.export_dirs; never overwrites a file).",
        cmd_camera,
        _snapshot_changes,
    ),
    Command(
        "aim",
        "aim",
        "live: plates seen, their size and sharpness",
        "One line a second until any key: frame sharpness, then each plate of the newest\n"
        "frame with its size in main-stream pixels and its own sharpness. Turn the focus\n"
        "ring for the highest sharpness; zoom until plates are wide enough to read.",
        cmd_aim,
    ),
    Command("detections", "detections [N]", "the last N frames with plates", "", cmd_detections),
    Command(
        "violations",
        "violations [N]",
        "counts per rule and the last N",
        "",
        cmd_violations,
    ),
    Command(
        "alerts",
        "alerts [N]",
        "the last N hotlist hits (10), newest first",
        "Each hit: its age and UTC time, the track, the hotlist's reason code, and whether\n"
        "the read matched exactly or one character off (fuzzy: a person must look).\n"
        "No plate text: the central gets the plate in the alert packet.",
        cmd_alerts,
    ),
    Command("queue", "queue", "evidence packets waiting to be uploaded", "", cmd_queue),
    Command(
        "net",
        "net",
        "interfaces, addresses, cellular, uplink",
        "",
        cmd_net,
    ),
    Command("signal", "signal", "traffic-signal phase, its age and source", "", cmd_signal),
    Command("time", "time", "UTC time and clock sync state", "", cmd_time),
    Command("disk", "disk", "free space: state dir, root, USB sticks", "", cmd_disk),
    Command("temp", "temp", "SoC temperature and throttling", "", cmd_temp),
    Command("logs", "logs [N]", "the service's last N log lines (20)", "", cmd_logs),
    Command(
        "config",
        "config show|get|set|diff|apply|...",
        "read and change the config (staged)",
        "config show [TABLE]      the file (or one table's values)\n"
        "config get KEY           one key's value and its default\n"
        "config set KEY VALUE     stage a change (PIN); checked at once\n"
        "config diff              the staged changes\n"
        "config apply             write the file, restart the service (PIN)\n"
        "config confirm           keep the applied file (PIN); without it the\n"
        "                         old file comes back after console.confirm_s\n"
        "config revert            drop staged changes, or undo an apply now (PIN)",
        cmd_config,
        _config_changes,
    ),
    Command("upload", "upload now", "upload queued evidence now", "", cmd_upload, _always),
    Command(
        "update",
        "update status|rollback",
        "software update state, roll back",
        "",
        cmd_update,
        _sub_changes("rollback"),
    ),
    Command(
        "service",
        "service status|start|stop|restart",
        "the node service under systemd",
        "",
        cmd_service,
        _sub_changes("start", "stop", "restart"),
    ),
    Command("reboot", "reboot", "reboot the unit (asks again)", "", cmd_reboot, _always),
    Command("unlock", "unlock", "enter the PIN now", "", cmd_unlock, _always, open_=True),
    Command("lock", "lock", "forget the PIN", "", cmd_lock, open_=True),
    Command("exit", "exit", "end the session (locks)", "", cmd_exit, open_=True),
]
COMMANDS: dict[str, Command] = {c.name: c for c in _COMMANDS}
