"""Fleet updates (issue 8, docs/fleet-updates.md): signed bundles of software, model and
config; their arrival (pull from the central, or the inbox folder), verification, install,
health proof, commit or automatic rollback.

- `node.fleet.bundle`: the bundle format, building, signing and verifying.
- `node.fleet.install`: install, switch, prove health, commit or roll back (crash-safe journal).
- `node.fleet.inbox`: the watchdog observer on the inbox folder.
- `node.fleet.pull`: the desired-state poll and resumable download.
- `node.fleet.agent`: the `roadnode agent` loop tying these together.
- `node.fleet.commands`: the CLI (`bundle`, `fleet-keygen`, `agent`, `update status`).

`update_status(state_dir)` is what `roadnode status`, the console and telemetry show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KINDS = ("software", "model", "config")
FLEET_DIR = "fleet"  # under the state dir


class BundleError(Exception):
    """A bundle was refused (one line: what and why)."""


class InstallError(Exception):
    """An install step failed (one line); the node keeps the version it had."""


ROLLBACK_REQUEST = "rollback.request"  # written by the console, taken by the agent


def request_rollback(state_dir: Path, kind: str) -> Path:
    """Ask the agent to roll `kind` back to its previous version (it does, within its next
    round, with the usual health proof); the request file's path."""
    if kind not in ("software", "model", "config"):
        raise ValueError(f"rollback: kind must be software, model or config, got {kind!r}")
    root = fleet_root(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / ROLLBACK_REQUEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(kind + "\n", encoding="ascii")
    tmp.replace(path)
    return path


def fleet_root(state_dir: Path) -> Path:
    """Where the agent keeps releases, models, configs, its journal and its state."""
    return Path(state_dir) / FLEET_DIR


def update_status(state_dir: Path) -> dict[str, Any]:
    """Current and previous versions of each kind, the update in progress and the last
    result, read from the state dir (no service needed)."""
    from node.fleet.install import read_update_status

    return read_update_status(fleet_root(state_dir))
