"""`roadnode identity`, `central-keygen` and `verify-packet`."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli import main
from node.config import NodeConfig
from node.evidence.keys import (
    load_central_public_key,
    load_node_key,
    load_or_create_node_key,
    public_key_text,
)
from node.evidence.packet import build

NODE = NodeConfig()  # the default config's node: demo-node-01


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_identity_makes_the_key_once_and_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    code, out, err = run(capsys, "identity", "--state-dir", str(state))
    assert code == 0
    key_file = state / "keys" / "node.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert out.strip() == public_key_text(load_node_key(key_file).public_key())
    assert "made a new node key" in err
    code, again, err = run(capsys, "identity", "--state-dir", str(state), "--json")
    assert code == 0
    assert err == ""
    info = json.loads(again)
    assert info["public_key"] == out.strip()
    assert info["node_id"] == NODE.id
    assert info["key_file"] == str(key_file)
    assert len(info["key_id"]) == 16
    assert "PRIVATE" not in out + again
    key_file.chmod(0o644)
    code, out, err = run(capsys, "identity", "--state-dir", str(state))
    assert code == 1
    assert "chmod 600" in err
    assert out == ""


def test_identity_in_a_real_process_honours_the_configured_key(tmp_path: Path) -> None:
    key_file = tmp_path / "elsewhere" / "id.key"
    proc = subprocess.run(
        [sys.executable, "-m", "node", "identity", "--state-dir", str(tmp_path / "s"),
         "--set", f'evidence.node_key="{key_file}"'],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == public_key_text(load_node_key(key_file).public_key())
    assert not (tmp_path / "s" / "keys").exists()


def test_central_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "central-keygen", str(tmp_path / "c"))
    assert code == 0
    assert stat.S_IMODE((tmp_path / "c" / "central.key").stat().st_mode) == 0o600
    assert load_central_public_key(out.strip()) is not None
    assert out.strip() == (tmp_path / "c" / "central.pub").read_text().strip()
    code, out, err = run(capsys, "central-keygen", str(tmp_path / "c"))
    assert code == 1
    assert "refusing to replace" in err


@pytest.fixture
def packets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    assert run(capsys, "central-keygen", str(tmp_path / "c"))[0] == 0
    key = load_or_create_node_key(tmp_path / "node.key")
    (tmp_path / "node.pub").write_text(public_key_text(key.public_key()))
    central = load_central_public_key(tmp_path / "c" / "central.pub")
    parts = {"plate.jpg": b"\xff\xd8plate pixels\xff\xd9", "frame-at.jpg": b"\xff\xd8scene\xff\xd9"}
    fields = {"violation": {"rule": "red_light"}, "capture": {"utc": "2026-01-01T00:00:00.000Z"}}
    plain = build("violation", 1, fields, parts, key, NODE)
    sealed = build("violation", 1, fields, parts, key, NODE, central)
    out = {"plain": tmp_path / "plain.rnp", "sealed": tmp_path / "sealed.rnp"}
    out["plain"].write_bytes(plain.data)
    out["sealed"].write_bytes(sealed.data)
    at = plain.data.index(b"plate pixels")
    out["tampered"] = tmp_path / "tampered.rnp"
    out["tampered"].write_bytes(plain.data[:at] + b"P" + plain.data[at + 1 :])
    return out


def test_verify_packet_ok_and_failures(
    tmp_path: Path, packets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pub = str(tmp_path / "node.pub")
    code, out, _ = run(capsys, "verify-packet", str(packets["plain"]), "--node-key", pub)
    assert code == 0
    assert out.startswith(f"{packets['plain']}: OK  packet ")
    assert "plate.jpg" in out
    assert "red_light" in out
    assert "sealed no" in out
    code, out, _ = run(capsys, "verify-packet", str(packets["tampered"]), "--node-key", pub)
    assert (code, out) == (1, f"{packets['tampered']}: FAILED: part plate.jpg: sha256 mismatch\n")
    code, out, _ = run(capsys, "verify-packet", str(packets["sealed"]), "--node-key", pub)
    assert code == 1
    assert "sealed: central key needed" in out
    central = str(tmp_path / "c" / "central.key")
    code, out, _ = run(
        capsys, "verify-packet", str(packets["sealed"]), "--node-key", pub, "--central-key", central
    )
    assert code == 0
    assert "sealed to key" in out
    text = (tmp_path / "node.pub").read_text()
    code, out, _ = run(
        capsys, "verify-packet", str(packets["plain"]), "--node-key", f"other-node={text}"
    )
    assert code == 1
    assert "unknown node demo-node-01" in out
    code, out, _ = run(
        capsys, "verify-packet", str(packets["plain"]), "--node-key", f"demo-node-01={text}",
        "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["violation"]["rule"] == "red_light"
    code, out, _ = run(capsys, "verify-packet", str(packets["plain"]))
    assert code == 1
    assert "give its key with --node-key" in out
    code, out, _ = run(capsys, "verify-packet", str(tmp_path / "none.rnp"), "--node-key", pub)
    assert code == 1
    assert "cannot read" in out
    (tmp_path / "short.rnp").write_bytes(packets["plain"].read_bytes()[:-10])
    code, out, _ = run(capsys, "verify-packet", str(tmp_path / "short.rnp"), "--node-key", pub)
    assert code == 1
    assert "FAILED: truncated" in out
