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
from node.rules.zonecheck import zone_problems

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


class _ReportedError(Exception):
    """Problems inside a value were already collected; the key keeps its default."""


def _convert(
    path: str, value: Any, ftype: Any, meta: Mapping[str, Any], problems: list[str]
) -> Any:
    """`value` as `ftype`: a dataclass (a table), a tuple (a list or a point), or a scalar."""
    if dataclasses.is_dataclass(ftype):
        return _build(typing.cast(type[Any], ftype), value, f"{path}.", problems)
    if typing.get_origin(ftype) is tuple:
        args = typing.get_args(ftype)
        if len(args) == 2 and args[1] is Ellipsis:
            return _convert_list(path, value, args[0], meta, problems)
        return _convert_point(path, value, args, meta)
    return _check_value(path, value, ftype, meta)


def _convert_list(
    path: str, value: Any, item_type: Any, meta: Mapping[str, Any], problems: list[str]
) -> tuple[Any, ...]:
    """A TOML array: its length checked against the field's bounds, then each item."""
    if not isinstance(value, (list, tuple)):
        raise _ProblemError(f"{path}: must be a list, got {value!r}")
    n, lo, hi = len(value), meta.get("min_items", 0), meta.get("max_items")
    noun = meta.get("noun", "items")
    if n or not meta.get("optional"):
        none = " (or none)" if meta.get("optional") else ""
        if lo == hi and n != lo:
            raise _ProblemError(f"{path}: must have {lo} {noun}{none}, got {n}")
        if n < lo:
            raise _ProblemError(f"{path}: must have at least {lo} {noun}{none}, got {n}")
    if hi is not None and n > hi:
        raise _ProblemError(f"{path}: must have at most {hi} {noun}, got {n}")
    out, before = [], len(problems)
    for i, item in enumerate(value):
        try:
            out.append(_convert(f"{path}[{i}]", item, item_type, meta.get("items", {}), problems))
        except _ProblemError as p:
            problems.append(str(p))
    if len(problems) > before and not dataclasses.is_dataclass(item_type):
        raise _ReportedError  # a table keeps its good keys; a list of points is dropped whole
    return tuple(out)


def _convert_point(
    path: str, value: Any, types: tuple[Any, ...], meta: Mapping[str, Any]
) -> tuple[Any, ...]:
    """A fixed-length list of numbers ([x, y]); a vector field also takes its names."""
    aliases: Mapping[str, tuple[Any, ...]] | None = meta.get("aliases")
    if isinstance(value, str) and aliases:
        if value in aliases:
            return aliases[value]
        names = ", ".join(aliases)
        raise _ProblemError(f"{path}: must be one of {names} or a vector [dx, dy], got {value!r}")
    if not isinstance(value, (list, tuple)) or len(value) != len(types):
        what = "a vector [dx, dy]" if aliases else "a point [x, y]"
        raise _ProblemError(f"{path}: must be {what}, got {value!r}")
    return tuple(_check_value(path, v, t, meta) for v, t in zip(value, types, strict=True))


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
            kwargs[key] = _convert(path + key, value, hints[key], fld.metadata, problems)
        except _ProblemError as p:
            problems.append(str(p))
        except _ReportedError:
            pass
    for name, fld in fields.items():
        if fld.metadata.get("required") and name not in raw:
            problems.append(f"{path}{name}: required key missing")
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
    yield from _signal_checks(cfg)
    from node.uplink.link import config_problems  # standard library only

    for problem in config_problems(cfg.uplink):
        yield ({f"uplink.{problem.split(':', 1)[0].split('.', 1)[1].split('/')[0]}"}, problem)
    if cfg.tracker.low_score > cfg.tracker.high_score:
        yield (
            {"tracker.low_score", "tracker.high_score"},
            f"tracker.low_score: must not exceed tracker.high_score ({cfg.tracker.high_score:g}), "
            f"got {cfg.tracker.low_score:g}",
        )
    yield from zone_problems(cfg)
    yield from _health_checks(cfg)


