"""The whole node on the simulator: a hotlist hit makes an alert packet that reaches the central
before the ordinary violations queued ahead of it.

The real service on `sim://junction` (paced at 10 fps: the real detector, tracker, rules, the
real plate reader on the main image, the evidence worker, the SQLite store, the uploader), a
hotlist file loaded from `[reader] hotlist`, and the reference ingest on loopback. The plates
are the sim's own: the hotlist holds every plate of a vehicle that enters the road 4 or more
simulated seconds after the start (listed by running the sim's traffic model on the same seed,
without rendering), so the violations the run finds in its first seconds are queued first. The
central is down (the port refuses) until the first alert is in the store; then it comes up, and
the first packet it receives must be the alert, every violation made before it after it.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.capture.sim import WARMUP_S
from node.capture.simtraffic import Traffic
from node.configload import validate
from node.control import query
from node.evidence import KIND_ALERT, PRIORITY_ALERT
from node.evidence.keys import evidence_keys
from node.infer.manifest import DEFAULT_MANIFEST
from node.plates.grammar import normalize
from node.service import RunOptions, Service
from node.uplink.ingest import IngestServer

SEED, RATE, FPS = 3, 120, 10  # a busy road where every vehicle sets out to break a rule
URL = f"sim://junction?seed={SEED}&rate={RATE}&violations=1&fps={FPS}"
WANTED_AFTER_S = 4.0  # only vehicles entering after this are on the hotlist
LISTED_S = 180.0  # simulated time covered by the hotlist (well past the test's length)
ALERT_WITHIN_S = 40.0


def sim_plates(after_s: float, until_s: float) -> list[str]:
    """The plates of the vehicles that enter the sim's road between `after_s` and `until_s`
    simulated seconds after the first frame: the sim's traffic model run as `SimSource`
    runs it (same seed, rate, step and warm-up), without drawing a pixel."""
    dt = 1.0 / FPS
    traffic = Traffic(np.random.default_rng(SEED), RATE, 1.0, dt)
    for i in range(round(WARMUP_S / dt)):
        traffic.step((i + 1) * dt, -1)
    before = {v.plate.text for v in traffic.vehicles}
    wanted: list[str] = []
    for seq in range(1, round(until_s * FPS)):
        traffic.step(WARMUP_S + seq * dt, seq)
        for v in traffic.vehicles:
            text = v.plate.text
            if text in before or text in wanted:
                continue
            if seq * dt < after_s:
                before.add(text)
            else:
                wanted.append(text)
    return wanted


@pytest.fixture
def state_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="hs", dir="/tmp"))  # the control socket's path is short
    yield d
    shutil.rmtree(d, ignore_errors=True)


def refused_port() -> socket.socket:
    """A loopback port bound but not listening: every connection to it is refused (the
    central is down) until it is closed and the ingest takes the port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


def wait_for(what: str, timeout: float, ready: Any) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.05)


@pytest.mark.skipif(not DEFAULT_MANIFEST.exists(), reason="needs the bundled detector")
def test_a_hotlist_hit_on_the_sim_overtakes_the_violations_queued_ahead(state_dir: Path) -> None:
    wanted = sim_plates(WANTED_AFTER_S, LISTED_S)
    assert len(wanted) > 20, wanted
    hotlist = state_dir / "hotlist.json"
    hotlist.write_text(
        json.dumps(
            {
                "version": 1,
                "entries": [
                    {"plate": p, "reason": "STOLEN", "expires": "2099-01-01T00:00:00Z"}
                    for p in wanted
                ],
            }
        )
    )
    down = refused_port()
    port = down.getsockname()[1]
    cfg = validate(
        {
            "capture": {"source": URL},
            "reader": {"hotlist": str(hotlist)},
            "uplink": {
                "url": f"http://127.0.0.1:{port}",
                "allow_plain_http": True,
                "connect_timeout_s": 1.0,
                "backoff_base_s": 0.05,
                "backoff_max_s": 0.25,
                "idle_poll_s": 0.2,
                "heartbeat_minutes": 0,  # only violations and alerts in the queue
            },
        }
    )
    node_key, _ = evidence_keys(state_dir, cfg.evidence.node_key, cfg.evidence.central_key)
    service = Service(cfg, RunOptions(state_dir))
    assert service.reader_error is None
    assert service.store is not None
    thread = threading.Thread(target=service.run, daemon=True)
    arrivals: list[str] = []
    lock = threading.Lock()

    def arrived(packet_id: str, status: str) -> None:
        if status == "stored":
            with lock:
                arrivals.append(packet_id)

    ingest: IngestServer | None = None
    try:
        thread.start()
        store = service.store

        def alert_stored() -> bool:
            return str(PRIORITY_ALERT) in store.stats()["priorities"]

        wait_for("a hotlist hit on the sim", ALERT_WITHIN_S, alert_stored)
        queued = store.stats()["priorities"]
        waiting: dict[str, int] = {k: p["ready"] + p["in_flight"] for k, p in queued.items()}
        violations_ahead = sum(n for k, n in waiting.items() if k != str(PRIORITY_ALERT))
        assert violations_ahead >= 1, f"no violation was queued before the hit: {queued}"
        assert not arrivals
        # the central comes back
        down.close()
        ingest = IngestServer(
            state_dir / "central",
            {cfg.node.id: node_key.public_key()},
            port=port,
            extract_parts=True,
            on_result=arrived,
        ).start()

        def delivered() -> bool:
            with lock:
                return len(arrivals) >= sum(waiting.values())

        wait_for("delivery once the central is up", 20.0, delivered)
        alerts = query(state_dir, {"cmd": "alerts", "n": 5})  # what the console shows
    finally:
        service.request_stop("test")
        thread.join(15)
        down.close()
        if ingest is not None:
            ingest.stop()
    assert not thread.is_alive()
    assert ingest is not None
    with lock:
        order = list(arrivals)
    records = {pid: ingest.store.record(pid) for pid in order}
    first = records[order[0]]
    assert first is not None
    assert first["kind"] == KIND_ALERT, [r["kind"] for r in records.values() if r]
    assert first["verified"] == "signature"  # signed by the node, checked by the central
    alert = first["manifest"]["alert"]
    assert alert["reason"] == "STOLEN"
    assert alert["match"] == "exact"
    read = first["manifest"]["plate_read"]["text"]
    assert normalize(read) in {normalize(p) for p in wanted}  # a sim plate, read off the sim
    assert sorted(p.name for p in (state_dir / "central" / "parts" / order[0]).iterdir()) == [
        "context.jpg",
        "plate.jpg",
    ]
    # every violation the run had queued before the alert was made reached the central after it
    ahead = [
        pid
        for pid, r in records.items()
        if r is not None
        and r["kind"] != KIND_ALERT
        and r["created_utc_ns"] < first["created_utc_ns"]
    ]
    assert ahead, "no violation was made before the alert"
    assert all(records[pid]["kind"] == "violation" for pid in ahead)  # type: ignore[index]
    assert all(order.index(pid) > 0 for pid in ahead)
    assert len(ahead) >= violations_ahead  # (those queued when the alert was stored, at least)
    # and the console shows the hit (reason and match, never the plate)
    assert alerts["ok"] is True
    assert alerts["total"] >= 1
    assert alerts["alerts"][-1]["reason"] == "STOLEN"
    assert "plate" not in json.dumps(alerts["alerts"])
