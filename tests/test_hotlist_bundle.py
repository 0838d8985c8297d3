"""A hotlist delivered in a signed fleet config bundle: checked before the switch, placed next
to its config version, loaded by the service at its restart; refused whole (the node keeps its
hotlist) when the bundle is tampered with, the hotlist malformed or stale, or a path escapes.

Real signatures, the real `Updater` install path (journal, switch, health proof over a real
control socket, commit or roll back), the real config loader and hotlist loader."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from node.config import FleetConfig
from node.configload import load
from node.fleet import BundleError
from node.fleet.bundle import (
    MANIFEST,
    PAYLOAD,
    SIGNATURE,
    Manifest,
    Member,
    Platform,
    Target,
    create,
    signature_bytes,
    utc_now,
)
from node.fleet.install import Hooks, Result, Updater, control_probe
from node.infer.reader import make_read
from node.plates.fusion import FusedRead, fuse
from node.plates.hotlist import Hotlist, HotlistError, hashed_document
from node.plates.track import check_hotlist, load_hotlist
from tests import fleethelp as fh
from tests.fleet_service import FakeService

SALT = b"fleet-hotlist-key-0123456789abcdef"
LATER = "2099-01-01T00:00:00Z"
PAST = "2001-01-01T00:00:00Z"


def doc(*plates: str, reason: str = "STOLEN", **top: Any) -> dict[str, Any]:
    entries = [{"plate": p, "reason": reason, "expires": LATER} for p in plates]
    return {"version": 1, "hashed": False, **top, "entries": entries}


def fused(text: str, conf: float = 0.97) -> FusedRead:
    out = fuse([make_read((text,), (tuple([conf] * len(text)),))])
    assert out is not None
    return out


class ReaderService(FakeService):
    """The fleet tests' stand-in service, which at each (re)start also does what
    `Service._build_reader` does: loads the live config (`node.configload.load`) and its
    hotlist (`node.plates.track.load_hotlist`), and reports a hotlist it cannot load the way
    `Service.rules_status` does (`rules.reader` failed, "hotlist: ...")."""

    def __init__(self, state_dir: Path, config_path: Path) -> None:
        super().__init__(state_dir)
        self.config_path = config_path
        self.hotlist: Hotlist | None = None
        self.reader_error: str | None = None
        self.before_start: list[Any] = []  # callables run before the next start (faults)

    def start(self) -> None:
        for fault in self.before_start:
            fault()
        self.before_start.clear()
        self.hotlist, self.reader_error = None, None
        if self.config_path.exists():
            try:
                self.hotlist = load_hotlist(load(self.config_path).reader)
            except HotlistError as e:
                self.reader_error = f"hotlist: {e}"
        super().start()

    def status(self, request: dict[str, Any]) -> dict[str, Any]:
        out = super().status(request)
        reader: dict[str, Any] = {"state": "running"}
        if self.reader_error:
            reader = {"state": "failed", "error": self.reader_error}
        return {**out, "rules": {"state": "running", "reader": reader}}

    def hit(self, text: str, conf: float = 0.97) -> str | None:
        """The reason code a read of `text` would alert with now (None: no hit)."""
        hit = check_hotlist(
            self.hotlist, fused(text, conf), 0.8, True, dt.datetime.now().timestamp()
        )
        return None if hit is None else hit.reason


class Node:
    def __init__(self, state_dir: Path, key: fh.Key) -> None:
        self.state_dir = state_dir
        self.key = key
        self.root = state_dir / "fleet"
        self.config_path = state_dir / "node.toml"
        self.service = ReaderService(state_dir, self.config_path)
        self.hooks = Hooks(
            restart=self.service.restart,
            probe=control_probe(state_dir),
            installer=fh.fake_installer,
            free_bytes=lambda _p: 10**12,
            platform=Platform("aarch64", "Raspberry Pi 4 Model B"),
            poll_s=0.02,
        )
        cfg = FleetConfig(key=key.public, health_window_s=2.0, health_frames=5, keep_releases=3)
        self.updater = Updater(self.root, cfg, "cam-7", self.config_path, self.hooks)

    def push(self, bundle: Path) -> Result:
        dest = self.root / "incoming" / bundle.name
        shutil.copyfile(bundle, dest)
        result = self.updater.process(dest)
        assert not dest.exists()
        assert not (self.root / "journal.json").exists()
        return result

    def live(self) -> dict[str, Any]:
        return tomllib.loads(self.config_path.read_text())


@pytest.fixture
def key() -> fh.Key:
    return fh.new_key()


@pytest.fixture
def node(key: fh.Key) -> Iterator[Node]:
    d = Path(tempfile.mkdtemp(prefix="hb", dir="/tmp"))  # a Unix socket path is short
    n = Node(d, key)
    n.config_path.write_text(
        f'schema_version = 2\n[node]\nid = "cam-7"\n[fleet]\nkey = "{key.public}"\n'
    )
    n.service.start()
    yield n
    n.service.stop()
    shutil.rmtree(d, ignore_errors=True)


def config_bundle(
    folder: Path,
    version: str,
    key: fh.Key,
    hotlist: Mapping[str, Any] | bytes | None,
    toml: str = "schema_version = 2\n[capture]\nfps = 10\n",
) -> Path:
    """A config bundle built and signed by the real `roadnode bundle create` code."""
    src = folder / f"src-{version}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "config.toml").write_text(toml)
    if hotlist is not None:
        data = hotlist if isinstance(hotlist, bytes) else json.dumps(hotlist).encode()
        (src / "hotlist.json").write_bytes(data)
    out = folder / f"config-{version}.bundle"
    create(out, "config", version, [src], key.private)
    return out


def signed(out: Path, key: fh.Key, version: str, files: Mapping[str, bytes]) -> Path:
    """A correctly signed config bundle holding exactly `files`, built without the builder's
    own checks (as a careless or older tool would): what a node must still refuse."""
    members = tuple(
        Member(p, hashlib.sha256(d).hexdigest(), len(d)) for p, d in sorted(files.items())
    )
    data = Manifest("config", version, utc_now(), members, Target()).to_json()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, blob in (
            (MANIFEST, data),
            (SIGNATURE, signature_bytes(data, key.private)),
            *((PAYLOAD + p, d) for p, d in sorted(files.items())),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return out


TOML = b"schema_version = 2\n[capture]\nfps = 10\n"


def test_a_signed_config_bundle_delivers_a_hotlist_the_service_matches(
    tmp_path: Path, key: fh.Key, node: Node
) -> None:
    assert node.service.hit("98A12345") is None  # no hotlist yet
    r = node.push(config_bundle(tmp_path, "3.0", key, doc("98A-123.45", "30F-555.01")))
    assert r.result == "committed", r.reason
    placed = node.root / "config" / "3.0.hotlist.json"
    assert node.live()["reader"]["hotlist"] == str(placed)  # where the new config points
    assert placed.stat().st_mode & 0o077 == 0o040  # 0640, like the config
    assert node.service.hotlist is not None
    assert len(node.service.hotlist) == 2
    assert node.service.hit("98A12345") == "STOLEN"  # loaded by the restarted service
    assert node.service.hit("51G24680") is None  # not on this list
    # a new hotlist replaces it; the old one is kept with its config version to go back to
    r = node.push(config_bundle(tmp_path, "3.1", key, doc("51G-246.80", reason="WANTED")))
    assert r.result == "committed", r.reason
    assert node.service.hit("51G24680") == "WANTED"
    assert node.service.hit("98A12345") is None
    assert node.service.hit("98A12346", conf=0.6) is None  # not one off the old list either
    assert (node.root / "config" / "3.0.hotlist.json").exists()
    # a later config without a hotlist keeps the node's (carried along with the new version)
    r = node.push(config_bundle(tmp_path, "3.2", key, None))
    assert r.result == "committed", r.reason
    assert node.live()["reader"]["hotlist"] == str(node.root / "config" / "3.2.hotlist.json")
    assert node.service.hit("51G24680") == "WANTED"
    r = node.push(config_bundle(tmp_path, "3.3", key, None))
    assert r.result == "committed", r.reason
    # pruned to fleet.keep_releases (3) configs, each with its own hotlist, none orphaned
    names = {p.name for p in (node.root / "config").iterdir() if not p.is_symlink()}
    assert names == {f"3.{i}{ext}" for i in (1, 2, 3) for ext in (".toml", ".hotlist.json")}
    assert node.service.hit("51G24680") == "WANTED"
    # an explicit empty hotlist removes it
    r = node.push(
        config_bundle(tmp_path, "3.4", key, None, "schema_version = 2\n[reader]\nhotlist = ''\n")
    )
    assert r.result == "committed", r.reason
    assert node.service.hotlist is None


def test_a_tampered_bundle_is_refused_and_the_old_hotlist_stays(
    tmp_path: Path, key: fh.Key, node: Node
) -> None:
    assert node.push(config_bundle(tmp_path, "3.0", key, doc("98A-123.45"))).result == "committed"
    live_before = node.config_path.read_bytes()
    # 1. a byte of the hotlist changed after signing: its sha256 no longer matches
    good = config_bundle(tmp_path, "4.0", key, doc("77C-000.01"))
    data = good.read_bytes()
    assert data.count(b"77C-000.01") == 1
    tampered = tmp_path / "tampered.bundle"
    tampered.write_bytes(data.replace(b"77C-000.01", b"77C-000.02"))
    r = node.push(tampered)
    assert r.result == "rejected"
    assert "hotlist.json" in r.reason
    assert "sha256" in r.reason
    # 2. signed by a key the node does not trust
    r = node.push(config_bundle(tmp_path / "other", "4.0", fh.new_key(), doc("77C-000.01")))
    assert r.result == "rejected"
    assert "unknown key" in r.reason
    # 3. the signature itself altered
    sig_at = data.index(b'"sig": "') + len(b'"sig": "')
    other = b"B" if data[sig_at : sig_at + 1] == b"A" else b"A"
    forged = tmp_path / "forged.bundle"
    forged.write_bytes(data[:sig_at] + other + data[sig_at + 1 :])
    r = node.push(forged)
    assert r.result == "rejected"
    assert "signature" in r.reason
    assert node.config_path.read_bytes() == live_before
    assert node.service.hit("98A12345") == "STOLEN"
    assert node.service.hit("77C00001") is None
    assert not (node.root / "config" / "4.0.hotlist.json").exists()
    # none of the refused bundles is kept: they hold plate numbers (only the reasons stay)
    kept = [p for p in (node.root / "rejected").iterdir() if not p.name.endswith(".reason")]
    assert kept == []
    reasons = list((node.root / "rejected").glob("*.reason"))
    assert len(reasons) == 3
    assert all(b"77C" not in p.read_bytes() for p in reasons)


@pytest.mark.parametrize(
    ("hotlist", "message"),
    [
        (b"{not json", "hotlist.json: not valid JSON"),
        (json.dumps(doc("98A-123.45", reason="stolen car")).encode(), "entry 0: 'reason'"),
        (json.dumps(doc("-")).encode(), "entry 0: 'plate'"),
        (
            json.dumps(
                {"version": 1, "entries": [{"plate": "98A12345", "reason": "X", "expires": PAST}]}
            ).encode(),
            "every one of its 1 entries has expired",
        ),
        (json.dumps(doc("98A-123.45", expires=PAST)).encode(), "the hotlist expired at 2001"),
        (json.dumps(hashed_document(doc("98A-123.45"), SALT)).encode(), "expects a plain hotlist"),
    ],
)
def test_a_bad_hotlist_is_refused_before_the_switch_and_the_old_one_stays(
    tmp_path: Path, key: fh.Key, node: Node, hotlist: bytes, message: str
) -> None:
    assert node.push(config_bundle(tmp_path, "3.0", key, doc("98A-123.45"))).result == "committed"
    restarts = node.service.restarts
    live_before = node.config_path.read_bytes()
    bundle = signed(
        tmp_path / "bad.bundle", key, "4.0", {"config.toml": TOML, "hotlist.json": hotlist}
    )
    r = node.push(bundle)
    assert r.result == "failed", r.reason
    assert message in r.reason
    assert "hotlist.json" in r.reason
    assert "\n" not in r.reason
    assert node.service.restarts == restarts  # nothing switched, nothing restarted
    assert node.config_path.read_bytes() == live_before
    assert sorted(p.name for p in (node.root / "config").glob("4.0*")) == []
    assert node.service.hit("98A12345") == "STOLEN"
    rejected = list((node.root / "rejected").iterdir())
    assert [p.name.endswith(".reason") for p in rejected] == [True]  # the hotlist is not kept
    assert len(rejected) == 1
    assert message in rejected[0].read_text()


def test_the_builder_refuses_what_a_node_would(tmp_path: Path, key: fh.Key) -> None:
    with pytest.raises(BundleError, match=r"hotlist\.json: not valid JSON"):
        config_bundle(tmp_path, "1.0", key, b"[")
    with pytest.raises(BundleError, match="the hotlist expired"):
        config_bundle(tmp_path, "1.1", key, doc("98A-123.45", expires=PAST))
    src = tmp_path / "with-key"
    src.mkdir()
    (src / "config.toml").write_text("schema_version = 2\n")
    (src / "hotlist.key").write_bytes(SALT)
    with pytest.raises(BundleError, match=r"holds only config\.toml and hotlist\.json"):
        create(tmp_path / "k.bundle", "config", "1.2", [src], key.private)


def test_paths_from_a_bundle_never_leave_the_node_folders(
    tmp_path: Path, key: fh.Key, node: Node
) -> None:
    assert node.push(config_bundle(tmp_path, "3.0", key, doc("98A-123.45"))).result == "committed"
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(doc("66H-000.66")))
    (node.state_dir / "link.json").symlink_to(outside)  # inside by name, outside in fact
    inside = node.state_dir / "provisioned.json"
    inside.write_text(json.dumps(doc("66H-000.66", reason="AMBER")))
    cases = {
        "4.0": (f"hotlist = '{outside}'", "outside the node's folders"),
        "4.1": ("hotlist = 'hot.json'", "must be an absolute path"),
        "4.2": (f"hotlist = '{node.state_dir / 'link.json'}'", "outside the node's folders"),
        "4.3": (f"hotlist = '{node.root / 'config' / '3.0.hotlist.json'}'", "outside"),
        "4.4": ("hotlist = 'hotlist.json'", "which the bundle does not hold"),
        "4.5": (f"hotlist_salt_file = '{tmp_path / 'salt'}'", "outside the node's folders"),
    }
    for version, (line, message) in cases.items():
        text = f"schema_version = 2\n[reader]\n{line}\n"
        r = node.push(config_bundle(tmp_path, version, key, None, text))
        assert r.result == "failed", (version, r.reason)
        assert message in r.reason, (version, r.reason)
        assert node.service.hit("98A12345") == "STOLEN"
    r = node.push(
        config_bundle(tmp_path, "4.6", key, doc("11A-111.11"), "[reader]\nhotlist = '/x.json'\n")
    )
    assert r.result == "failed"
    assert "leave the key out" in r.reason
    # a file provisioned inside the state dir may be named, and is checked all the same
    text = f"schema_version = 2\n[reader]\nhotlist = '{inside}'\n"
    r = node.push(config_bundle(tmp_path, "4.7", key, None, text))
    assert r.result == "committed", r.reason
    assert node.service.hit("66H00066") == "AMBER"


def test_a_hashed_hotlist_uses_the_nodes_own_key_and_leaks_nothing(
    tmp_path: Path, key: fh.Key, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    keys = node.state_dir / "keys"
    keys.mkdir()
    salt = keys / "hotlist.key"
    fd = os.open(salt, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, SALT)
    os.close(fd)
    node.config_path.write_text(
        f'schema_version = 2\n[node]\nid = "cam-7"\n[fleet]\nkey = "{key.public}"\n'
        f"[reader]\nhotlist_hashed = true\nhotlist_salt_file = '{salt}'\n"
    )
    caplog.set_level(logging.DEBUG)
    hashed = hashed_document(doc("98A-123.45", "30F-555.01"), SALT)
    r = node.push(config_bundle(tmp_path, "3.0", key, hashed))  # config.toml has no [reader]
    assert r.result == "committed", r.reason
    live = node.live()["reader"]
    assert (live["hotlist_hashed"], live["hotlist_salt_file"]) == (True, str(salt))  # kept
    assert node.service.hit("98A12345") == "STOLEN"
    # no plate number and no key anywhere the fleet wrote, nor in the logs (the fleet key's
    # base64 text, random and written into the config, is left out: it may hold "98A")
    fleet_key = key.public.encode()
    for p in node.root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert SALT not in data, p
            assert b"98A" not in data.replace(fleet_key, b""), p
    assert SALT.decode() not in caplog.text
    assert "98A" not in caplog.text
    # a plain list to a hashed node is refused (it would store plate numbers)
    r = node.push(config_bundle(tmp_path, "3.1", key, doc("98A-123.45")))
    assert r.result == "failed"
    assert "expects a hashed hotlist" in r.reason
    for p in node.root.rglob("*"):  # nor kept once refused
        assert p.is_dir() or b"98A" not in p.read_bytes().replace(fleet_key, b""), p
    # the key readable by others: refused, the node keeps its list
    salt.chmod(0o644)
    r = node.push(config_bundle(tmp_path, "3.2", key, hashed_document(doc("12B-000.12"), SALT)))
    assert r.result == "failed"
    assert "chmod 600" in r.reason
    salt.chmod(0o600)
    assert node.service.hit("98A12345") == "STOLEN"


def test_a_hotlist_the_restarted_service_cannot_load_rolls_back(
    tmp_path: Path, key: fh.Key, node: Node
) -> None:
    assert node.push(config_bundle(tmp_path, "3.0", key, doc("98A-123.45"))).result == "committed"
    # the file goes missing between the check and the service's start (a disk fault)
    node.service.before_start.append(
        lambda: (node.root / "config" / "3.1.hotlist.json").unlink(missing_ok=True)
    )
    r = node.push(config_bundle(tmp_path, "3.1", key, doc("51G-246.80")))
    assert r.result == "rolled_back", r.reason
    assert "reader hotlist:" in r.reason
    assert "3.1.hotlist.json" in r.reason
    assert node.live()["reader"]["hotlist"] == str(node.root / "config" / "3.0.hotlist.json")
    assert node.service.hit("98A12345") == "STOLEN"
    assert not (node.root / "config" / "3.1.toml").exists()
