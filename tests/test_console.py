"""The serial console, driven as a terminal would drive it: through a real pty pair."""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import Config
from node.configload import load
from node.console.pin import hash_pin
from node.service import RunOptions, Service
from tests.consoleterm import PIN, FakeClock, FakeRunner, Terminal, make_pty, running_console
from tests.sourcedouble import CountingSource

PIN_HASH = hash_pin(PIN, log2_n=10)  # fast for tests; the default is 2**15

CONFIG = f"""\
schema_version = 2

# the unit's identity
[node]
id = "t1"
site = "Test bench"

[capture]
fps = 10   # frames per second
exposure_us = 2000

[console]
pin_hash = "{PIN_HASH}"
max_line = 64
export_dirs = "EXPORT"
"""


@pytest.fixture
def bench() -> Iterator[dict[str, object]]:
    # Unix socket paths are limited to 107 bytes: keep the state dir short.
    with tempfile.TemporaryDirectory(prefix="rn-") as d:
        root = Path(d)
        state = root / "state"
        state.mkdir()
        export = root / "media"
        export.mkdir()
        config = root / "node.toml"
        config.write_text(CONFIG.replace("EXPORT", str(export)))
        yield {
            "root": root,
            "state": state,
            "config": config,
            "export": export,
            "link": root / "ttyTEST",
            "clock": FakeClock(),
            "runner": FakeRunner(),
        }


def console(bench: dict[str, object], cfg: Config | None = None):  # type: ignore[no-untyped-def]
    config = bench["config"]
    assert isinstance(config, Path)
    return running_console(
        cfg or load(config),
        bench["state"],  # type: ignore[arg-type]
        config,
        bench["link"],  # type: ignore[arg-type]
        bench["clock"],  # type: ignore[arg-type]
        bench["runner"],  # type: ignore[arg-type]
    )


def audit_lines(state: Path) -> list[dict[str, object]]:
    path = state / "console-audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def audit_text(state: Path) -> str:
    """The audit log without its timestamps and port paths, which may hold any digits
    (a time ending in .800008Z holds "0000"): what is left is what the console chose to log."""
    events = audit_lines(state)
    for event in events:
        assert isinstance(event.pop("ts"), str)
        event.pop("port", None)
    return "\n".join(json.dumps(event) for event in events)


def unlock(term: Terminal, command: str) -> str:
    """Type a command that needs the PIN, then the PIN; the output after the PIN."""
    out = term.command(command, prompt=b"PIN: ")
    assert "PIN: " in out
    return term.command(PIN, prompt=b"t1# ")


# --- without the service ---------------------------------------------------------------------


def test_commands_answer_when_the_service_is_down(bench: dict[str, object]) -> None:
    term = make_pty(bench["link"])  # type: ignore[arg-type]
    with console(bench):
        banner = term.expect(b"t1> ")
        assert "service  NOT RUNNING" in banner
        assert "node     t1  Test bench" in banner

        out = term.command("help")
        assert "status" in out
        assert "config show|get|set|diff|apply" in out
        assert all(len(line) <= 80 for line in out.split("\r\n"))
        assert all(32 <= ord(c) < 127 or c in "\r\n" for c in out)
        assert "config confirm" in term.command("help config")
        assert "did you mean `status`?" in term.command("stauts")
        assert "did you mean `config`?" in term.command("help confg")

        out = term.command("status")
        assert "service not running" in out
        assert "`service start` starts it" in out
        assert "systemd  roadnode.service inactive" in out

        assert "utc" in term.command("time")
        assert "UTC" in term.command("time")
        assert "free of" in term.command("disk")
        assert "no USB stick mounted" in term.command("disk")
        assert "throttle" in term.command("temp")
        assert "cellular" in term.command("net")
        assert "uplink   not known: the service is not running" in term.command("net")
        assert "service not running" in term.command("violations 5")
        assert "service not running" in term.command("camera")
        assert "must be a whole number 1..100" in term.command("detections 0")
        queue = term.command("queue")
        assert "queue" in queue
        assert "not running" not in queue
        assert "capture.fps = 10" in term.command("config get capture.fps")
        assert "did you mean 'capture.fps'" in term.command("config get capture.fsp")
        shown = term.command("config show")
        assert "# the unit's identity" in shown
        assert PIN_HASH not in shown
        assert "pin_hash = <redacted>" in shown
        assert "pin_hash = <set>" in term.command("config show console")


