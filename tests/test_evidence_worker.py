"""The evidence worker: a violation becomes a verified packet in the real store, or is counted."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.capture.frame import ArrayRef, Frame
from node.capture.framering import FrameRing
from node.config import Config, StoreConfig
from node.evidence.keys import load_or_create_node_key
from node.evidence.packet import verify
from node.evidence.worker import EvidenceWorker
from node.rules.violations import Violation
from node.store.store import PacketStore, StoreFull
from tests.test_rules_stage import RUNNER, run
from tests.test_violations import FRAME_NS, UTC0

MAIN = np.full((1080, 1920, 3), 90, np.uint8)  # one shared picture: frames cost no memory
MAIN[400:720, 500:700] = 200  # something to see around the plate


def frame(seq: int) -> Frame:
    lores = np.zeros((4, 4, 3), np.uint8)
    return Frame(seq, seq * FRAME_NS, UTC0 + seq * FRAME_NS, lores, ArrayRef(MAIN))


@pytest.fixture(scope="module")
def violation() -> Violation:
    _, got = run(["RED"] * 40, RUNNER)
    return got[0][0]


def worker(tmp_path: Path, store: Any, ring: FrameRing) -> tuple[EvidenceWorker, Any]:
    key = load_or_create_node_key(tmp_path / "keys" / "node.key")
    w = EvidenceWorker(Config(), ring, store, key, None, lambda: None)
    w.start()
    return w, key


def test_a_violation_waits_for_its_after_frames_then_lands_verified(
    tmp_path: Path, violation: Violation
) -> None:
    ring = FrameRing(60.0, 10**9)
    for seq in range(violation.seq_at + 1):
        ring.push(frame(seq))
    store = PacketStore(tmp_path / "store", StoreConfig())
    w, key = worker(tmp_path, store, ring)
    w.submit(violation, None)

    def arrive() -> None:
        for seq in range(violation.seq_at + 1, 60):
            ring.push(frame(seq))

    late = threading.Timer(0.3, arrive)
    late.start()
    late.join()
    w.stop()
    assert w.status()["stored"] == 1
    (claimed,) = store.claim(5)
    assert claimed.id == violation.id  # the packet id is the violation's: exactly once
    packet = verify(store.read(claimed.id), {Config().node.id: key.public_key()})
    assert packet.manifest["violation"]["rule"] == "red_light"
    roles = {c["role"]: c["seq"] for c in packet.manifest["context"]}
    assert roles["after"] > violation.seq_at  # the frames after the offence were waited for
    store.close()


class RefusingStore:
    """Refuses the first `refusals` appends as full, then keeps what it is given."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.kept: dict[str, bytes] = {}

    def append(
        self, packet_id: str, data: bytes, *, priority: int, kind: str, created_utc_ns: int
    ) -> None:
        if self.refusals:
            self.refusals -= 1
            raise StoreFull("store full (test)")
        self.kept[packet_id] = data


def test_a_refusing_store_is_retried_and_the_packet_kept_once(
    tmp_path: Path, violation: Violation, monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.evidence.worker as mod

    monkeypatch.setattr(mod, "FRAMES_WAIT_S", 0.0)
    ring = FrameRing(60.0, 10**9)
    for seq in range(60):
        ring.push(frame(seq))
    store = RefusingStore(refusals=1)
    w, _ = worker(tmp_path, store, ring)
    w.submit(violation, None)
    w.stop(timeout=10)
    assert list(store.kept) == [violation.id]
    assert w.status()["retries"] == 1
    assert w.status()["stored"] == 1


def test_frames_already_gone_are_counted_not_fatal(
    tmp_path: Path, violation: Violation, monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.evidence.worker as mod

    monkeypatch.setattr(mod, "FRAMES_WAIT_S", 0.0)
    ring = FrameRing(60.0, 10**9)
    for seq in range(200, 210):  # long after the offence: its frames left the ring
        ring.push(frame(seq))
    store = RefusingStore(refusals=0)
    w, _ = worker(tmp_path, store, ring)
    w.submit(violation, None)
    w.submit(violation, None)
    w.stop()
    assert store.kept == {}
    assert w.status()["no_frames"] == 2
    assert "no frames kept" in (w.status()["last_error"] or "")


def test_verify_packet_reads_a_blob_straight_from_the_store(
    tmp_path: Path, violation: Violation, capsys: pytest.CaptureFixture[str]
) -> None:
    from node.cli import main
    from node.evidence.keys import public_key_text

    ring = FrameRing(60.0, 10**9)
    for seq in range(60):
        ring.push(frame(seq))
    store = PacketStore(tmp_path / "store", StoreConfig())
    w, key = worker(tmp_path, store, ring)
    w.submit(violation, None)
    w.stop()
    store.close()
    blob = tmp_path / "store" / "blobs" / violation.id
    pub = public_key_text(key.public_key())
    assert main(["verify-packet", str(blob), "--node-key", pub]) == 0
    assert capsys.readouterr().out.startswith(f"{blob}: OK")
    data = bytearray(blob.read_bytes())
    data[-5000] ^= 0x40  # inside the packet: the store's own sha256 catches it first
    blob.write_bytes(bytes(data))
    assert main(["verify-packet", str(blob), "--node-key", pub]) == 1
    assert "store blob: packet bytes do not match" in capsys.readouterr().out


def test_a_hotlist_hit_is_stored_as_an_alert_claimed_before_earlier_violations(
    tmp_path: Path, violation: Violation, monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.evidence.worker as mod
    from node.evidence import KIND_ALERT, PRIORITY_ALERT
    from tests.test_reader_alert import hit_and_read

    monkeypatch.setattr(mod, "FRAMES_WAIT_S", 0.0)
    ring = FrameRing(60.0, 10**9)
    for seq in range(60):
        ring.push(frame(seq))
    store = PacketStore(tmp_path / "store", StoreConfig())
    w, key = worker(tmp_path, store, ring)
    w.submit(violation, None, {"text": "98A-123.45", "confidence": 0.9})
    fused, hit = hit_and_read()
    crop = np.full((60, 200, 3), 220, np.uint8)
    w.submit_alert(hit, fused, 7, frame(30), crop)
    w.stop()
    first, second = store.claim(2)
    assert (first.kind, first.priority) == (KIND_ALERT, PRIORITY_ALERT)
    assert second.id == violation.id  # queued ahead of the alert, sent after it
    alert = verify(store.read(first.id), {Config().node.id: key.public_key()})
    assert set(alert.parts) == {"plate.jpg", "context.jpg"}
    packet = verify(store.read(second.id), {Config().node.id: key.public_key()})
    assert packet.manifest["plate_read"] == {"text": "98A-123.45", "confidence": 0.9}
    assert w.status()["alerts"] == 1
    store.close()


def test_a_node_key_given_as_base64_text_is_not_taken_for_id_equals_key(tmp_path: Path) -> None:
    """Raw Ed25519 keys in base64 end in '=' and are often all letters and digits: the text
    before it must not be read as a node id with an empty key file name."""
    from node.evidence.commands import _node_keys
    from node.evidence.keys import public_key_text

    for seed in range(200):  # find a key whose text is letters and digits, then '='
        key = load_or_create_node_key(tmp_path / f"{seed}.key")
        text = public_key_text(key.public_key())
        if text[:-1].isalnum():
            break
    else:
        pytest.skip("no all-alphanumeric key text in 200 tries")
    keys = _node_keys([text], "cam-7")
    assert list(keys) == ["cam-7"]
    assert public_key_text(keys["cam-7"]) == text
    assert list(_node_keys([f"cam-9={text}"], "cam-7")) == ["cam-9"]
