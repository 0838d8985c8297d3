"""Packets: sign/verify and seal/unseal round trips; every kind of damage is named."""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node.config import NodeConfig
from node.evidence import PRIORITY_TELEMETRY, PacketError
from node.evidence.format import CHECKSUM_BYTES, MAGIC, read_envelope
from node.evidence.keys import key_id
from node.evidence.packet import BuiltPacket, build, verify
from node.evidence.seal import unseal

NODE = NodeConfig(id="hn-test-01", site="Test junction", latitude=21.0, longitude=105.8)
KEY = Ed25519PrivateKey.generate()
CENTRAL = X25519PrivateKey.generate()
KEYS = {NODE.id: KEY.public_key()}
PARTS = {
    "plate.jpg": os.urandom(3000),
    "frame-at.jpg": os.urandom(9000),
    "notes.json": b'{"note": "tyre marks 7f3a"}',
}
FIELDS = {"violation": {"rule": "red_light", "measured": {"speed_kmh": 52.5}}, "seq": 17}


def make(sealed: bool = False, packet_id: str | None = None) -> BuiltPacket:
    central = CENTRAL.public_key() if sealed else None
    return build("violation", 1, FIELDS, PARTS, KEY, NODE, central, packet_id=packet_id)


def reseal_checksum(data: bytes) -> bytes:
    """The packet with its file checksum made right again (what a careful forger does)."""
    body = data[:-CHECKSUM_BYTES]
    return body + hashlib.sha256(body).digest()


def test_sign_verify_round_trip() -> None:
    p = make()
    assert p.data.startswith(MAGIC)
    assert (p.kind, p.priority, p.node_id, p.sealed) == ("violation", 1, NODE.id, False)
    assert p.part_sizes == {name: len(b) for name, b in PARTS.items()}
    env = read_envelope(p.data)
    assert (env.packet_id, env.node_id, env.kind, env.priority) == (p.id, NODE.id, "violation", 1)
    assert env.sealed is False
    assert env.format_version == 1
    assert env.created_utc_ns == p.created_utc_ns
    assert env.total_bytes == len(p.data)
    v = verify(p.data, KEYS)
    assert v.parts == PARTS
    assert list(v.parts) == list(PARTS)  # in the order given
    m = v.manifest
    assert m["violation"] == FIELDS["violation"]
    assert m["seq"] == 17
    assert m["node"] == {
        "id": NODE.id, "site": NODE.site, "latitude": 21.0, "longitude": 105.8, "heading_deg": 0.0
    }  # fmt: skip
    assert m["software"]["name"] == "roadnode"
    assert [x["name"] for x in m["parts"]] == list(PARTS)
    assert m["parts"][0]["sha256"] == hashlib.sha256(PARTS["plate.jpg"]).hexdigest()
    assert m["parts"][0]["media_type"] == "image/jpeg"
    assert m["parts"][2]["media_type"] == "application/json"
    assert m["signing_key"] == v.signing_key == key_id(KEY.public_key())
    assert m["sealed_to"] is None
    uuid.UUID(p.id)  # a uuid4 when not given
    assert make().id != p.id


def test_seal_unseal_round_trip_with_the_central_private_key() -> None:
    p = make(sealed=True)
    env = read_envelope(p.data)  # no keys needed for the envelope
    assert env.sealed
    assert env.seal is not None
    assert env.seal.recipient == key_id(CENTRAL.public_key())
    assert (env.packet_id, env.node_id, env.priority) == (p.id, NODE.id, 1)
    for part in PARTS.values():  # nothing readable at rest
        assert part[:64] not in p.data
    assert b"red_light" not in p.data
    with pytest.raises(PacketError, match=r"^sealed: central key needed \(sealed to key [0-9a-f]"):
        verify(p.data, KEYS)
    v = verify(p.data, KEYS, CENTRAL)
    assert v.parts == PARTS
    assert v.manifest["sealed_to"] == env.seal.recipient
    body = unseal(p.data, CENTRAL)
    assert PARTS["frame-at.jpg"] in body
    other = X25519PrivateKey.generate()
    with pytest.raises(PacketError, match=f"sealed to central key {env.seal.recipient}, not"):
        unseal(p.data, other)
    with pytest.raises(PacketError, match="not sealed"):
        unseal(make().data, CENTRAL)


def test_each_seal_is_fresh() -> None:
    a, b = make(sealed=True, packet_id=str(uuid.uuid4())), make(sealed=True)
    ea, eb = read_envelope(a.data).seal, read_envelope(b.data).seal
    assert ea is not None
    assert eb is not None
    assert ea.ephemeral != eb.ephemeral
    assert ea.nonce != eb.nonce


def locate(data: bytes, needle: bytes) -> int:
    at = data.find(needle)
    assert at > 0
    return at


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize("name", list(PARTS))
def test_tampered_part_is_named(name: str) -> None:
    p = make()
    at = locate(p.data, PARTS[name]) + len(PARTS[name]) // 2
    for data in (flip(p.data, at), reseal_checksum(flip(p.data, at))):
        with pytest.raises(PacketError, match=f"^part {name}: sha256 mismatch$"):
            verify(data, KEYS)
    with pytest.raises(PacketError, match="file checksum mismatch"):
        read_envelope(flip(p.data, at))  # found without keys too


def test_tampered_manifest_fails_the_signature() -> None:
    p = make()
    at = locate(p.data, b"Test junction")
    forged = reseal_checksum(p.data[:at] + b"Fake" + p.data[at + 4 :])
    with pytest.raises(PacketError, match=f"^signature does not verify for node {NODE.id}$"):
        verify(forged, KEYS)
    # a forged part hash in the manifest is a manifest change: the signature catches it
    digest = hashlib.sha256(PARTS["plate.jpg"]).hexdigest().encode()
    at = locate(p.data, digest)
    forged = reseal_checksum(p.data[:at] + b"0" * 64 + p.data[at + 64 :])
    with pytest.raises(PacketError, match="signature does not verify"):
        verify(forged, KEYS)