def test_line_editing_like_a_terminal(bench: dict[str, object]) -> None:
    term = make_pty(bench["link"])  # type: ignore[arg-type]
    with console(bench):
        term.expect(b"t1> ")
        # LF only, CRLF (one command, not a second empty one), CR only
        assert "UTC" in term.command("time", end=b"\n")
        assert "UTC" in term.command("time", end=b"\r\n")
        # had the LF of the CRLF ended a second (empty) line, its prompt would come first
        assert "free of" in term.command("disk")
        # backspace (0x7f and 0x08) erases with BS SP BS; the fixed line runs
        out = term.command("tinx\x7f\x7fme")
        assert "\x08 \x08\x08 \x08" in out
        assert "UTC" in out
        out = term.command("tiq\x08me")
        assert "UTC" in out
        # Ctrl-C drops the line: nothing runs, a fresh prompt comes
        term.send(b"reboot")
        out = term.command("\x03", prompt=b"t1> ", end=b"")
        assert "^C" in out
        assert "reboot" not in out.split("^C")[1]
        # arrow keys (escape sequences) are swallowed, not echoed
        out = term.command("ti\x1b[A\x1b[Dme")
        assert "[A" not in out
        assert "UTC" in out
        runner = bench["runner"]
        assert isinstance(runner, FakeRunner)
        assert not any("reboot" in c for c in runner.calls)


# --- PIN -------------------------------------------------------------------------------------


def test_pin_lockout_grows_and_survives_reconnecting(bench: dict[str, object]) -> None:
    clock = bench["clock"]
    runner = bench["runner"]
    assert isinstance(clock, FakeClock)
    assert isinstance(runner, FakeRunner)
    term = make_pty(bench["link"])  # type: ignore[arg-type]
    with console(bench):
        term.expect(b"t1> ")
        for left in (4, 3, 2, 1):
            term.command("service restart", prompt=b"PIN: ")
            out = term.command("0000")
            assert f"wrong PIN ({left} more before a lockout)" in out
            assert "0000" not in out  # the PIN echoes as stars
            assert "****" in out
        term.command("service restart", prompt=b"PIN: ")
        assert "wrong PIN: locked for 60 s" in term.command("9999")
        # locked: not even asked for the PIN, the right one is not accepted either
        assert "locked for 60 s more" in term.command("service restart")
    assert runner.ran("systemctl", "restart", "roadnode.service") == 0

    # a new connection (the console restarted, the cable replugged) is still locked
    term = make_pty(bench["link"])  # type: ignore[arg-type]
    with console(bench):
        term.expect(b"t1> ")
        clock.advance(30)
        assert "locked for 30 s more" in term.command("service restart")
        clock.advance(31)
        term.command("service restart", prompt=b"PIN: ")
        assert "wrong PIN: locked for 120 s" in term.command("1234")  # the lockout doubled
        clock.advance(121)
        out = unlock(term, "service restart")
        assert "roadnode.service: restart done" in out
        # unlocked now: no second prompt
        assert "restart done" in term.command("service restart", prompt=b"t1# ")
        assert "locked" in term.command("lock")
    assert runner.ran("systemctl", "restart", "roadnode.service") == 2

    # the audit log has every attempt and command, never the PINs typed
    state = bench["state"]
    assert isinstance(state, Path)
    text = audit_text(state)
    for secret in (PIN, "0000", "9999", "1234", PIN_HASH):
        assert secret not in text
    events = audit_lines(state)
    outcomes = [e["outcome"] for e in events if e["event"] == "pin"]
    assert outcomes.count("wrong") == 4
    assert outcomes.count("locked_out") == 2
    assert outcomes.count("locked") == 2
    assert outcomes.count("ok") == 1
    restarts = [e for e in events if e.get("cmd") == "service"]
    assert [e["args"] for e in restarts] == [["restart"], ["restart"]]
    assert all(e["unlocked"] for e in restarts)
    assert oct(os.stat(state / "console-pin.json").st_mode & 0o777) == "0o600"


