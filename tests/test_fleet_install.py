"""Install, prove health, commit or roll back (in process, against a real control socket)."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cli import main
from node.config import FleetConfig
from node.fleet import update_status
from node.fleet.bundle import Manifest, Platform, Target
from node.fleet.install import Hooks, Result, Updater, control_probe, venv_installer
from tests import fleethelp as fh
from tests.fleet_service import FakeService


@pytest.fixture
def state_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="fl", dir="/tmp"))  # a Unix socket path is short
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def key() -> fh.Key:
    return fh.new_key()


@pytest.fixture
def service(state_dir: Path) -> Iterator[FakeService]:
    s = FakeService(state_dir)
    s.start()
    yield s
    s.stop()


class Node:
    """An Updater wired to the fake service, with knobs."""

    def __init__(self, state_dir: Path, key: fh.Key, service: FakeService, **cfg: object) -> None:
        self.state_dir = state_dir
        self.service = service
        self.free = 10**12
        self.config_path = state_dir / "node.toml"
        settings = {"key": key.public, "health_window_s": 2.0, "health_frames": 5} | cfg
        self.hooks = Hooks(
            restart=service.restart,
            probe=control_probe(state_dir),
            installer=fh.fake_installer,
            free_bytes=lambda _p: self.free,
            platform=Platform("aarch64", "Raspberry Pi 4 Model B"),
            poll_s=0.02,
        )
        self.root = state_dir / "fleet"
        self.updater = Updater(
            self.root,
            FleetConfig(**settings),  # type: ignore[arg-type]
            "cam-7",
            self.config_path,
            self.hooks,
        )

    def push(self, bundle: Path) -> Result:
        dest = self.root / "incoming" / bundle.name
        shutil.copyfile(bundle, dest)
        result = self.updater.process(dest)
        assert not dest.exists()  # processed: consumed or moved aside
        assert not (self.root / "journal.json").exists()
        return result

    def link(self, kind: str, name: str = "current") -> str | None:
        try:
            return os.readlink(self.root / kind / name)
        except OSError:
            return None


@pytest.fixture
def node(state_dir: Path, key: fh.Key, service: FakeService) -> Node:
    return Node(state_dir, key, service)


def test_software_installs_switches_and_commits(tmp_path: Path, key: fh.Key, node: Node) -> None:
    r = node.push(fh.software(tmp_path, "1.1.0", key))
    assert (r.result, r.version) == ("committed", "1.1.0"), r.reason
    assert node.link("releases") == "1.1.0"
    assert (node.root / "releases" / "1.1.0" / "venv" / "VERSION").read_text() == "1.1.0"
    assert node.service.status({"cmd": "status"})["version"] == "1.1.0"
    r = node.push(fh.software(tmp_path, "1.2.0", key))
    assert r.result == "committed", r.reason
    assert (node.link("releases"), node.link("releases", "previous")) == ("1.2.0", "1.1.0")
    s = update_status(node.state_dir)
    assert s["software"] == {"current": "1.2.0", "previous": "1.1.0"}
    assert s["last"]["result"] == "committed"
    assert s["in_progress"] is None


def test_health_failure_rolls_back(tmp_path: Path, key: fh.Key, node: Node) -> None:
    assert node.push(fh.software(tmp_path, "1.1.0", key)).result == "committed"
    r = node.push(fh.software(tmp_path, "1.2.0", key, behaviour="stall"))
    assert r.result == "rolled_back"
    assert "frames advanced 0 of 5" in r.reason
    assert node.link("releases") == "1.1.0"
    assert node.service.status({"cmd": "status"})["version"] == "1.1.0"
    assert not (node.root / "releases" / "1.2.0").exists()
    r = node.push(fh.software(tmp_path, "1.2.1", key, behaviour="down"))
    assert r.result == "rolled_back"
    assert "not answering" in r.reason
    assert node.link("releases") == "1.1.0"
    s = update_status(node.state_dir)
    assert s["software"]["current"] == "1.1.0"
    assert s["last"]["result"] == "rolled_back"
    assert "not answering" in s["last"]["reason"]


def test_software_that_breaks_the_running_detector_rolls_back(
    tmp_path: Path, key: fh.Key, node: Node
) -> None:
    assert node.push(fh.model(tmp_path, "5.0", key)).result == "committed"
    r = node.push(fh.software(tmp_path, "1.1.0", key, behaviour="detector-failed"))
    assert r.result == "rolled_back"
    assert "detector failed" in r.reason
    assert node.link("releases") is None  # there was no release before: the base install runs


def test_model_installs_and_a_refused_model_rolls_back(
    tmp_path: Path, key: fh.Key, node: Node
) -> None:
    r = node.push(fh.model(tmp_path, "5.0", key))
    assert r.result == "committed", r.reason
    assert node.link("models") == r.bundle_id
    assert (node.root / "models" / r.bundle_id / "plates.tflite").read_bytes() == fh.MODEL_BYTES
    r2 = node.push(fh.model(tmp_path, "5.1", key, behaviour="detector-failed"))
    assert r2.result == "rolled_back"
    assert "model refused" in r2.reason
    assert node.link("models") == r.bundle_id


def test_install_failure_changes_nothing(tmp_path: Path, key: fh.Key, node: Node) -> None:
    assert node.push(fh.software(tmp_path, "1.1.0", key)).result == "committed"
    restarts = node.service.restarts
    r = node.push(fh.software(tmp_path, "1.2.0", key, behaviour="install-fails"))
    assert r.result == "failed"
    assert "pip install failed" in r.reason
    assert node.link("releases") == "1.1.0"
    assert node.service.restarts == restarts
    assert not (node.root / "releases" / "1.2.0").exists()
    reasons = list((node.root / "rejected").glob("*.reason"))
    assert len(reasons) == 1
    assert "pip install failed" in reasons[0].read_text()


def test_disk_full(tmp_path: Path, key: fh.Key, node: Node) -> None:
    assert node.push(fh.software(tmp_path, "1.1.0", key)).result == "committed"
    node.free = 150 * 1024 * 1024  # under fleet.min_free_mb (200)
    r = node.push(fh.software(tmp_path, "1.2.0", key))
    assert r.result == "rejected"
    assert "not enough free space" in r.reason
    node.free = 10**12

    def enospc(release: Path, manifest: Manifest) -> None:
        (release / "venv").mkdir()
        (release / "venv" / "half").write_bytes(b"x" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    node.hooks.installer = enospc
    r = node.push(fh.software(tmp_path, "1.2.0", key))
    assert r.result == "failed"
    assert "No space left on device" in r.reason
    assert node.link("releases") == "1.1.0"
    assert sorted(p.name for p in (node.root / "releases").iterdir()) == ["1.1.0", "current"]
    assert node.service.status({"cmd": "status"})["version"] == "1.1.0"


def test_anti_rollback_and_signed_downgrade(tmp_path: Path, key: fh.Key, node: Node) -> None:
    assert node.push(fh.software(tmp_path, "1.2.0", key)).result == "committed"
    r = node.push(fh.software(tmp_path, "1.1.5", key))
    assert r.result == "rejected"
    assert "anti-rollback" in r.reason
    moved = [p for p in (node.root / "rejected").iterdir() if not p.name.endswith(".reason")]
    assert len(moved) == 1
    assert moved[0].name.endswith("sw-1.1.5-ok.bundle")
    assert "anti-rollback" in moved[0].with_name(moved[0].name + ".reason").read_text()
    assert node.push(fh.software(tmp_path, "1.2.0", key, name="again")).reason.endswith(
        "already installed"
    )
    r = node.push(fh.software(tmp_path, "1.1.5", key, name="down", downgrade=True))
    assert r.result == "committed", r.reason
    assert (node.link("releases"), node.link("releases", "previous")) == ("1.1.5", "1.2.0")
    assert len(update_status(node.state_dir)["rejected"]) == 2


def test_bad_bundles_are_moved_aside_and_reported(
    tmp_path: Path, key: fh.Key, node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    r = node.push(fh.software(tmp_path, "1.1.0", fh.new_key()))
    assert r.result == "rejected"
    assert "unknown key" in r.reason
    assert node.link("releases") is None
    assert node.service.restarts == 0
    assert main(["update", "status", "--state-dir", str(node.state_dir)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "software 0.1.0: rejected" not in out  # the version is that of the bundle
    assert "software 1.1.0: rejected" in out or "rejected at" in out
    assert "sw-1.1.0-ok.bundle: signed by unknown key" in out


def test_targets_and_rollout(tmp_path: Path, key: fh.Key, node: Node) -> None:
    r = node.push(fh.software(tmp_path, "1.1.0", key, target=Target(arch=("armv7l",))))
    assert r.result == "rejected"
    assert "armv7l" in r.reason
    r = node.push(fh.software(tmp_path, "1.1.1", key, rollout_pct=0))
    assert r.result == "skipped"
    assert "not in the rollout" in r.reason
    assert node.push(fh.software(tmp_path, "1.1.2", key, rollout_pct=100)).result == "committed"


def test_config_bundle_keeps_identity_and_rolls_back_on_invalid(
    tmp_path: Path, key: fh.Key, node: Node
) -> None:
    local = f'schema_version = 2\n[node]\nid = "cam-7"\n[fleet]\nkey = "{key.public}"\n'
    node.config_path.write_text(local)
    r = node.push(fh.config(tmp_path, "3.0", key, "schema_version = 2\n[capture]\nfps = 7\n"))
    assert r.result == "committed", r.reason
    assert node.config_path.is_symlink()
    live = tomllib.loads(node.config_path.read_text())
    assert live["node"]["id"] == "cam-7"
    assert live["capture"]["fps"] == 7
    assert live["fleet"]["key"] == key.public
    assert update_status(node.state_dir)["config"]["current"] == "3.0"
    previous = node.root / "config" / "previous.toml"
    assert previous.read_text() == local  # the hand-made file is kept to go back to
    r = node.push(fh.config(tmp_path, "3.1", key, "schema_version = 2\n[capture]\nfps = 0\n"))
    assert r.result == "failed"
    assert "capture.fps" in r.reason
    assert tomllib.loads(node.config_path.read_text())["capture"]["fps"] == 7
    lockout = 'schema_version = 2\n[fleet]\nkey = ""\n[capture]\nfps = 8\n'
    r = node.push(fh.config(tmp_path, "3.2", key, lockout))
    assert r.result == "failed"
    assert "lock out" in r.reason


def _wheel(folder: Path, version: str) -> Path:
    """A real (tiny) wheel of a distribution named roadnode."""
    files = {
        "roadnode_fleet_probe.py": f"VERSION = {version!r}\n".encode(),
        f"roadnode-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: roadnode\nVersion: {version}\n".encode()
        ),
        f"roadnode-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    record.append(f"roadnode-{version}.dist-info/RECORD,,")
    path = folder / f"roadnode-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"roadnode-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_real_venv_installed_offline_from_the_bundle_wheels(
    tmp_path: Path, key: fh.Key, node: Node
) -> None:
    src = tmp_path / "wheels"
    src.mkdir()
    _wheel(src, "9.0.0")
    from node.fleet.bundle import create

    bundle = tmp_path / "sw.bundle"
    create(bundle, "software", "9.0.0", [src], key.private)
    node.hooks.installer = venv_installer
    node.updater.cfg = FleetConfig(key=key.public, health_window_s=2.0)
    r = node.push(bundle)
    # the fake service does not run the new venv: it reports the release it is linked to
    assert r.result == "committed", r.reason
    python = node.root / "releases" / "current" / "venv" / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", "import roadnode_fleet_probe as p; print(p.VERSION)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "9.0.0"


def test_config_changed_outside_the_fleet_shows_as_local(
    tmp_path: Path, key: fh.Key, node: Node
) -> None:
    node.config_path.write_text(f'schema_version = 2\n[fleet]\nkey = "{key.public}"\n')
    assert node.push(fh.config(tmp_path, "4.0", key, "schema_version = 2\n")).result == "committed"
    node.config_path.unlink()
    node.config_path.write_text(f'schema_version = 2\n[fleet]\nkey = "{key.public}"\n')
    assert update_status(node.state_dir)["config"]["current"] == "local (was 4.0)"


def test_agent_command_refuses_an_untrusted_bundle(
    tmp_path: Path, key: fh.Key, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = state_dir / "node.toml"
    config.write_text(f'schema_version = 2\n[fleet]\nkey = "{key.public}"\nsettle_s = 0.1\n')
    inbox = state_dir / "fleet" / "inbox"
    inbox.mkdir(parents=True)
    shutil.copyfile(fh.software(tmp_path, "1.1.0", fh.new_key()), inbox / "sw.bundle")
    (inbox / "sw2.bundle.part").write_bytes(b"still copying")
    args = ["agent", "--once", "--state-dir", str(state_dir), "--config", str(config)]
    assert main(args) == 1
    rejected = sorted(p.name for p in (state_dir / "fleet" / "rejected").iterdir())
    assert [n.split("-", 1)[1] for n in rejected] == ["sw.bundle", "sw.bundle.reason"]
    assert (inbox / "sw2.bundle.part").exists()  # a temporary name is left alone
    assert main(["update", "status", "--json", "--state-dir", str(state_dir)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["last"]["result"] == "rejected"
    assert "unknown key" in status["rejected"][0]["reason"]


def test_a_requested_rollback_goes_back_to_the_previous_release_proven(
    tmp_path: Path, key: fh.Key, node: Node
) -> None:
    from node.fleet import request_rollback

    assert node.push(fh.software(tmp_path, "1.1.0", key)).result == "committed"
    assert node.push(fh.software(tmp_path, "1.2.0", key)).result == "committed"
    request = request_rollback(node.state_dir, "software")  # what the console does
    r = node.updater.manual_rollback("software", request)
    assert (r.result, r.version) == ("committed", "1.1.0"), r.reason
    assert (node.link("releases"), node.link("releases", "previous")) == ("1.1.0", "1.2.0")
    assert node.service.status({"cmd": "status"})["version"] == "1.1.0"
    assert update_status(node.state_dir)["software"] == {"current": "1.1.0", "previous": "1.2.0"}
    assert not request.exists()
    assert (node.root / "releases" / "1.2.0").is_dir()  # kept: it is the previous one now


def test_a_rollback_to_a_release_that_fails_its_proof_comes_back(
    tmp_path: Path, key: fh.Key, node: Node
) -> None:
    from node.fleet import request_rollback

    assert node.push(fh.software(tmp_path, "1.1.1", key)).result == "committed"
    assert node.push(fh.software(tmp_path, "1.2.0", key)).result == "committed"
    # the previous release has gone bad since (say, its model no longer loads)
    (node.root / "releases" / "1.1.1" / "wheels" / "behaviour.txt").write_text("stall")
    r = node.updater.manual_rollback("software", request_rollback(node.state_dir, "software"))
    assert r.result == "rolled_back"
    assert (node.link("releases"), node.link("releases", "previous")) == ("1.2.0", "1.1.1")
    assert (node.root / "releases" / "1.1.1").is_dir()  # never removed by a failed rollback
    assert node.service.status({"cmd": "status"})["version"] == "1.2.0"


def test_nothing_to_roll_back_to_is_said_not_attempted(node: Node) -> None:
    from node.fleet import request_rollback

    r = node.updater.manual_rollback("model", request_rollback(node.state_dir, "model"))
    assert r.result == "skipped"
    assert "no previous model" in r.reason
