"""The uploader against a central that misbehaves: real HTTP on loopback, the real ingest
behind a fault server, the real store. Every scenario ends with the ingest holding each packet
exactly once, or (for the refusals) the packet still safe in the node's store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.config import NodeConfig
from node.evidence import PRIORITY_ALERT, PRIORITY_VIOLATION
from node.store import PacketStore
from node.uplink.ingest import IngestServer, server_tls_context
from node.uplink.uploader import UplinkError, Uploader, make_session
from tests.test_uplink_support import (
    FAST,
    NODE,
    FaultServer,
    Results,
    acked_ids,
    fill,
    ingest_address,
    make_pki,
    node_key,
    open_store,
    packets,
    state_of,
    uplink_cfg,
    wait_for,
)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return node_key()


@pytest.fixture
def results() -> Results:
    return Results()


@pytest.fixture
def ingest(tmp_path: Path, key: Ed25519PrivateKey, results: Results) -> Iterator[IngestServer]:
    server = IngestServer(tmp_path / "central", {NODE.id: key.public_key()}, on_result=results)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PacketStore]:
    s = open_store(tmp_path / "store")
    yield s
    s.close()


def run_until(uploader: Uploader, predicate: object, timeout: float = 30.0) -> None:
    uploader.start()
    try:
        wait_for(predicate, timeout)  # type: ignore[arg-type]
    finally:
        uploader.stop()


def test_all_packets_delivered_in_priority_order(
    store: PacketStore, ingest: IngestServer, key: Ed25519PrivateKey, results: Results
) -> None:
    low = packets(3, key, priority=PRIORITY_VIOLATION)
    urgent = packets(2, key, priority=PRIORITY_ALERT)
    fill(store, low + urgent)  # the alerts come last, but go first
    up = Uploader(store, uplink_cfg(ingest.url), policy=FAST)
    run_until(up, lambda: len(acked_ids(store)) == 5)
    order = [p for p, _ in results.items]
    assert set(order[:2]) == {p.id for p in urgent}
    assert sorted(ingest.store.ids()) == sorted(p.id for p in low + urgent)
    s = up.status()
    assert (s["acked"], s["sent"], s["quarantined"]) == (5, 5, 0)
    assert s["bytes"] == sum(p.size for p in low + urgent)
    assert s["last_success_utc_ns"] is not None
    assert "plain http" in s["warnings"][0]


def test_an_alert_overtakes_the_batch_going_out(
    tmp_path: Path, store: PacketStore, key: Ed25519PrivateKey
) -> None:
    """An alert stored while a batch of violations is on its way is the next packet sent,
    not the ninth: the rest of the batch goes back to the queue."""
    low = packets(8, key, priority=PRIORITY_VIOLATION)
    alert = packets(1, key, priority=PRIORITY_ALERT)[0]
    fill(store, low)
    order: list[str] = []

    def arrived(packet_id: str, status: str) -> None:
        order.append(packet_id)
        if len(order) == 1:  # while the uploader waits for the first answer
            fill(store, [alert])

    server = IngestServer(tmp_path / "central2", {NODE.id: key.public_key()}, on_result=arrived)
    server.start()
    try:
        up = Uploader(store, uplink_cfg(server.url), policy=FAST)
        run_until(up, lambda: len(acked_ids(store)) == 9)
    finally:
        server.stop()
    assert order[0] in {p.id for p in low}
    assert order[1] == alert.id
    assert sorted(order[2:]) == sorted(p.id for p in low if p.id != order[0])  # each once


def test_500_and_503_then_200(
    store: PacketStore, ingest: IngestServer, key: Ed25519PrivateKey, results: Results
) -> None:
    (p,) = packets(1, key)
    fill(store, [p])
    fault = FaultServer(ingest_address(ingest), ["500", "503", "500"])
    up = Uploader(store, uplink_cfg(fault.url), policy=FAST)
    try:
        run_until(up, lambda: state_of(store, p.id) == "acked")
    finally:
        fault.close()
    assert fault.actions() == ["500", "503", "500", "forward"]
    assert results.of(p.id) == ["stored"]
    assert up.status()["retries"] == 3
    assert "HTTP 500" in (up.status()["recent_errors"][0])


def test_429_retry_after_is_honoured(
    store: PacketStore, ingest: IngestServer, key: Ed25519PrivateKey, results: Results
) -> None:
    (p,) = packets(1, key)
    fill(store, [p])
    fault = FaultServer(ingest_address(ingest), ["429:1"])
    up = Uploader(store, uplink_cfg(fault.url), policy=FAST)  # its own backoff is < 0.15 s
    try:
        run_until(up, lambda: state_of(store, p.id) == "acked")
    finally:
        fault.close()
    (_, _, t429), (_, _, t_next) = fault.seen
    assert t_next - t429 >= 0.95  # waited as the server asked, not its own 0.15 s cap
    assert results.of(p.id) == ["stored"]


def test_hang_is_a_read_timeout_then_resent(
    store: PacketStore, ingest: IngestServer, key: Ed25519PrivateKey, results: Results
) -> None:
    (p,) = packets(1, key)
    fill(store, [p])
    fault = FaultServer(ingest_address(ingest), ["hang"])
    up = Uploader(store, uplink_cfg(fault.url, read_timeout_s=1.0), policy=FAST)
    try:
        run_until(up, lambda: state_of(store, p.id) == "acked")
    finally:
        fault.close()
    s = up.status()
    assert s["maybe_delivered"] == 1
    assert "read timeout" in s["recent_errors"][0]
    assert results.of(p.id) == ["stored"]


def test_reset_mid_body(
    store: PacketStore, ingest: IngestServer, key: Ed25519PrivateKey, results: Results
) -> None:
    (p,) = packets(1, key, size=300_000)
    fill(store, [p])
    fault = FaultServer(ingest_address(ingest), ["reset", "reset"])
    up = Uploader(store, uplink_cfg(fault.url), policy=FAST)
    try:
        run_until(up, lambda: state_of(store, p.id) == "acked")
    finally:
        fault.close()
    assert fault.actions() == ["reset", "reset", "forward"]
    assert up.status()["maybe_delivered"] == 2
    assert results.of(p.id) == ["stored"]


def test_body_taken_then_connection_dropped_is_stored_once(
    store: PacketStore, ingest: IngestServer, key: Ed25519PrivateKey, results: Results
) -> None:
    ps = packets(3, key)
    fill(store, ps)
    fault = FaultServer(ingest_address(ingest), ["drop", "forward", "drop"])
    up = Uploader(store, uplink_cfg(fault.url), policy=FAST)
    try:
        run_until(up, lambda: len(acked_ids(store)) == 3)
    finally:
        fault.close()
    # each dropped packet reached the ingest, was sent again and answered "duplicate"
    assert results.of(ps[0].id) == ["stored", "duplicate"]
    assert results.of(ps[1].id) == ["stored", "duplicate"]
    assert results.of(ps[2].id) == ["stored"]
    assert sorted(ingest.store.ids()) == sorted(p.id for p in ps)
    assert len(list((ingest.store.packets).glob("*/*.rnpk"))) == 3
    assert up.status()["duplicates"] == 2


def test_200_naming_another_packet_is_not_an_ack(
    store: PacketStore, ingest: IngestServer, key: Ed25519PrivateKey, results: Results
) -> None:
    (p,) = packets(1, key)
    fill(store, [p])
    fault = FaultServer(ingest_address(ingest), [], default="wrong_id")
    up = Uploader(store, uplink_cfg(fault.url), policy=FAST)
    up.start()
    try:
        wait_for(lambda: len(fault.seen) >= 4, what="four wrong answers")
        assert state_of(store, p.id) != "acked"
        assert up.status()["not_acknowledged"] >= 3
        assert "does not acknowledge" in str(up.status()["last_error"])
        fault.set_default("forward")
        wait_for(lambda: state_of(store, p.id) == "acked")
    finally:
        up.stop()
        fault.close()
    assert results.of(p.id) == ["stored"]


def test_bad_packet_is_quarantined_with_the_reason(
    store: PacketStore, ingest: IngestServer, key: Ed25519PrivateKey
) -> None:
    good, bad = packets(2, key)
    damaged = bytearray(bad.data)
    damaged[-100] ^= 1  # inside the part: the ingest names it
    store.append(bad.id, bytes(damaged), priority=2, kind="violation", created_utc_ns=1)
    fill(store, [good])
    up = Uploader(store, uplink_cfg(ingest.url), policy=FAST)
    run_until(up, lambda: state_of(store, good.id) == "acked")
    assert state_of(store, bad.id) == "quarantined"
    (q,) = store.stats()["quarantined"]
    assert q["id"] == bad.id
    assert "HTTP 422" in q["reason"]
    assert "sha256" in q["reason"] or "checksum" in q["reason"]
    assert up.status()["quarantined"] == 1
    assert ingest.store.ids() == [good.id]


def test_unknown_node_is_not_quarantined(
    tmp_path: Path, store: PacketStore, ingest: IngestServer
) -> None:
    stranger = packets(2, node_key(), node=NodeConfig(id="stranger-09"))  # not enrolled
    fill(store, stranger)
    up = Uploader(store, uplink_cfg(ingest.url), policy=FAST)
    up.start()
    try:
        wait_for(lambda: up.status()["refused"] >= 1, what="a 403")
        s = up.status()
    finally:
        up.stop()
    assert "HTTP 403" in str(s["last_error"])
    assert "unknown node" in str(s["last_error"])
    assert s["quarantined"] == 0
    assert {state_of(store, p.id) for p in stranger} == {"ready"}  # kept, for after enrolment


def test_plain_http_needs_the_flag(store: PacketStore) -> None:
    cfg = uplink_cfg("http://127.0.0.1:9", allow_plain_http=False)
    with pytest.raises(UplinkError, match="allow_plain_http"):
        Uploader(store, cfg)


def test_tls_pinned_ca_and_client_certificate(
    tmp_path: Path, store: PacketStore, key: Ed25519PrivateKey, results: Results
) -> None:
    right = make_pki(tmp_path / "pki", "central")
    wrong = make_pki(tmp_path / "pki", "other")
    client = make_pki(tmp_path / "pki", "node", server=False)
    tls = server_tls_context(right.cert, right.key, client_ca=client.ca)
    server = IngestServer(
        tmp_path / "central", {NODE.id: key.public_key()}, tls=tls, on_result=results
    ).start()
    (p,) = packets(1, key)
    fill(store, [p])
    try:
        assert server.url.startswith("https://")
        mtls = {"client_cert": str(client.cert), "client_key": str(client.key)}
        # 1. the wrong CA: refused, a clear error, nothing sent
        up = Uploader(store, uplink_cfg(server.url, ca_bundle=str(wrong.ca), **mtls), policy=FAST)
        up.start()
        try:
            wait_for(lambda: up.status()["never_left"] + up.status()["probes"] >= 2)
            s = up.status()
        finally:
            up.stop()
        assert s["state"] == "down"
        assert "TLS certificate not trusted" in str(s["last_error"])
        assert results.items == []
        assert state_of(store, p.id) == "ready"
        # 2. the right CA but no client certificate: the server refuses the handshake
        up = Uploader(store, uplink_cfg(server.url, ca_bundle=str(right.ca)), policy=FAST)
        up.start()
        try:
            wait_for(lambda: up.status()["last_error"] is not None)
        finally:
            up.stop()
        assert results.items == []
        # 3. the right CA and the client certificate: delivered
        up = Uploader(store, uplink_cfg(server.url, ca_bundle=str(right.ca), **mtls), policy=FAST)
        assert up.status()["warnings"] == []
        run_until(up, lambda: state_of(store, p.id) == "acked")
    finally:
        server.stop()
    assert results.of(p.id) == ["stored"]


def test_tls_context_refuses_old_versions_and_open_keys(tmp_path: Path) -> None:
    import ssl

    pki = make_pki(tmp_path / "pki", "node", server=False)
    session = make_session(uplink_cfg("https://127.0.0.1:9", ca_bundle=str(pki.ca)))
    adapter = session.get_adapter("https://127.0.0.1:9/")
    assert adapter.context.minimum_version == ssl.TLSVersion.TLSv1_2  # type: ignore[attr-defined]
    session.close()
    pki.key.chmod(0o644)
    cfg = uplink_cfg(
        "https://127.0.0.1:9",
        ca_bundle=str(pki.ca),
        client_cert=str(pki.cert),
        client_key=str(pki.key),
    )
    with pytest.raises(UplinkError, match="readable by group or others"):
        make_session(cfg)
    with pytest.raises(UplinkError, match="ca_bundle"):
        make_session(uplink_cfg("https://127.0.0.1:9", ca_bundle=str(tmp_path / "none.pem")))


def test_bandwidth_cap_holds_on_the_wire(
    store: PacketStore, ingest: IngestServer, key: Ed25519PrivateKey
) -> None:
    ps = packets(2, key, size=30_000)
    fill(store, ps)
    cfg = uplink_cfg(ingest.url, max_bytes_per_s=40_000, burst_bytes=4096)
    up = Uploader(store, cfg, policy=FAST)
    t0 = time.monotonic()
    run_until(up, lambda: len(acked_ids(store)) == 2)
    # 60 kB at 40 kB/s cannot take less than (60 kB - one burst) / 40 kB/s
    assert time.monotonic() - t0 >= (sum(p.size for p in ps) - 4096) / 40_000


def test_outside_the_window_only_urgent_packets_go(
    store: PacketStore, ingest: IngestServer, key: Ed25519PrivateKey, results: Results
) -> None:
    import datetime as dt

    (alert,) = packets(1, key, priority=PRIORITY_ALERT)
    (normal,) = packets(1, key, priority=PRIORITY_VIOLATION)
    fill(store, [alert, normal])
    clock = [dt.datetime(2026, 3, 1, 12, 0)]
    cfg = uplink_cfg(ingest.url, windows="22:00-06:00", urgent_priority=0)
    up = Uploader(store, cfg, policy=FAST, local_now=lambda: clock[0])
    up.start()
    try:
        wait_for(lambda: state_of(store, alert.id) == "acked")
        wait_for(lambda: up.status()["state"] == "window")
        assert state_of(store, normal.id) == "ready"
        clock[0] = dt.datetime(2026, 3, 1, 23, 0)
        up.upload_now()
        wait_for(lambda: state_of(store, normal.id) == "acked")
    finally:
        up.stop()
    assert [p for p, _ in results.items] == [alert.id, normal.id]


def test_nothing_acked_is_sent_again_after_a_restart(
    tmp_path: Path, ingest: IngestServer, key: Ed25519PrivateKey, results: Results
) -> None:
    first = packets(4, key)
    s1 = open_store(tmp_path / "store")
    fill(s1, first)
    up = Uploader(s1, uplink_cfg(ingest.url), policy=FAST)
    run_until(up, lambda: len(acked_ids(s1)) == 4)
    s1.close()  # the "reboot"
    s2 = open_store(tmp_path / "store")
    second = packets(2, key)
    fill(s2, second)
    seen_before = len(results.items)
    up = Uploader(s2, uplink_cfg(ingest.url), policy=FAST)
    run_until(up, lambda: len(acked_ids(s2)) == 6)
    s2.close()
    assert sorted(p for p, _ in results.items[seen_before:]) == sorted(p.id for p in second)
    assert results.count("duplicate") == 0