def test_no_pin_configured_means_read_only(bench: dict[str, object]) -> None:
    config = bench["config"]
    assert isinstance(config, Path)
    cfg = load(config, ['console.pin_hash=""'])
    term = make_pty(bench["link"])  # type: ignore[arg-type]
    with console(bench, cfg):
        assert "no PIN set on this unit: read-only" in term.expect(b"t1> ")
        out = term.command("reboot")
        assert "refused: no technician PIN is set" in out
        assert "UTC" in term.command("time")
    runner = bench["runner"]
    assert isinstance(runner, FakeRunner)
    assert runner.ran("systemctl", "reboot") == 0


def test_idle_timeout_locks_and_pin_for_everything(bench: dict[str, object]) -> None:
    clock = bench["clock"]
    runner = bench["runner"]
    assert isinstance(clock, FakeClock)
    assert isinstance(runner, FakeRunner)
    config = bench["config"]
    assert isinstance(config, Path)
    cfg = load(config, ["console.read_only_without_pin=false", "console.idle_timeout_s=60"])
    term = make_pty(bench["link"])  # type: ignore[arg-type]
    with console(bench, cfg):
        assert "every command needs the PIN" in term.expect(b"t1> ")
        assert "utc" in unlock(term, "time")
        assert "reboot the unit now?" in term.command("reboot", prompt=b"type yes: ")
        assert "not rebooted" in term.command("no", prompt=b"t1# ")
        clock.advance(61)
        assert "idle for 61 s: locked" in term.expect(b"t1> ")
        assert "PIN: " in term.command("time", prompt=b"PIN: ")
        assert "cancelled" in term.command("\x03", end=b"")
        term.command("reboot", prompt=b"PIN: ")
        term.command(PIN, prompt=b"type yes: ")
        assert "rebooting" in term.command("yes", prompt=b"t1# ")
    assert runner.ran("systemctl", "reboot") == 1


# --- config ----------------------------------------------------------------------------------


def test_staged_apply_reverts_by_itself_unless_confirmed(bench: dict[str, object]) -> None:
    clock = bench["clock"]
    runner = bench["runner"]
    config = bench["config"]
    state = bench["state"]
    assert isinstance(clock, FakeClock)
    assert isinstance(runner, FakeRunner)
    assert isinstance(config, Path)
    assert isinstance(state, Path)
    original = config.read_bytes()
    restart = ("systemctl", "restart", "roadnode.service")
    term = make_pty(bench["link"])  # type: ignore[arg-type]
    with console(bench):
        term.expect(b"t1> ")
        assert "nothing staged" in term.command("config diff")
        out = unlock(term, "config set capture.fps 12")
        assert "staged capture.fps = 12" in out
        out = term.command("config set capture.fps 0", prompt=b"t1# ")
        assert "capture.fps: refused" in out
        assert "must be between 1 and 60, got 0" in out
        out = term.command("config set node.id=t2", prompt=b"t1# ")
        assert 'staged node.id = "t2"' in out
        diff = term.command("config diff", prompt=b"t1# ")
        assert "-fps = 10   # frames per second" in diff
        assert "+fps = 12  # frames per second" in diff
        assert '+id = "t2"' in diff
        assert "capture.fps = 12" in term.command("config get capture.fps", prompt=b"t1# ")
        assert config.read_bytes() == original  # nothing written before apply

        out = term.command("config apply", prompt=b"t1# ")
        assert "applied capture.fps, node.id" in out
        assert "confirm` within 120 s" in out
        assert load(config).capture.fps == 12
        assert "# the unit's identity" in config.read_text()  # comments kept
        assert runner.ran(*restart) == 1
        assert "NOT confirmed: reverts in 120 s" in term.command("status", prompt=b"t1# ")

        clock.advance(119)
        time.sleep(0.3)
        assert load(config).capture.fps == 12
        clock.advance(2)
        notice = term.expect(b"t1# ")
        assert "not confirmed within 120 s: reverted" in notice
        assert config.read_bytes() == original
        assert runner.ran(*restart) == 2

        # apply again and confirm: it stays
        term.command("config set capture.fps 15", prompt=b"t1# ")
        term.command("config apply", prompt=b"t1# ")
        assert "confirmed" in term.command("config confirm", prompt=b"t1# ")
        clock.advance(500)
        time.sleep(0.3)
        assert load(config).capture.fps == 15
        assert (state / "console-config.prev.toml").read_bytes() == original

        # revert of staged edits just drops them
        term.command("config set capture.fps 20", prompt=b"t1# ")
        assert "discarded 1 staged change" in term.command("config revert", prompt=b"t1# ")
        assert "nothing staged" in term.command("config apply", prompt=b"t1# ")
    assert load(config).capture.fps == 15


