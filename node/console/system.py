"""What the console learns from the machine itself, without the service: time, disk,
temperature, network interfaces, logs, and the commands it runs (systemctl, journalctl).

Commands go through a `Runner` so that tests (and a console on a laptop) never really restart
a service or reboot anything. Every figure comes from the machine; what it cannot find is said
to be unavailable, never guessed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import importlib.util
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunResult:
    code: int  # 127: not found, 124: timed out
    output: str  # stdout and stderr together


Runner = Callable[[list[str], float], RunResult]


def run_command(argv: list[str], timeout: float) -> RunResult:
    """Run `argv` (no shell), return its exit code and output."""
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return RunResult(127, f"{argv[0]}: not found on this machine")
    except subprocess.TimeoutExpired:
        return RunResult(124, f"{argv[0]}: no answer within {timeout:.0f} s")
    except OSError as e:
        return RunResult(126, f"{argv[0]}: {e.strerror or e}")
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    return RunResult(proc.returncode, out)


def has(tool: str) -> bool:
    return shutil.which(tool) is not None


# --- time ------------------------------------------------------------------------------------


def time_lines(now: dt.datetime | None = None) -> list[str]:
    now = now or dt.datetime.now(dt.UTC)
    lines = [f"utc      {now.strftime('%Y-%m-%d %H:%M:%S')} UTC"]
    with contextlib.suppress(OSError, ValueError, IndexError):
        up = float(Path("/proc/uptime").read_text().split()[0])
        lines.append(f"uptime   {_duration(up)}")
    if importlib.util.find_spec("node.clock") is None:
        lines.append("sync     not reported (no clock module in this build)")
        return lines
    from node.clock import sync_state

    state = sync_state()
    if state.source == "unknown":
        lines.append("sync     unknown (the kernel's NTP state cannot be read here)")
    else:
        est = "n/a" if state.est_error_s is None else f"{state.est_error_s * 1e3:.1f} ms"
        worst = "n/a" if state.max_error_s is None else f"{state.max_error_s * 1e3:.1f} ms"
        synced = "synchronised" if state.synced else "NOT synchronised"
        lines.append(f"sync     {synced} (estimated error {est}, at most {worst})")
    return lines


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    return (f"{days}d " if days else "") + f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


# --- disk ------------------------------------------------------------------------------------


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def disk_lines(paths: list[tuple[str, Path]], export_dirs: list[Path]) -> list[str]:
    lines = []
    for label, path in paths:
        try:
            u = shutil.disk_usage(path)
        except OSError as e:
            lines.append(f"{label:<8} {path}: {e.strerror or e}")
            continue
        used = 100.0 * (u.total - u.free) / u.total if u.total else 0.0
        lines.append(
            f"{label:<8} {human(u.free)} free of {human(u.total)} ({used:.0f}% used)  {path}"
        )
    media = removable_mounts(export_dirs)
    if not media:
        lines.append("media    no USB stick mounted under " + ", ".join(map(str, export_dirs)))
    for mount, fstype in media:
        try:
            u = shutil.disk_usage(mount)
            lines.append(f"media    {human(u.free)} free of {human(u.total)}  {mount} ({fstype})")
        except OSError as e:
            lines.append(f"media    {mount}: {e.strerror or e}")
    return lines


def removable_mounts(export_dirs: list[Path]) -> list[tuple[Path, str]]:
    """Mount points (and their file systems) at or under the export folders."""
    out = []
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = Path(parts[1].replace("\\040", " "))
        if any(mount == d or d in mount.parents for d in export_dirs):
            out.append((mount, parts[2]))
    return out


# --- temperature -----------------------------------------------------------------------------

THROTTLE_BITS = {
    0: "under-voltage now",
    1: "ARM frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage has occurred",
    17: "frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}


def temp_lines(runner: Runner, thermal: Path = Path("/sys/class/thermal")) -> list[str]:
    lines = []
    for zone in sorted(thermal.glob("thermal_zone*")):
        try:
            milli = int((zone / "temp").read_text().strip())
            kind = (zone / "type").read_text().strip()
        except (OSError, ValueError):
            continue
        lines.append(f"{kind[:24]:<24} {milli / 1000:5.1f} C")
    if not lines:
        lines.append("temp     no thermal zones on this machine")
    if has("vcgencmd"):
        result = runner(["vcgencmd", "get_throttled"], 5.0)
        lines += throttled_lines(result)
    else:
        lines.append("throttle not reported (no vcgencmd: not a Raspberry Pi firmware)")
    return lines


def throttled_lines(result: RunResult) -> list[str]:
    text = result.output.strip()
    if result.code != 0 or "=" not in text:
        return [f"throttle vcgencmd failed: {text.splitlines()[0] if text else result.code}"]
    try:
        value = int(text.split("=", 1)[1], 16)
    except ValueError:
        return [f"throttle unexpected answer: {text[:60]}"]
    if value == 0:
        return ["throttle none (0x0): power and temperature fine since boot"]
    flags = [why for bit, why in THROTTLE_BITS.items() if value >> bit & 1]
    return [f"throttle 0x{value:x}:"] + [f"         {f}" for f in flags]


# --- network ---------------------------------------------------------------------------------

SIOCGIFADDR = 0x8915


def ipv4_of(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def ipv6_of(name: str) -> list[str]:
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[5] == name and parts[3] == "00":  # global scope
                hexaddr = parts[0]
                addr = ":".join(hexaddr[i : i + 4] for i in range(0, 32, 4))
                out.append(
                    socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, addr))
                )
    return out


def interface_lines(net: Path = Path("/sys/class/net")) -> list[str]:
    lines = []
    try:
        names = sorted(p.name for p in net.iterdir())
    except OSError:
        return ["net      no /sys/class/net on this machine"]
    for name in names:
        if name == "lo":
            continue

        def read(rel: str, name: str = name) -> str:
            try:
                return (net / name / rel).read_text().strip()
            except OSError:
                return "?"

        state = read("operstate")
        addrs = [a for a in [ipv4_of(name), *ipv6_of(name)] if a]
        rx, tx = read("statistics/rx_bytes"), read("statistics/tx_bytes")
        traffic = ""
        if rx.isdigit() and tx.isdigit():
            traffic = f"  rx {human(int(rx))} tx {human(int(tx))}"
        lines.append(f"{name[:10]:<10} {state:<8} {' '.join(addrs) or 'no address'}{traffic}")
    return lines or ["net      no interfaces besides loopback"]


def cellular_lines(runner: Runner) -> list[str]:
    if not has("mmcli"):
        return ["cellular not reported (no ModemManager/mmcli on this unit)"]
    result = runner(["mmcli", "-m", "any", "--output-keyvalue"], 10.0)
    if result.code != 0:
        first = result.output.strip().splitlines()[:1]
        return [f"cellular no modem ({first[0][:60] if first else 'mmcli failed'})"]
    kv = {}
    for line in result.output.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            kv[key.strip()] = value.strip()
    quality = kv.get("modem.generic.signal-quality.value", "?")
    state = kv.get("modem.generic.state", "?")
    tech = kv.get("modem.generic.access-technologies.value[1]", "?")
    operator = kv.get("modem.3gpp.operator-name", "?")
    return [f"cellular {state}, {tech}, signal {quality}%, operator {operator}"]


# --- logs ------------------------------------------------------------------------------------


def log_lines(runner: Runner, unit: str, n: int, log_file: Path) -> list[str]:
    if has("journalctl"):
        result = runner(
            ["journalctl", "-u", unit, "-n", str(n), "--no-pager", "-q", "-o", "short-iso"], 10.0
        )
        if result.code == 0:
            lines = result.output.splitlines()
            return lines[-n:] if lines else [f"logs     the journal has nothing for {unit}"]
        return [f"logs     journalctl failed: {result.output.strip()[:60]}"]
    if log_file.exists():
        try:
            with log_file.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 256 * 1024))
                tail = f.read().decode("utf-8", "replace").splitlines()
        except OSError as e:
            return [f"logs     {log_file}: {e.strerror or e}"]
        return tail[-n:]
    return [f"logs     no journal (journalctl) and no log file {log_file}"]
