"""The hotlist: exact and one-off matches, the low-confidence flag, hashing, expiry, bad files."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from node.infer.reader import make_read
from node.plates.fusion import FusedRead, fuse
from node.plates.hotlist import Hotlist, HotlistError, hash_plate, one_edit_variants
from node.plates.track import check_hotlist

NOW = 1_800_000_000.0  # 2027-01-15
SALT = b"fleet-salt-0123456789abcdef"


def fused(raw: str, conf: float) -> FusedRead:
    out = fuse([make_read((raw,), (tuple([conf] * len(raw)),))])
    assert out is not None
    return out


def plain(*entries: Mapping[str, object]) -> Hotlist:
    return Hotlist.parse({"version": 1, "entries": list(entries)}, "test")


STOLEN = {"plate": "98A-123.45", "reason": "STOLEN", "expires": "2030-01-01T00:00:00Z"}


def test_exact_match_whatever_the_confidence() -> None:
    hotlist = plain(STOLEN)
    for conf in (0.99, 0.5):
        hit = check_hotlist(hotlist, fused("98A12345", conf), 0.8, True, NOW)
        assert hit is not None
        assert hit.reason == "STOLEN"
        assert not hit.fuzzy
        assert hit.plate == "98A12345"
        assert hit.read_text == "98A-123.45"
        assert hit.low_confidence == (conf < 0.8)


@pytest.mark.parametrize("read", ["98A12845", "98A1234", "98A123455", "98B12345"])
def test_one_off_matches_only_when_confidence_is_low_and_is_flagged(read: str) -> None:
    hotlist = plain(STOLEN)
    assert check_hotlist(hotlist, fused(read, 0.99), 0.8, True, NOW) is None
    hit = check_hotlist(hotlist, fused(read, 0.9), 0.99, True, NOW)  # 0.9 ** n < 0.99
    assert hit is not None
    assert hit.fuzzy
    assert hit.low_confidence
    assert hit.plate == "98A12345"  # the entry that matched, not the read
    assert hit.read_raw == read
    assert hit.as_dict()["match"] == "fuzzy"
    # fuzzy matching can be switched off
    assert check_hotlist(hotlist, fused(read, 0.9), 0.99, False, NOW) is None


def test_two_characters_off_never_matches() -> None:
    assert check_hotlist(plain(STOLEN), fused("98A12899", 0.1), 0.8, True, NOW) is None


def test_expired_entries_never_match() -> None:
    old = {"plate": "98A12345", "reason": "STOLEN", "expires": "2020-01-01T00:00:00+07:00"}
    assert check_hotlist(plain(old), fused("98A12345", 0.99), 0.8, True, NOW) is None
    forever = {"plate": "98A12345", "reason": "AMBER"}
    hit = check_hotlist(plain(forever), fused("98A12345", 0.99), 0.8, True, NOW)
    assert hit is not None
    assert hit.expires_utc_s is None


def test_hashed_hotlist_matches_exact_and_one_off_without_holding_plates(tmp_path: Path) -> None:
    digest = hash_plate("98A-123.45", SALT)
    assert digest == hash_plate("98A12345", SALT) != hash_plate("98A12345", SALT[::-1])
    path = tmp_path / "hot.json"
    entry = {"digest": digest, "reason": "WANTED", "expires": "2030-01-01T00:00:00Z"}
    path.write_text(json.dumps({"version": 1, "hashed": True, "entries": [entry]}))
    key = tmp_path / "salt"
    key.write_bytes(SALT)
    os.chmod(key, 0o600)
    hotlist = Hotlist.load(path, key, hashed=True)
    assert "98A12345" not in path.read_text()
    hit = check_hotlist(hotlist, fused("98A12345", 0.99), 0.8, True, NOW)
    assert hit is not None
    assert not hit.fuzzy
    assert hit.plate == ""
    assert hit.digest == digest
    fuzzy = check_hotlist(hotlist, fused("98A12845", 0.5), 0.8, True, NOW)
    assert fuzzy is not None
    assert fuzzy.fuzzy
    assert check_hotlist(hotlist, fused("98A12845", 0.99), 0.8, True, NOW) is None


def test_hashed_needs_a_private_key_file(tmp_path: Path) -> None:
    key = tmp_path / "salt"
    key.write_bytes(SALT)
    os.chmod(key, 0o644)
    path = tmp_path / "hot.json"
    path.write_text(json.dumps({"version": 1, "hashed": True, "entries": []}))
    with pytest.raises(HotlistError, match="chmod 600"):
        Hotlist.load(path, key)
    os.chmod(key, 0o600)
    key.write_bytes(b"short")
    with pytest.raises(HotlistError, match="at least 16 bytes"):
        Hotlist.load(path, key)
    with pytest.raises(HotlistError, match="key of at least"):
        Hotlist.load(path)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a JSON object"),
        ({"version": 2, "entries": []}, "unsupported version"),
        ({"entries": {}}, "'entries' must be a list"),
        ({"entries": [{"plate": "98A12345"}]}, "entry 0: 'reason'"),
        ({"entries": [{"plate": "98A12345", "reason": "stolen car"}]}, "entry 0: 'reason'"),
        ({"entries": [{"plate": "-", "reason": "X"}]}, "entry 0: 'plate'"),
        ({"entries": [STOLEN, {"plate": "1", "reason": "X"}]}, "entry 1: 'plate'"),
        ({"entries": [{"plate": "98A12345", "reason": "X", "expires": "soon"}]}, "ISO 8601"),
        (
            {"entries": [{"plate": "98A12345", "reason": "X", "expires": "2030-01-01"}]},
            "no time zone",
        ),
        ({"entries": [{"plate": "98A12345", "reason": "X", "colour": "red"}]}, "unknown key"),
        ({"hashed": True, "entries": [{"digest": "abc", "reason": "X"}]}, "64 lowercase hex"),
    ],
)
def test_malformed_hotlists_are_refused_with_one_line(doc: object, message: str) -> None:
    with pytest.raises(HotlistError, match=message) as e:
        Hotlist.parse(doc, "hot.json", SALT)
    assert "\n" not in str(e.value)
    assert "hot.json" in str(e.value)


def test_config_and_file_must_agree_on_hashing(tmp_path: Path) -> None:
    path = tmp_path / "hot.json"
    path.write_text(json.dumps({"version": 1, "entries": [STOLEN]}))
    with pytest.raises(HotlistError, match="expects a hashed hotlist"):
        Hotlist.load(path, hashed=True)
    assert len(Hotlist.load(path, hashed=False)) == 1
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(HotlistError, match="not valid JSON"):
        Hotlist.load(tmp_path / "bad.json")
    with pytest.raises(HotlistError, match="not found"):
        Hotlist.load(tmp_path / "missing.json")


def test_one_edit_variants() -> None:
    variants = set(one_edit_variants("AB", "AB"))
    assert variants == {"A", "B", "BB", "AA", "AAB", "BAB", "ABA", "ABB"}
    assert "AB" not in variants


def test_hotlist_hash_command_writes_a_private_hashed_copy(tmp_path: Path) -> None:
    import subprocess
    import sys

    plain_file = tmp_path / "plain.json"
    plain_file.write_text(json.dumps({"version": 1, "entries": [STOLEN]}))
    key = tmp_path / "salt"
    key.write_bytes(SALT)
    os.chmod(key, 0o600)
    out = tmp_path / "hashed.json"
    cmd = [sys.executable, "-m", "node", "hotlist-hash", str(plain_file), str(out)]
    done = subprocess.run(
        [*cmd, "--salt-file", str(key)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert "98A" not in out.read_text()
    hotlist = Hotlist.load(out, key, hashed=True)
    hit = check_hotlist(hotlist, fused("98A12345", 0.99), 0.8, True, NOW)
    assert hit is not None
    assert hit.reason == "STOLEN"
    again = subprocess.run(
        [sys.executable, "-m", "node", "hotlist-hash", str(out), str(tmp_path / "x.json"),
         "--salt-file", str(key)], capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 1
    assert "expects a plain hotlist" in again.stderr


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"plate": "98A1234567890", "reason": "X"}, "'plate' must have 2-12"),
        ({"plate": "9", "reason": "X"}, "'plate' must have 2-12"),
        ({"plate": "STOLEN", "reason": "98A-123.45"}, "'reason' must be"),  # columns swapped
        ({"98A-123.45": "STOLEN"}, "1 unknown key"),  # written as a mapping
        ({"plate": "98A12345", "reason": "X", "expires": "98A-123.45"}, "not an ISO 8601"),
        ({"plate": "98A12345", "reason": "X", "expires": "2030-01-01T98:00"}, "ISO 8601"),
    ],
)
def test_a_malformed_entry_is_not_repeated_in_the_error(
    entry: dict[str, str], message: str
) -> None:
    """Errors go to logs, consoles and the fleet's rejected/ reasons: never a value from the
    list, which may be (most of) a plate number."""
    with pytest.raises(HotlistError, match=message) as e:
        Hotlist.parse({"entries": [entry]}, "hot.json", SALT)
    for value in [*entry.values(), *entry.keys()]:
        if value not in ("plate", "reason", "expires", "X", "STOLEN"):
            assert value not in str(e.value)
