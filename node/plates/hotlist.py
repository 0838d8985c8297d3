"""The hotlist: plates wanted by investigators, each with a reason code and an expiry.

File (JSON, delivered as `hotlist.json` in a signed fleet config bundle, docs/fleet-updates.md;
see docs/configuration.md [reader]):

    {"version": 1, "hashed": false, "expires": "2027-01-31T00:00:00Z",
     "entries": [{"plate": "98A-123.45", "reason": "STOLEN", "expires": "2026-12-31T00:00:00Z"}]}

`expires` (optional, on the list and on each entry): after it the list, or the entry, never
matches. An install refuses a list that is already stale (`check_current`): past its own
`expires`, or holding entries of which none is live any more.

Plates are compared on their letters and digits only (`normalize`). A hashed hotlist carries
`"digest"` (lowercase hex HMAC-SHA256 of the normalised plate under the fleet's key, the
"salt") instead of `"plate"`, so a node that is stolen gives away no plate numbers.

Matching a read:

- exact: the read's normalised text is on the list (a hashed list: its digest is);
- fuzzy: only when the read's confidence is low (below `min_confidence`) and fuzzy matching
  is on, an entry one edit away (one character substituted, inserted or deleted) matches too,
  and the hit is flagged `fuzzy` (a person must look: the read may be another vehicle).
  Variants are generated from the read and looked up, so a hashed list matches the same way.

Expired entries (and every entry of an expired list) never match. A malformed file is refused
whole (`HotlistError`, one line naming the file).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.plates.grammar import ALPHABET, normalize

MAX_ENTRIES = 200_000
MAX_FILE_BYTES = 64 * 1024 * 1024
REASON_RE = re.compile(r"[A-Z0-9_-]{1,32}")
DIGEST_RE = re.compile(r"[0-9a-f]{64}")
MIN_SALT_BYTES = 16


class HotlistError(Exception):
    """A hotlist or its key could not be read or is malformed; one line naming the file."""


@dataclass(frozen=True, slots=True)
class HotlistEntry:
    key: str  # the normalised plate, or its digest on a hashed list
    reason: str
    expires_utc_s: float | None  # None: never

    def live(self, now_utc_s: float) -> bool:
        return self.expires_utc_s is None or now_utc_s < self.expires_utc_s


@dataclass(frozen=True, slots=True)
class HotlistHit:
    """A read that matched a hotlist entry.

    `plate`: the entry's normalised plate ("" on a hashed list, which holds none); `digest`:
    the entry's digest on a hashed list; `read_text`: what the reader read; `fuzzy`: matched
    one character off (only ever for a low-confidence read); `low_confidence`: the read was
    below the confidence bar.
    """

    reason: str
    expires_utc_s: float | None
    plate: str
    digest: str
    read_text: str
    read_raw: str
    confidence: float
    fuzzy: bool
    low_confidence: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "expires_utc_s": self.expires_utc_s,
            "plate": self.plate,
            "digest": self.digest,
            "read_text": self.read_text,
            "read_raw": self.read_raw,
            "confidence": round(self.confidence, 4),
            "match": "fuzzy" if self.fuzzy else "exact",
            "low_confidence": self.low_confidence,
        }


def hash_plate(plate: str, salt: bytes) -> str:
    """The digest a hashed hotlist stores for `plate`: HMAC-SHA256(salt, normalised plate)."""
    return hmac.new(salt, normalize(plate).encode("ascii"), hashlib.sha256).hexdigest()


def one_edit_variants(text: str, alphabet: str = ALPHABET) -> Iterator[str]:
    """Every string one substitution, deletion or insertion away from `text`."""
    seen = {text}
    for i in range(len(text) + 1):
        if i < len(text):
            for variant in (
                text[:i] + text[i + 1 :],
                *(text[:i] + c + text[i + 1 :] for c in alphabet),
            ):
                if variant and variant not in seen:
                    seen.add(variant)
                    yield variant
        for c in alphabet:
            variant = text[:i] + c + text[i:]
            if variant not in seen:
                seen.add(variant)
                yield variant


def parse_expiry(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise HotlistError(
            f"{where}: 'expires' must be an ISO 8601 time, got {type(value).__name__}"
        )
    # the value is never repeated: a hotlist with its columns mixed up holds plates anywhere
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise HotlistError(f"{where}: 'expires' is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise HotlistError(f"{where}: 'expires' has no time zone (add Z)")
    return t.timestamp()


class Hotlist:
    """Entries by key (normalised plate, or digest), ready to match reads."""

    def __init__(
        self,
        entries: Iterable[HotlistEntry],
        hashed: bool = False,
        salt: bytes = b"",
        expires_utc_s: float | None = None,
    ) -> None:
        if hashed and len(salt) < MIN_SALT_BYTES:
            raise HotlistError(f"a hashed hotlist needs a key of at least {MIN_SALT_BYTES} bytes")
        self.hashed = hashed
        self.expires_utc_s = expires_utc_s  # the list's own end (None: none)
        self._salt = salt
        self._by_key: dict[str, HotlistEntry] = {}
        for e in entries:
            self._by_key[e.key] = e

    def __len__(self) -> int:
        return len(self._by_key)

    def _key(self, plate: str) -> str:
        return hash_plate(plate, self._salt) if self.hashed else plate

    def live(self, now_utc_s: float) -> bool:
        """Whether the list as a whole is still in force (not past its own `expires`)."""
        return self.expires_utc_s is None or now_utc_s < self.expires_utc_s

    def check_current(self, now_utc_s: float, source: str) -> None:
        """HotlistError (one line naming `source`) when the list is stale: past its own
        `expires`, or not empty with every entry expired. Entries expiring one by one are
        normal; a list of only dead entries is a build or delivery mistake, and installing it
        would silently end every alert."""
        check_current(self._by_key.values(), self.expires_utc_s, now_utc_s, source)

    def _lookup(self, plate: str, now_utc_s: float) -> HotlistEntry | None:
        if not self.live(now_utc_s):
            return None
        entry = self._by_key.get(self._key(plate))
        return entry if entry is not None and entry.live(now_utc_s) else None

    def match(
        self,
        raw: str,
        confidence: float,
        now_utc_s: float,
        min_confidence: float = 0.8,
        fuzzy: bool = True,
        read_text: str = "",
    ) -> HotlistHit | None:
        """The hit for a read of `raw` (letters and digits) at `confidence`, or None."""
        plate = normalize(raw)
        if not plate or not self._by_key:
            return None
        low = confidence < min_confidence
        entry = self._lookup(plate, now_utc_s)
        if entry is not None:
            return self._hit(entry, plate, confidence, False, low, read_text)
        if not (fuzzy and low):
            return None
        for variant in one_edit_variants(plate):
            entry = self._lookup(variant, now_utc_s)
            if entry is not None:
                return self._hit(entry, plate, confidence, True, low, read_text, variant)
        return None

    def _hit(
        self,
        entry: HotlistEntry,
        raw: str,
        confidence: float,
        fuzzy: bool,
        low: bool,
        read_text: str,
        variant: str = "",
    ) -> HotlistHit:
        plate = "" if self.hashed else (variant or raw)
        digest = entry.key if self.hashed else ""
        return HotlistHit(
            entry.reason,
            entry.expires_utc_s,
            plate,
            digest,
            read_text or raw,
            raw,
            confidence,
            fuzzy,
            low,
        )

    @classmethod
    def parse(cls, raw: Any, source: str, salt: bytes = b"", hashed: bool | None = None) -> Hotlist:
        """A hotlist from decoded JSON `raw` (read from `source`). `hashed`: what the config
        expects (None: whatever the file says); a file that disagrees is refused."""
        entries, file_hashed, expires = parse_document(raw, source, hashed)
        return cls(entries, file_hashed, salt, expires)

    @classmethod
    def load(
        cls,
        path: Path | str,
        salt_file: Path | str | None = None,
        hashed: bool | None = None,
        name: str | None = None,
    ) -> Hotlist:
        """Read the hotlist at `path` (and, for a hashed one, its key from `salt_file`).
        Errors name the file as `name` (default: its path)."""
        path = Path(path)
        raw = read_document(path, name)
        salt = read_salt(Path(salt_file)) if salt_file else b""
        return cls.parse(raw, name or str(path), salt, hashed)


def read_document(path: Path, name: str | None = None) -> Any:
    """The decoded JSON of the hotlist file at `path` (HotlistError naming it as `name`)."""
    shown = name or str(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise HotlistError(f"{shown}: hotlist is larger than {MAX_FILE_BYTES} bytes")
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HotlistError(f"{shown}: hotlist not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HotlistError(f"{shown}: cannot read hotlist: {e}") from None
    except json.JSONDecodeError as e:
        raise HotlistError(f"{shown}: not valid JSON: {e.msg} (line {e.lineno})") from None


def parse_document(
    raw: Any, source: str, hashed: bool | None = None
) -> tuple[list[HotlistEntry], bool, float | None]:
    """Check a decoded hotlist document (no key needed, so a bundle builder can check a hashed
    list too): (entries, hashed, the list's expiry). `hashed`: what the config expects."""
    if not isinstance(raw, Mapping):
        raise HotlistError(f"{source}: must be a JSON object, got {type(raw).__name__}")
    if raw.get("version", 1) != 1:
        version = raw.get("version")
        shown = version if isinstance(version, int) else type(version).__name__
        raise HotlistError(f"{source}: unsupported version {shown} (know 1)")
    file_hashed = raw.get("hashed", False)
    if not isinstance(file_hashed, bool):
        raise HotlistError(f"{source}: 'hashed' must be true or false")
    if hashed is not None and file_hashed != hashed:
        want = "hashed" if hashed else "plain"
        raise HotlistError(f"{source}: the config expects a {want} hotlist, the file is not")
    items = raw.get("entries")
    if not isinstance(items, list):
        raise HotlistError(f"{source}: 'entries' must be a list")
    if len(items) > MAX_ENTRIES:
        raise HotlistError(f"{source}: {len(items)} entries, more than {MAX_ENTRIES}")
    entries = []
    for i, item in enumerate(items):
        where = f"{source}: entry {i}"
        if not isinstance(item, Mapping):
            raise HotlistError(f"{where}: must be an object")
        unknown = set(item) - {"plate", "digest", "reason", "expires", "note"}
        if unknown:  # named by count, not by name: a key may be a plate number
            raise HotlistError(
                f"{where}: {len(unknown)} unknown key(s); known: plate, digest, reason, "
                "expires, note"
            )
        reason = item.get("reason")
        if not isinstance(reason, str) or not REASON_RE.fullmatch(reason):
            raise HotlistError(f"{where}: 'reason' must be 1-32 of A-Z 0-9 _ -")
        if file_hashed:
            key = item.get("digest")
            if "plate" in item:
                raise HotlistError(f"{where}: a hashed hotlist must not hold 'plate'")
            if not isinstance(key, str) or not DIGEST_RE.fullmatch(key):
                raise HotlistError(f"{where}: 'digest' must be 64 lowercase hex digits")
        else:
            plate = item.get("plate")
            key = normalize(plate) if isinstance(plate, str) else ""
            if not 2 <= len(key) <= 12:
                got = f"{len(key)}" if isinstance(plate, str) else type(plate).__name__
                raise HotlistError(  # never the value itself: it may be most of a plate number
                    f"{where}: 'plate' must have 2-12 letters and digits, got {got}"
                )
        entries.append(HotlistEntry(key, reason, parse_expiry(item.get("expires"), where)))
    return entries, file_hashed, parse_expiry(raw.get("expires"), source)


def check_current(
    entries: Iterable[HotlistEntry], expires_utc_s: float | None, now_utc_s: float, source: str
) -> None:
    """See `Hotlist.check_current`."""
    if expires_utc_s is not None and now_utc_s >= expires_utc_s:
        raise HotlistError(f"{source}: the hotlist expired at {_iso(expires_utc_s)}")
    entries = list(entries)
    if entries and not any(e.live(now_utc_s) for e in entries):
        last = max(e.expires_utc_s or 0.0 for e in entries)
        raise HotlistError(
            f"{source}: every one of its {len(entries)} entries has expired (the last at "
            f"{_iso(last)})"
        )


def check_document(raw: Any, source: str, now_utc_s: float, hashed: bool | None = None) -> int:
    """Check a decoded hotlist document as an install would, but without its key (a bundle
    builder has none): well formed, and not stale. The number of entries."""
    entries, _, expires = parse_document(raw, source, hashed)
    check_current(entries, expires, now_utc_s, source)
    return len(entries)


def _iso(utc_s: float) -> str:
    return dt.datetime.fromtimestamp(utc_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_salt(path: Path) -> bytes:
    """The fleet's HMAC key: raw bytes, at least `MIN_SALT_BYTES`, not group/other readable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise HotlistError(f"{path}: hotlist key file not found") from None
    except OSError as e:
        raise HotlistError(f"{path}: cannot open hotlist key file: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise HotlistError(
                f"{path}: hotlist key file must not be readable by others (chmod 600)"
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    if len(data) < MIN_SALT_BYTES:
        raise HotlistError(f"{path}: hotlist key must be at least {MIN_SALT_BYTES} bytes")
    return data


def hashed_document(raw: Any, salt: bytes, source: str = "hotlist") -> dict[str, Any]:
    """A plain hotlist document (checked first) as a hashed one: each `plate` replaced by its
    `digest` under `salt`, nothing else changed. For storing a hotlist without plate numbers
    (`roadnode hotlist-hash`)."""
    Hotlist.parse(raw, source, hashed=False)  # refuses a malformed or already hashed file
    if len(salt) < MIN_SALT_BYTES:
        raise HotlistError(f"{source}: the hotlist key must be at least {MIN_SALT_BYTES} bytes")
    entries = []
    for item in raw["entries"]:
        entry = {k: v for k, v in item.items() if k != "plate"}
        entries.append({"digest": hash_plate(item["plate"], salt), **entry})
    return {**{k: v for k, v in raw.items() if k != "entries"}, "hashed": True, "entries": entries}
