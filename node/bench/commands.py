"""`roadnode bench`: measure the node on this machine (docs/BENCHMARKS.md).

Imports only the standard library at the top (the suite is imported by the handler).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _seconds(value: str) -> float:
    number = float(value)
    if not 10.0 <= number <= 86_400.0:
        raise argparse.ArgumentTypeError(f"must be 10 … 86400 seconds, got {value}")
    return number


def register(sub: Any) -> None:
    from node.cli import config_args

    p = sub.add_parser(
        "bench",
        help="measure detector, pipeline, memory, cold start, packets, store and uplink",
        description="Run the fixed, seeded benchmark suite and print JSON (or write it to "
        "--json FILE). --write-docs puts the markdown tables into docs/BENCHMARKS.md between "
        "its bench markers. Needs a few minutes (under one with --quick).",
    )
    p.add_argument("--quick", action="store_true", help="a short run for a CI smoke test")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the JSON here")
    p.add_argument("--model", type=Path, metavar="MANIFEST", help="model manifest (.json)")
    p.add_argument(
        "--write-docs", action="store_true", help="write the tables into docs/BENCHMARKS.md"
    )
    p.add_argument(
        "--soak",
        type=_seconds,
        metavar="SECONDS",
        help="instead of the suite: run the node this long on the sim with camera-like frames "
        "(main as an array) and record its RSS",
    )
    p.add_argument(
        "--profile", type=Path, metavar="FILE", help="also cProfile the stages into FILE"
    )
    p.add_argument(
        "--work-dir", type=Path, metavar="DIR", help="scratch space (default: a temp dir)"
    )
    config_args(p)
    p.set_defaults(handler=cmd_bench)


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def cmd_bench(args: argparse.Namespace) -> int:
    import logging

    from node.bench import report, suite
    from node.configload import load

    cfg = load(args.config, args.overrides)
    logging.basicConfig(level=logging.WARNING)  # the service's INFO lines would drown the log
    if args.model is not None and not args.model.is_file():
        print(f"roadnode: bench: {args.model}: no such model manifest", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="roadnode-bench-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        if args.soak is not None:
            return _soak(args, cfg, work)
        result = suite.run_suite(
            cfg,
            args.quick,
            args.model,
            work,
            _log,
            config_path=args.config,
            overrides=args.overrides,
            profile=args.profile,
        )
    text = report.write_json(result, args.json)
    if args.json is None:
        sys.stdout.write(text)
    else:
        print(report.summary(result))
    if args.write_docs:
        path = report.write_docs("bench", report.markdown(result))
        _log(f"wrote the tables into {path}")
    return 0


def _soak(args: argparse.Namespace, cfg: Any, work: Path) -> int:
    from node.bench import report, suite

    manifest = suite.resolve_model(args.model, cfg)
    overrides = list(args.overrides)
    if manifest is not None:
        overrides.append(f"detector.model={json.dumps(str(manifest.resolve()))}")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    machine = suite.machine_info()
    _log(f"soak: roadnode run on {suite.CAMERA_SIM_URL} for {args.soak:g} s")
    out = suite.soak(args.config, overrides, args.soak, work, _log)
    machine["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {"schema": suite.SCHEMA, "started_utc": started, "machine": machine, "soak": out}
    text = report.write_json(result, args.json)
    if args.json is None:
        sys.stdout.write(text)
    if args.write_docs:
        path = report.write_docs("soak", report.soak_markdown(out, machine, started))
        _log(f"wrote the soak curve into {path}")
    return 0 if out.get("state") == "ok" else 1
