"""The console's parts on their own: PIN hashing, line editor, preview, staged edits, CLI."""

from __future__ import annotations

import io
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from node.cli import main
from node.config import Config
from node.configload import ConfigError, load, validate
from node.console.audit import safe_args
from node.console.lineedit import Cancel, Line, LineEditor
from node.console.pin import PinError, PinGuard, hash_pin, verify_pin
from node.console.preview import ascii_preview, decode_jpeg, encode_jpeg, sharpness
from node.console.staged import StagedConfig, StageError, edit_text
from node.console.system import RunResult, throttled_lines
from node.control import query
from node.service import RunOptions, Service
from tests.sourcedouble import CountingSource


def type_in(editor: LineEditor, data: bytes) -> tuple[bytes, list[Line | Cancel]]:
    echo = b""
    events: list[Line | Cancel] = []
    for b in data:
        out, event = editor.feed(b)
        echo += out
        if event is not None:
            events.append(event)
    return echo, events


def test_line_editor_line_ends_erase_cancel_and_cap() -> None:
    ed = LineEditor(max_line=8)
    assert type_in(ed, b"a\rb\nc\r\nd\n\r")[1] == [
        Line("a"),
        Line("b"),
        Line("c"),
        Line("d"),
        Line(""),  # LF then CR is two line ends (only CR LF is one)
    ]
    echo, events = type_in(ed, b"abc\x08\x7fd\r")
    assert events == [Line("ad")]
    assert echo == b"abc\x08 \x08\x08 \x08d\r\n"
    assert type_in(ed, b"\x7f")[0] == b""  # nothing to erase: no echo
    assert type_in(ed, b"abc\x03")[1] == [Cancel()]
    echo, events = type_in(ed, b"0123456789AB\x7f\r")
    assert events == [Line("0123456", overlong=True)]  # refused, even after an erase
    assert echo.count(b"\x07") == 1
    assert type_in(ed, b"x\x1b[1;5Dy\x1bOPz\r")[1] == [Line("xyz")]
    echo, events = type_in(ed, "ä".encode() + b"\x00\xffok\r")
    assert events == [Line("ok")]
    assert ed.take_garbage() == 4
    ed.secret = True
    assert type_in(ed, b"1234\r") == (b"****\r\n", [Line("1234")])


def test_pin_hash_verifies_and_fits_the_config() -> None:
    encoded = hash_pin("2468", log2_n=10)
    assert verify_pin("2468", encoded)
    assert not verify_pin("2469", encoded)
    assert not verify_pin("", encoded)
    assert hash_pin("2468", log2_n=10) != encoded  # a fresh salt each time
    cfg = validate({"console": {"pin_hash": encoded}})
    assert cfg.console.pin_hash == encoded
    default_length = hash_pin("2468")
    assert validate({"console": {"pin_hash": default_length}}).console.pin_hash
    with pytest.raises(ConfigError, match=r"console\.pin_hash: must match"):
        validate({"console": {"pin_hash": "2468"}})  # a PIN in clear is refused
    with pytest.raises(PinError, match="4 to 64 printable"):
        hash_pin("12 4")
    with pytest.raises(PinError, match="out of range"):
        verify_pin("2468", encoded.replace("scrypt$10$", "scrypt$30$"))


def test_damaged_lockout_file_locks_rather_than_resets(tmp_path: Path) -> None:
    now = [1000.0]
    guard = PinGuard(tmp_path, hash_pin("2468", log2_n=10), 3, 10.0, 40.0, lambda: now[0])
    assert guard.check("2468").ok
    (tmp_path / "console-pin.json").write_text("{not json")
    assert guard.check("2468").locked_s == 40.0
    now[0] += 41
    assert guard.check("2468").ok
    for _ in range(2):
        assert guard.check("0000").left > 0
    assert guard.check("0000").locked_s == 10.0
    now[0] -= 10_000  # the clock stepped back: never locked longer than the lockout itself
    assert guard.locked_for() == 10.0


def test_sharpness_ranks_focus_and_preview_shows_shapes() -> None:
    rng = np.random.default_rng(1)
    sharp = (rng.random((240, 320)) > 0.5).astype(np.uint8) * 255
    sharp_rgb = np.repeat(sharp[..., None], 3, axis=2)
    k = np.ones(5) / 5  # a box blur, along both axes
    blurred = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, sharp.astype(float))
    blurred = np.apply_along_axis(lambda c: np.convolve(c, k, "same"), 0, blurred)
    assert sharpness(sharp_rgb) > 5 * sharpness(blurred.astype(np.uint8))
    assert sharpness(np.full((50, 50, 3), 128, np.uint8)) == 0.0

    image = np.zeros((90, 160, 3), np.uint8)
    image[:, 80:] = 255  # right half bright
    lines = ascii_preview(image, 40)
    assert len(lines) == round(90 / 160 * 40 * 0.5)
    assert all(line.startswith(" " * 20) and line.endswith("@" * 20) for line in lines)
    round_trip = decode_jpeg(encode_jpeg(image))
    assert round_trip.shape == image.shape
    with pytest.raises(ValueError, match="JPEG: cannot decode"):
        decode_jpeg(b"not a jpeg")


