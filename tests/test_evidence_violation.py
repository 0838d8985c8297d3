"""Violation packets from real simulator frames: plate at native resolution, context, sizes."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simplejpeg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node.capture.frame import Frame
from node.clock import ClockState
from node.config import Config
from node.evidence import PRIORITY_RED_LIGHT, PRIORITY_VIOLATION, PacketError
from node.evidence.measure import SIM_URL, measure_sizes, sim_violations
from node.evidence.packet import from_violation, verify
from node.infer.detector import Detection
from node.rules.signal import SignalState
from node.rules.violations import Violation

CAPTURE = dataclasses.replace(Config().capture, lores_width=320, lores_height=180)
CFG = dataclasses.replace(Config(), capture=CAPTURE)  # main stream 1920x1080
KEY = Ed25519PrivateKey.generate()
KEYS = {CFG.node.id: KEY.public_key()}
CLOCK = ClockState(True, 0.004, 0.1, "adjtimex")
SIGNAL = SignalState("RED", 4.25, 0.2, False, "frame")


@dataclasses.dataclass(frozen=True)
class Model:
    name: str = "plates"
    version: str = "7"
    sha256: str = "ab" * 32


@functools.cache
def sim_case() -> tuple[Violation, tuple[Frame, ...]]:
    """The first sim violation whose plate is big enough to check pixel for pixel."""
    for v, frames in sim_violations(SIM_URL, CFG):
        boxes = dict(v.plate_boxes)
        x0, _, x1, _ = boxes[max(boxes)]
        if x1 - x0 >= 24:
            return v, tuple(frames)
    raise AssertionError("no violation with a plate in view")


def decode(data: bytes) -> np.ndarray:  # type: ignore[type-arg]
    return np.asarray(simplejpeg.decode_jpeg(data, colorspace="RGB"))


def test_violation_packet_has_the_plate_at_native_resolution() -> None:
    v, frames = sim_case()
    p = from_violation(v, frames, CFG, KEY, None, Model(), SIGNAL, clock=CLOCK)
    assert p.id == v.id
    got = verify(p.data, KEYS)
    m = got.manifest
    plate = m["plate"]
    x0, y0, x1, y1 = plate["crop_box"]
    bx0, by0, bx1, by1 = plate["box"]
    assert x0 <= bx0
    assert y0 <= by0
    assert bx1 <= x1
    assert by1 <= y1  # the crop holds the plate
    image = decode(got.parts["plate.jpg"])
    assert image.shape == (y1 - y0, x1 - x0, 3)  # native: one crop pixel per main pixel
    assert (plate["width"], plate["height"], plate["scale"]) == (x1 - x0, y1 - y0, 1.0)
    seq_frame = {f.seq: f for f in frames}[plate["seq"]]
    main = seq_frame.main.array()
    assert main.shape == (1080, 1920, 3)
    diff = np.abs(image.astype(int) - main[y0:y1, x0:x1].astype(int))
    assert float(diff.mean()) < 4.0  # the same pixels, JPEG-close
    shifted = np.abs(image.astype(int) - main[y0 + 4 : y1 + 4, x0 + 4 : x1 + 4].astype(int))
    assert float(shifted.mean()) > 2 * float(diff.mean())  # and not any nearby pixels
    assert plate["quality"] >= CFG.evidence.plate_min_quality


def test_violation_manifest_content() -> None:
    v, frames = sim_case()
    dets = {v.seq_at: [Detection((1.0, 2.0, 30.0, 12.0), 0.87654)]}
    p = from_violation(v, frames, CFG, KEY, None, Model(), SIGNAL, detections=dets, clock=CLOCK)
    m = verify(p.data, KEYS).manifest
    assert m["kind"] == "violation"
    assert m["packet_id"] == v.id
    assert m["violation"]["rule"] == v.rule
    assert m["violation"]["id"] == v.id
    assert m["violation"]["measured"] == v.measured.as_dict()
    assert m["capture"]["utc_ns"] == v.utc_ns
    assert m["capture"]["utc"].endswith("Z")
    assert m["capture"]["clock"] == CLOCK.as_dict()
    assert (m["capture"]["main_width"], m["capture"]["main_height"]) == (1920, 1080)
    assert m["signal"]["phase"] == "RED"
    assert m["signal"]["phase_age_s"] == 4.25
    assert m["model"] == {"name": "plates", "version": "7", "sha256": "ab" * 32}
    assert m["node"]["id"] == CFG.node.id
    assert m["node"]["site"] == CFG.node.site
    roles = [c["role"] for c in m["context"]]
    assert roles == ["before", "at", "after"]
    parts = verify(p.data, KEYS).parts
    for c in m["context"]:
        # 960 px wide (context_width), or narrower when the lowest quality rung was still
        # over context_max_kb (busy frames step down by 0.8): the stated size is the real one
        assert c["width"] in (960, 768, 614)
        assert abs(c["scale"] * 1920 - c["width"]) <= 1
        assert decode(parts[c["part"]]).shape == (c["height"], c["width"], 3)
        assert c["height"] == round(1080 * c["width"] / 1920)
        assert len(parts[c["part"]]) <= CFG.evidence.context_max_kb * 1000
        assert CFG.evidence.context_min_quality <= c["quality"] <= CFG.evidence.context_quality
    by_seq = {d["seq"]: d for d in m["detections"]}
    assert set(dict(v.plate_boxes)) <= set(by_seq)
    assert by_seq[v.seq_at]["detections"] == [{"box": [1.0, 2.0, 30.0, 12.0], "score": 0.877}]
    prio = PRIORITY_RED_LIGHT if v.rule == "red_light" else PRIORITY_VIOLATION
    assert p.priority == prio


def test_same_offence_same_packet_id_and_sealing() -> None:
    v, frames = sim_case()
    central = X25519PrivateKey.generate()
    a = from_violation(v, frames, CFG, KEY, central.public_key(), None, None, clock=CLOCK)
    b = from_violation(v, frames, CFG, KEY, None, None, None, clock=CLOCK)
    assert a.id == b.id == v.id
    assert a.sealed
    assert not b.sealed
    got = verify(a.data, KEYS, central)
    assert got.parts == verify(b.data, KEYS).parts  # same pictures, sealed or not
    assert got.manifest["model"] is None
    assert got.manifest["signal"] is None


def test_context_count_overview_and_missing_frames() -> None:
    v, frames = sim_case()
    ev = dataclasses.replace(CFG.evidence, context_frames=4, overview=True, context_width=640)
    cfg = dataclasses.replace(CFG, evidence=ev)
    got = verify(from_violation(v, frames, cfg, KEY, None, None, None, clock=CLOCK).data, KEYS)
    assert [c["role"] for c in got.manifest["context"]] == ["before", "approach", "at", "after"]
    assert decode(got.parts["frame-at.jpg"]).shape == (360, 640, 3)
    overview = decode(got.parts["overview.jpg"])
    assert overview.shape == (360, 640, 3)
    # the plate is outlined in red on the overview
    ov = got.manifest["overview"]
    assert ov["seq"] == got.manifest["plate"]["seq"]
    x0, y0 = (round(c * ov["scale"]) - 2 for c in dict(v.plate_boxes)[ov["seq"]][:2])
    r, g, b = overview[y0 + 1, x0 + 4].astype(int)
    assert r > 180
    assert g < 110
    assert b < 110
    plain = decode(got.parts["frame-at.jpg"])  # context frames are not marked
    if got.manifest["context"][2]["seq"] == ov["seq"]:
        r, g, b = plain[y0 + 1, x0 + 4].astype(int)
        assert not (r > 180 and g < 110 and b < 110)
    # the ring lost the offence frame: the nearest kept one stands in
    kept = [f for f in frames if f.seq != v.seq_at]
    m = verify(from_violation(v, kept, CFG, KEY, None, None, None).data, KEYS).manifest
    assert v.seq_at not in [c["seq"] for c in m["context"]]
    assert len(m["context"]) == 3
    with pytest.raises(PacketError, match=f"violation {v.id}: no frames kept between"):
        from_violation(v, [], CFG, KEY, None, None, None)
    no_plate = [f for f in frames if f.seq not in dict(v.plate_boxes)]
    with pytest.raises(PacketError, match="none of the kept frames shows the plate"):
        from_violation(v, no_plate, CFG, KEY, None, None, None)


def context_of(cfg: Config) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    v, frames = sim_case()
    got = verify(from_violation(v, frames, cfg, KEY, None, None, None).data, KEYS)
    return got.manifest["context"], got.parts


def test_quality_ladder_steps_down_then_scales_down_to_fit_the_budget() -> None:
    roomy = dataclasses.replace(CFG.evidence, context_max_kb=4000, context_quality=90)
    context, _ = context_of(dataclasses.replace(CFG, evidence=roomy))
    assert {c["quality"] for c in context} == {90}
    # a budget between the top and the bottom rung: some rung in between fits
    ev = dataclasses.replace(CFG.evidence, context_max_kb=55, context_quality=90)
    context, parts = context_of(dataclasses.replace(CFG, evidence=ev))
    for c in context:
        assert ev.context_min_quality < c["quality"] < 90
        assert c["width"] == 960
        assert len(parts[c["part"]]) <= 55_000
    # under the lowest rung's size: smaller frames, still within the budget
    tight = dataclasses.replace(CFG.evidence, context_max_kb=20)
    context, parts = context_of(dataclasses.replace(CFG, evidence=tight))
    for c in context:
        assert c["quality"] == tight.context_min_quality
        assert 320 <= c["width"] < 960
        assert c["scale"] == pytest.approx(c["width"] / 1920, abs=1e-6)
        assert len(parts[c["part"]]) <= 20_000
        assert decode(parts[c["part"]]).shape[1] == c["width"]


def test_measure_sizes_reports_a_distribution(tmp_path: Path) -> None:
    report = measure_sizes(3, cfg=CFG)
    assert report.count == 3
    assert report.main == (1920, 1080)
    assert min(report.sizes) <= report.median <= report.p90 <= report.max
    assert report.median <= 150_000
    assert set(report.part_medians) >= {"plate.jpg", "frame-at.jpg"}
    assert report.as_dict()["count"] == 3
