"""The `roadnode` command."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from node import __version__
from node.capture.frame import CaptureError
from node.configload import ConfigError, load
from node.control import ControlError, query
from node.journal import setup_logging

DEFAULT_STATE_DIR = Path("/var/lib/roadnode")


def _state_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where the node keeps its state (default {DEFAULT_STATE_DIR})",
    )


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (default: built-in defaults)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key for this run (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roadnode", description=__doc__)
    parser.add_argument("--version", action="version", version=f"roadnode {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the node")
    _config_args(run)
    _state_dir_arg(run)
    run.add_argument("--source", help="frame source URL (overrides capture.source)")
    run.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until stopped)",
    )
    run.add_argument("--progress", action="store_true", help="print a progress line each second")

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file", type=Path)
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    status = sub.add_parser("status", help="ask the running service how it is")
    _state_dir_arg(status)
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from node.service import RunOptions, Service, final_summary, prepare_state_dir

    overrides = list(args.overrides)
    if args.source:  # validated like any other key
        overrides.append(f"capture.source={json.dumps(args.source)}")
    cfg = load(args.config, overrides)
    setup_logging(cfg.service.log_level)
    prepare_state_dir(args.state_dir)
    opts = RunOptions(args.state_dir, args.duration, sys.stdout if args.progress else None)
    service = Service(cfg, opts)
    code = service.run()
    print("\n".join(final_summary(service)), flush=True)
    return code


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        load(args.file, args.overrides)
    except ConfigError as e:
        print(f"{args.file}: {len(e.problems)} problem(s)")
        for problem in e.problems:
            print(f"  {problem}")
        return 1
    print(f"{args.file}: ok")
    return 0


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.1f} GB"


def format_status(s: dict[str, Any]) -> str:
    """The status as an 80-column text block for a technician."""
    up = int(s["uptime_s"])
    f = s["frames"]
    lines = [
        f"roadnode {s['version']}  node {s['node_id']}  up {up // 3600}h{up % 3600 // 60:02d}m"
        f"{up % 60:02d}s  pid {s['pid']}",
        f"source   {s['source']['url']}",
        *textwrap.wrap(
            ", ".join(f"{k} {v}" for k, v in s["source"].items() if k != "url"),
            80,
            initial_indent=" " * 9,
            subsequent_indent=" " * 9,
        ),
        f"frames   in {f['in']}  processed {f['processed']}  dropped {f['dropped']}"
        f"  fps {s['fps']:.1f}",
        "latency  stage            p50 ms    p95 ms",
    ]
    for name, lat in s["latency"].items():
        lines.append(f"         {name:<14} {lat['p50_ms']:>8.1f}  {lat['p95_ms']:>8.1f}")
    q = s["queues"]["detect"]
    ring = s["ring"]
    disk = s["disk"]
    lines += [
        f"queues   detect {q['depth']}/{q['capacity']}",
        f"ring     {ring['frames']} frames, {_mb(ring['bytes'])}",
        f"disk     {_mb(disk['free_bytes'])} free of {_mb(disk['total_bytes'])}",
        f"errors   stage {s['stage_errors']}; last: {s['last_error'] or 'none'}",
    ]
    return "\n".join(line[:80] for line in lines)


def cmd_status(args: argparse.Namespace) -> int:
    reply = query(args.state_dir, {"cmd": "status"})
    if not reply.get("ok"):
        print(f"roadnode: status: {reply.get('error', 'no answer')}", file=sys.stderr)
        return 1
    reply.pop("ok")
    print(json.dumps(reply, indent=2) if args.json else format_status(reply))
    return 0


COMMANDS = {"run": cmd_run, "check-config": cmd_check_config, "status": cmd_status}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print("roadnode: invalid config:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except (ControlError, CaptureError, OSError) as e:
        print(f"roadnode: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
