"""The systemd units, the recovery script and the installer (systemd/, scripts/).

`systemd-analyze verify` runs on every unit inside a temporary root that holds the host's
system units and stand-in executables for our ExecStart= paths (verify insists they exist);
`systemd-analyze security --offline=true` rates each service. The installer runs into a
temporary root with systemd driven offline (`systemctl --root`, `systemd-sysusers --root`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
SERVICES = [
    "roadnode.service",
    "roadnode-console@.service",
    "roadnode-agent.service",
    "roadnode-recover.service",
]
ALL_UNITS = [*SERVICES, "roadnode-retry.timer"]
EXECUTABLES = [
    "opt/roadnode/venv/bin/roadnode",
    "opt/roadnode/libexec/roadnode-recover",
    "var/lib/roadnode/fleet/releases/current/venv/bin/roadnode",
]
MAX_EXPOSURE = 2.5

analyze = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(analyze is None, reason="systemd-analyze is not installed")
HOST_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
HOST_UNITS = next((p for p in HOST_UNIT_DIRS if p.is_dir()), None)


def directives(unit: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment in a unit file, in order."""
    section = ""
    out = []
    for raw in (UNITS / unit).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(unit: str, key: str) -> list[str]:
    return [v for _, k, v in directives(unit) if k == key]


def verify_root(tmp_path: Path, units: dict[str, str]) -> Path:
    """A root for `systemd-analyze verify --root`: host units, ours, stand-in executables."""
    assert HOST_UNITS is not None
    root = tmp_path / "root"
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    unitdir = root / "etc/systemd/system"
    unitdir.mkdir(parents=True)
    for name, text in units.items():
        (unitdir / name).write_text(text)
    for exe in EXECUTABLES:
        path = root / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    return root