def test_edit_keeps_comments_and_falls_back_when_it_cannot() -> None:
    text = '[capture]\nfps = 10  # "quoted # not a comment"\n\n[node]\nid = "a#b"  # id\n'
    new, kept = edit_text(text, "node.id", "c")
    assert kept
    assert new.endswith('id = "c"  # id\n')
    new, kept = edit_text(text, "capture.exposure_us", 3000)
    assert kept
    assert "[capture]\nexposure_us = 3000\nfps = 10" in new
    new, kept = edit_text(text, "signal.source", "plan")
    assert kept
    assert new.endswith('\n[signal]\nsource = "plan"\n')
    multi = "[zones]\nstop_line = [\n  [1, 2],\n  [3, 4],\n]\n"
    new, kept = edit_text(multi, "zones.stop_line", [[5, 6], [7, 8]])
    assert not kept
    assert tomllib.loads(new) == {"zones": {"stop_line": [[5, 6], [7, 8]]}}


def test_staged_set_refuses_what_the_schema_refuses(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text("schema_version = 2\n")
    staged = StagedConfig(config, tmp_path, lambda: "reloaded", 60.0)
    with pytest.raises(StageError, match=r"did you mean 'capture\.fps'"):
        staged.set("capture.fsp", "10")
    with pytest.raises(StageError, match="list of tables"):
        staged.set("zones.lanes", "[]")
    with pytest.raises(StageError, match="is a table"):
        staged.set("rules.speeding", "1")
    with pytest.raises(StageError) as refused:
        staged.set("capture.lores_height", "1088")
    assert any("must not exceed the main stream" in p for p in refused.value.problems)
    staged.set("capture.fps", "12")
    config.write_text("schema_version = 2\n[capture]\nfps = 11\n")  # someone else edits
    with pytest.raises(StageError, match="changed on disk"):
        staged.apply()
    old = tmp_path / "old.toml"
    old.write_text("[camera]\nfps = 5\n")
    with pytest.raises(StageError, match="schema version 1"):
        StagedConfig(old, tmp_path, lambda: "", 60.0).set("capture.fps", "6")
    with pytest.raises(StageError, match="no config file"):
        StagedConfig(None, tmp_path, lambda: "", 60.0).set("capture.fps", "6")


def test_audit_args_hide_secrets() -> None:
    assert safe_args(["set", "console.pin_hash", "scrypt$1"]) == [
        "set",
        "console.pin_hash",
        "<redacted>",
    ]
    assert safe_args(["set", "uplink.token=abc"]) == ["set", "uplink.token=<redacted>"]
    assert safe_args(["snapshot", "/media/usb0/a.jpg"]) == ["snapshot", "/media/usb0/a.jpg"]
    assert safe_args(["set", "node.site", "Cau Giay ñ"]) == ["set", "node.site", "<10 chars>"]


def test_throttle_bits_are_decoded() -> None:
    lines = throttled_lines(RunResult(0, "throttled=0x50005\n"))
    assert lines[0] == "throttle 0x50005:"
    assert "under-voltage now" in lines[1]
    assert "throttled now" in lines[2]
    assert "under-voltage has occurred" in lines[3]
    assert throttled_lines(RunResult(0, "throttled=0x0\n"))[0].startswith("throttle none")


@pytest.fixture
def short_state() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rn-") as d:
        yield Path(d)


def test_control_commands_answer_from_the_service(short_state: Path) -> None:
    service = Service(Config(), RunOptions(short_state), source=CountingSource(fps=50), stages=[])
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30  # generous: a loaded 2-core CI machine
        while service.pipeline.counters.processed < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        snap = query(short_state, {"cmd": "snapshot"})
        assert snap["ok"]
        assert snap["width"] == 128
        assert snap["height"] == 96
        data = Path(snap["path"]).read_bytes()
        assert decode_jpeg(data).shape == (96, 128, 3)
        cam = query(short_state, {"cmd": "camera"})
        assert cam["frame"]["lores"] == [64, 48]
        assert cam["fps_asked"] == 10.0
        det = query(short_state, {"cmd": "detections", "n": 5})
        assert det == {"ok": True, "available": False, "detector": service.detector_status()}
        bad = query(short_state, {"cmd": "detections", "n": 0})
        assert bad["ok"] is False
        assert "n: must be a whole number" in bad["error"]
        assert query(short_state, {"cmd": "violations"})["available"] is False
        assert query(short_state, {"cmd": "upload_now"}) == {
            "ok": False,
            "error": "uplink off: uplink.url not set",
        }
        assert query(short_state, {"cmd": "no_such_thing"}) == {
            "ok": False,
            "error": "unknown command 'no_such_thing'",
        }
    finally:
        service.request_stop("test")
        thread.join(5)


def test_cli_console_pin_and_bad_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("13579\n"))
    assert main(["console-pin", "--stdin"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith('pin_hash = "scrypt$15$8$1$')
    encoded = line.split('"')[1]
    assert verify_pin("13579", encoded)
    config = tmp_path / "node.toml"
    config.write_text(f'[console]\npin_hash = "{encoded}"\n')
    assert load(config).console.pin_hash == encoded
    monkeypatch.setattr("sys.stdin", io.StringIO("1 2\n"))
    assert main(["console-pin", "--stdin"]) == 1
    assert "4 to 64 printable" in capsys.readouterr().err
