"""The uplink's parts on their own: retry policy, error classes, answers, link economy,
config checks, the heartbeat."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import socket
import threading
from pathlib import Path

import pytest
import requests

from node.config import StoreConfig
from node.evidence import KIND_HEARTBEAT, PRIORITY_TELEMETRY
from node.evidence.packet import verify
from node.store import PacketStore
from node.uplink.link import Stopped, TokenBucket, UploadWindows, config_problems
from node.uplink.retry import (
    MAYBE_DELIVERED,
    NEVER_LEFT,
    RetryPolicy,
    classify,
    describe,
    parse_retry_after,
)
from node.uplink.telemetry import Heartbeat, heartbeat_fields
from node.uplink.uploader import ACK, PERMANENT, REFUSED, RETRY, interpret
from tests.test_uplink_support import NODE, node_key, open_store, uplink_cfg

PID = "3f1c2a9e-8b7d-4c6e-9f0a-1b2c3d4e5f60"


def test_policy_is_immutable_capped_and_fully_jittered() -> None:
    p = RetryPolicy(base_s=1.0, max_s=30.0, retry_after_max_s=60.0, min_s=0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.base_s = 2.0  # type: ignore[misc]
    assert [p.ceiling(a) for a in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert p.ceiling(10_000) == 30.0
    rng = random.Random(7)
    draws = [p.delay(8, rng) for _ in range(2000)]
    assert all(0.01 <= d <= 30.0 for d in draws)
    assert min(draws) < 3.0  # full jitter: anywhere from zero ...
    assert max(draws) > 27.0  # ... to the cap
    assert p.delay(0, rng, retry_after=45.0) >= 45.0  # the server's ask wins ...
    assert p.delay(0, rng, retry_after=10_000.0) == 60.0  # ... up to its cap
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)


def test_retry_after_forms() -> None:
    now = dt.datetime(2026, 3, 1, 7, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Sun, 01 Mar 2026 07:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sun, 01 Mar 2026 06:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_errors_that_never_left_are_told_apart() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(requests.ConnectionError) as refused:
        requests.post(f"http://127.0.0.1:{port}/v1/packets", data=b"x", timeout=2)
    assert classify(refused.value) == NEVER_LEFT
    assert describe(refused.value) == "connection refused"
    with socket.socket() as silent:  # accepts, reads, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1/packets"
        with pytest.raises(requests.ReadTimeout) as hung:
            requests.post(url, data=b"x" * 100, timeout=(2, 0.3))
    assert classify(hung.value) == MAYBE_DELIVERED
    assert "read timeout" in describe(hung.value)
    assert classify(RuntimeError("unknown")) == MAYBE_DELIVERED  # resending is always safe


@pytest.mark.parametrize(
    ("code", "body", "outcome"),
    [
        (200, {"packet_id": PID, "status": "stored"}, ACK),
        (201, {"packet_id": PID, "status": "duplicate"}, ACK),
        (200, {"packet_id": PID.replace("3f", "40"), "status": "stored"}, RETRY),
        (200, {"packet_id": PID, "status": "queued"}, RETRY),
        (200, None, RETRY),
        (409, {"packet_id": PID, "status": "duplicate"}, ACK),
        (409, {"packet_id": PID, "status": "conflict"}, PERMANENT),
        (400, {"error": "bad"}, PERMANENT),
        (413, {"error": "too big"}, PERMANENT),
        (422, {"error": "signature"}, PERMANENT),
        (403, {"error": "unknown node"}, REFUSED),
        (404, None, REFUSED),
        (301, None, REFUSED),
        (429, None, RETRY),
        (408, None, RETRY),
        (500, None, RETRY),
        (503, None, RETRY),
    ],
)
def test_interpret(code: int, body: object, outcome: str) -> None:
    raw = b"<html>oops</html>" if body is None else __import__("json").dumps(body).encode()
    assert interpret(code, {}, raw, PID).outcome == outcome


def test_interpret_reads_retry_after_and_keeps_reasons_one_line() -> None:
    a = interpret(503, {"Retry-After": "7"}, b'{"error": "busy\\nnow"}', PID)
    assert (a.retry_after, a.reason) == (7.0, "HTTP 503: busy now")


def test_token_bucket_on_a_fake_clock() -> None:
    now = [0.0]
    b = TokenBucket(1000, 500, clock=lambda: now[0])
    assert b.reserve(500) == 0.0  # the burst goes at once
    assert b.reserve(250) == pytest.approx(0.25)
    now[0] = 10.0
    assert b.reserve(100) == 0.0  # refilled, but never beyond the burst
    assert b.reserve(400) == 0.0
    assert b.reserve(100) == pytest.approx(0.1)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        b.take(1000, stop)


def test_upload_windows() -> None:
    w = UploadWindows.parse("22:00-06:00, 12:00-13:30")
    at = dt.datetime(2026, 3, 1, 0, 0)
    assert w.is_open(at.replace(hour=23))
    assert w.is_open(at.replace(hour=5, minute=59))
    assert not w.is_open(at.replace(hour=6))
    assert w.is_open(at.replace(hour=13, minute=29))
    assert not w.is_open(at.replace(hour=13, minute=30))
    assert w.seconds_until_open(at.replace(hour=20)) == 7200.0
    assert w.seconds_until_open(at.replace(hour=23)) == 0.0
    assert w.describe() == "22:00-06:00, 12:00-13:30"
    assert UploadWindows.parse("").is_open(at)
    with pytest.raises(ValueError, match="25:00-06:00"):
        UploadWindows.parse("25:00-06:00")
    with pytest.raises(ValueError, match="starts where it ends"):
        UploadWindows.parse("06:00-06:00")


def test_config_problems() -> None:
    assert config_problems(uplink_cfg("https://central.example/api")) == []
    assert (
        "allow_plain_http"
        in config_problems(uplink_cfg("http://central.example", allow_plain_http=False))[0]
    )
    assert "give both" in config_problems(uplink_cfg("https://c.example", client_cert="/c.pem"))[0]
    assert "windows" in config_problems(uplink_cfg("https://c.example", windows="24:30-01:00"))[0]


def test_config_file_keys(tmp_path: Path) -> None:
    from node.configload import ConfigError, load

    cfg = load(None, ['uplink.url="https://c.example/api"', 'uplink.windows="22:00-06:00"'])
    assert cfg.uplink.url == "https://c.example/api"
    with pytest.raises(ConfigError, match=r"uplink\.url"):
        load(None, ['uplink.url="ftp://c.example"'])
    with pytest.raises(ConfigError, match=r"uplink\.url"):
        load(None, ['uplink.url="https://user:secret@c.example"'])


def test_heartbeat_is_a_signed_telemetry_packet(tmp_path: Path) -> None:
    key = node_key()
    store = open_store(tmp_path / "store")
    status = {"uptime_s": 12.5, "fps": 9.8, "queues": {"detect": {"depth": 1}}, "secret": "x"}
    hb = Heartbeat(store, lambda: status, key, NODE, None, 3600.0)
    pid = hb.beat()
    assert pid is not None
    (claimed,) = store.claim(5)
    assert (claimed.id, claimed.priority, claimed.kind) == (pid, PRIORITY_TELEMETRY, KIND_HEARTBEAT)
    checked = verify(store.read(pid), {NODE.id: key.public_key()})
    t = checked.manifest["telemetry"]
    assert (t["uptime_s"], t["fps"], t["queues"]["detect"]["depth"]) == (12.5, 9.8, 1)
    assert "secret" not in t  # only the fields the central needs
    assert "disk" in t["system"]
    assert t["software_version"]
    store.close()


def test_heartbeat_thread_and_failures(tmp_path: Path) -> None:
    key = node_key()
    store = PacketStore(tmp_path / "store", StoreConfig(min_free_mb=0, low_disk_mb=0))
    calls = [0]

    def status() -> dict[str, object]:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("status broke")
        return {"uptime_s": calls[0]}

    beats = threading.Semaphore(0)
    hb = Heartbeat(store, status, key, NODE, None, 0.02, on_enqueued=lambda _: beats.release())
    hb.start()
    try:
        for _ in range(3):
            assert beats.acquire(timeout=10)
    finally:
        hb.stop()
    assert hb.counts["failed"] == 1  # a broken status callable does not end the thread
    assert hb.counts["enqueued"] >= 3
    assert "status broke" in str(hb.last_error)
    store.close()


def test_heartbeat_fields_are_bounded(tmp_path: Path) -> None:
    fields = heartbeat_fields({"uptime_s": 1, "last_errors": ["x" * 100_000]}, tmp_path)
    t = fields["telemetry"]
    assert t["truncated"] == ["last_errors"]
    assert t["uptime_s"] == 1
