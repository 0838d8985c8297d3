"""The offline packet store, on real files and a real SQLite index: claim order, ack and
release, idempotent append, sha256 quarantine, corrupt index rebuilt, the full policy, ENOSPC,
concurrency, and `roadnode queue`."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
from collections import namedtuple
from pathlib import Path

import pytest

import node.store.store as store_mod
from node.cli import main
from node.config import StoreConfig
from node.store import PacketStore, StoreBusy, StoreError, StoreFull

T0 = 1_700_000_000_000_000_000
KB = 1024


def open_store(tmp_path: Path, **cfg: float) -> PacketStore:
    return PacketStore(tmp_path / "store", StoreConfig(**cfg))  # type: ignore[arg-type]


def data_of(packet_id: str, size: int = 1000) -> bytes:
    return (packet_id.encode() * (size // max(1, len(packet_id)) + 1))[:size]


def add(
    store: PacketStore, packet_id: str, priority: int = 2, t: int = 0, size: int = 1000
) -> None:
    store.append(
        packet_id, data_of(packet_id, size), priority=priority, kind="k", created_utc_ns=T0 + t
    )


def test_claim_order_is_priority_then_age(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        add(s, "tele-old", 3, t=1)
        add(s, "viol-new", 2, t=50)
        add(s, "red-new", 1, t=40)
        add(s, "viol-old", 2, t=2)
        add(s, "hot", 0, t=99)
        add(s, "red-old", 1, t=3)
        first = s.claim(2)
        rest = s.claim(10)
        assert [c.id for c in first + rest] == [
            "hot",
            "red-old",
            "red-new",
            "viol-old",
            "viol-new",
            "tele-old",
        ]
        assert s.claim() == []
        c = first[0]
        assert (c.priority, c.kind, c.size, c.created_utc_ns) == (0, "k", 1000, T0 + 99)
        blob = c.path.read_bytes()
        assert blob[c.offset : c.offset + c.size] == data_of("hot")
        assert oct(c.path.stat().st_mode & 0o777) == "0o600"


def test_append_is_durable_and_idempotent(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        add(s, "p1")
        s.append("p1", b"other bytes", priority=0, kind="x", created_utc_ns=T0)
        assert s.stats()["states"]["ready"]["count"] == 1
        assert s.read("p1") == data_of("p1")  # the first copy is kept
        names = os.listdir(tmp_path / "store" / "blobs")
        assert names == ["p1"]  # no temp file left behind


@pytest.mark.parametrize("bad", ["", "../etc/passwd", ".hidden", "a/b", "x" * 129, "é"])
def test_bad_ids_are_refused_with_one_line(tmp_path: Path, bad: str) -> None:
    with open_store(tmp_path) as s:
        with pytest.raises(StoreError) as info:
            s.append(bad, b"x", priority=1, kind="k", created_utc_ns=T0)
        assert "\n" not in str(info.value)
        assert "packet id" in str(info.value)
        assert os.listdir(tmp_path / "store" / "blobs") == []


def test_bad_arguments_name_the_packet(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        for kwargs in (
            {"priority": 10, "kind": "k", "created_utc_ns": T0},
            {"priority": 1, "kind": "a b", "created_utc_ns": T0},
            {"priority": 1, "kind": "k", "created_utc_ns": -1},
        ):
            with pytest.raises(StoreError, match="packet p9"):
                s.append("p9", b"x", **kwargs)  # type: ignore[arg-type]


def test_ack_never_comes_back_and_release_does(tmp_path: Path) -> None:
    with open_store(tmp_path, keep_acked_hours=0.0) as s:
        for i in range(3):
            add(s, f"p{i}", t=i)
        a, b, c = s.claim(3)
        s.ack(a.id)
        s.ack(a.id)  # the uploader may retry: no-op
        s.release(b.id)
        assert [x.id for x in s.claim(5)] == [b.id]
        assert not (tmp_path / "store" / "blobs" / a.id).exists()
        assert not (tmp_path / "store" / "acked" / a.id).exists()
        add(s, a.id)  # a repeat of an acked id is ignored
        assert s.claim(5) == []
        with pytest.raises(StoreError, match="acked and deleted"):
            s.read(a.id)
        with pytest.raises(StoreError, match="nope: not in the store"):
            s.ack("nope")
    with open_store(tmp_path) as s:  # in flight -> ready on reopen; acked stays acked
        assert sorted(x.id for x in s.claim(5)) == [b.id, c.id]


def test_acked_kept_for_hours_then_deleted(tmp_path: Path) -> None:
    with open_store(tmp_path, keep_acked_hours=1.0) as s:
        add(s, "p1")
        s.claim()
        s.ack("p1")
        assert (tmp_path / "store" / "acked" / "p1").exists()
        assert s.read("p1") == data_of("p1")
        assert s.stats()["states"]["acked"]["kept"] == 1
        # an hour and a bit later
        s._conn.execute("UPDATE packets SET state_utc_ns = state_utc_ns - 3700000000000")
        s._expire(force=True)
        assert not (tmp_path / "store" / "acked" / "p1").exists()
        assert s.stats()["states"]["acked"] == {"count": 1, "bytes": 0, "blob_bytes": 0, "kept": 0}


def test_in_flight_returns_to_ready_on_reopen(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        add(s, "p1")
        add(s, "p2")
        assert len(s.claim(2)) == 2
        assert s.stats()["states"]["in_flight"]["count"] == 2
    with open_store(tmp_path) as s:
        st = s.stats()["states"]
        assert (st["ready"]["count"], st["in_flight"]["count"]) == (2, 0)


def test_one_process_owns_the_store(tmp_path: Path) -> None:
    with open_store(tmp_path), pytest.raises(StoreBusy, match="in use by another process"):
        open_store(tmp_path)


def tamper(tmp_path: Path, packet_id: str, folder: str = "blobs") -> None:
    path = tmp_path / "store" / folder / packet_id
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))


def test_sha256_mismatch_is_quarantined_and_never_claimed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_store(tmp_path) as s:
        add(s, "good", 1)
        add(s, "bad", 0)
        tamper(tmp_path, "bad")
        (claimed,) = s.claim()
        assert claimed.id == "bad"
        with caplog.at_level(logging.ERROR, "node.store"), pytest.raises(StoreError) as info:
            s.read("bad")
        assert str(info.value) == "packet bad: sha256 mismatch; quarantined"
        assert "packet bad quarantined: sha256 mismatch" in caplog.text
        assert (tmp_path / "store" / "quarantine" / "bad").exists()
        assert [c.id for c in s.claim(5)] == ["good"]
        with pytest.raises(StoreError, match="bad: is quarantined, not in flight"):
            s.release("bad")
        stats = s.stats()
        assert stats["counters"]["quarantined"] == 1
        assert [(q["id"], q["reason"]) for q in stats["quarantined"]] == [
            ("bad", "sha256 mismatch")
        ]
    with open_store(tmp_path) as s:  # and after a restart, still never handed out
        assert [c.id for c in s.claim(5)] == ["good"]


def test_check_verifies_every_blob(tmp_path: Path) -> None:
    with open_store(tmp_path, keep_acked_hours=5.0) as s:
        for i in range(20):
            add(s, f"p{i:02d}", i % 4, t=i)
        s.claim(3)
        s.ack("p00")
        tamper(tmp_path, "p07")
        tamper(tmp_path, "p00", "acked")
        (tmp_path / "store" / "blobs" / "p11").write_bytes(b"")  # truncated
        s.quarantine("p15", "operator: \n wrong camera")
        report = s.check()
        assert report.checked == 19
        assert report.ok == 16
        assert sorted(report.bad) == [
            ("p00", "sha256 mismatch; quarantined"),
            ("p07", "sha256 mismatch; quarantined"),
            ("p11", "blob has 0 bytes, expected 1000; quarantined"),
        ]
        reasons = {q["id"]: q["reason"] for q in s.stats()["quarantined"]}
        assert reasons["p15"] == "operator: wrong camera"
        assert s.check().bad == ()


def test_corrupt_index_is_moved_aside_and_rebuilt_from_blobs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_store(tmp_path, keep_acked_hours=5.0) as s:
        for i in range(10):
            add(s, f"p{i}", i % 4, t=100 - i)
        assert [c.id for c in s.claim(3)] == ["p8", "p4", "p0"]  # stay in flight
        for c in s.claim(2):  # p9, p5
            s.ack(c.id)
        s.quarantine("p3", "bad")
        before = {c: s.stats()["states"][c]["count"] for c in ("ready", "quarantined")}
    db = tmp_path / "store" / "index.sqlite"
    db.write_bytes(os.urandom(db.stat().st_size or 8192))
    with caplog.at_level(logging.WARNING, "node.store"), open_store(tmp_path) as s:
        assert s.rebuilt
        assert "is corrupt" in caplog.text
        assert "rebuilding it from the blob files" in caplog.text
        assert list((tmp_path / "store").glob("index.sqlite.corrupt-*"))
        st = s.stats()["states"]
        assert st["ready"]["count"] == 10 - 2 - 1 == before["ready"] + 3  # claimed ones too
        assert st["acked"]["kept"] == 2
        assert st["quarantined"]["count"] == before["quarantined"] == 1
        claimed = s.claim(20)
        ids = [c.id for c in claimed]
        assert len(ids) == 7
        assert not {"p3", "p5", "p9"} & set(ids)
        assert all(s.read(c.id) == data_of(c.id) for c in claimed)
        assert [c.priority for c in claimed] == sorted(c.priority for c in claimed)


def fake_disk(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(1 << 40, 0, free))


def test_low_priority_refused_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 1 MiB; telemetry refused above 50 %, violations above 80 %, red light up to full
    with open_store(tmp_path, max_mb=1, telemetry_fill_pct=50, violation_fill_pct=80) as s:
        for i in range(5):
            add(s, f"t{i}", 3, t=i, size=100 * KB)  # 5 x 100 KiB: under 50 %
        with pytest.raises(StoreFull, match="t5 refused: store 50% full for priority 3"):
            add(s, "t5", 3, size=100 * KB)
        add(s, "v0", 2, size=100 * KB)
        add(s, "v1", 2, size=100 * KB)
        add(s, "v2", 2, size=100 * KB)
        with pytest.raises(StoreFull, match="priority 2"):
            add(s, "v3", 2, size=100 * KB)
        assert s.stats()["refusing_priorities"] == [3]  # fill is under 80 % until v3
        add(s, "r0", 1, size=100 * KB)
        add(s, "r1", 1, size=100 * KB)  # 10 packets, ~98 %: still fits
        counters = s.stats()["counters"]
        assert counters["refused"] == 2
        assert counters["refused_p3"] == 1
        assert counters["dropped"] == 0


def test_full_evicts_acked_then_drops_lower_never_equal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_store(tmp_path, max_mb=1, keep_acked_hours=5.0, telemetry_fill_pct=100) as s:
        add(s, "old-acked", 2, size=300 * KB)
        s.claim()
        s.ack("old-acked")
        add(s, "tele", 3, t=1, size=300 * KB)
        add(s, "viol", 2, t=2, size=300 * KB)
        with caplog.at_level(logging.INFO, "node.store"):
            add(s, "red1", 1, t=3, size=300 * KB)  # evicts the acked one
        assert s.stats()["counters"]["evicted"] == 1
        assert not (tmp_path / "store" / "acked" / "old-acked").exists()
        with caplog.at_level(logging.WARNING, "node.store"):
            add(s, "red2", 1, t=4, size=300 * KB)  # drops telemetry, logged and counted
        assert "dropped unacked packet tele (priority 3" in caplog.text
        (c,) = s.claim()  # red1 in flight: never dropped
        assert c.id == "red1"
        add(s, "hot", 0, t=5, size=300 * KB)  # drops the ordinary violation
        with caplog.at_level(logging.ERROR, "node.store"), pytest.raises(StoreFull):
            add(s, "red3", 1, t=6, size=300 * KB)  # only equal or more urgent left: refused
        assert "packet red3 (priority 1, k) refused: store full" in caplog.text
        stats = s.stats()
        assert stats["counters"]["dropped"] == 2
        assert stats["counters"]["refused_p1"] == 1
        assert sorted(c.id for c in s.claim(9)) == ["hot", "red2"]
        # a packet bigger than the whole store drops nothing for nothing
        with pytest.raises(StoreFull, match="nothing less urgent"):
            add(s, "huge", 0, size=2048 * KB)


def test_min_free_disk_and_low_disk_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_store(tmp_path, min_free_mb=10, low_disk_mb=50, telemetry_fill_pct=100) as s:
        fake_disk(monkeypatch, 40 << 20)
        stats = s.stats()
        assert stats["low_disk"] is True
        assert stats["disk_free_bytes"] == 40 << 20
        add(s, "r0", 1)  # room left above min free
        fake_disk(monkeypatch, (10 << 20) + 500)
        with pytest.raises(StoreFull, match="MB free on disk"):
            add(s, "r1", 1)
        fake_disk(monkeypatch, 1 << 30)
        add(s, "r1", 1)  # space came back
        assert s.stats()["low_disk"] is False


def test_enospc_while_writing_a_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_write = store_mod._write_all

    def disk_full(fd: int, data: bytes | memoryview) -> None:
        real_write(fd, bytes(data)[: len(data) // 2])  # half of it lands, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with open_store(tmp_path) as s:
        add(s, "before", 1)
        monkeypatch.setattr(store_mod, "_write_all", disk_full)
        with caplog.at_level(logging.ERROR, "node.store"), pytest.raises(StoreError) as info:
            add(s, "during", 1, size=50 * KB)
        assert "packet during: cannot write to" in str(info.value)
        assert str(info.value).endswith("no space left on device")
        assert "no space left on device" in caplog.text
        assert sorted(os.listdir(tmp_path / "store" / "blobs")) == ["before"]  # no temp file
        stats = s.stats()
        assert stats["counters"]["write_errors"] == 1
        assert stats["states"]["ready"]["count"] == 1
        assert s.check().bad == ()
        monkeypatch.setattr(store_mod, "_write_all", real_write)  # space returns
        add(s, "during", 1, size=50 * KB)
        assert s.read("during") == data_of("during", 50 * KB)
    with open_store(tmp_path) as s:
        assert sorted(c.id for c in s.claim(5)) == ["before", "during"]


def test_threads_append_and_upload_at_once(tmp_path: Path) -> None:
    n = 300
    acked: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()
    with open_store(tmp_path, keep_acked_hours=0.0) as s:

        def pipeline() -> None:
            try:
                for i in range(n):
                    add(s, f"p{i:03d}", i % 4, t=i, size=2000)
            except BaseException as e:
                errors.append(e)
            finally:
                done.set()

        def uploader() -> None:
            try:
                while not (done.is_set() and len(acked) == n) and not errors:
                    for c in s.claim(4):
                        assert s.read(c.id) == data_of(c.id, 2000)
                        s.ack(c.id)
                        acked.append(c.id)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=pipeline), threading.Thread(target=uploader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert sorted(acked) == [f"p{i:03d}" for i in range(n)]  # each exactly once
        assert s.stats()["states"]["acked"]["count"] == n


def test_roadnode_queue_text_json_and_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with PacketStore(tmp_path / "store", StoreConfig()) as s:
        for i in range(6):
            add(s, f"pkt-{i}", i % 4, t=i)
        s.claim()
    state = ["--state-dir", str(tmp_path)]
    assert main(["queue", *state]) == 0
    text = capsys.readouterr().out
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "1 red light" in text
    assert "oldest    ready packet" in text
    assert main(["queue", "--json", *state]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["states"]["in_flight"]["count"] == 1  # a read-only view resets nothing
    assert stats["priorities"]["0"] == {"ready": 1, "in_flight": 1, "bytes": 2000}
    assert main(["queue", "check", *state]) == 0
    assert "6 ok, 0 bad" in capsys.readouterr().out
    tamper(tmp_path, "pkt-3")
    with PacketStore(tmp_path / "store", StoreConfig()):  # the node is running: read-only check
        assert main(["queue", "check", "--json", *state]) == 1
        out = json.loads(capsys.readouterr().out)
        assert out["bad"] == [{"id": "pkt-3", "reason": "sha256 mismatch"}]
        assert out["quarantined"] is False
    assert main(["queue", "check", *state]) == 1  # the node is stopped: quarantined now
    out_text = capsys.readouterr().out
    assert "BAD  pkt-3  sha256 mismatch; quarantined" in out_text
    assert main(["queue", "--state-dir", str(tmp_path / "none")]) == 1
    assert "no packet store here" in capsys.readouterr().err
