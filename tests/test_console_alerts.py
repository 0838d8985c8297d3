"""Hotlist alerts on the console: the rules stage keeps each hit (no plate text), the control
socket's `alerts` request answers with them, and the console's `alerts` command lists them."""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from node.capture.frame import ArrayRef, Frame
from node.config import Config, RulesConfig, TrackerConfig
from node.configload import load
from node.control import query
from node.evidence.packet import iso_utc
from node.infer.detector import FrameDetections
from node.infer.reader import PlateRead, make_read
from node.plates.hotlist import Hotlist, HotlistHit
from node.plates.track import TrackReader
from node.rules.signal import FrameSignal
from node.rules.stage import HotlistAlert, HotlistSink, ViolationStage
from node.rules.tracker import Tracker
from node.rules.violations import ViolationRules
from node.rules.zones import Zones
from node.service import RunOptions, Service
from tests.consoleterm import make_pty
from tests.sourcedouble import CountingSource
from tests.test_console import bench, console  # noqa: F401  (the fixture and the helper)
from tests.test_rules_stage import plate
from tests.test_violations import FRAME_NS, UTC0, ZONES

HOTLIST = {
    "version": 1,
    "entries": [
        {"plate": "98A-123.45", "reason": "STOLEN"},
        {"plate": "30E-678.90", "reason": "WANTED"},
    ],
}
# every piece of plate text that is read or listed: none may reach the console's side
PLATE_TEXT = ("98A", "12345", "123.45", "30E", "67890", "67891", "678.9")
LEFT_READ = (("98A12345",), ((0.99,) * 8,))  # exact, high confidence
RIGHT_READ = (("30E67891",), ((0.95,) * 7 + (0.5,),))  # one character off, low confidence
BRIGHT = 200  # the right half of the main image: the crop tells the reader which plate it is

# plate A drives up the left half from frame 0, plate B up the right half from frame 10
PLATES = {
    s: [plate(600.0, 705.0 - 20.0 * s)]
    + ([plate(1400.0, 705.0 - 20.0 * (s - 10))] if 10 <= s < 40 else [])
    for s in range(40)
}


class HalfReader:
    """A `CropReader`: reads the left half's plate as `LEFT_READ`, the right's as `RIGHT_READ`."""

    def read_crop(self, crop: npt.NDArray[np.uint8], seq: int = -1) -> PlateRead:
        rows, confs = RIGHT_READ if crop.mean() > BRIGHT / 2 else LEFT_READ
        return make_read(rows, confs, seq)


def drive(
    hotlist: Hotlist | None = None, on_hotlist: HotlistSink | None = None, frames: int = 50
) -> ViolationStage:
    """A real ViolationStage with a real TrackReader over `hotlist`, fed `frames` frames whose
    monotonic times end about now (so ages are real)."""
    base = time.monotonic_ns() - frames * FRAME_NS
    main = np.zeros((1080, 1920, 3), np.uint8)
    main[:, 960:] = BRIGHT
    lores = np.zeros((4, 4, 3), np.uint8)
    results = {
        s: FrameDetections(s, base + s * FRAME_NS, tuple(PLATES.get(s, ()))) for s in range(frames)
    }
    stage = ViolationStage(
        results.get,
        Tracker(TrackerConfig(), utc_offset_ns=UTC0 - base),
        FrameSignal(2.0),
        ViolationRules(RulesConfig(), Zones.from_config(ZONES)),
        reader=TrackReader(HalfReader(), every_n_frames=2, hotlist=hotlist),
        on_hotlist=on_hotlist,
        main_image=lambda f: main,
    )
    for s in range(frames):
        meta: dict[str, float | int | str] = {"signal_phase": "GREEN"}
        stage.process(
            Frame(s, base + s * FRAME_NS, UTC0 + s * FRAME_NS, lores, ArrayRef(main), meta)
        )
    return stage


def hotlist() -> Hotlist:
    return Hotlist.parse(HOTLIST, "test")


def no_plate_text(text: str) -> None:
    for piece in PLATE_TEXT:
        assert piece not in text, f"plate text {piece!r} leaked: {text[:200]!r}"


# --- the stage -------------------------------------------------------------------------------


def test_the_stage_keeps_each_hit_with_reason_and_match_but_no_plate() -> None:
    told: list[tuple[HotlistHit, int]] = []
    stage = drive(hotlist(), lambda hit, fused, tid, frame, crop: told.append((hit, tid)))
    # the alert packet's sink still gets the full hit (with the plate) once per track
    assert sorted(h.reason for h, _ in told) == ["STOLEN", "WANTED"]
    assert stage.stats()["hotlist_alerts"] == 2
    newest, oldest = stage.alerts(10)
    assert stage.alerts(1) == [newest]  # newest first
    assert oldest.utc_ns < newest.utc_ns
    assert (oldest.reason, oldest.match, oldest.fuzzy) == ("STOLEN", "exact", False)
    assert (newest.reason, newest.match, newest.fuzzy) == ("WANTED", "fuzzy", True)
    assert oldest.confidence == pytest.approx(0.99**8, abs=0.01)
    assert newest.confidence < 0.8  # why it was allowed to match one character off
    assert {oldest.track_id, newest.track_id} == {tid for _, tid in told}
    assert UTC0 <= oldest.utc_ns < UTC0 + 50 * FRAME_NS  # the frame's own UTC time
    assert 0 < time.monotonic_ns() - newest.mono_ns < 3600 * 10**9  # a monotonic time
    # what is kept has no field for the plate, and holds none of its text
    assert {f.name for f in dataclasses.fields(HotlistAlert)} == {
        "mono_ns", "utc_ns", "track_id", "reason", "fuzzy", "confidence",
    }  # fmt: skip
    # (the monotonic times are left out: a clock reading may hold "12345" by chance)
    no_plate_text(repr([dataclasses.replace(a, mono_ns=0) for a in stage.alerts(10)]))


