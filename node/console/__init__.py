"""The technician's serial console (docs/console.md).

`roadnode console --port URL` serves it (`node.console.commands`). The parts: `lineedit`
(bytes → lines, for dumb terminals), `session` (PIN, dispatch, idle timeout, output), `actions`
(the commands), `staged` (config edits with automatic revert), `pin` (scrypt hash, lockout),
`audit` (the audit log), `preview` (ASCII picture and sharpness), `system` (facts from the
machine) and `port` (the serial port and its reopen loop).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.config import Config

if TYPE_CHECKING:
    from node.console.session import Context


def build_context(
    cfg: Config,
    state_dir: Path,
    config_path: Path | None,
    port: str,
    **overrides: Any,
) -> Context:
    """The console's shared parts, wired from config. `overrides` replace any `Context`
    field (tests pass `runner`, `query`, `clock`) and may carry `wall` for the PIN lockout
    and the revert deadline on disk."""
    import time

    from node.console.audit import AuditLog
    from node.console.pin import PinGuard
    from node.console.session import Context
    from node.console.staged import StagedConfig
    from node.console.system import run_command

    c = cfg.console
    wall = overrides.pop("wall", time.time)
    clock = overrides.get("clock", time.monotonic)
    runner = overrides.get("runner", run_command)
    guard = PinGuard(state_dir, c.pin_hash, c.pin_attempts, c.lockout_s, c.lockout_max_s, wall)
    audit = AuditLog(state_dir, c.audit_max_kb * 1024, port)

    def reload() -> str:
        result = runner(["systemctl", "restart", c.service_unit], 60.0)
        if result.code == 0:
            return f"{c.service_unit} restarted with the new file"
        why = result.output.strip().splitlines()[:1]
        return f"could not restart {c.service_unit}: {why[0] if why else result.code}"

    staged = StagedConfig(config_path, state_dir, reload, c.confirm_s, clock, wall)
    return Context(cfg, state_dir, config_path, port, guard, audit, staged, **overrides)
