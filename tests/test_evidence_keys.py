"""Keys: the node key made once, 0600, never replaced or logged; key text; central keys."""

from __future__ import annotations

import base64
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.evidence import KeyFileError
from node.evidence.keys import (
    key_id,
    load_central_private_key,
    load_central_public_key,
    load_node_key,
    load_or_create_node_key,
    load_public_key,
    node_key_path,
    public_key_text,
    raw_public,
    write_central_keypair,
    write_private_key,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_node_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = node_key_path(tmp_path / "state")
    assert path == tmp_path / "state" / "keys" / "node.key"
    old_umask = os.umask(0o022)  # a permissive umask must not widen the key's mode
    try:
        key = load_or_create_node_key(path)
    finally:
        os.umask(old_umask)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = load_or_create_node_key(path)
    assert raw_public(again.public_key()) == raw_public(key.public_key())
    assert sorted(p.name for p in path.parent.iterdir()) == ["node.key"]  # no temp left


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused(tmp_path: Path, bad_mode: int) -> None:
    path = tmp_path / "node.key"
    load_or_create_node_key(path)
    secret = path.read_bytes()
    path.chmod(bad_mode)
    with pytest.raises(KeyFileError, match=f"{path}.*mode {bad_mode:04o}.*chmod 600") as e:
        load_or_create_node_key(path)
    assert "\n" not in str(e.value)
    body = b"".join(secret.splitlines()[1:-1]).decode()
    assert body[:20] not in str(e.value)
    assert path.read_bytes() == secret  # neither repaired nor replaced
    assert mode(path) == bad_mode


def test_malformed_key_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM private key"):
        load_or_create_node_key(path)
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\nAAAA")


def test_a_central_key_is_not_a_node_key(tmp_path: Path) -> None:
    priv, _ = write_central_keypair(tmp_path)
    with pytest.raises(KeyFileError, match="X25519PrivateKey, expected an Ed25519 node key"):
        load_node_key(priv)
    with pytest.raises(KeyFileError, match="no node key here"):
        load_node_key(tmp_path / "missing.key")


def test_write_never_replaces_a_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    write_private_key(path, Ed25519PrivateKey.generate())
    first = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_private_key(path, Ed25519PrivateKey.generate())
    assert path.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def test_processes_racing_to_create_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node.key"
    code = (
        "import sys; from pathlib import Path\n"
        "from node.evidence.keys import load_or_create_node_key, public_key_text\n"
        "print(public_key_text(load_or_create_node_key(Path(sys.argv[1])).public_key()))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
        for _ in range(4)
    ]
    outs = {p.communicate(timeout=60)[0] for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outs) == 1
    assert outs.pop().decode().strip() == public_key_text(load_node_key(path).public_key())


def test_creation_is_logged_by_key_id_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = load_or_create_node_key(tmp_path / "node.key")
    logged = caplog.text
    assert key_id(key.public_key()) in logged
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    for secret in (pem.decode(), base64.b64encode(raw).decode(), raw.hex()):
        assert secret not in logged


def test_public_key_text_round_trips(tmp_path: Path) -> None:
    pub = Ed25519PrivateKey.generate().public_key()
    text = public_key_text(pub)
    assert len(text) == 44
    assert "\n" not in text
    assert raw_public(load_public_key(text)) == raw_public(pub)
    f = tmp_path / "node.pub"
    f.write_text(text + "\n")
    assert raw_public(load_public_key(f)) == raw_public(pub)
    assert raw_public(load_public_key(str(f))) == raw_public(pub)
    pem = tmp_path / "node.pem"
    pem.write_bytes(
        pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert raw_public(load_public_key(pem)) == raw_public(pub)
    assert len(key_id(pub)) == 16


def test_bad_public_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="nope: neither key text nor an existing file"):
        load_public_key("nope")
    short = tmp_path / "short.pub"
    short.write_text(base64.b64encode(b"x" * 31).decode())
    with pytest.raises(KeyFileError, match=r"short\.pub: does not hold an Ed25519"):
        load_public_key(short)
    priv = tmp_path / "node.key"
    load_or_create_node_key(priv)
    with pytest.raises(KeyFileError, match="holds a private key"):
        load_public_key(priv)
    _, central_pub = write_central_keypair(tmp_path / "c")
    pem = tmp_path / "central.pem"
    pem.write_bytes(
        load_central_public_key(central_pub).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError, match="does not hold an Ed25519"):
        load_public_key(pem)  # an X25519 key in PEM is not a node key


def test_central_keypair(tmp_path: Path) -> None:
    priv, pub = write_central_keypair(tmp_path / "central")
    assert mode(priv) == 0o600
    private = load_central_private_key(priv)
    public = load_central_public_key(pub)
    assert raw_public(private.public_key()) == raw_public(public)
    assert public_key_text(public) == pub.read_text().strip()
    with pytest.raises(KeyFileError, match="exists; refusing to replace"):
        write_central_keypair(tmp_path / "central")
    priv.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable or writable by group or others"):
        load_central_private_key(priv)