def test_tampered_signature_fails() -> None:
    p = make()
    manifest_end = locate(p.data, b'"parts":[')
    sig_at = p.data.index(PARTS["plate.jpg"]) - 64
    assert sig_at > manifest_end
    with pytest.raises(PacketError, match="signature does not verify"):
        verify(reseal_checksum(flip(p.data, sig_at + 10)), KEYS)


def test_envelope_must_agree_with_the_signed_manifest() -> None:
    p = make()
    forged = reseal_checksum(p.data.replace(b'"priority":1', b'"priority":0', 1))
    assert read_envelope(forged).priority == 0  # the envelope alone believes it
    with pytest.raises(PacketError, match=r"envelope priority 0 differs from the signed .* 1"):
        verify(forged, KEYS)
    sealed = make(sealed=True)
    forged = reseal_checksum(sealed.data.replace(b'"priority":1', b'"priority":0', 1))
    with pytest.raises(PacketError, match="sealed body does not open"):
        verify(forged, KEYS, CENTRAL)  # the envelope is the seal's associated data


def test_wrong_and_unknown_node_keys() -> None:
    p = make()
    with pytest.raises(PacketError, match=f"^signature does not verify for node {NODE.id}$"):
        verify(p.data, {NODE.id: Ed25519PrivateKey.generate().public_key()})
    with pytest.raises(PacketError, match=f"^unknown node {NODE.id}: no public key for it$"):
        verify(p.data, {"someone-else": KEY.public_key()})


def test_truncated_or_padded_files() -> None:
    p = make()
    with pytest.raises(PacketError, match=rf"^truncated: {len(p.data) - 1} of {len(p.data)}"):
        verify(p.data[:-1], KEYS)
    with pytest.raises(PacketError, match=r"^truncated: 5 bytes, shorter than the packet header"):
        read_envelope(p.data[:5])
    with pytest.raises(PacketError, match=r"^truncated: the envelope needs"):
        read_envelope(p.data[:40])
    with pytest.raises(PacketError, match=r"^3 bytes of trailing data"):
        verify(p.data + b"abc", KEYS)
    # every cut fails with PacketError, never anything else
    for cut in range(0, len(p.data), 97):
        for sealed in (p, make(sealed=True)):
            with pytest.raises(PacketError):
                verify(sealed.data[:cut], KEYS, CENTRAL)
    # without checking the body, the head alone gives the envelope
    head = read_envelope(p.data[:300], check_body=False)
    assert head.packet_id == p.id


def test_any_flipped_byte_fails() -> None:
    rng = np.random.default_rng(5)
    for sealed in (False, True):
        p = make(sealed=sealed)
        for at in rng.choice(len(p.data), 150, replace=False):
            with pytest.raises(PacketError):
                verify(flip(p.data, int(at)), KEYS, CENTRAL)


def test_not_a_packet_and_future_versions() -> None:
    p = make()
    with pytest.raises(PacketError, match=r"^not a roadnode packet"):
        read_envelope(b"\xff\xd8\xff\xe0" + p.data[4:])
    future = p.data[:4] + b"\x00\x02" + p.data[6:]
    with pytest.raises(PacketError, match="format version 2 is not supported"):
        read_envelope(future)
    broken = p.data.replace(b'"kind":"violation"', b'"kind":"VIOLATION"', 1)
    with pytest.raises(PacketError, match="envelope: 'kind' must be"):
        read_envelope(broken)


def test_build_refuses_bad_input() -> None:
    with pytest.raises(PacketError, match="kind 'Bad kind'"):
        build("Bad kind", 1, {}, {}, KEY, NODE)
    with pytest.raises(PacketError, match="priority 10"):
        build("telemetry", 10, {}, {}, KEY, NODE)
    with pytest.raises(PacketError, match="priority True"):
        build("telemetry", True, {}, {}, KEY, NODE)
    with pytest.raises(PacketError, match="created_utc_ns -1"):
        build("telemetry", 3, {}, {}, KEY, NODE, created_utc_ns=-1)
    with pytest.raises(PacketError, match=r"manifest fields \['node', 'parts'\] are set by"):
        build("telemetry", 3, {"node": 1, "parts": 2}, {}, KEY, NODE)
    with pytest.raises(PacketError, match=r"part name '\.\./x'"):
        build("telemetry", 3, {}, {"../x": b""}, KEY, NODE)
    with pytest.raises(PacketError, match="packet id 'ABC'"):
        build("telemetry", 3, {}, {}, KEY, NODE, packet_id="ABC")
    with pytest.raises(PacketError, match="cannot store a bytes"):
        build("telemetry", 3, {"raw": b"x"}, {}, KEY, NODE)


def test_telemetry_without_parts_and_json_values() -> None:
    fields = {"temp_c": np.float32(51.5), "up_s": np.int64(7), "lag": float("inf"), "t": (1, 2)}
    pid = str(uuid.uuid4())
    p = build(
        "telemetry", PRIORITY_TELEMETRY, fields, {}, KEY, NODE, packet_id=pid, created_utc_ns=5
    )
    v = verify(p.data, KEYS)
    assert p.id == pid
    assert v.envelope.created_utc_ns == 5
    assert v.parts == {}
    m = v.manifest
    assert (m["temp_c"], m["up_s"], m["lag"], m["t"]) == (51.5, 7, None, [1, 2])
    assert m["created_utc"] == "1970-01-01T00:00:00.000Z"
    json.dumps(m, allow_nan=False)
