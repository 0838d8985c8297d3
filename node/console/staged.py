"""Staged config edits with an automatic revert: `set`, `diff`, `apply`, `confirm`, `revert`.

`set KEY VALUE` edits a copy of the config file's text (the line of that key, so comments and
layout stay) and validates the whole result: a change that brings a new problem is refused.
`apply` validates again, keeps a backup of the file in the state dir, writes the new file
atomically (temporary file, fsync, rename, fsync of the folder) and reloads the service. Unless
`confirm` comes within `confirm_s` seconds, the backup is put back and the service reloaded
again: an edit that cuts the unit off (a wrong APN, a broken source) undoes itself.

The pending revert is also written to the state dir, so a console that is restarted, or a unit
that reboots, in the middle still reverts (at once when the time has passed).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import hashlib
import json
import os
import time
import tomllib
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.config import Config
from node.configload import ConfigError, load, migrate, parse_override, validate

PENDING_FILE = "console-apply.json"
BACKUP_FILE = "console-config.backup"
PREVIOUS_FILE = "console-config.prev.toml"


class StageError(Exception):
    """A refused edit; `problems` are the config problems behind it, one line each."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


def field_type(path: str) -> tuple[Any, Any]:
    """(the field's type, its default) for a dotted key path; StageError if there is none."""
    cls: Any = Config
    hint: Any = Config
    default: Any = None
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            raise StageError(f"{path}: {'.'.join(parts[:i])} is not a table")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=1)
            hint_text = f" (did you mean '{'.'.join([*parts[:i], close[0]])}'?)" if close else ""
            raise StageError(f"{path}: unknown key{hint_text}")
        fld = fields[part]
        hint = typing.get_type_hints(cls)[part]
        default = (
            fld.default_factory() if fld.default_factory is not dataclasses.MISSING else fld.default
        )
        cls = hint
    return hint, default


def get_value(cfg: Config, path: str) -> Any:
    value: Any = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


def toml_value(value: Any) -> str:
    """`value` as it would be written after `key = ` in TOML."""
    import tomli_w

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        raise StageError("a whole table cannot be shown as one value; use `config show TABLE`")
    if isinstance(value, tuple):
        value = _listify(value)
    text: str = tomli_w.dumps({"v": value}, multiline_strings=False)
    return " ".join(line.strip() for line in text.split("=", 1)[1].splitlines()).strip()


def _listify(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_listify(v) for v in value]
    return value


def _comment_start(line: str) -> int:
    """Index of a `#` comment outside any string on a TOML line, or -1."""
    quote = ""
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#":
            return i
        i += 1
    return -1


def edit_text(text: str, path: str, value: Any) -> tuple[str, bool]:
    """`text` with `path` set to `value`, keeping the rest of the file as written.

    Returns (new text, whether comments and layout were kept). When the line edit does not
    give exactly the intended document (a value spread over several lines, an inline table),
    the document is rewritten whole instead."""
    from node.configload import key_lines

    raw = tomllib.loads(text)
    expected = _set_in(raw, path, value)
    *tables, leaf = path.split(".")
    table = ".".join(tables)
    lines = text.splitlines(keepends=True)
    where = key_lines(text)
    assignment = f"{leaf} = {toml_value(value)}"
    if path in where:
        n = where[path] - 1
        old = lines[n].rstrip("\r\n")
        indent = old[: len(old) - len(old.lstrip())]
        cut = _comment_start(old)
        comment = "  " + old[cut:] if cut >= 0 else ""
        lines[n] = f"{indent}{assignment}{comment}\n"
    elif table and table in where:
        lines.insert(where[table], f"{assignment}\n")
    elif not table:
        lines.insert(0, f"{assignment}\n")
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines += ["\n", f"[{table}]\n", f"{assignment}\n"]
    new = "".join(lines)
    try:
        if tomllib.loads(new) == expected:
            return new, True
    except tomllib.TOMLDecodeError:
        pass
    import tomli_w

    return tomli_w.dumps(expected), False


