"""A hotlist hit becomes a signed alert packet that the store hands out before every ordinary
violation queued ahead of it."""

from __future__ import annotations

import numpy as np
import pytest
import simplejpeg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node.config import NodeConfig, StoreConfig
from node.evidence import KIND_ALERT, PRIORITY_ALERT, PRIORITY_VIOLATION, PacketError
from node.evidence.packet import build, verify
from node.infer.reader import make_read
from node.plates.alert import make_alert
from node.plates.fusion import FusedRead, fuse
from node.plates.hotlist import Hotlist, HotlistHit
from node.plates.track import check_hotlist
from node.store.store import PacketStore

NODE = NodeConfig(id="hn-alert-01", site="Test junction", latitude=21.0, longitude=105.8)
KEY = Ed25519PrivateKey.generate()


def jpeg(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return bytes(simplejpeg.encode_jpeg(pixels, quality=80, colorspace="RGB"))


def hit_and_read() -> tuple[FusedRead, HotlistHit]:
    reads = [
        make_read(("98A12345",), ((0.97,) * 8,), seq=10),
        make_read(("98A12845",), ((0.9,) * 5 + (0.4,) + (0.9,) * 2,), seq=13),
        make_read(("98A12345",), ((0.95,) * 8,), seq=16),
    ]
    fused = fuse(reads)
    assert fused is not None
    hotlist = Hotlist.parse(
        {"version": 1, "entries": [{"plate": "98A-123.45", "reason": "STOLEN"}]}, "test"
    )
    hit = check_hotlist(hotlist, fused, 0.8, True, 1.8e9)
    assert hit is not None
    return fused, hit


def test_alert_packet_is_signed_and_carries_the_read() -> None:
    fused, hit = hit_and_read()
    central = X25519PrivateKey.generate()
    packet = make_alert(
        fused, jpeg(120, 40, 1), jpeg(640, 360, 2), hit=hit, key=KEY, node=NODE,
        central_public_key=central.public_key(), track_id=7, seq=16,
        utc_ns=1_800_000_000_000_000_000, plate_box=(10.0, 20.0, 130.0, 60.0),
    )  # fmt: skip
    assert packet.kind == KIND_ALERT
    assert packet.priority == PRIORITY_ALERT == 0
    v = verify(packet.data, {NODE.id: KEY.public_key()}, central)
    alert = v.manifest["alert"]
    assert alert["reason"] == "STOLEN"
    assert alert["match"] == "exact"
    assert alert["track_id"] == 7
    assert alert["seq"] == 16
    assert v.manifest["plate_read"]["text"] == "98A-123.45"
    assert [r["seq"] for r in v.manifest["plate_read"]["reads"]] == [10, 13, 16]
    assert v.manifest["node"]["latitude"] == 21.0
    assert v.manifest["capture"]["utc"].startswith("2027-01-15")
    assert set(v.parts) == {"plate.jpg", "context.jpg"}


def test_alert_refuses_non_jpeg_parts() -> None:
    fused, hit = hit_and_read()
    with pytest.raises(PacketError, match="plate crop: must be JPEG"):
        make_alert(fused, b"not a jpeg", jpeg(64, 64, 3), hit=hit, key=KEY, node=NODE)


def test_alert_is_claimed_before_violations_appended_earlier(tmp_path: object) -> None:
    from pathlib import Path

    store = PacketStore(Path(str(tmp_path)) / "store", StoreConfig())
    try:
        violations = []
        for k in range(3):  # queued first, and older
            p = build(
                "violation", PRIORITY_VIOLATION, {"violation": {"rule": "wrong_way", "n": k}},
                {"plate.jpg": jpeg(80, 30, 10 + k)}, KEY, NODE, created_utc_ns=1_000_000 + k,
            )  # fmt: skip
            store.append(p.id, p.data, priority=p.priority, kind=p.kind,
                         created_utc_ns=p.created_utc_ns)  # fmt: skip
            violations.append(p.id)
        fused, hit = hit_and_read()
        alert = make_alert(fused, jpeg(120, 40, 1), jpeg(640, 360, 2), hit=hit, key=KEY, node=NODE)
        assert alert.created_utc_ns > 1_000_002  # the newest packet in the store
        store.append(alert.id, alert.data, priority=alert.priority, kind=alert.kind,
                     created_utc_ns=alert.created_utc_ns)  # fmt: skip
        first = store.claim(1)
        assert [c.id for c in first] == [alert.id]
        assert first[0].kind == KIND_ALERT
        rest = store.claim(10)
        assert [c.id for c in rest] == violations
    finally:
        store.close()