def _health_checks(cfg: Config) -> Iterable[tuple[set[str], str]]:
    """Each alarm's raise threshold must be past its clear one (hysteresis)."""
    h = cfg.health
    pairs = [  # (name, raise, clear, alarm when above)
        ("temp", h.temp_raise_c, h.temp_clear_c, "_c", True),
        ("disk_free", h.disk_free_raise_mb, h.disk_free_clear_mb, "_mb", False),
        ("mem_available", h.mem_available_raise_mb, h.mem_available_clear_mb, "_mb", False),
        ("rss", h.rss_raise_mb, h.rss_clear_mb, "_mb", True),
        ("clock_error", h.clock_error_raise_s, h.clock_error_clear_s, "_s", True),
    ]
    for name, raise_at, clear_at, unit, high in pairs:
        if (raise_at <= clear_at) if high else (raise_at >= clear_at):
            side = "above" if high else "below"
            yield (
                {f"health.{name}_raise{unit}", f"health.{name}_clear{unit}"},
                f"health.{name}_raise{unit}: must be {side} health.{name}_clear{unit} "
                f"({clear_at:g}), got {raise_at:g}",
            )


def _signal_checks(cfg: Config) -> Iterable[tuple[set[str], str]]:
    sig = cfg.signal
    if sig.source == "serial" and not sig.serial_url:
        yield (
            {"signal.serial_url", "signal.source"},
            "signal.serial_url: needed when signal.source = 'serial'",
        )
    if sig.source == "gpio" and sig.gpio_red_line < 0:
        yield (
            {"signal.gpio_red_line", "signal.source"},
            "signal.gpio_red_line: needed when signal.source = 'gpio'",
        )
    if sig.gpio_amber_line >= 0 and sig.gpio_amber_line == sig.gpio_red_line:
        yield (
            {"signal.gpio_amber_line", "signal.gpio_red_line"},
            f"signal.gpio_amber_line: must differ from signal.gpio_red_line, "
            f"got {sig.gpio_amber_line} for both",
        )


# --- key lookup in the file, for error lines -------------------------------------------------

_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\- ]+?)\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.\- ]+?)\s*\]\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")
_LAST_PART = re.compile(r"(\[\d+\]|\.[^.\[]+)$")


def key_lines(text: str) -> dict[str, int]:
    """Map each `table.key` path in a TOML text to its 1-based line number.

    Plain tables and arrays of tables (`[[zones.lanes]]` → `zones.lanes[0]`, `zones.lanes[1]`,
    ...); a key inside an inline table or array is found through the key that holds it."""
    lines: dict[str, int] = {}
    table = ""
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _ARRAY_TABLE.match(line):
            name = m.group(1).replace(" ", "")
            counts[name] = counts.get(name, -1) + 1
            table = f"{name}[{counts[name]}]."
            lines.setdefault(name, number)
            lines[table.rstrip(".")] = number
        elif m := _TABLE.match(line):
            table = m.group(1).replace(" ", "") + "."
            lines[table.rstrip(".")] = number
        elif m := _KEY.match(line):
            lines[table + m.group(1)] = number
    return lines


def _enclosing(key: str) -> list[str]:
    """`key` and the keys that hold it: `a.b[1].c`, `a.b[1]`, `a.b`, `a`."""
    out = [key]
    while (shorter := _LAST_PART.sub("", out[-1])) not in ("", out[-1]):
        out.append(shorter)
    return out


def _line_of(key: str, where: Mapping[str, int]) -> int | None:
    """The line of `key`, or of the nearest enclosing key or table that is in `where`."""
    return next((where[k] for k in _enclosing(key) if k in where), None)


def _locate(problems: list[str], text: str, name: str, set_keys: set[str]) -> list[str]:
    """Say where each problem comes from: a `--set` override, or the file and its line."""
    where = key_lines(text)
    out = []
    for problem in problems:
        key = problem.split(":", 1)[0].split("/")[0]
        line = _line_of(key, where)
        if set_keys.intersection(_enclosing(key)):
            out.append(f"{problem} (--set)")
        elif name and line is not None:
            out.append(f"{problem} ({name} line {line})")
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


def _touches(keys: set[str], bad_keys: set[str]) -> bool:
    """Whether a cross-check that read `keys` read a key (or a part of one) already refused."""
    return any(b == k or b.startswith((k + ".", k + "[")) for k in keys for b in bad_keys)


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
    problems.extend(msg for keys, msg in _cross_checks(cfg) if not _touches(keys, bad_keys))
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
