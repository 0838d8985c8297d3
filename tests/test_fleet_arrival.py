"""Arrival: the inbox (watchdog) and the pull (desired state, ETag, resumable download)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from node.config import FleetConfig
from node.fleet.inbox import Inbox, is_temporary
from node.fleet.pull import Puller, PullError, parse_desired

MB = 1024 * 1024


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# --- inbox -----------------------------------------------------------------------------------


def test_temporary_names() -> None:
    for name in (".b.bundle", "b.bundle.part", "b.tmp", "b.partial", "b~", "b.crdownload"):
        assert is_temporary(name)
    assert not is_temporary("sw-1.2.0.bundle")


def test_a_file_still_being_copied_is_not_taken(tmp_path: Path) -> None:
    inbox_dir = tmp_path / "inbox"
    data = os.urandom(64 * 1024)
    closed = threading.Event()
    failures: list[str] = []

    def copy_slowly() -> None:
        with (inbox_dir / "sw.bundle").open("wb") as f:
            for i in range(16):
                f.write(data[i * 4096 : (i + 1) * 4096])
                f.flush()
                # a long stall mid-copy (a slow USB stick): longer than the settle time
                time.sleep(0.9 if i == 8 else 0.05)
            closed.set()

    with Inbox(inbox_dir, settle_s=0.3) as inbox:
        writer = threading.Thread(target=copy_slowly)
        writer.start()
        while not closed.is_set():
            if inbox.ready() and not closed.is_set():
                failures.append(f"taken after {(inbox_dir / 'sw.bundle').stat().st_size} bytes")
            time.sleep(0.03)
        writer.join()
        assert not failures
        assert wait_for(lambda: inbox.ready() == [inbox_dir / "sw.bundle"])
        assert (inbox_dir / "sw.bundle").read_bytes() == data


def test_renamed_in_and_present_at_start_are_taken_temporary_never(tmp_path: Path) -> None:
    inbox_dir = tmp_path / "inbox"
    inbox_dir.mkdir()
    (inbox_dir / "early.bundle").write_bytes(b"x")
    with Inbox(inbox_dir, settle_s=0.2) as inbox:
        for name in (".hidden", "b.part", "c.tmp"):
            (inbox_dir / name).write_bytes(b"y")
        (inbox_dir / "link.bundle").symlink_to(inbox_dir / "early.bundle")
        (inbox_dir / "dir.bundle").mkdir()
        (inbox_dir / "late.bundle.part").write_bytes(b"z" * 1000)
        os.rename(inbox_dir / "late.bundle.part", inbox_dir / "late.bundle")
        assert wait_for(lambda: len(inbox.ready()) == 2)
        time.sleep(0.3)
        assert sorted(p.name for p in inbox.ready()) == ["early.bundle", "late.bundle"]


# --- pull ------------------------------------------------------------------------------------


class Central:
    """A loopback desired-state endpoint and bundle server (real HTTP, real Range)."""

    def __init__(self, bundle: bytes) -> None:
        self.bundle = bundle
        self.etag = '"v1"'
        self.log: list[tuple[str, dict[str, str]]] = []
        self.cut_once_at: int | None = None  # drop the connection after this many bytes
        self.ignore_range = False
        self.extra = b""  # sent beyond the announced size
        self.desired: dict[str, Any] = {}
        central = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                central.log.append((self.path, dict(self.headers)))
                if self.path == "/desired":
                    if self.headers.get("If-None-Match") == central.etag:
                        self.send_response(304)
                        self.end_headers()
                        return
                    body = json.dumps(central.desired).encode()
                    self.send_response(200)
                    self.send_header("ETag", central.etag)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                data = central.bundle + central.extra
                start = 0
                rng = self.headers.get("Range")
                if rng and not central.ignore_range:
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if central.cut_once_at is not None:
                    self.wfile.write(data[start : central.cut_once_at])
                    self.wfile.flush()
                    central.cut_once_at = None
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def announce(self, version: str = "1.2.0", **over: Any) -> None:
        entry = {
            "kind": "software",
            "version": version,
            "url": "/b/sw.bundle",  # relative to the desired-state URL
            "size": len(self.bundle),
            "sha256": hashlib.sha256(self.bundle).hexdigest(),
        } | over
        self.desired = {"bundles": [entry]}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def central() -> Iterator[Central]:
    c = Central(os.urandom(300_000))
    yield c
    c.close()


def puller(tmp_path: Path, central: Central, **cfg: Any) -> tuple[Puller, Path]:
    root = tmp_path / "fleet"
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    settings: dict[str, Any] = {"url": central.url + "/desired", "timeout_s": 5.0} | cfg
    fleet = FleetConfig(**settings)
    return Puller(root, fleet, "cam-7", rng=lambda: 0.5), incoming


def test_etag_304_and_range_resume(tmp_path: Path, central: Central) -> None:
    central.announce()
    central.cut_once_at = 120_000
    p, incoming = puller(tmp_path, central)
    assert p.poll(lambda kind: "1.1.0", incoming) == []  # the download broke off
    part = tmp_path / "fleet" / "downloads" / f"{hashlib.sha256(central.bundle).hexdigest()}.part"
    kept = part.stat().st_size
    assert 0 < kept <= 120_000  # what arrived whole (in 64 KiB chunks) is kept
    state = json.loads((tmp_path / "fleet" / "pull.json").read_text())
    assert f"kept {kept} bytes" in state["last_error"]
    assert p.delay() == 30.0  # sooner after a failure
    got = p.poll(lambda kind: "1.1.0", incoming)
    assert [g.read_bytes() == central.bundle for g in got] == [True]
    desired = [h for path, h in central.log if path == "/desired"]
    assert desired[0].get("If-None-Match") is None
    assert desired[1]["If-None-Match"] == '"v1"'  # answered 304: the kept state was used
    assert desired[1]["X-Roadnode-Node"] == "cam-7"
    bundles = [h for path, h in central.log if path == "/b/sw.bundle"]
    assert bundles[1]["Range"] == f"bytes={kept}-"
    assert p.delay() == 900.0  # rng 0.5: no jitter; back to the interval
    # the same bundle is not fetched again once processed, nor when already installed
    p.processed(hashlib.sha256(central.bundle).hexdigest())
    assert p.poll(lambda kind: "1.1.0", incoming) == []
    central.etag = '"v2"'
    central.announce(sha256="0" * 64)
    assert p.poll(lambda kind: "1.2.0", incoming) == []
    assert len([1 for path, _ in central.log if path == "/b/sw.bundle"]) == 2


def test_server_that_ignores_range_starts_over(tmp_path: Path, central: Central) -> None:
    central.announce()
    central.cut_once_at = 50_000
    central.ignore_range = True
    p, incoming = puller(tmp_path, central)
    p.poll(lambda kind: None, incoming)
    got = p.poll(lambda kind: None, incoming)
    assert len(got) == 1
    assert got[0].read_bytes() == central.bundle


def test_size_limits(tmp_path: Path, central: Central) -> None:
    central.announce()
    central.extra = b"more"  # the server sends more than it announced
    p, incoming = puller(tmp_path, central)
    assert p.poll(lambda kind: None, incoming) == []
    assert "more than" in json.loads((tmp_path / "fleet" / "pull.json").read_text())["last_error"]
    assert not list((tmp_path / "fleet" / "downloads").iterdir())
    with pytest.raises(PullError, match="above 1048576"):
        parse_desired(
            {
                "bundles": [
                    {
                        "kind": "model",
                        "version": "1",
                        "url": "/x",
                        "size": 2 * MB,
                        "sha256": "0" * 64,
                    }
                ]
            },
            "http://h/",
            MB,
        )
    with pytest.raises(PullError, match="http"):
        parse_desired(
            {
                "bundles": [
                    {
                        "kind": "model",
                        "version": "1",
                        "url": "file:///etc/passwd",
                        "size": 1,
                        "sha256": "0" * 64,
                    }
                ]
            },
            "http://h/",
            MB,
        )


def test_jitter_spreads_polls(tmp_path: Path, central: Central) -> None:
    values = iter([0.5, 0.0, 1.0])  # the first: when the first poll comes
    p = Puller(
        tmp_path,
        FleetConfig(url=central.url, poll_interval_s=100.0, poll_jitter_pct=20),
        "n",
        rng=lambda: next(values),
    )
    assert [round(p.delay(), 6) for _ in range(2)] == [80.0, 120.0]