def test_an_unconfirmed_apply_reverts_after_a_console_restart(bench: dict[str, object]) -> None:
    clock = bench["clock"]
    config = bench["config"]
    assert isinstance(clock, FakeClock)
    assert isinstance(config, Path)
    original = config.read_bytes()
    term = make_pty(bench["link"])  # type: ignore[arg-type]
    with console(bench):
        term.expect(b"t1> ")
        unlock(term, "config set capture.fps 30")
        term.command("config apply", prompt=b"t1# ")
    assert load(config).capture.fps == 30  # the console died before the confirmation
    clock.advance(200)
    term = make_pty(bench["link"])  # type: ignore[arg-type]
    with console(bench):
        term.expect(b"t1> ")
        deadline = time.monotonic() + 30  # generous: a loaded 2-core CI machine
        while config.read_bytes() != original:
            assert time.monotonic() < deadline, "not reverted"
            time.sleep(0.05)


# --- robustness ------------------------------------------------------------------------------


def test_garbage_noise_and_overlong_lines(bench: dict[str, object]) -> None:
    runner = bench["runner"]
    assert isinstance(runner, FakeRunner)
    term = make_pty(bench["link"])  # type: ignore[arg-type]
    with console(bench) as (con, _ctx):
        term.expect(b"t1> ")
        out = term.command("x" * 200)
        assert "line longer than 64 characters: ignored" in out
        assert out.count("x") == 64  # echo stopped at the cap
        assert "\x07" in out
        # a wrong baud rate's garbage: bytes >= 0x80 and control codes
        rng = random.Random(7)
        noise = bytes(rng.choice([*range(0x80, 0x100), 0x00, 0x01, 0x1A]) for _ in range(400))
        term.send(noise)
        assert "is the terminal set to 115200 baud" in term.expect(b"t1> ")
        # full binary noise, line ends included: the console answers every line and lives on
        noise = bytes(rng.randrange(256) for _ in range(4000))
        term.send(noise + b"\x03\x03\rtime\r")  # the first ^C ends any escape sequence
        term.expect(b"UTC")
        term.expect(b"t1> ")
        assert "UTC" in term.command("time")
        assert con.losses == 0
    assert not any(c[:2] == ["systemctl", "reboot"] for c in runner.calls)