def run_verify(root: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    assert analyze is not None
    return subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def instance(name: str) -> str:
    return name.replace("@.", "@serial0.")


# --- systemd-analyze --------------------------------------------------------------------------


@needs_analyze
@pytest.mark.skipif(HOST_UNITS is None, reason="no system unit directory on this machine")
def test_every_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    root = verify_root(tmp_path, {u: (UNITS / u).read_text() for u in ALL_UNITS})
    done = run_verify(root, [instance(u) for u in ALL_UNITS])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
    assert done.stderr.strip() == "", done.stderr


@needs_analyze
@pytest.mark.skipif(HOST_UNITS is None, reason="no system unit directory on this machine")
def test_verify_as_run_here_does_catch_a_bad_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key, and a missing ExecStart binary, are reported."""
    text = (UNITS / "roadnode.service").read_text()
    root = verify_root(tmp_path, {"roadnode.service": text.replace("Nice=", "Nicety=")})
    done = run_verify(root, ["roadnode.service"])
    assert "Unknown key 'Nicety'" in done.stderr
    (root / values("roadnode.service", "ExecStart")[0].split()[0].lstrip("/")).unlink()
    done = run_verify(root, ["roadnode.service"])
    assert done.returncode != 0
    assert "is not executable" in done.stderr


def exposure(unit: str) -> float:
    assert analyze is not None
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNITS / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


@needs_analyze
@pytest.mark.parametrize("unit", SERVICES)
def test_security_exposure_is_at_most_2_5(unit: str) -> None:
    score = exposure(unit)
    assert score <= MAX_EXPOSURE, f"{unit}: exposure {score} > {MAX_EXPOSURE}"


@needs_analyze
def test_the_recorded_exposure_is_the_measured_one() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for unit in SERVICES:
        figure = f"{exposure(unit):.1f}"
        assert f"| `{unit}` | {figure} |" in doc, f"docs/operations.md: {unit} should say {figure}"


# --- what the units say -----------------------------------------------------------------------


def test_the_node_unit_has_what_an_unattended_node_needs() -> None:
    d = {k: v for _, k, v in directives("roadnode.service")}
    assert d["Type"] == "notify"
    assert int(d["WatchdogSec"]) > 0
    assert d["Restart"] == "always"
    assert int(d["StartLimitBurst"]) > 0
    assert int(d["StartLimitIntervalSec"]) > 0
    assert d["OnFailure"] == "roadnode-recover.service"
    assert d["RestartPreventExitStatus"] == "2"  # an invalid config is not restarted
    assert d["User"] == "roadnode"
    assert d["ProtectSystem"] == "strict"
    assert d["DevicePolicy"] == "closed"
    assert d["NoNewPrivileges"] == "yes"
    assert d["CapabilityBoundingSet"] == ""
    assert d["MemoryMax"].endswith("M")
    assert "ReadWritePaths" not in d  # the state dir (StateDirectory=) is the only writable path
    assert d["StateDirectory"] == "roadnode"
    families = set(d["RestrictAddressFamilies"].split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    allowed = {v.split()[0] for v in values("roadnode.service", "DeviceAllow")}
    assert {"char-video4linux", "char-media", "char-dma_heap", "char-gpiochip"} <= allowed
    assert {"char-ttyAMA", "char-ttyUSB"} <= allowed


@pytest.mark.parametrize("unit", ["roadnode.service", "roadnode-console@.service"])
def test_adjtimex_stays_allowed_for_the_clock_state(unit: str) -> None:
    """node/clock.py reads the NTP state with adjtimex(2): ProtectClock= and @privileged
    (which holds @clock) would forbid it, so it must be allowed again after the deny list."""
    assert values(unit, "ProtectClock") in ([], ["no"])
    filters = values(unit, "SystemCallFilter")
    denied_at = max(i for i, f in enumerate(filters) if f.startswith("~"))
    assert any("adjtimex" in f.split() for f in filters[denied_at + 1 :] if f[0] != "~")


def test_units_name_only_units_that_exist() -> None:
    names = {p.name for p in UNITS.iterdir()}
    for unit in ALL_UNITS:
        for key in ("OnFailure", "Unit"):
            for value in values(unit, key):
                assert set(value.split()) <= names, f"{unit}: {key}={value}"
    assert "roadnode-retry.timer" in (UNITS.parent / "scripts/recover.sh").read_text()


def test_exec_paths_are_where_the_installer_puts_them() -> None:
    installer = (ROOT / "scripts/install.sh").read_text()
    for unit in SERVICES:
        exe = values(unit, "ExecStart")[0].split()[0]
        assert exe in (
            "/opt/roadnode/venv/bin/roadnode",  # console, agent: not switched by updates
            "/opt/roadnode/libexec/roadnode-recover",
            "/var/lib/roadnode/fleet/releases/current/venv/bin/roadnode",  # the node
        )
    assert values("roadnode.service", "ExecStart")[0].startswith("/var/lib/roadnode/fleet/")
    assert '"$PREFIX/libexec/roadnode-recover"' in installer
    console = values("roadnode-console@.service", "ExecStart")[0]
    assert console.endswith(
        "roadnode console --port /dev/%I --state-dir /var/lib/roadnode "
        "--config /etc/roadnode/node.toml"
    )


# --- the recovery script ----------------------------------------------------------------------


def fake_systemctl(tmp_path: Path, result: str, status: str) -> tuple[Path, Path]:
    calls = tmp_path / "calls"
    path = tmp_path / "systemctl"
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'case "$*" in\n'
        f'  *"-p Result"*) echo {result} ;;\n'
        f'  *"-p ExecMainStatus"*) echo {status} ;;\n'
        "esac\n"
    )
    path.chmod(0o755)
    return path, calls


def recover(tmp_path: Path, result: str, status: str, now: int) -> tuple[list[str], str]:
    systemctl, calls = fake_systemctl(tmp_path, result, status)
    calls.unlink(missing_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "SYSTEMCTL": str(systemctl),
        "RECOVER_STATE": str(tmp_path / "state"),
        "NOW": str(now),
    }
    done = subprocess.run(
        ["sh", str(ROOT / "scripts/recover.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    actions = [c for c in calls.read_text().splitlines() if not c.startswith("show")]
    return actions, done.stdout


def test_recover_does_nothing_for_an_invalid_config(tmp_path: Path) -> None:
    actions, out = recover(tmp_path, "exit-code", "2", 1_000_000)
    assert actions == []
    assert "invalid config" in out
    assert not (tmp_path / "state/reboots").exists()


def test_recover_reboots_three_times_a_day_then_backs_off(tmp_path: Path) -> None:
    t = 1_700_000_000
    for i in range(3):
        actions, out = recover(tmp_path, "start-limit-hit", "1", t + i * 600)
        assert actions == ["--no-block reboot"], out
        assert f"({i + 1} of 3 in 24 h)" in out
    actions, out = recover(tmp_path, "start-limit-hit", "1", t + 1800)
    assert actions == ["--no-block restart roadnode-retry.timer"]
    assert "not rebooting" in out
    # a day after the first reboot, one slot is free again
    actions, _ = recover(tmp_path, "watchdog", "6", t + 86_400 + 1)
    assert actions == ["--no-block reboot"]
    log = (tmp_path / "state/reboots").read_text().split()
    assert log == [str(t + 600), str(t + 1200), str(t + 86_401)]


def test_recover_ignores_reboots_from_a_clock_in_the_future(tmp_path: Path) -> None:
    t = 1_700_000_000
    (tmp_path / "state").mkdir()
    (tmp_path / "state/reboots").write_text(f"{t + 90_000}\n{t + 90_001}\n{t + 90_002}\ngarbage\n")
    actions, _ = recover(tmp_path, "start-limit-hit", "1", t)
    assert actions == ["--no-block reboot"]


# --- shell and installer ----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_pass_shellcheck() -> None:
    scripts = sorted(str(p) for p in (ROOT / "scripts").glob("*.sh"))
    done = subprocess.run(
        ["shellcheck", "-s", "sh", *scripts], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[object, ...]]:
    """Every path under root: type, mode, owner and content hash (venv: names only, since pip
    records the temporary build path)."""
    venv = root / "opt/roadnode/venv"
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if rel in skip:
                continue
            st = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(st.st_mode), st.st_uid, st.st_gid)
            elif venv in path.parents:
                out[rel] = ("file",)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[rel] = ("file", oct(st.st_mode), st.st_uid, st.st_gid, digest)
    return out


def offline_python() -> str | None:
    """An interpreter (3.11+) whose venv can build the project offline (setuptools and wheel
    among its site packages, as the installer's venv sees them), or None."""
    for candidate in ("/usr/bin/python3", sys.executable):
        done = subprocess.run(
            [
                candidate,
                "-c",
                "import sys, setuptools, wheel; sys.exit(sys.version_info < (3, 11))",
            ],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            return candidate
    return None


def installer_env(root: Path, python: str) -> dict[str, str]:
    env = {
        "PATH": os.environ["PATH"],
        "ROADNODE_ROOT": str(root),
        "PYTHON": python,
        # offline: the project only (its dependencies come from the dev venv, below)
        "PIP_ARGS": "--no-deps --no-index --no-build-isolation",
        "SMOKE": "0",
        "NODE_ID": "pi 07/x",
        "CONSOLE_PORTS": "serial0 ttyGS0",
        "ENABLE_CONSOLE": "yes",
        "ENABLE_AGENT": "yes",
        "TMPDIR": str(root.parent),
    }
    if shutil.which("systemctl") is None:
        env["SYSTEMCTL"] = "true"
    if shutil.which("systemd-sysusers") is None:
        env["SYSUSERS"] = "true"
    if shutil.which("systemd-tmpfiles") is None or os.geteuid() != 0:
        env["TMPFILES"] = "true"  # tmpfiles chowns: root only
    if os.geteuid() != 0:
        env["USERDEL"] = "true"
    return env


def sh(script: str, env: dict[str, str], **extra: str) -> str:
    done = subprocess.run(
        ["sh", str(ROOT / "scripts" / script)],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_install_twice_then_uninstall(tmp_path: Path) -> None:
    python = offline_python()
    if python is None:
        pytest.skip("no Python 3.11+ with setuptools and wheel to build the project offline")
    root = tmp_path / "root"
    root.mkdir()
    env = installer_env(root, python)
    out = sh("install.sh", env)
    assert "node.id = pi-07-x" in out

    conf = root / "etc/roadnode/node.toml"
    assert 'id = "pi-07-x"' in conf.read_text()
    etc = root / "etc/systemd/system"
    for unit in ALL_UNITS:
        assert (etc / unit).read_bytes() == (UNITS / unit).read_bytes()
    assert (etc / "multi-user.target.wants/roadnode.service").is_symlink()
    assert (etc / "dev-serial0.device.wants/roadnode-console@serial0.service").is_symlink()
    assert (etc / "dev-ttyGS0.device.wants/roadnode-console@ttyGS0.service").is_symlink()
    assert (etc / "multi-user.target.wants/roadnode-agent.service").is_symlink()
    releases = root / "var/lib/roadnode/fleet/releases"
    current = os.readlink(releases / "current")
    assert os.readlink(releases / current) == "/opt/roadnode"  # the seeded release
    recover = root / "opt/roadnode/libexec/roadnode-recover"
    assert recover.stat().st_mode & 0o111
    assert (root / "opt/roadnode/docs/operations.md").is_file()
    assert not (ROOT / "build").exists()  # nothing built inside the checkout
    venv_cfg = (root / "opt/roadnode/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in venv_cfg
    if env.get("SYSUSERS") is None:
        assert re.search(r"^roadnode:x:\d+:\d+:", (root / "etc/passwd").read_text(), re.M)
    if env.get("TMPFILES") is None:
        assert stat.S_IMODE((root / "var/lib/roadnode").stat().st_mode) == 0o750
        assert stat.S_IMODE(conf.stat().st_mode) == 0o660

    # the installed entry point runs the installed code (dependencies from the dev venv)
    site = sysconfig.get_paths()["purelib"]
    done = subprocess.run(
        [str(root / "opt/roadnode/venv/bin/python"), "-c", "import node; print(node.__file__)"],
        env={"PATH": env["PATH"], "PYTHONPATH": site},
        cwd=tmp_path,  # not the checkout: `-c` puts the working directory on sys.path
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith(str(root / "opt/roadnode/venv"))
    version = subprocess.run(
        [str(root / "opt/roadnode/venv/bin/roadnode"), "--version"],
        env={"PATH": env["PATH"], "PYTHONPATH": site},
        cwd=tmp_path,  # not the checkout: `-c` puts the working directory on sys.path
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.startswith("roadnode ")

    # again: the same tree, and the operator's config untouched
    conf.write_text(conf.read_text() + "# edited by the operator\n")
    first = snapshot(root, skip=("etc/roadnode/node.toml",))
    out = sh("install.sh", env)
    assert "keeping" in out
    assert snapshot(root, skip=("etc/roadnode/node.toml",)) == first
    assert conf.read_text().endswith("# edited by the operator\n")

    # uninstall keeps evidence, config and user
    evidence = root / "var/lib/roadnode/evidence.db"
    evidence.write_bytes(b"evidence")
    sh("uninstall.sh", env)
    left = set(snapshot(root))
    assert not any(p.startswith("opt/roadnode") for p in left)
    assert not any("roadnode" in p for p in left if p.startswith("etc/systemd"))
    assert not (root / "etc/tmpfiles.d/roadnode.conf").exists()
    assert evidence.read_bytes() == b"evidence"
    assert conf.is_file()

    # PURGE=1 removes the rest
    sh("uninstall.sh", env, PURGE="1")
    assert not (root / "var/lib/roadnode").exists()
    assert not (root / "etc/roadnode").exists()
    assert not (root / "etc/sysusers.d/roadnode.conf").exists()
    if env.get("USERDEL") is None and env.get("SYSUSERS") is None:
        assert not re.search(r"^roadnode:", (root / "etc/passwd").read_text(), re.M)
