"""The link that lies, at scale: a central that goes up and down while 500 packets drain, and
a node killed with SIGKILL (three times) in the middle of uploads. Every packet ends stored at
the ingest exactly once, verified; the uploader spends no CPU while the central is down.

`python tests/test_uplink_flap.py STORE_DIR URL` is the uploading node of the kill test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

from node.evidence.packet import verify
from node.uplink.ingest import IngestServer, IngestStore
from node.uplink.uploader import Uploader
from tests.test_uplink_support import (
    FAST,
    NODE,
    Results,
    acked_ids,
    fill,
    node_key,
    open_store,
    packets,
    uplink_cfg,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent


def thread_cpu_s(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def check_ingest(server_dir: Path, expected: set[str], results: Results, key: object) -> None:
    """Exactly `expected` stored, each once, each verified again from its file."""
    stored = IngestStore(server_dir)
    ids = stored.ids()
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected
    assert results.count("stored") == len(expected)  # nothing stored twice
    for pid in ids:
        path = stored.packet_file(pid)
        assert path is not None
        checked = verify(path.read_bytes(), {NODE.id: key})  # type: ignore[dict-item]
        assert checked.envelope.packet_id == pid
        record = stored.record(pid)
        assert record is not None
        assert record["verified"] == "signature"


def test_flapping_central_500_packets(tmp_path: Path) -> None:
    key = node_key()
    ps = packets(500, key, size=400)
    store = open_store(tmp_path / "store")
    fill(store, ps)
    results = Results()
    central = tmp_path / "central"

    def serve(port: int = 0) -> IngestServer:
        return IngestServer(
            central, {NODE.id: key.public_key()}, port=port, on_result=results
        ).start()

    server = serve()
    port = server.port
    # a bandwidth cap keeps packets waiting through all ten flaps: an uploader with nothing
    # left to send has no reason to notice the central going away (on a quiet machine it
    # drained the 500 before the last flap and the wait for "down" timed out)
    cfg = uplink_cfg(server.url, idle_poll_s=0.05, max_bytes_per_s=40_000, burst_bytes=4096)
    up = Uploader(store, cfg, policy=FAST)
    up.start()
    assert up.thread is not None
    down_cpu = down_wall = 0.0
    try:
        for _ in range(10):
            time.sleep(0.25)  # up: some packets go
            server.stop()  # down: refused connections, cut keep-alive connections
            wait_for(lambda: up.status()["state"] == "down", 10, "the uploader to see it down")
            c0, t0 = thread_cpu_s(up.thread), time.monotonic()
            time.sleep(0.5)
            down_cpu += thread_cpu_s(up.thread) - c0
            down_wall += time.monotonic() - t0
            server = serve(port)
        wait_for(lambda: len(acked_ids(store)) == 500, 60, "all 500 acked")
    finally:
        up.stop()
        server.stop()
    s = up.status()
    assert s["acked"] == 500
    assert s["never_left"] + s["maybe_delivered"] >= 10  # it did see the central go away
    assert s["probes"] >= 10  # and probed its way back
    # waiting for the central costs nothing: a busy loop would burn ~down_wall of CPU
    assert down_cpu < 0.1 * down_wall, f"{down_cpu:.3f} s CPU in {down_wall:.1f} s down"
    store.close()
    check_ingest(central, {p.id for p in ps}, results, key.public_key())


def test_kill_9_mid_upload_then_restart(tmp_path: Path) -> None:
    key = node_key()
    ps = packets(150, key, size=2000)
    store = open_store(tmp_path / "store")
    fill(store, ps)
    store.close()
    results = Results()
    central = tmp_path / "central"
    server = IngestServer(central, {NODE.id: key.public_key()}, on_result=results).start()
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def node() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, __file__, str(tmp_path / "store"), server.url], env=env, cwd=ROOT
        )

    def answered(n: int) -> bool:
        return len(results.items) >= n

    acked_at_kill: list[tuple[int, set[str]]] = []
    try:
        for threshold in (15, 50, 95):
            proc = node()
            wait_for(partial(answered, threshold), 60, f"{threshold} answers")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            check = open_store(tmp_path / "store")  # what the node had acked when it died
            acked_at_kill.append((len(results.items), acked_ids(check)))
            check.close()
        proc = node()
        try:
            wait_for(lambda: results.count("stored") == 150, 60, "all 150 stored")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    finally:
        server.stop()
    for position, acked in acked_at_kill:
        again = {p for p, _ in results.items[position:]} & acked
        assert not again, f"acked before the kill, sent again after it: {sorted(again)[:3]}"
    assert len(acked_at_kill[-1][1]) >= 60  # the kills did land mid-drain, not at the end
    check_ingest(central, {p.id for p in ps}, results, key.public_key())


def _node_main(store_dir: str, url: str) -> None:
    store = open_store(Path(store_dir))
    up = Uploader(store, uplink_cfg(url, idle_poll_s=0.05), policy=FAST)
    up.start()
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    _node_main(sys.argv[1], sys.argv[2])