def test_the_port_goes_away_and_comes_back(bench: dict[str, object]) -> None:
    link = bench["link"]
    assert isinstance(link, Path)
    term = make_pty(link)
    with console(bench) as (con, _ctx):
        term.expect(b"t1> ")
        assert "UTC" in term.command("time")
        os.close(term.master)  # the cable is pulled: the pty is gone
        link.unlink()  # ... and the device node with it
        deadline = time.monotonic() + 10
        while con.losses < 1:
            assert time.monotonic() < deadline, "the console did not notice the loss"
            time.sleep(0.05)
        time.sleep(1.0)  # a few reopen attempts fail meanwhile
        term = make_pty(link)  # the adapter is plugged in again
        banner = term.expect(b"t1> ")
        assert "console on" in banner
        assert "UTC" in term.command("time")
        assert con.sessions == 2
    state = bench["state"]
    assert isinstance(state, Path)
    events = [e["event"] for e in audit_lines(state)]
    assert events.count("port_open") == 2
    assert events.count("port_lost") == 1


def test_audit_keeps_no_free_text(bench: dict[str, object]) -> None:
    term = make_pty(bench["link"])  # type: ignore[arg-type]
    with console(bench):
        term.expect(b"t1> ")
        term.command("30A12345")  # a plate typed at the prompt by mistake
        term.command("logs 3")
        unlock(term, "config set console.pin_hash nonsense")
    state = bench["state"]
    assert isinstance(state, Path)
    text = audit_text(state)
    assert "30A12345" not in text
    assert "nonsense" not in text
    events = audit_lines(state)
    assert {"event": "unknown_command", "length": 8}.items() <= events[1].items()
    logs = next(e for e in events if e.get("cmd") == "logs")
    assert logs["args"] == ["3"]
    assert logs["outcome"] == "ok"
    config_set = next(e for e in events if e.get("cmd") == "config")
    assert config_set["args"] == ["set", "console.pin_hash", "<redacted>"]


# --- with the service ------------------------------------------------------------------------


def test_commands_with_the_service_running(bench: dict[str, object]) -> None:
    state = bench["state"]
    export = bench["export"]
    config = bench["config"]
    assert isinstance(state, Path)
    assert isinstance(export, Path)
    assert isinstance(config, Path)
    cfg = load(config)
    service = Service(cfg, RunOptions(state), source=CountingSource(fps=50), stages=[])
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30  # generous: a loaded 2-core CI machine
        while service.pipeline.counters.processed < 3:
            assert time.monotonic() < deadline, "service did not start"
            time.sleep(0.01)
        term = make_pty(bench["link"])  # type: ignore[arg-type]
        with console(bench, cfg):
            assert "service  running" in term.expect(b"t1> ")
            out = term.command("status")
            assert "node t1" in out
            assert "source   double://counting" in out
            out = term.command("camera")
            assert "source   double://counting" in out
            assert "main 128x96, lores 64x48" in out
            assert "brightness" in out
            assert "sharpness" in out
            out = term.command("camera snapshot")
            assert "128x96" in out
            assert "sharpness" in out
            assert (state / "snapshots" / "latest.jpg").exists()
            out = term.command("detections")
            assert "detections: detector" in out
            out = term.command("aim")
            assert "aim: one line a second" in out
            assert "frame sharp" in out
            clock = bench["clock"]
            assert isinstance(clock, FakeClock)
            clock.advance(1.0)  # live: a new line each second
            assert "frame sharp" in term.expect(b"\r\n")
            term.send(b" ")
            assert "(stopped)" in term.expect(b"t1> ")
            assert "signal" in term.command("signal")
            assert "violations" in term.command("violations")

            dest = export / "aim.jpg"
            out = unlock(term, f"camera snapshot {dest}")
            assert f"wrote {dest}" in out
            assert dest.read_bytes()[:2] == b"\xff\xd8"
            out = term.command(f"camera snapshot {dest}", prompt=b"t1# ")
            assert "already exists" in out
            out = term.command("camera snapshot /etc/aim.jpg", prompt=b"t1# ")
            assert "may only be written under" in out
            out = term.command(f"camera snapshot {export}/../x.jpg", prompt=b"t1# ")
            assert "may only be written under" in out
    finally:
        service.request_stop("test")
        thread.join(5)
