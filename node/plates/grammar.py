"""Vietnamese plate grammar: validate a read and write it the way the plate shows it.

A read is the characters the reader saw, row by row, letters and digits only (the dash, dot
and space printed on a plate are layout, not identity). The grammar of civilian plates:

- province code: 2 digits, 11 … 99 (codes never issued: 13, 42, 44, 45, 46, 87, 91, 96);
- series: a letter, then for cars optionally a second letter (``LD``, ``KT``), for motorbikes
  a digit or a letter (``B1``, ``AA``); letters I, J, O, Q and W are not issued;
- serial: 4 digits (older plates) or 5 digits, written ``123.45``.

Formats (canonical text, the same as `node.capture.platerender` draws):

- one-row car (and a two-row car's rows ``98A`` / ``12345``): ``98A-123.45``, ``30E-1234``;
- two-row motorbike (top row ``29B1``): ``29-B1 123.45``.

A read that breaks the grammar is kept as read and flagged (`PlateNumber.valid` False with a
reason); the grammar never changes a character into another one to make it fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""Every character a plate read may contain."""

UNISSUED_PROVINCES = frozenset({13, 42, 44, 45, 46, 87, 91, 96})
UNISSUED_LETTERS = frozenset("IJOQW")

KIND_CAR = "car"
KIND_MOTO = "moto"

_CAR_ONE_ROW = re.compile(r"(\d{2})([A-Z]{1,2})(\d{4,5})")
_CAR_TOP = re.compile(r"(\d{2})([A-Z]{1,2})")
_MOTO_TOP = re.compile(r"(\d{2})([A-Z][A-Z0-9])")
_SERIAL = re.compile(r"\d{4,5}")


@dataclass(frozen=True, slots=True)
class PlateNumber:
    """A read checked against the grammar.

    `raw`: the characters read (rows joined, letters and digits only); `rows`: the same per
    row; `text`: the canonical plate text when valid, else `raw` unchanged; `kind`: "car",
    "moto" or "" when the structure is not recognised; `reason`: why it is invalid ("" when
    valid).
    """

    raw: str
    rows: tuple[str, ...]
    text: str
    valid: bool
    kind: str = ""
    province: str = ""
    series: str = ""
    serial: str = ""
    reason: str = ""


def normalize(text: str) -> str:
    """`text` upper-cased, everything but A-Z and 0-9 removed: ``98a-123.45`` → ``98A12345``."""
    return "".join(ch for ch in text.upper() if ch in ALPHABET)


def format_serial(serial: str) -> str:
    """``12345`` → ``123.45``; a 4-digit serial stays as it is."""
    return f"{serial[:3]}.{serial[3:]}" if len(serial) == 5 else serial


def _check_parts(province: str, series: str) -> str:
    """Why the province code or series is not issued ("" when fine)."""
    if not 11 <= int(province) <= 99 or int(province) in UNISSUED_PROVINCES:
        return f"province code {province} is not issued"
    if bad := sorted(set(series) & UNISSUED_LETTERS):
        return f"series letter {bad[0]} is not issued"
    return ""


def _invalid(raw: str, rows: tuple[str, ...], reason: str) -> PlateNumber:
    return PlateNumber(raw=raw, rows=rows, text=raw, valid=False, reason=reason)


def _build(
    raw: str, rows: tuple[str, ...], kind: str, province: str, series: str, serial: str
) -> PlateNumber:
    reason = _check_parts(province, series)
    if reason:
        return PlateNumber(raw, rows, raw, False, kind, province, series, serial, reason)
    if kind == KIND_MOTO:
        text = f"{province}-{series} {format_serial(serial)}"
    else:
        text = f"{province}{series}-{format_serial(serial)}"
    return PlateNumber(raw, rows, text, True, kind, province, series, serial)


def parse_rows(rows: tuple[str, ...] | list[str]) -> PlateNumber:
    """Check a read given as its rows (1 row: a one-row car plate; 2 rows: car or motorbike,
    told apart by the top row: ``98A`` is a car, ``29B1`` a motorbike; a two-letter top row
    such as ``29LD`` is read as a car series, the characters are the same either way)."""
    clean = tuple(normalize(r) for r in rows)
    raw = "".join(clean)
    if len(clean) == 1:
        m = _CAR_ONE_ROW.fullmatch(raw)
        if m is None:
            return _invalid(raw, clean, "not PP L[L] NNNN[N] (province, series, serial)")
        return _build(raw, clean, KIND_CAR, m[1], m[2], m[3])
    if len(clean) != 2:
        return _invalid(raw, clean, f"{len(clean)} rows (a plate has 1 or 2)")
    top, bottom = clean
    if not _SERIAL.fullmatch(bottom):
        return _invalid(raw, clean, "bottom row is not a 4- or 5-digit serial")
    if m := _CAR_TOP.fullmatch(top):
        return _build(raw, clean, KIND_CAR, m[1], m[2], bottom)
    if m := _MOTO_TOP.fullmatch(top):
        return _build(raw, clean, KIND_MOTO, m[1], m[2], bottom)
    return _invalid(raw, clean, "top row is not PP L[L] or PP L[digit] (province, series)")


def parse_text(text: str) -> PlateNumber:
    """Check a plate written as text: ``98A-123.45``, ``98A 12345``, ``29-B1 123.45``,
    ``29B112345``. Without separators a 9-character read with a digit third from the
    series is read as a motorbike plate (``29B1 12345``)."""
    stripped = text.strip().upper()
    m = re.fullmatch(r"(\d{2})-?([A-Z][A-Z0-9])[\s]+([\d.]+)", stripped)
    if m is not None and "-" in stripped.split()[0][:3] and normalize(m[3]):
        return parse_rows((m[1] + m[2], m[3]))
    raw = normalize(stripped)
    if re.fullmatch(r"\d{2}[A-Z]\d\d{5}", raw):
        return parse_rows((raw[:4], raw[4:]))
    return parse_rows((raw,))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (substitutions, insertions, deletions) between `a` and `b`."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
