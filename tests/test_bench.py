"""`roadnode bench`: it runs, writes valid JSON with every section, and rewrites only its own
block of docs/BENCHMARKS.md. Never a timing assertion: speed is the benchmark's output."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.bench import report, suite
from node.capture.frame import ArrayRef, Frame

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("machine", "sim_render", "detector", "pipeline", "node", "packets", "store", "uplink")


def tiny_model(folder: Path) -> Path:
    """A real (tiny, 96x64) int8 TFLite detector, so the detector sections really run."""
    from tests.interpreter_double import write_model
    from tests.tflite_model import build_model

    return write_model(folder, build_model(96, 64), input_width=96, input_height=64)


@pytest.mark.slow
def test_quick_bench_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    model = tiny_model(tmp_path)
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "node", "bench", "--quick", "--json", str(out)),
            *("--model", str(model)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    for key in (*SECTIONS, "targets", "quick", "schema", "elapsed_s", "model"):
        assert key in r, key
    assert r["quick"] is True
    assert r["model"] == str(model)
    for name in ("detector", "pipeline", "node", "packets", "store"):
        assert r[name]["state"] == "ok", (name, r[name])
    assert r["uplink"]["state"] in ("ok", "not available in this build"), r["uplink"]
    assert {"cpu", "cores", "python", "libraries", "load_avg"} <= set(r["machine"])
    assert "numpy" in r["machine"]["libraries"]
    d = r["detector"]
    for threads in ("threads_1", "threads_2"):
        assert {"invoke_ms", "pre_ms", "post_ms", "frame_ms", "fps"} <= set(d[threads])
        assert set(d[threads]["invoke_ms"]) == {"p50", "p95", "mean", "min"}
    assert d["float"]["state"] == "not shipped"
    p = r["pipeline"]
    assert p["processed"] > 0
    assert "efficiency" in p
    assert p["stages"] == ["detector", "rules"]
    assert {"detector", "rules", "total"} <= set(p["latency_ms"])
    n = r["node"]
    assert n["cold_start_s"] is not None
    assert n["cold_start_s"] > 0
    assert n["frames"]["processed"] > 0
    assert n["detector"]["state"] == "running"
    assert n["rss"]["curve"]
    assert n["rss"]["peak_mb"] >= n["rss"]["steady_mb"] > 0
    assert r["packets"]["count"] >= 1
    assert r["packets"]["sealed"] is True
    assert [lv["packets"] for lv in r["store"]["levels"]] == [0, 1000]
    assert set(r["targets"]) == set(suite.TARGETS)
    assert r["targets"]["store_slowdown_100k"]["measured"] is None  # --quick stops at 1000
    text = report.markdown(r)  # the docs table renders from what the JSON holds
    assert "### Targets" in text
    assert "Not measured" not in text.split("### Uplink")[0]


def test_docs_block_replaces_only_its_own_text(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nhistory stays, quoting `<!-- bench:begin -->`\n")
    report.write_docs("bench", "first run\n", doc)
    report.write_docs("soak", "a curve\n", doc)
    report.write_docs("bench", "second run\n", doc)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nhistory stays, quoting `<!-- bench:begin -->`\n")
    assert "first run" not in text
    assert text.count("second run") == 1
    assert text.count("\n<!-- bench:begin -->\n") == 1
    assert "a curve" in text
    assert text.index("second run") < text.index("<!-- soak:begin -->")  # stays in place
    doc.write_text("x\n<!-- bench:end -->\n<!-- bench:begin -->\n")
    with pytest.raises(ValueError, match="bench:begin"):
        report.write_docs("bench", "y", doc)
    assert doc.read_text() == "x\n<!-- bench:end -->\n<!-- bench:begin -->\n"  # untouched


def _result(**sections: Any) -> dict[str, Any]:
    return {"pipeline": {}, "node": {}, "store": {}, "uplink": {}, **sections}


def test_targets_judge_the_measured_figures() -> None:
    levels = [
        {"packets": 0, "slowdown": {"append": 1.0, "claim": 1.0, "ack": 1.0}},
        {"packets": 100_000, "slowdown": {"append": 1.2, "claim": 2.5, "ack": 0.9}},
    ]
    r = _result(
        pipeline={"state": "ok", "fps": 30.0, "efficiency": 0.8},
        node={"cold_start_s": 3.5, "rss": {"steady_mb": 150.0}},
        store={"levels": levels},
        uplink={"packets_per_s": 50.0},
    )
    t = suite.targets(r)
    assert t["pipeline_fps"]["met"] is True
    assert t["efficiency"]["met"] is False
    assert t["cold_start_s"]["met"] is False
    assert t["steady_rss_mb"]["met"] is True
    assert t["store_slowdown_100k"] == {"target": "<= 2", "measured": 2.5, "met": False}
    assert t["drain_packets_per_s"]["met"] is True  # the bound itself meets the target
    empty = suite.targets(_result(pipeline={"state": "no model"}))
    assert all(v["met"] is None for v in empty.values())
    assert all(v["measured"] is None for v in empty.values())


def test_cached_source_replays_with_fresh_numbers_and_stops() -> None:
    lores = np.zeros((4, 6, 3), np.uint8)
    frames = tuple(
        Frame(i, 0, 0, lores, ArrayRef(np.full((8, 12, 3), i, np.uint8))) for i in range(3)
    )
    cache = suite.FrameCache("sim://junction?seed=1", frames, 0.0, {}, {})
    src = suite.CachedSource(cache, fps=1000.0)
    assert src.url.startswith("sim:")  # the service gives it the sim's zones
    stop = threading.Event()
    src.open(stop)
    got = [src.read() for _ in range(7)]
    assert [f.seq for f in got if f] == list(range(7))
    assert [int(f.main.array()[0, 0, 0]) for f in got if f] == [0, 1, 2, 0, 1, 2, 0]
    stamps = [f.mono_ns for f in got if f]
    assert stamps == sorted(stamps)
    assert stamps[0] > 0
    stop.set()
    assert src.read() is None


def test_percentiles_and_proc_status() -> None:
    p = suite.percentiles([5.0, 1.0, 3.0, 2.0, 4.0])
    assert p == {"p50": 3.0, "p95": 5.0, "mean": 3.0, "min": 1.0}
    assert suite.percentiles([]) == {"p50": 0.0, "p95": 0.0, "mean": 0.0, "min": 0.0}
    mine = suite.proc_status_kb()
    assert mine["VmHWM"] >= mine["VmRSS"] > 0
    assert suite.proc_status_kb(2**22 + 7) == {}  # no such process


def test_chart_draws_every_sample_once() -> None:
    curve = [[float(t * 10), 100.0 + (t % 3)] for t in range(12)]
    lines = report.chart(curve, width=60, height=5)
    body = [line for line in lines if "|" in line]
    assert len(body) == 5
    assert sum(line.count("*") for line in body) == 12
    assert lines[-1].rstrip().endswith("110 s")


def test_bench_rejects_a_missing_model(tmp_path: Path) -> None:
    from node.cli import main

    assert main(["bench", "--quick", "--model", str(tmp_path / "none.json")]) == 1


def test_the_bench_runs_the_node_with_the_units_environment() -> None:
    """RSS and speed are measured as systemd runs the node: the same Environment= lines."""
    from node.bench.suite import UNIT_ENVIRONMENT

    unit = (Path(__file__).resolve().parent.parent / "systemd" / "roadnode.service").read_text()
    pairs = {}
    for line in unit.splitlines():
        if line.startswith("Environment="):
            for item in line.removeprefix("Environment=").split():
                key, _, value = item.partition("=")
                pairs[key] = value
    assert {k: pairs.get(k) for k in UNIT_ENVIRONMENT} == UNIT_ENVIRONMENT
