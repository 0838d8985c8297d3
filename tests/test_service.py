"""Service runtime: control socket, sd_notify on a real socket, SIGTERM, the demo summary."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.capture.frame import Frame
from node.config import Config
from node.control import ControlError, ControlServer, query, socket_path
from node.service import RunOptions, Service, final_summary
from tests.sourcedouble import CountingSource


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes: keep the state dir short.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rn-") as d:
        yield Path(d)


def start_service(service: Service) -> threading.Thread:
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30  # generous: a loaded 2-core CI machine
    while service.pipeline.counters.processed == 0:
        assert time.monotonic() < deadline, "service did not start"
        time.sleep(0.01)
    return thread


def test_control_socket_answers_status(state_dir: Path) -> None:
    service = Service(Config(), RunOptions(state_dir), source=CountingSource(fps=50), stages=[])
    thread = start_service(service)
    try:
        reply = query(state_dir, {"cmd": "status"})
        assert reply["ok"] is True
        assert reply["node_id"] == "demo-node-01"
        assert reply["frames"]["in"] >= 1
        assert set(reply["latency"]) == {"capture", "queue", "total"}
        assert reply["queues"]["detect"]["capacity"] == 4
        assert reply["disk"]["free_bytes"] > 0
        mode = stat.S_IMODE(os.stat(socket_path(state_dir)).st_mode)
        assert mode == 0o660
        assert query(state_dir, {"cmd": "nope"}) == {
            "ok": False,
            "error": "unknown command 'nope'",
        }
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(str(socket_path(state_dir)))
            raw.sendall(b"not json\n")
            answer = json.loads(raw.makefile("rb").readline())
        assert answer["ok"] is False
        assert answer["error"].startswith("bad request")
        with pytest.raises(ControlError, match="another roadnode service is running"):
            ControlServer(state_dir, lambda r: r)
    finally:
        service.request_stop("test")
        thread.join(30)
    assert not thread.is_alive()
    assert not socket_path(state_dir).exists()
    with pytest.raises(ControlError, match="no roadnode service running"):
        query(state_dir, {"cmd": "status"})


def test_stale_socket_is_replaced(state_dir: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path(state_dir)))
    stale.close()  # file left behind, nobody listening: as after kill -9
    server = ControlServer(state_dir, lambda r: {"ok": True, "echo": r["cmd"]})
    server.start()
    try:
        assert query(state_dir, {"cmd": "hi"}) == {"ok": True, "echo": "hi"}
    finally:
        server.close()


def test_sd_notify_ready_watchdog_only_while_frames_advance(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock_path = state_dir / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(sock_path))
    receiver.settimeout(0.05)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    cfg = Config()
    t0 = time.monotonic()
    last_frame = [0.0]  # when the camera gave its last frame, in seconds after t0

    class HangingCamera(CountingSource):
        def read(self) -> Frame | None:
            frame = super().read()
            if frame is not None:
                last_frame[0] = time.monotonic() - t0
            return frame

    source = HangingCamera(fps=100, stall_after=30)  # the camera hangs after 0.3 s
    service = Service(cfg, RunOptions(state_dir, duration_s=1.6), source=source, stages=[])
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    got: list[tuple[float, str]] = []
    while thread.is_alive() or time.monotonic() - t0 < 1.7:
        try:
            got.append((time.monotonic() - t0, receiver.recv(4096).decode()))
        except TimeoutError:
            continue
    receiver.close()
    messages = [m for _, m in got]
    assert messages.count("READY=1") == 1
    assert any(m.startswith("STATUS=frames ") for m in messages)
    pings = [t for t, m in got if m == "WATCHDOG=1"]
    assert pings, "no watchdog ping while frames advanced"
    # measured from the camera's last frame, not from t0: a slow start on a loaded machine
    # moves the hang later, and the pings that rightly came before it with it
    hung = last_frame[0]
    assert source.seq == 30
    assert max(pings) < hung + 0.4, f"watchdog kept being fed after the hang at {hung:.2f}: {pings}"
    assert messages[-1] == "STOPPING=1"


def test_no_notify_socket_is_a_no_op(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    service = Service(
        Config(), RunOptions(state_dir, duration_s=0.3), source=CountingSource(), stages=[]
    )
    assert service.run() == 0
    assert not service.notifier.enabled


def roadnode(*args: str) -> list[str]:
    return [sys.executable, "-m", "node", *args]


@pytest.mark.slow
def test_sigterm_exits_zero_within_5s(state_dir: Path) -> None:
    proc = subprocess.Popen(
        roadnode("run", "--state-dir", str(state_dir), "--source", "sim://junction?seed=3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if query(state_dir, {"cmd": "status"})["frames"]["processed"] > 0:
                    break
            except ControlError:
                pass
            assert time.monotonic() < deadline, "service never processed a frame"
            time.sleep(0.1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop"
    assert "summary (SIGTERM" in out
    assert "stopped (SIGTERM)" in err


@pytest.mark.slow
def test_run_prints_progress_and_summary(state_dir: Path) -> None:
    res = subprocess.run(
        roadnode(
            "run",
            "--state-dir",
            str(state_dir),
            "--source",
            "sim://junction?seed=5",
            "--duration",
            "5",
            "--progress",
        ),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    progress = [line for line in res.stdout.splitlines() if line.startswith("[")]
    assert len(progress) >= 2
    assert "summary (duration reached" in res.stdout
    assert "frames " in res.stdout


def test_status_command_without_service(state_dir: Path) -> None:
    res = subprocess.run(
        roadnode("status", "--state-dir", str(state_dir)),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1
    assert res.stderr.startswith("roadnode: no roadnode service running on ")


def test_a_refused_model_leaves_the_rest_running(state_dir: Path) -> None:
    from node.configload import load

    cfg = load(None, [f"detector.model={json.dumps(str(state_dir / 'absent.json'))}"])
    service = Service(cfg, RunOptions(state_dir, duration_s=0.5), source=CountingSource(fps=50))
    assert service.run() == 0
    status = service.status()
    assert status["detector"]["state"] == "failed"
    assert "absent.json: model manifest not found" in status["detector"]["error"]
    assert status["frames"]["processed"] > 5


def test_no_bundled_model_means_no_detector_stage(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.service

    monkeypatch.setattr(node.service, "DEFAULT_MANIFEST", state_dir / "none.json")
    service = Service(Config(), RunOptions(state_dir, duration_s=0.3), source=CountingSource())
    assert service.pipeline.stages == []
    assert service.run() == 0
    assert service.status()["detector"] == {
        "state": "absent",
        "error": "no bundled model in this build",
    }


def test_the_rules_stage_runs_after_the_detector_and_reports_why_rules_are_idle(
    state_dir: Path,
) -> None:
    from node.configload import load
    from tests.test_infer_detector import real_model

    (state_dir / "model").mkdir()
    manifest = real_model(state_dir / "model")
    cfg = load(None, [f"detector.model={json.dumps(str(manifest))}"])
    service = Service(cfg, RunOptions(state_dir, duration_s=0.4), source=CountingSource(fps=50))
    assert [s.name for s in service.pipeline.stages] == ["detector", "rules"]
    assert service.run() == 0
    rules = service.status()["rules"]
    assert rules["state"] == "running"
    assert rules["tracker"]["frames"] > 5  # every processed frame reached the tracker
    assert rules["rules"]["red_light"] == "inactive: no zones.stop_line"
    assert rules["violations"] == 0
    assert any(line.startswith("  violations 0") for line in final_summary(service))


# --- self-healing ----------------------------------------------------------------------------


class FlakyCamera(CountingSource):
    """Hangs after `stall_after` frames on its first opening only (a camera that wedges once)."""

    def __init__(self, stall_after: int) -> None:
        super().__init__(fps=50, stall_after=stall_after)
        self.opens = 0

    def open(self, stop: threading.Event) -> None:
        super().open(stop)
        self.opens += 1
        if self.opens > 1:
            self.stall_after = None


def heal_cfg(**service: object) -> Config:
    from node.configload import load

    return load(None, [f"service.{k}={v}" for k, v in service.items()])


def test_a_hung_camera_is_reconnected_and_frames_flow_again(state_dir: Path) -> None:
    source = FlakyCamera(stall_after=10)
    cfg = heal_cfg(stall_s=1.0)
    service = Service(cfg, RunOptions(state_dir, duration_s=3.0), source=source, stages=[])
    assert service.run() == 0
    assert source.opens == 2
    status = service.status()
    assert status["healing"]["by_kind"] == {"capture": 1}
    assert "no frame for" in status["healing"]["last"]
    assert status["frames"]["in"] > 30  # it went on well past the 10 frames before the hang


class StuckOnce:
    """A stage that blocks forever on its first call of frame `seq` (a wedged interpreter)."""

    name = "stuck"

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.blocked = threading.Event()
        self.seen: list[int] = []

    def process(self, frame: Frame) -> None:
        if frame.seq == self.seq and not self.blocked.is_set():
            self.blocked.set()
            threading.Event().wait()  # never returns; the thread is abandoned
        self.seen.append(frame.seq)


def test_a_stuck_stage_gets_a_new_worker(state_dir: Path) -> None:
    stage = StuckOnce(seq=5)
    cfg = heal_cfg(stall_s=1.0)
    service = Service(
        cfg, RunOptions(state_dir, duration_s=3.0), source=CountingSource(fps=50), stages=[stage]
    )
    assert service.run() == 0
    assert service.status()["healing"]["by_kind"] == {"stages": 1}
    assert max(stage.seen) > 60  # frames after the stuck one were processed by the new worker
    assert 5 not in stage.seen


def test_a_fault_that_keeps_coming_back_spends_the_budget_and_exits_3(state_dir: Path) -> None:
    source = CountingSource(fps=50, stall_after=5)  # hangs after every (re)opening
    cfg = heal_cfg(stall_s=1.0, heal_budget=2)
    service = Service(cfg, RunOptions(state_dir, duration_s=20.0), source=source, stages=[])
    t0 = time.monotonic()
    assert service.run() == 3
    assert time.monotonic() - t0 < 15  # gave up, did not wait for the duration
    assert service.stop_reason.startswith("self-healing budget spent (capture: no frame for")
    assert service.status()["healing"]["heals"] == 2


def test_a_model_refused_at_start_is_loaded_once_it_appears(state_dir: Path) -> None:
    from tests.test_infer_detector import real_model

    (state_dir / "m").mkdir()
    manifest = state_dir / "m" / "plates.json"
    from node.configload import load

    cfg = load(
        None, [f"detector.model={json.dumps(str(manifest))}", "service.detector_retry_s=1.0"]
    )
    service = Service(cfg, RunOptions(state_dir, duration_s=4.0), source=CountingSource(fps=50))
    assert service.status()["detector"]["state"] == "failed"
    timer = threading.Timer(1.0, lambda: real_model(state_dir / "m"))  # an update brings it
    timer.start()
    assert service.run() == 0
    timer.join()
    status = service.status()
    assert status["detector"]["state"] == "running"
    assert status["detector"]["frames"] > 10
    assert [s.name for s in service.pipeline.stages] == ["detector", "rules"]
