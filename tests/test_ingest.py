"""The reference ingest: real HTTP on loopback, real signatures and seals, real files."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node.config import NodeConfig
from node.evidence.keys import public_key_text, write_private_key
from node.evidence.packet import BuiltPacket, verify
from node.uplink import ingest as ingest_mod
from node.uplink.ingest import IngestServer
from tests.test_uplink_support import NODE, node_key, packets

ROOT = Path(__file__).resolve().parent.parent
TYPE = "application/vnd.roadnode.packet"


def post(
    server: IngestServer,
    body: bytes,
    key: str | None,
    ctype: str = TYPE,
    path: str = "/v1/packets",
) -> tuple[int, dict[str, Any]]:
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Content-Type": ctype}
    if key is not None:
        headers["Idempotency-Key"] = key
    c.request("POST", path, body=body, headers=headers)
    r = c.getresponse()
    out = (r.status, json.loads(r.read()))
    c.close()
    return out


def send(server: IngestServer, p: BuiltPacket) -> tuple[int, dict[str, Any]]:
    return post(server, p.data, p.id)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return node_key()


@pytest.fixture
def keys_dir(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    d = tmp_path / "node-keys"
    d.mkdir()
    (d / f"{NODE.id}.pub").write_text(public_key_text(key.public_key()) + "\n")
    return d


@pytest.fixture
def server(tmp_path: Path, keys_dir: Path) -> Iterator[IngestServer]:
    s = IngestServer(tmp_path / "central", keys_dir, max_bytes=200_000).start()
    yield s
    s.stop()


def test_stored_then_duplicate(server: IngestServer, key: Ed25519PrivateKey) -> None:
    (p,) = packets(1, key)
    assert send(server, p) == (200, {"packet_id": p.id, "status": "stored"})
    assert send(server, p) == (200, {"packet_id": p.id, "status": "duplicate"})
    assert server.store.ids() == [p.id]
    path = server.store.packet_file(p.id)
    assert path is not None
    assert path.read_bytes() == p.data  # exactly the bytes the node signed
    record = server.store.record(p.id)
    assert record is not None
    assert record["verified"] == "signature"
    assert record["manifest"]["packet_id"] == p.id
    assert record["node_id"] == NODE.id
    assert server.counts["stored"] == 1
    assert server.counts["duplicate"] == 1
    assert not list(server.store.tmp.iterdir())


def test_sealed_packets_with_and_without_the_central_key(
    tmp_path: Path, keys_dir: Path, key: Ed25519PrivateKey
) -> None:
    central = X25519PrivateKey.generate()
    (p,) = packets(1, key, central=central.public_key())
    with IngestServer(tmp_path / "a", keys_dir, central) as full:
        assert send(full, p)[1]["status"] == "stored"
        rec = full.store.record(p.id)
        assert rec is not None
        assert rec["verified"] == "signature"
        assert rec["manifest"]["sealed_to"]
    with IngestServer(tmp_path / "b", keys_dir) as blind:
        assert send(blind, p)[1]["status"] == "stored"
        rec = blind.store.record(p.id)
        assert rec is not None
        assert (rec["verified"], rec["manifest"]) == ("envelope", None)
        damaged = bytearray(p.data)
        damaged[-40] ^= 1  # the ciphertext: without the key only the checksum sees it
        (q,) = packets(1, key, central=central.public_key())
        bad = bytearray(q.data)
        bad[-40] ^= 1
        code, doc = post(blind, bytes(bad), q.id)
        assert code == 422
        assert "checksum" in doc["error"]
    other = X25519PrivateKey.generate()
    with IngestServer(tmp_path / "c", keys_dir, other) as wrong:
        code, doc = send(wrong, p)
        assert code == 422
        assert "sealed to central key" in doc["error"]


@pytest.mark.parametrize(
    ("mutate", "code", "words"),
    [
        (lambda d: d[:-200] + bytes([d[-200] ^ 1]) + d[-199:], 422, "blob.bin"),
        (lambda d: b"GIF89a" + d[6:], 422, "not a roadnode packet"),
        (lambda d: d[:-10], 422, "truncated"),
    ],
)
def test_bad_packets_are_422_naming_the_problem(
    server: IngestServer, key: Ed25519PrivateKey, mutate: Any, code: int, words: str
) -> None:
    (p,) = packets(1, key)
    got, doc = post(server, mutate(p.data), p.id)
    assert (got, doc["status"]) == (code, "rejected")
    assert words in doc["error"]
    assert server.store.ids() == []


def test_request_problems(server: IngestServer, key: Ed25519PrivateKey) -> None:
    (p,) = packets(1, key)
    code, doc = post(server, p.data, None)
    assert (code, doc["packet_id"]) == (400, p.id)
    assert "Idempotency-Key" in doc["error"]
    code, doc = post(server, p.data, "0f" * 16)
    assert code == 400
    assert "is not the packet's id" in doc["error"]
    code, doc = post(server, p.data, p.id, ctype="text/plain")
    assert code == 415
    (big,) = packets(1, key, size=300_000)
    code, doc = send(server, big)
    assert code == 413
    assert "more than the 200000" in doc["error"]
    code, _ = post(server, p.data, p.id, path="/v2/else")
    assert code == 404
    assert server.store.ids() == []
    assert send(server, p)[0] == 200  # and it still works


def test_unknown_node_is_403_until_enrolled(
    server: IngestServer, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_mod, "KEY_RELOAD_S", 0.0)
    other = node_key()
    (p,) = packets(1, other, node=NodeConfig(id="hn-new-02"))
    code, doc = send(server, p)
    assert code == 403
    assert "unknown node hn-new-02" in doc["error"]
    (keys_dir / "hn-new-02.pub").write_text(public_key_text(other.public_key()))
    assert send(server, p)[1]["status"] == "stored"


def test_racing_uploads_of_one_packet_store_it_once(
    server: IngestServer, key: Ed25519PrivateKey
) -> None:
    (p,) = packets(1, key, size=50_000)
    answers: list[str] = []
    go = threading.Barrier(8)

    def one() -> None:
        go.wait()
        answers.append(send(server, p)[1]["status"])

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == ["duplicate"] * 7 + ["stored"]
    assert len(list(server.store.packets.glob("*/*.rnpk"))) == 1


def test_health_and_record_lookup(server: IngestServer, key: Ed25519PrivateKey) -> None:
    (p,) = packets(1, key)
    send(server, p)
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    c.request("GET", "/v1/health")
    r = c.getresponse()
    assert (r.status, json.loads(r.read())["status"]) == (200, "ok")
    c.request("GET", f"/v1/packets/{p.id}")  # the same connection: keep-alive
    r = c.getresponse()
    assert (r.status, json.loads(r.read())["record"]["packet_id"]) == (200, p.id)
    c.request("GET", "/v1/packets/../../etc/passwd")
    r = c.getresponse()
    assert r.status == 404
    r.read()
    c.close()


def test_extracted_parts(tmp_path: Path, keys_dir: Path, key: Ed25519PrivateKey) -> None:
    (p,) = packets(1, key, size=1234)
    with IngestServer(tmp_path / "c", keys_dir, extract_parts=True) as s:
        send(s, p)
    checked = verify(p.data, {NODE.id: key.public_key()})
    part = tmp_path / "c" / "parts" / p.id / "blob.bin"
    assert part.read_bytes() == checked.parts["blob.bin"]


def test_roadnode_ingest_command(tmp_path: Path, keys_dir: Path, key: Ed25519PrivateKey) -> None:
    central = X25519PrivateKey.generate()
    write_private_key(tmp_path / "central.key", central)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node",
            "ingest",
            "--listen",
            "127.0.0.1:0",
            "--store",
            str(tmp_path / "st"),
            "--node-keys",
            str(keys_dir),
            "--central-key",
            str(tmp_path / "central.key"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert m, line
        assert "1 node key(s), unsealing and verifying" in line
        (p,) = packets(1, key, central=central.public_key())
        c = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=10)
        c.request(
            "POST",
            "/v1/packets",
            body=p.data,
            headers={"Content-Type": TYPE, "Idempotency-Key": p.id},
        )
        r = c.getresponse()
        assert (r.status, json.loads(r.read())["status"]) == (200, "stored")
        c.close()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert '"stored": 1' in out
    assert (tmp_path / "st" / "packets" / p.id[:2] / f"{p.id}.json").is_file()
