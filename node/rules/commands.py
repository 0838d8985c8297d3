"""`roadnode score-sim`: the violation path on the simulator, scored (see node.rules.score)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

SCENES = ("default", "motorbikes", "night", "dropped-frames")


def _positive(value: str) -> float:
    number = float(value)
    if not 0 < number <= 86_400:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 86400, got {value}")
    return number


def register(sub: Any) -> None:
    from node.cli import config_args

    p = sub.add_parser("score-sim", help="score violations on the simulator against its truth")
    config_args(p)
    p.add_argument("--seed", type=int, default=1, help="traffic seed (default 1)")
    p.add_argument(
        "--duration", type=_positive, default=300.0, metavar="S", help="simulated seconds"
    )
    p.add_argument("--scene", choices=SCENES, default="default")
    p.add_argument("--model", metavar="MANIFEST", help="detector manifest (default: bundled)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(handler=cmd_score_sim)


def cmd_score_sim(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from node.configload import load
    from node.infer.detector import PlateDetector
    from node.infer.runtime import ModelError
    from node.rules.score import format_score, score_sim

    cfg = load(args.config, args.overrides)
    if args.model:
        cfg = replace(cfg, detector=replace(cfg.detector, model=args.model))
    try:
        detector = PlateDetector.from_config(cfg.detector)
    except ModelError as e:
        print(f"roadnode: {e}", file=sys.stderr)
        return 1
    result = score_sim(cfg, detector, args.seed, args.duration, args.scene)
    print(json.dumps(result) if args.json else format_score(result), flush=True)
    return 0
