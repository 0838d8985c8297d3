"""`roadnode demo` (what `make demo` runs): the node delivers to a local ingest end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_ends_with_verified_packets_at_the_local_ingest(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "node", "demo", "--state-dir", str(tmp_path), "--duration", "4"],
        check=False,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "demo: the ingest verified and stored" in res.stdout
    records = [json.loads(p.read_text()) for p in (tmp_path / "ingest").glob("**/*.json")]
    assert records, "nothing reached the ingest (not even the heartbeat)"
    kinds = {r.get("kind") for r in records}
    assert "heartbeat" in kinds or "telemetry" in kinds
    assert all(r["verified"] == "signature" and r["sealed"] for r in records), records[0]
    # the node kept nothing unsent: every stored packet was acked by the ingest
    status = subprocess.run(
        [sys.executable, "-m", "node", "queue", "--json", "--state-dir", str(tmp_path / "node")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    states = json.loads(status.stdout)["states"]
    assert states["ready"]["count"] == 0
    assert states["in_flight"]["count"] == 0
