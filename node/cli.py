"""The `roadnode` command."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node import __version__
from node.capture.frame import CaptureError
from node.configload import ConfigError, load
from node.control import ControlError, query
from node.journal import setup_logging

if TYPE_CHECKING:
    from node.capture.frame import Image
    from node.infer.detector import Detection, PlateDetector
    from node.infer.evaluate import FloatArray, LabelledImage

DEFAULT_STATE_DIR = Path("/var/lib/roadnode")

# Subsystems that bring their own subcommands. Each module's `register(sub)` adds parsers
# with `set_defaults(handler=function)`, where function(args) -> exit status. The modules
# import only the standard library at the top, so `roadnode --help` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
    "node.rules.commands",
    "node.evidence.commands",
    "node.console.commands",
    "node.store.commands",
    "node.uplink.commands",
    "node.fleet.commands",
    "node.bench.commands",
    "node.demo",
    "node.infer.reader_commands",
)


def state_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where the node keeps its state (default {DEFAULT_STATE_DIR})",
    )


def config_args(p: argparse.ArgumentParser) -> None:
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
    config_args(run)
    state_dir_arg(run)
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
    state_dir_arg(status)
    status.add_argument("--json", action="store_true", help="print the raw JSON")

    detect = sub.add_parser("detect", help="find plates in image files")
    detect.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    _model_args(detect)
    detect.add_argument("--json", action="store_true", help="print one JSON line per image")

    evaluate = sub.add_parser("eval-detector", help="measure the detector on labelled images")
    evaluate.add_argument("--labels", type=Path, required=True, metavar="LABELS.jsonl")
    _model_args(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print the figures as JSON")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _threshold(value: str) -> float:
    number = float(value)
    if not 0.0 <= number < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {value}")
    return number


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, metavar="MANIFEST", help="model manifest (.json)")
    p.add_argument(
        "--threshold", type=_threshold, metavar="T", help="minimum score (default: the model's)"
    )


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
    d = s["detector"]
    if d["state"] == "running":
        lines.append(
            f"detector {d['model']} on {d['backend']}, threshold {d['threshold']:.2f}: "
            f"{d['plates']} plates in {d['frames']} frames"
        )
    else:
        lines.append(f"detector {d['state']}" + (f": {d['error']}" if "error" in d else ""))
    lines += _pipeline_lines(s)
    lines += [
        f"queues   detect {q['depth']}/{q['capacity']}",
        f"ring     {ring['frames']} frames, {_mb(ring['bytes'])}",
        f"disk     {_mb(disk['free_bytes'])} free of {_mb(disk['total_bytes'])}",
        f"errors   stage {s['stage_errors']}; last: {s['last_error'] or 'none'}",
    ]
    return "\n".join(line[:80] for line in lines)


def _pipeline_lines(s: dict[str, Any]) -> list[str]:
    """Rules, evidence, store, uplink, health and healing: one or two lines each."""
    out = []
    r = s.get("rules", {})
    if r.get("state") == "running":
        per = ", ".join(f"{k} {n}" for k, n in r["rules"]["violations"].items())
        out.append(f"rules    {r['violations']} violations ({per})")
        out += [f"         {k} {v}" for k, v in r["rules"].items() if str(v).startswith("inactive")]
    elif r:
        out.append(f"rules    {r['state']}: {r.get('error', '')}")
    e = s.get("evidence", {})
    if e.get("state") == "running":
        st = e.get("store", {}).get("states", {})
        ready, acked = st.get("ready", {}), st.get("acked", {})
        out.append(
            f"evidence {e['stored']} stored, {e['lost']} lost; store ready "
            f"{ready.get('count', 0)} ({_mb(ready.get('bytes', 0))}), acked {acked.get('count', 0)}"
        )
        if e.get("store", {}).get("low_disk"):
            out.append("         LOW DISK: the store refuses low-priority packets")
    elif e:
        out.append(f"evidence {e['state']}: {e.get('error', '')}")
    u = s.get("uplink", {})
    if u.get("state") == "running":
        out.append(
            f"uplink   link {u['link']}, {u['acked']} acked, last error {u['last_error'] or 'none'}"
        )
    elif u:
        out.append(f"uplink   {u['state']}: {u.get('error', '')}")
    h = s.get("health", {})
    if h:
        out.append(f"health   alarms: {', '.join(h.get('alarms', [])) or 'none'}")
    heal = s.get("healing", {})
    if heal.get("heals"):
        out.append(f"healing  {heal['heals']} heals ({heal['recent']} recent); last {heal['last']}")
    return out


def cmd_status(args: argparse.Namespace) -> int:
    reply = query(args.state_dir, {"cmd": "status"})
    if not reply.get("ok"):
        print(f"roadnode: status: {reply.get('error', 'no answer')}", file=sys.stderr)
        return 1
    reply.pop("ok")
    print(json.dumps(reply, indent=2) if args.json else format_status(reply))
    return 0


def _detections_line(path: Path, image: Image, found: list[Detection], as_json: bool) -> str:
    h, w = image.shape[:2]
    if as_json:
        plates = [{"box": [round(v, 1) for v in d.box], "score": round(d.score, 3)} for d in found]
        return json.dumps({"image": str(path), "width": w, "height": h, "detections": plates})
    lines = [f"{path}  {w}x{h}  {len(found)} plate{'' if len(found) == 1 else 's'}"]
    lines += [f"  {d.score:.3f}  [{', '.join(f'{v:.1f}' for v in d.box)}]" for d in found]
    return "\n".join(lines)


def cmd_detect(args: argparse.Namespace) -> int:
    from node.infer.detector import PlateDetector, read_image
    from node.infer.manifest import DEFAULT_MANIFEST
    from node.infer.runtime import ModelError

    try:
        detector = PlateDetector(args.model or DEFAULT_MANIFEST, threshold=args.threshold)
    except ModelError as e:
        print(f"roadnode: {e}", file=sys.stderr)
        return 1
    failed = 0
    for path in args.images:
        try:
            image = read_image(path)
            found = detector.detect(image)
        except (OSError, ValueError) as e:
            failed += 1
            if args.json:
                print(json.dumps({"image": str(path), "error": str(e)}), flush=True)
            else:
                print(f"roadnode: {e}", file=sys.stderr, flush=True)
            continue
        print(_detections_line(path, image, found, args.json), flush=True)
    return 1 if failed else 0


def cmd_eval_detector(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from node.infer.detector import PlateDetector
    from node.infer.evaluate import LabelError, evaluate, read_labels
    from node.infer.manifest import DEFAULT_MANIFEST
    from node.infer.runtime import ModelError

    try:
        labels = read_labels(args.labels)
        detector = PlateDetector(args.model or DEFAULT_MANIFEST, threshold=args.threshold)
    except (LabelError, ModelError) as e:
        print(f"roadnode: {e}", file=sys.stderr)
        return 1
    dets, truths, failed = _detect_labelled(detector, labels)
    result = evaluate(dets, truths, detector.threshold)
    figures: dict[str, Any] = {
        "labels": str(args.labels),
        "model": detector.manifest.label,
        "failed": failed,
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(result).items()},
    }
    print(json.dumps(figures) if args.json else _format_evaluation(figures))
    return 1 if failed else 0


def _detect_labelled(
    detector: PlateDetector, labels: list[LabelledImage]
) -> tuple[list[tuple[FloatArray, FloatArray]], list[FloatArray], int]:
    """Run `detector` on each labelled image: (boxes, scores) per image, truths, failures."""
    import numpy as np

    from node.infer.detector import read_image
    from node.infer.evaluate import SCORE_FLOOR

    dets: list[tuple[FloatArray, FloatArray]] = []
    truths: list[FloatArray] = []
    failed = 0
    for item in labels:
        try:
            image = read_image(item.image)
            if image.shape[:2] != (item.height, item.width):
                h, w = image.shape[:2]
                raise ValueError(
                    f"{item.image}: is {w}x{h}, the labels say {item.width}x{item.height}"
                )
            found = detector.detect(image, threshold=SCORE_FLOOR)
        except (OSError, ValueError) as e:
            failed += 1
            print(f"roadnode: {e}", file=sys.stderr, flush=True)
            continue
        boxes = np.array([d.box for d in found], dtype=np.float64).reshape(-1, 4)
        dets.append((boxes, np.array([d.score for d in found], dtype=np.float64)))
        truths.append(item.boxes)
    return dets, truths, failed


def _format_evaluation(f: dict[str, Any]) -> str:
    def show(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    tp, fp = f["true_positives"], f["false_positives"]
    return "\n".join(
        [
            f"model      {f['model']}",
            f"images     {f['images']}  (failed {f['failed']})  plates {f['ground_truths']}",
            f"AP50       {show(f['ap50'])}",
            f"threshold  {f['threshold']:.3f}",
            f"recall     {show(f['recall'])}  ({tp}/{f['ground_truths']})",
            f"precision  {show(f['precision'])}  ({tp}/{tp + fp})",
            f"FP/image   {show(f['fp_per_image'])}",
        ]
    )


COMMANDS = {
    "run": cmd_run,
    "check-config": cmd_check_config,
    "status": cmd_status,
    "detect": cmd_detect,
    "eval-detector": cmd_eval_detector,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return int(handler(args))
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
