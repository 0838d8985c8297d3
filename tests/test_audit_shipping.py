"""Console audit records ride on the telemetry heartbeat, each sent once, even across restarts."""

from __future__ import annotations

from pathlib import Path

from node.console.audit import AuditLog, AuditShipper
from node.uplink.telemetry import heartbeat_fields


def test_records_are_shipped_once_and_the_mark_survives_a_restart(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, port="ttyGS0")
    for cmd in ("status", "queue", "config set"):
        log.record("command", command=cmd)
    ship = AuditShipper(tmp_path)
    assert [r["command"] for r in ship.pending()] == ["status", "queue", "config set"]
    assert [r["command"] for r in ship.pending()] == ["status", "queue", "config set"]
    ship.sent()  # the heartbeat carrying them is in the store
    assert ship.pending() == []
    log.record("command", command="reboot")
    again = AuditShipper(tmp_path)  # a restarted service
    assert [r["command"] for r in again.pending()] == ["reboot"]


def test_a_heartbeat_not_stored_sends_them_again(tmp_path: Path) -> None:
    AuditLog(tmp_path).record("command", command="status")
    ship = AuditShipper(tmp_path)
    assert len(ship.pending()) == 1  # heartbeat refused by a full store: sent() not called
    assert len(ship.pending()) == 1


def test_the_heartbeat_keeps_the_audit_records_whatever_the_size_cut(tmp_path: Path) -> None:
    records = [{"ts": "2026-11-28T00:00:00Z", "event": "command", "command": "status"}] * 50
    status = {"uptime_s": 1.0, "rules": {"x": "y" * 40_000}, "console_audit": records}
    fields = heartbeat_fields(status, tmp_path)["telemetry"]
    assert fields["console_audit"] == records
    assert "rules" in fields["truncated"]
