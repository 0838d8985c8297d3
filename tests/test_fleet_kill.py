"""Kill the agent (SIGKILL, a subprocess) at every step of an update: the node must always run
a complete old or new release, and the next agent start must finish the job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.control import query
from node.fleet import update_status
from node.fleet.install import KILL_ENV
from tests import fleet_service
from tests import fleethelp as fh

ROOT = Path(__file__).resolve().parent.parent
GOOD_STEPS = (
    "accepted",
    "unpacked",
    "installed",
    "switching",
    "switch-half",
    "switched",
    "restarted",
    "proven",
)
BAD_STEPS = ("restarted", "rolling_back", "rolled_back")


def _start(state_dir: Path, kill_at: str | None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    if kill_at:
        env[KILL_ENV] = kill_at
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fleet_agent_child",
            str(state_dir),
            str(state_dir / "node.toml"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def agents(runs: list[tuple[Path, str | None]]) -> list[int]:
    """Run the agent once on each (state dir, step to die at), all at the same time."""
    procs = [_start(state_dir, kill_at) for state_dir, kill_at in runs]
    codes = []
    for (state_dir, _), proc in zip(runs, procs, strict=True):
        _, err = proc.communicate(timeout=90)
        if proc.returncode not in (0, 1, -signal.SIGKILL):
            raise AssertionError(f"{state_dir.name}: {err[-2000:]}")
        codes.append(proc.returncode)
    return codes


def agent(state_dir: Path) -> int:
    return agents([(state_dir, None)])[0]


def drop(state_dir: Path, bundle: Path) -> None:
    shutil.copyfile(bundle, state_dir / "fleet" / "inbox" / bundle.name)


@pytest.fixture(scope="module")
def template() -> Iterator[tuple[Path, Path, Path]]:
    """A node that has committed release 1.1.0, and two bundles of 1.2.0 (good, stalling)."""
    base = Path(tempfile.mkdtemp(prefix="flk", dir="/tmp"))
    key = fh.new_key()
    state_dir = base / "t"
    (state_dir / "fleet" / "inbox").mkdir(parents=True)
    restart = f"{sys.executable} -m tests.fleet_service restart"
    (state_dir / "node.toml.in").write_text(
        f'schema_version = 2\n[fleet]\nkey = "{key.public}"\nsettle_s = 0.1\n'
        f"health_window_s = 2.0\nhealth_frames = 5\nmin_free_mb = 0\n"
        f'restart_command = "{restart} STATE"\n'
    )
    drop(state_dir, fh.software(base, "1.1.0", key))
    fix_config(state_dir)
    assert agent(state_dir) == 0
    fleet_service.stop_process(state_dir)
    assert os.readlink(state_dir / "fleet" / "releases" / "current") == "1.1.0"
    good = fh.software(base, "1.2.0", key)
    bad = fh.software(base, "1.2.0", key, behaviour="stall")
    yield state_dir, good, bad
    shutil.rmtree(base, ignore_errors=True)


def fix_config(state_dir: Path) -> None:
    """node.toml from node.toml.in: the restart command names this node's state dir."""
    text = (state_dir / "node.toml.in").read_text()
    (state_dir / "node.toml").write_text(text.replace(" STATE", f" {state_dir}"))


def copy_node(template: Path, name: str) -> Path:
    state_dir = template.parent / name
    shutil.copytree(template, state_dir, symlinks=True)
    fix_config(state_dir)
    return state_dir


def running_release(state_dir: Path) -> str:
    """The release `current` names, checked complete, as the service reports it."""
    releases = state_dir / "fleet" / "releases"
    version = os.readlink(releases / "current")
    assert (releases / version / ".complete").exists(), f"{version} is linked but incomplete"
    assert (releases / version / "venv" / "VERSION").read_text() == version
    return version


def check_final(state_dir: Path, version: str, result: str) -> None:
    assert running_release(state_dir) == version
    assert not (state_dir / "fleet" / "journal.json").exists()
    assert not list((state_dir / "fleet" / "incoming").iterdir())
    s = update_status(state_dir)
    assert s["software"]["current"] == version
    assert s["last"]["result"] == result
    assert s["last"]["version"] == "1.2.0"
    if query(state_dir, {"cmd": "status"})["version"] != version:  # pragma: no cover
        raise AssertionError("the service does not run the release that is linked")


def test_kill_at_every_step_of_a_good_update(template: tuple[Path, Path, Path]) -> None:
    nodes = [copy_node(template[0], f"good-{step}") for step in GOOD_STEPS]
    try:
        for state_dir in nodes:
            drop(state_dir, template[1])
        codes = agents(list(zip(nodes, GOOD_STEPS, strict=True)))
        assert codes == [-signal.SIGKILL] * len(nodes)
        for state_dir, step in zip(nodes, GOOD_STEPS, strict=True):
            journal = json.loads((state_dir / "fleet" / "journal.json").read_text())
            assert journal["step"] == ("switching" if step == "switch-half" else step)
            assert running_release(state_dir) in ("1.1.0", "1.2.0"), step  # old or new, whole
        assert agents([(n, None) for n in nodes]) == [0] * len(nodes)
        for state_dir in nodes:
            check_final(state_dir, "1.2.0", "committed")
            assert os.readlink(state_dir / "fleet" / "releases" / "previous") == "1.1.0"
    finally:
        for state_dir in nodes:
            fleet_service.stop_process(state_dir)


def test_kill_at_every_step_of_a_rollback(template: tuple[Path, Path, Path]) -> None:
    nodes = [copy_node(template[0], f"bad-{step}") for step in BAD_STEPS]
    try:
        for state_dir in nodes:
            drop(state_dir, template[2])
        assert agents(list(zip(nodes, BAD_STEPS, strict=True))) == [-signal.SIGKILL] * len(nodes)
        for state_dir in nodes:
            assert running_release(state_dir) in ("1.1.0", "1.2.0"), state_dir.name
        assert agents([(n, None) for n in nodes]) == [1] * len(nodes)  # rolled back
        for state_dir in nodes:
            check_final(state_dir, "1.1.0", "rolled_back")
            assert not (state_dir / "fleet" / "releases" / "1.2.0").exists()
    finally:
        for state_dir in nodes:
            fleet_service.stop_process(state_dir)
