"""`roadnode queue`: what the offline store holds; `roadnode queue check`: verify every blob.

Imports only the standard library at the top (the store is imported by the handlers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

WIDTH = 80


def register(sub: Any) -> None:
    from node.cli import config_args, state_dir_arg

    p = sub.add_parser(
        "queue",
        help="show the offline packet store (counts, bytes, oldest); 'check' verifies blobs",
        description="Show what the offline packet store holds, or with 'check' read every "
        "blob and verify its sha256 (bad ones are quarantined, never uploaded).",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=("show", "check"),
        default="show",
        help="show (default) or check",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    state_dir_arg(p)
    config_args(p)
    p.set_defaults(handler=cmd_queue)


def cmd_queue(args: argparse.Namespace) -> int:
    from node.configload import load
    from node.store.store import StoreError

    cfg = load(args.config, args.overrides).store
    directory = Path(args.state_dir) / "store"
    try:
        if args.action == "check":
            return _check(directory, cfg, args.json)
        from node.store.store import read_stats

        stats = read_stats(directory, cfg)
    except StoreError as e:
        print(f"roadnode: queue: {e}", file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=2) if args.json else format_queue(stats))
    return 0


def _check(directory: Path, cfg: Any, as_json: bool) -> int:
    from node.store.store import PacketStore, StoreBusy, StoreError

    if not (directory / "index.sqlite").is_file() and not (directory / "blobs").is_dir():
        raise StoreError(f"{directory}: no packet store here")
    try:
        store = PacketStore(directory, cfg)
    except StoreBusy:
        checked, ok, total, bad = _check_readonly(directory)
        quarantined = False
    else:
        with store:
            report = store.check()
        checked, ok, total, bad = report.checked, report.ok, report.bytes, list(report.bad)
        quarantined = True
    if as_json:
        out: dict[str, Any] = {"checked": checked, "ok": ok, "bytes": total}
        out |= {"quarantined": quarantined, "bad": [{"id": i, "reason": r} for i, r in bad]}
        print(json.dumps(out, indent=2))
    else:
        print(f"checked {checked} blobs, {_size(total)}: {ok} ok, {len(bad)} bad")
        for packet_id, reason in bad:
            print(_fit(f"  BAD  {packet_id}  {reason}"))
        if bad and not quarantined:
            print("  (the running node owns the store: it quarantines a bad blob when it reads it)")
    return 1 if bad else 0


def _check_readonly(directory: Path) -> tuple[int, int, int, list[tuple[str, str]]]:
    """Verify blobs without taking the store from the node that owns it."""
    from node.store.store import StoreError

    db = directory / "index.sqlite"
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
        try:
            rows = conn.execute(
                "SELECT id, state, offset, size, sha256 FROM packets "
                "WHERE has_blob = 1 AND state != 'quarantined' ORDER BY seq"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise StoreError(f"{db}: {e}") from None
    folders = {"acked": directory / "acked"}
    checked = ok = total = 0
    bad: list[tuple[str, str]] = []
    for packet_id, state, offset, size, sha in rows:
        path = folders.get(state, directory / "blobs") / packet_id
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(size + 1)
        except FileNotFoundError:
            continue  # acked or quarantined meanwhile
        except OSError as e:
            bad.append((packet_id, f"unreadable: {e.strerror}"))
            checked += 1
            continue
        checked += 1
        if len(data) != size:
            bad.append((packet_id, f"blob has {len(data)} bytes, expected {size}"))
        elif hashlib.sha256(data).hexdigest() != sha:
            bad.append((packet_id, "sha256 mismatch"))
        else:
            ok += 1
            total += size
    return checked, ok, total, bad


def _size(n: float) -> str:
    """Binary units, like the store's limits (`max_mb` is MiB)."""
    if n < 1 << 20:
        return f"{n / 1024:,.1f} KiB"
    return f"{n / (1 << 20):,.1f} MiB" if n < 1 << 30 else f"{n / (1 << 30):,.2f} GiB"


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _fit(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 1] + "…"


def format_queue(s: dict[str, Any]) -> str:
    """The store's figures as an 80-column block for a technician."""
    from node.store.store import priority_name

    st = s["states"]
    acked = st["acked"]
    lines = [
        f"store     {s['directory']}",
        f"{'state':<16}{'packets':>10}{'size':>14}",
        f"{'ready':<16}{st['ready']['count']:>10,}{_size(st['ready']['bytes']):>14}",
        f"{'in flight':<16}{st['in_flight']['count']:>10,}{_size(st['in_flight']['bytes']):>14}",
        f"{'acked, kept':<16}{acked['kept']:>10,}{_size(acked['bytes']):>14}"
        f"   ({acked['count']:,} ids remembered)",
        f"{'quarantined':<16}{st['quarantined']['count']:>10,}"
        f"{_size(st['quarantined']['bytes']):>14}",
        f"{'priority':<16}{'ready':>10}{'in flight':>11}{'size':>14}",
    ]
    for prio, p in s["priorities"].items():
        name = f"{prio} {priority_name(int(prio))}"
        lines.append(f"{name:<16}{p['ready']:>10,}{p['in_flight']:>11,}{_size(p['bytes']):>14}")
    if not s["priorities"]:
        lines.append(f"{'(none waiting)':<16}")
    if s["oldest_ready_age_s"] is None:
        lines.append("oldest    no packet waiting")
    else:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s["oldest_ready_utc_ns"] / 1e9))
        lines.append(
            f"oldest    ready packet {_age(s['oldest_ready_age_s'])} old (created {created} UTC)"
        )
    refusing = ", ".join(f"{p} {priority_name(p)}" for p in s["refusing_priorities"]) or "none"
    lines += [
        f"space     {_size(s['used_bytes'])} of {_size(s['max_bytes'])} used, "
        f"{s['fill_pct']:.1f}% full; refusing: {refusing}",
        f"disk      {_size(s['disk_free_bytes'])} free (store leaves {_size(s['min_free_bytes'])})"
        + ("  LOW DISK" if s["low_disk"] else ""),
    ]
    c = s["counters"]
    lines.append(
        f"counters  refused {c['refused']}  evicted {c['evicted']}  dropped {c['dropped']}  "
        f"quarantined {c['quarantined']}  lost {c['lost']}  write errors {c['write_errors']}"
    )
    if s["quarantined"]:
        lines.append("quarantined (newest first, never uploaded):")
        lines += [f"  {q['id']}  {q['reason']}" for q in s["quarantined"]]
    return "\n".join(_fit(line) for line in lines)
