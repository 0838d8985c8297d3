"""CLI: `roadnode bundle create|sign|verify`, `roadnode fleet-keygen`, `roadnode agent`,
`roadnode update status`. Standard library only at the top."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    from node.cli import config_args, state_dir_arg

    bundle = sub.add_parser(
        "bundle",
        help="build, sign and check fleet update bundles",
        description="Build, sign and check fleet update bundles (docs/fleet-updates.md).",
    )
    bsub = bundle.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")
    create = bsub.add_parser("create", help="build a bundle from files and folders")
    create.add_argument("--kind", required=True, choices=("software", "model", "config"))
    create.add_argument("--version", required=True, help="1 to 4 dot-separated numbers")
    create.add_argument("--key", type=Path, help="fleet private key (omit: unsigned, sign later)")
    create.add_argument("--out", type=Path, required=True, metavar="FILE")
    create.add_argument("--arch", action="append", default=[], help="target CPU (repeatable)")
    create.add_argument(
        "--hardware", action="append", default=[], help="target board model text (repeatable)"
    )
    create.add_argument("--min-installed", default="", metavar="VERSION")
    create.add_argument("--max-installed", default="", metavar="VERSION")
    create.add_argument("--node", action="append", default=[], help="target node id (repeatable)")
    create.add_argument("--rollout-pct", type=int, default=100, metavar="N")
    create.add_argument(
        "--downgrade", action="store_true", help="allow installing over a newer version"
    )
    create.add_argument("--description", default="")
    create.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    create.set_defaults(handler=cmd_bundle_create)

    sign = bsub.add_parser("sign", help="(re)sign a bundle")
    sign.add_argument("file", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="fleet private key")
    sign.set_defaults(handler=cmd_bundle_sign)

    verify = bsub.add_parser("verify", help="check a bundle's signature and every file")
    verify.add_argument("file", type=Path)
    verify.add_argument(
        "--fleet-key",
        action="append",
        required=True,
        metavar="PUB",
        help="trusted public key: base64 text or a .pub file (repeatable)",
    )
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=cmd_bundle_verify)

    keygen = sub.add_parser("fleet-keygen", help="make a fleet signing keypair")
    keygen.add_argument("dir", type=Path, help="writes DIR/fleet.key (0600) and DIR/fleet.pub")
    keygen.set_defaults(handler=cmd_keygen)

    agent = sub.add_parser("agent", help="run the fleet update agent")
    config_args(agent)
    state_dir_arg(agent)
    agent.add_argument("--once", action="store_true", help="one round, then exit")
    agent.set_defaults(handler=cmd_agent)

    update = sub.add_parser("update", help="fleet update state")
    usub = update.add_subparsers(dest="update_command", required=True, metavar="ACTION")
    ustatus = usub.add_parser("status", help="versions installed and the last update's result")
    state_dir_arg(ustatus)
    ustatus.add_argument("--json", action="store_true")
    ustatus.set_defaults(handler=cmd_update_status)


def _fail(message: str) -> int:
    print(f"roadnode: {message}", file=sys.stderr)
    return 1


def cmd_bundle_create(args: argparse.Namespace) -> int:
    from node.fleet import BundleError
    from node.fleet.bundle import Target, create, private_key

    try:
        key = private_key(args.key) if args.key else None
        target = Target(
            arch=tuple(args.arch),
            hardware=tuple(args.hardware),
            min_installed=args.min_installed,
            max_installed=args.max_installed,
            nodes=tuple(args.node),
        )
        m = create(
            args.out,
            args.kind,
            args.version,
            args.paths,
            key,
            target,
            args.rollout_pct,
            args.downgrade,
            args.description,
        )
    except BundleError as e:
        return _fail(f"bundle create: {e}")
    signed = "signed" if key else "UNSIGNED (roadnode bundle sign)"
    print(
        f"{args.out}: {m.kind} {m.version}, {len(m.files)} files, {m.total_bytes} bytes, {signed}"
    )
    return 0


def cmd_bundle_sign(args: argparse.Namespace) -> int:
    from node.fleet import BundleError
    from node.fleet.bundle import key_id, private_key, sign

    try:
        key = private_key(args.key)
        m = sign(args.file, key)
    except BundleError as e:
        return _fail(f"bundle sign: {e}")
    print(f"{args.file}: {m.kind} {m.version} signed by {key_id(key.public_key())}")
    return 0


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from node.fleet import BundleError
    from node.fleet.bundle import trusted_keys, verify

    try:
        v = verify(args.file, trusted_keys(args.fleet_key))
    except BundleError as e:
        if args.json:
            print(json.dumps({"ok": False, "error": str(e)}))
        return _fail(f"bundle verify: {e}")
    m = v.manifest
    if args.json:
        out = {"ok": True, "bundle_id": v.bundle_id, "key_id": v.key_id, "kind": m.kind}
        out |= {"version": m.version, "created": m.created, "files": len(m.files)}
        out |= {"bytes": m.total_bytes, "rollout_pct": m.rollout_pct, "downgrade": m.downgrade}
        print(json.dumps(out))
    else:
        print(
            f"{args.file}: ok: {m.kind} {m.version}, {len(m.files)} files, {m.total_bytes} "
            f"bytes, created {m.created}, signed by {v.key_id}, id {v.bundle_id[:16]}"
            + (", DOWNGRADE" if m.downgrade else "")
            + (f", rollout {m.rollout_pct}%" if m.rollout_pct < 100 else "")
        )
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from node.fleet import BundleError
    from node.fleet.bundle import generate_keypair, key_id, public_key

    try:
        priv, pub = generate_keypair(args.dir)
    except (BundleError, OSError) as e:
        return _fail(f"fleet-keygen: {e}")
    print(f"{priv} (private, 0600: keep it off the nodes)")
    print(f"{pub} (public: fleet.key in node.toml), key id {key_id(public_key(pub))}")
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from node.configload import load
    from node.fleet.agent import AgentOptions, run_agent
    from node.journal import setup_logging

    setup_logging(load(args.config, args.overrides).service.log_level)
    opts = AgentOptions(args.state_dir, args.config, tuple(args.overrides), args.once)
    return run_agent(opts)


def cmd_update_status(args: argparse.Namespace) -> int:
    from node.fleet import update_status

    s = update_status(args.state_dir)
    print(json.dumps(s, indent=2) if args.json else format_update_status(s))
    return 0


def format_update_status(s: dict[str, Any]) -> str:
    lines = []
    for kind in ("software", "model", "config"):
        k = s[kind]
        lines.append(
            f"{kind:<9} current {k['current'] or 'none'}  previous {k['previous'] or 'none'}"
        )
    p = s.get("in_progress")
    if p:
        lines.append(f"updating  {p['kind']} {p['version']}: {p['step']} since {p['at']}")
    last = s.get("last")
    if last:
        what = f"{last['kind']} {last['version']}".strip() or "a bundle"
        lines.append(f"last      {what}: {last['result']} at {last['at']}")
        if last.get("reason") and last["result"] != "committed":
            lines += textwrap.wrap(
                last["reason"], 80, initial_indent=" " * 10, subsequent_indent=" " * 10
            )
    else:
        lines.append("last      no update yet")
    return "\n".join(lines)
