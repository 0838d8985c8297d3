"""Loading the config: TOML → migrations → overrides → validation → `Config`.

Every problem is collected and reported at once, each as one line that names the key path,
what was expected, what was found and, for a file, the line it is on:

    capture.fps: must be between 1 and 60, got 0 (node.toml line 7)
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from node.config import SCHEMA_VERSION, Config

T = TypeVar("T")
Raw = dict[str, Any]


class ConfigError(Exception):
    """The config is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class _ProblemError(Exception):
    """One problem with one key, raised by a check and collected by the validator."""


# --- migrations: each takes the raw dict of version N and returns version N+1 ---------------


def migrate_1(raw: Raw) -> Raw:
    """v1 → v2: `[camera]` became `[capture]`; identity moved from `[site]` to `[node]`."""
    out = {k: v for k, v in raw.items() if k not in ("camera", "site")}
    if "camera" in raw:
        out["capture"] = dict(raw["camera"])
    site = raw.get("site")
    if isinstance(site, dict):
        renames = {"node_id": "id", "name": "site", "lat": "latitude", "lon": "longitude"}
        node = dict(out.get("node", {}))
        for key, value in site.items():
            node[renames.get(key, key)] = value
        out["node"] = node
    out["schema_version"] = 2
    return out


MIGRATIONS: dict[int, Callable[[Raw], Raw]] = {1: migrate_1}


def migrate(raw: Raw) -> Raw:
    """Apply migrations from the file's `schema_version` (1 when absent) up to the current."""
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        return raw  # the validator reports the bad type
    while version < SCHEMA_VERSION and version in MIGRATIONS:
        raw = MIGRATIONS[version](raw)
        version = raw["schema_version"]
    return raw


# --- validation ------------------------------------------------------------------------------