def _set_in(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    target = out
    *tables, leaf = path.split(".")
    for t in tables:
        nxt = target.setdefault(t, {})
        if not isinstance(nxt, dict):
            raise StageError(f"{path}: {t} is not a table in the file")
        target = nxt
    target[leaf] = value
    return out


def problems_of(text: str) -> list[str]:
    """Every problem of a config text (empty when valid)."""
    try:
        validate(migrate(tomllib.loads(text)))
    except tomllib.TOMLDecodeError as e:
        return [f"not valid TOML: {e}"]
    except ConfigError as e:
        return list(e.problems)
    return []


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Write `data` to `path` so that a power cut leaves the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.console-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


Reload = Callable[[], str]  # reloads the service, returns one line saying how it went


class StagedConfig:
    """The staged edits of one config file and the revert timer of the last apply."""

    def __init__(
        self,
        config_path: Path | None,
        state_dir: Path,
        reload: Reload,
        confirm_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = config_path
        self.state_dir = state_dir
        self.reload = reload
        self.confirm_s = confirm_s
        self.clock = clock
        self.wall = wall
        self.staged: str | None = None  # the edited text, None: nothing staged
        self.base: str | None = None  # the file's text when editing began
        self.changes: list[str] = []  # the keys set, in order
        self.deadline: float | None = None  # clock() time of the automatic revert
        self._resume_pending()

    # --- reading -----------------------------------------------------------------------------

    def _need_path(self) -> Path:
        if self.path is None:
            raise StageError(
                "no config file: the console was started without --config and "
                "/etc/roadnode/node.toml does not exist (the node runs on built-in defaults)"
            )
        return self.path

    def file_text(self) -> str:
        path = self._need_path()
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError) as e:
            raise StageError(f"{path}: cannot read: {e}") from None

    def text(self) -> str:
        """The staged text, or the file's when nothing is staged."""
        return self.staged if self.staged is not None else self.file_text()

    def effective(self) -> Config:
        """The config the staged text gives (the file's when nothing is staged)."""
        if self.path is None:
            return Config()
        text = self.text()
        try:
            return validate(migrate(tomllib.loads(text)))
        except (tomllib.TOMLDecodeError, ConfigError):
            return load(self.path)  # raises with the problems, located

    # --- editing -----------------------------------------------------------------------------

    def set(self, key: str, value_text: str) -> list[str]:
        """Stage `key = value` (value read as TOML, else as a plain string)."""
        path = self._need_path()
        if self.deadline is not None:
            raise StageError("the last apply is not confirmed yet: `config confirm` or `revert`")
        key, value = parse_override(f"{key}={value_text}")
        ftype, _ = field_type(key)
        if key == "schema_version":
            raise StageError("schema_version: set by the software, not by hand")
        if dataclasses.is_dataclass(ftype):
            raise StageError(f"{key}: is a table; set its keys one by one")
        if typing.get_origin(ftype) is tuple and dataclasses.is_dataclass(
            typing.get_args(ftype)[0]
        ):
            raise StageError(f"{key}: is a list of tables; edit it in the file itself")
        base = self.file_text()
        current = self.text()
        try:
            raw = tomllib.loads(current)
        except tomllib.TOMLDecodeError as e:
            raise StageError(f"{path}: not valid TOML now ({e}); fix the file first") from None
        version = raw.get("schema_version", 1)
        if version != Config().schema_version:
            raise StageError(
                f"{path}: is schema version {version}; the console edits only version "
                f"{Config().schema_version} files (migrate it first)"
            )
        before = set(problems_of(current))
        new, kept = edit_text(current, key, value)
        added = [p for p in problems_of(new) if p not in before]
        if added:
            raise StageError(f"{key}: refused", added)
        if self.staged is None:
            self.base = base
        self.staged = new
        self.changes.append(key)
        shown = "<redacted>" if "pin" in key else toml_value(value)
        out = [f"staged {key} = {shown}"]
        if not kept:
            out.append("note: the file will be rewritten whole; its comments will be lost")
        out.append("`config diff` shows the changes, `config apply` applies them")
        return out

    def diff(self) -> list[str]:
        if self.staged is None:
            return ["nothing staged"]
        name = self._need_path().name
        lines = difflib.unified_diff(
            (self.base or "").splitlines(),
            self.staged.splitlines(),
            f"{name} (now)",
            f"{name} (staged)",
            lineterm="",
        )
        return [_redact(line) for line in lines]

    # --- apply, confirm, revert --------------------------------------------------------------

    @property
    def pending_s(self) -> float | None:
        """Seconds until the automatic revert, or None when nothing waits for confirmation."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.clock())

    def apply(self) -> list[str]:
        path = self._need_path()
        if self.deadline is not None:
            raise StageError("the last apply is not confirmed yet: `config confirm` or `revert`")
        if self.staged is None:
            raise StageError("nothing staged: `config set KEY VALUE` first")
        now_text = self.file_text()
        if now_text != self.base:
            raise StageError(
                f"{path}: changed on disk since editing began; `config revert` and start again"
            )
        problems = problems_of(self.staged)
        if problems:
            raise StageError(f"{path}: the staged file is not valid", problems)
        existed = path.exists()
        mode = path.stat().st_mode & 0o777 if existed else 0o640
        backup = self.state_dir / BACKUP_FILE
        if existed:
            write_atomic(backup, path.read_bytes(), 0o600)
        pending = {
            "config": str(path),
            "existed": existed,
            "deadline_wall": self.wall() + self.confirm_s,
            "applied_sha256": hashlib.sha256(self.staged.encode()).hexdigest(),
        }
        write_atomic(self.state_dir / PENDING_FILE, json.dumps(pending).encode(), 0o600)
        write_atomic(path, self.staged.encode("utf-8"), mode)
        keys = ", ".join(dict.fromkeys(self.changes))
        self.staged = self.base = None
        self.changes = []
        self.deadline = self.clock() + self.confirm_s
        return [
            f"applied {keys} to {path}",
            self.reload(),
            f"`config confirm` within {self.confirm_s:.0f} s keeps it; otherwise it is reverted",
        ]

    def confirm(self) -> list[str]:
        if self.deadline is None:
            raise StageError("nothing to confirm")
        self.deadline = None
        backup = self.state_dir / BACKUP_FILE
        if backup.exists():
            os.replace(backup, self.state_dir / PREVIOUS_FILE)
        (self.state_dir / PENDING_FILE).unlink(missing_ok=True)
        _fsync_dir(self.state_dir)
        return [f"confirmed; the previous file is kept as {self.state_dir / PREVIOUS_FILE}"]

    def revert(self) -> list[str]:
        if self.deadline is not None:
            return self._restore("reverted on request")
        if self.staged is not None:
            n = len(self.changes)
            self.staged = self.base = None
            self.changes = []
            return [f"discarded {n} staged change{'s' if n != 1 else ''}"]
        return ["nothing to revert"]

    def poll(self) -> list[str] | None:
        """Revert when the confirmation time is over; the lines saying so, or None."""
        if self.deadline is None or self.clock() < self.deadline:
            return None
        return self._restore(f"not confirmed within {self.confirm_s:.0f} s: reverted")

    def _restore(self, why: str) -> list[str]:
        path = self._need_path()
        pending_file = self.state_dir / PENDING_FILE
        existed = True
        with contextlib.suppress(OSError, ValueError, KeyError):
            existed = bool(json.loads(pending_file.read_text())["existed"])
        backup = self.state_dir / BACKUP_FILE
        if backup.exists():
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o640
            write_atomic(path, backup.read_bytes(), mode)
            backup.unlink()
        elif not existed:
            path.unlink(missing_ok=True)
        pending_file.unlink(missing_ok=True)
        _fsync_dir(self.state_dir)
        self.deadline = None
        return [f"config {why}: {path} is back as it was", self.reload()]

    def _resume_pending(self) -> None:
        """An apply left unconfirmed by an earlier console: carry on its revert timer."""
        try:
            pending = json.loads((self.state_dir / PENDING_FILE).read_text())
            deadline_wall = float(pending["deadline_wall"])
            recorded = str(pending["config"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError):
            deadline_wall, recorded = 0.0, str(self.path)  # damaged: revert at once
        if self.path is None or Path(recorded) != self.path:
            return  # another file: not ours to touch
        left = min(max(0.0, deadline_wall - self.wall()), self.confirm_s)
        self.deadline = self.clock() + left


def _redact(line: str) -> str:
    body = line[1:] if line[:1] in "+- " else line
    key = body.split("=", 1)[0].strip()
    if "=" in body and "pin" in key:
        return f"{line[:1]}{key} = <redacted>"
    return line
