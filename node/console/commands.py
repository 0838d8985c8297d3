"""`roadnode console --port URL` and `roadnode console-pin`: the CLI of the serial console.

Standard library only at the top: `roadnode --help` must stay fast.
"""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

UNIT_CONFIG = Path("/etc/roadnode/node.toml")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from node.cli import config_args, state_dir_arg

    p = sub.add_parser(
        "console",
        help="serve the technician's console on a serial port",
        description="Serve the technician's console on a serial port (docs/console.md).",
    )
    p.add_argument(
        "--port",
        required=True,
        metavar="URL",
        help="serial device or pyserial URL: /dev/ttyGS0, /dev/serial0, /dev/ttyUSB0, loop://",
    )
    p.add_argument("--baud", type=int, help="line speed (default: console.baud, 115200)")
    config_args(p)
    state_dir_arg(p)
    p.set_defaults(handler=cmd_console)

    h = sub.add_parser(
        "console-pin",
        help="print the console.pin_hash line for a technician PIN",
        description="Read a PIN (twice, not echoed; or one line from stdin with --stdin) and "
        "print the scrypt hash for console.pin_hash.",
    )
    h.add_argument("--stdin", action="store_true", help="read the PIN from standard input")
    h.set_defaults(handler=cmd_console_pin)


def cmd_console(args: argparse.Namespace) -> int:
    from node.configload import load
    from node.console import build_context
    from node.console.port import Console
    from node.journal import setup_logging
    from node.service import prepare_state_dir

    config_path: Path | None = args.config
    if config_path is None and UNIT_CONFIG.exists():
        config_path = UNIT_CONFIG
    overrides = list(args.overrides)
    if args.baud is not None:
        overrides.append(f"console.baud={args.baud}")
    cfg = load(config_path, overrides)
    setup_logging(cfg.service.log_level)
    prepare_state_dir(args.state_dir)
    ctx = build_context(cfg, args.state_dir, config_path, args.port)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    Console(ctx, args.port, stop).run()
    return 0


def cmd_console_pin(args: argparse.Namespace) -> int:
    from node.console.pin import PinError, hash_pin

    if args.stdin:
        pin = sys.stdin.readline().rstrip("\r\n")
    else:
        pin = getpass.getpass("technician PIN: ")
        if getpass.getpass("again: ") != pin:
            print("roadnode: console-pin: the two PINs differ", file=sys.stderr)
            return 1
    try:
        print(f'pin_hash = "{hash_pin(pin)}"')
    except PinError as e:
        print(f"roadnode: console-pin: {e}", file=sys.stderr)
        return 1
    return 0