def _check_value(path: str, value: Any, ftype: Any, meta: Mapping[str, Any]) -> Any:
    if ftype is bool:
        if not isinstance(value, bool):
            raise _ProblemError(f"{path}: must be true or false, got {value!r}")
        return value
    if ftype is int or ftype is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _ProblemError(f"{path}: must be a number, got {value!r}")
        if ftype is int and not isinstance(value, int):
            raise _ProblemError(f"{path}: must be a whole number, got {value!r}")
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and hi is not None and not lo <= value <= hi:
            raise _ProblemError(f"{path}: must be between {lo:g} and {hi:g}, got {value!r}")
        return ftype(value)
    if not isinstance(value, str):
        raise _ProblemError(f"{path}: must be a string, got {value!r}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise _ProblemError(f"{path}: must be one of {', '.join(choices)}, got {value!r}")
    max_len = meta.get("max_len")
    if max_len is not None and len(value) > max_len:
        raise _ProblemError(f"{path}: must be at most {max_len} characters, got {len(value)}")
    pattern = meta.get("pattern")
    if pattern and not re.fullmatch(pattern, value):
        raise _ProblemError(f"{path}: must match {pattern}, got {value!r}")
    return value


def _unknown(path: str, key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{path}{key}: unknown key{hint}"


def _build(cls: type[T], raw: Any, path: str, problems: list[str]) -> T:
    """Build dataclass `cls` from `raw`, appending a line per problem; bad keys keep defaults."""
    if not isinstance(raw, dict):
        problems.append(f"{path.rstrip('.') or 'config'}: must be a table, got {raw!r}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        fld = fields.get(key)
        if fld is None:
            problems.append(_unknown(path, key, fields))
            continue
        try:
            if dataclasses.is_dataclass(hints[key]):
                kwargs[key] = _build(hints[key], value, f"{path}{key}.", problems)
            else:
                kwargs[key] = _check_value(path + key, value, hints[key], fld.metadata)
        except _ProblemError as p:
            problems.append(str(p))
    return cls(**kwargs)


def _cross_checks(cfg: Config) -> Iterable[tuple[set[str], str]]:
    """Checks that span fields: each yields the keys it read and its problem line."""
    cap = cfg.capture
    lores = {"capture.lores_width", "capture.lores_height"}
    if cap.lores_width > cap.main_width or cap.lores_height > cap.main_height:
        yield (
            lores | {"capture.main_width", "capture.main_height"},
            (
                f"capture.lores_width/lores_height: the detection stream "
                f"({cap.lores_width}x{cap.lores_height}) must not exceed the main stream "
                f"({cap.main_width}x{cap.main_height})"
            ),
        )
    if cap.lores_width % 2 or cap.lores_height % 2:
        yield (
            lores,
            (
                f"capture.lores_width/lores_height: must be even (YUV420), "
                f"got {cap.lores_width}x{cap.lores_height}"
            ),
        )
    if not re.match(r"^(picam|replay|sim)://", cap.source):
        yield (
            {"capture.source"},
            (f"capture.source: must start with picam://, replay:// or sim://, got {cap.source!r}"),
        )


# --- key lookup in the file, for error lines -------------------------------------------------

_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\- ]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def key_lines(text: str) -> dict[str, int]:
    """Map each `table.key` path in a TOML text to its 1-based line number (plain tables only)."""
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _TABLE.match(line):
            table = m.group(1).replace(" ", "") + "."
            lines[table.rstrip(".")] = number
        elif m := _KEY.match(line):
            lines[table + m.group(1)] = number
    return lines


def _locate(problems: list[str], text: str, name: str, set_keys: set[str]) -> list[str]:
    """Say where each problem comes from: a `--set` override, or the file and its line."""
    where = key_lines(text)
    out = []
    for problem in problems:
        key = problem.split(":", 1)[0].split("/")[0]
        if key in set_keys:
            out.append(f"{problem} (--set)")
        elif name and key in where:
            out.append(f"{problem} ({name} line {where[key]})")
        else:
            out.append(f"{problem} ({name})" if name else problem)
    return out


# --- overrides -------------------------------------------------------------------------------


def parse_override(item: str) -> tuple[str, Any]:
    """`key.path=value` → (path, value); value is read as TOML, else taken as a plain string."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", key):
        raise ConfigError([f"--set {item}: expected key.path=value"])
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key, parsed


def apply_overrides(raw: Raw, overrides: Iterable[str]) -> Raw:
    out: Raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        key, value = parse_override(item)
        *tables, leaf = key.split(".")
        target = out
        for table in tables:
            nxt = target.setdefault(table, {})
            if not isinstance(nxt, dict):
                raise ConfigError([f"--set {item}: {table} is not a table"])
            target = nxt
        target[leaf] = value
    return out


# --- entry points ----------------------------------------------------------------------------


def validate(raw: Raw) -> Config:
    """Migrate and validate a raw dict; raise ConfigError listing every problem."""
    problems: list[str] = []
    raw = migrate(raw)
    version = raw.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        problems.append(f"schema_version: must be between 1 and {SCHEMA_VERSION}, got {version!r}")
        raw = {k: v for k, v in raw.items() if k != "schema_version"}
    cfg = _build(Config, raw, "", problems)
    bad_keys = {problem.split(":", 1)[0] for problem in problems}
    problems.extend(msg for keys, msg in _cross_checks(cfg) if not keys & bad_keys)
    if problems:
        raise ConfigError(problems)
    return cfg


def load(path: Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read `path` (or nothing: built-in defaults), apply `--set` overrides, validate."""
    raw: Raw = {}
    text = ""
    name = path.name if path else ""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
            raw = tomllib.loads(text)
        except OSError as e:
            raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from e
        except UnicodeDecodeError as e:
            raise ConfigError([f"{path}: not UTF-8 text: {e.reason}"]) from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError([f"{path}: not valid TOML: {e}"]) from e
    overrides = list(overrides)
    set_keys = {parse_override(item)[0] for item in overrides}
    try:
        return validate(apply_overrides(migrate(raw), overrides))
    except ConfigError as e:
        raise ConfigError(_locate(e.problems, text, name, set_keys)) from None


def to_toml_dict(cfg: Config) -> Raw:
    """The config as a plain dict, ready for `tomli_w.dumps`."""
    return dataclasses.asdict(cfg)