def test_no_hotlist_no_alerts_and_the_keep_is_bounded() -> None:
    stage = drive(None)
    assert stage.alerts(10) == []
    assert stage.stats()["hotlist_alerts"] == 0
    assert stage.stats()["reader"]["reads"] > 0  # plates were read, none was on a list
    image = np.zeros((4, 4, 3), np.uint8)
    frame = Frame(0, 0, UTC0, image, ArrayRef(image), {})
    for track in range(60):  # more than are kept
        stage.recent_alerts.append(
            HotlistAlert(frame.mono_ns, frame.utc_ns, track, "X", False, 0.9)
        )
    assert len(stage.alerts(100)) == 50
    assert stage.alerts(1)[0].track_id == 59
    assert stage.alerts(0) == []


# --- the control socket and the console, against a running service ---------------------------


@contextmanager
def running_service(cfg: Config, state: Path) -> Iterator[Service]:
    service = Service(cfg, RunOptions(state), source=CountingSource(fps=50), stages=[])
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30  # generous: a loaded 2-core CI machine
        while service.pipeline.counters.processed < 2:
            assert time.monotonic() < deadline, "service did not start"
            time.sleep(0.01)
        yield service
    finally:
        service.request_stop("test")
        thread.join(5)


@pytest.fixture
def short_state() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rn-") as d:  # socket paths are short
        yield Path(d)


def test_the_alerts_request_validates_n_and_answers_without_plates(short_state: Path) -> None:
    stage = drive(hotlist())
    with running_service(Config(), short_state) as service:
        # no rules stage (no detector in this build): said so, as `violations` does
        absent = query(short_state, {"cmd": "alerts"})
        assert absent == {"ok": True, "available": False, "rules": service.rules_status()}
        assert absent == {**query(short_state, {"cmd": "violations"}), "rules": absent["rules"]}
        for bad in (0, 101, -1, "5", True, 2.0, None):
            reply = query(short_state, {"cmd": "alerts", "n": bad})
            assert reply == {
                "ok": False,
                "error": f"n: must be a whole number 1..100, got {bad!r}",
            }
        service.rules = stage  # as if the detector and the rules stage ran
        reply = query(short_state, {"cmd": "alerts", "n": 100})
        assert reply["ok"] is True
        assert reply["available"] is True
        assert (reply["total"], reply["reading"], reply["hotlist"]) == (2, True, True)
        newest, oldest = reply["alerts"]
        assert set(newest) == {"age_s", "utc", "track", "reason", "match", "confidence"}
        assert (newest["reason"], newest["match"]) == ("WANTED", "fuzzy")
        assert (oldest["reason"], oldest["match"]) == ("STOLEN", "exact")
        assert oldest["confidence"] == pytest.approx(0.92, abs=0.01)
        assert newest["track"] == stage.alerts(1)[0].track_id
        assert newest["utc"] == iso_utc(stage.alerts(1)[0].utc_ns)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", newest["utc"])
        assert newest["age_s"] >= 0
        assert query(short_state, {"cmd": "alerts", "n": 1})["alerts"] == [newest]
        no_plate_text(json.dumps(reply))
        status = query(short_state, {"cmd": "status"})
        assert status["rules"]["hotlist_alerts"] == 2


def test_the_console_lists_alerts_within_80_columns_and_no_plate(
    bench: dict[str, object],  # noqa: F811
) -> None:
    state, config = bench["state"], bench["config"]
    assert isinstance(state, Path)
    assert isinstance(config, Path)
    cfg = load(config)
    term = make_pty(bench["link"])  # type: ignore[arg-type]
    with console(bench, cfg):
        term.expect(b"t1> ")
        assert "service not running" in term.command("alerts")
    stage = drive(hotlist())  # no alert sink (no evidence worker): the hits are kept anyway
    with running_service(cfg, state) as service, console(bench, cfg):
        term.expect(b"t1> ")
        out = term.command("alerts")
        assert "alerts: rules absent: needs the detector" in out
        service.rules = drive(None)
        out = term.command("alerts")
        assert "no hotlist alerts since the service started; no hotlist is loaded" in out
        service.rules = stage

        out = term.command("alerts")
        lines = out.split("\r\n")
        assert all(len(line) <= 80 for line in lines)
        assert "total    2 hotlist alerts; newest first, times UTC" in out
        listed = [line for line in lines if " s ago " in line]
        assert len(listed) == 2
        assert re.search(r"track \d+ +WANTED +fuzzy conf 0\.\d\d$", listed[0])
        assert re.search(r"track \d+ +STOLEN +exact conf 0\.92$", listed[1])
        assert "2025-06-15 " in listed[0]  # the frame's UTC time (UTC0)
        no_plate_text(out)

        out = term.command("alerts 1")
        assert len([line for line in out.split("\r\n") if " s ago " in line]) == 1
        assert "WANTED" in out
        assert "must be a whole number 1..100" in term.command("alerts 101")
        assert "must be a whole number 1..100" in term.command("alerts x")

        out = term.command("status")
        assert "alerts   2 hotlist hits (`alerts` lists them)" in out
        no_plate_text(re.sub(r"pid \d+", "pid N", out))  # this process's pid may be 12345
        assert "alerts [N]" in term.command("help")
        assert "No plate text" in term.command("help alerts")
