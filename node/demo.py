"""`roadnode demo`: the whole node on the simulated junction, delivering to a local ingest.

What `make demo` runs. In one process: a reference ingest on loopback (`node.uplink.ingest`)
that knows this node's public key and holds a demo central keypair; the node on
`sim://junction` with the bundled detector, its packets sealed to that central key and
uploaded over loopback (plain http, allowed explicitly for the demo only). At the end the
uploader is given a few seconds to drain, and the demo prints where the ingest stored the
packets it verified (signature, every part's sha256, after unsealing).

Everything lives under the demo state dir: `node/` (the node's state: key, store, control
socket), `central/` (the demo central's X25519 keypair), `ingest/` (what the central got).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

DRAIN_S = 15.0


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the node on the sim, delivering to a local ingest")
    p.add_argument("--state-dir", type=Path, default=Path(".demo"), help="default .demo")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=30.0, metavar="SECONDS")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from node.configload import load
    from node.evidence.keys import (
        evidence_keys,
        load_central_private_key,
        public_key_text,
        write_central_keypair,
    )
    from node.journal import setup_logging
    from node.service import RunOptions, Service, final_summary, prepare_state_dir
    from node.uplink.ingest import IngestServer

    root: Path = args.state_dir
    node_dir, central_dir, ingest_dir = root / "node", root / "central", root / "ingest"
    for d in (root, node_dir, central_dir):
        prepare_state_dir(d)
    if not (central_dir / "central.key").exists():
        write_central_keypair(central_dir)
    cfg0 = load(None, [])
    key, _ = evidence_keys(node_dir)  # the node key, made on first start
    enrolled = root / "node-keys"
    enrolled.mkdir(exist_ok=True)
    (enrolled / f"{cfg0.node.id}.pub").write_text(public_key_text(key.public_key()) + "\n")
    central = load_central_private_key(central_dir / "central.key")
    ingest = IngestServer(ingest_dir, enrolled, central).start()
    overrides = [
        f"capture.source={json.dumps(f'sim://junction?seed={args.seed}')}",
        f"uplink.url={json.dumps(ingest.url)}",
        "uplink.allow_plain_http=true",
        "uplink.backoff_base_s=0.2",
        "uplink.backoff_max_s=2",
        f"evidence.central_key={json.dumps(str(central_dir / 'central.pub'))}",
    ]
    cfg = load(None, overrides)
    setup_logging(cfg.service.log_level)
    print(f"demo: ingest listening on {ingest.url}, storing in {ingest_dir}", flush=True)
    service = Service(cfg, RunOptions(node_dir, args.duration, sys.stdout))
    service.stop_hook = lambda: _drain(service)
    try:
        code = service.run()
    finally:
        ingest.stop()
    print("\n".join(final_summary(service)), flush=True)
    stored = sorted(ingest_dir.glob("**/*.json"))
    print(
        f"demo: the ingest verified and stored {ingest.counts['stored']} packets "
        f"({ingest.counts['duplicate']} duplicates answered, "
        f"{ingest.counts['rejected']} rejected) in {ingest_dir.resolve()}",
        flush=True,
    )
    if stored:
        print(f"      e.g. {stored[0]}", flush=True)
    return code


def _drain(service: Any) -> None:
    """Before the node stops: let the uploader send what the store holds (a few seconds)."""
    if service.uploader is None or service.store is None:
        return
    service.uploader.upload_now()
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        if service.evidence is not None and service.evidence.queue.qsize():
            time.sleep(0.2)
            continue
        stats = service.store.stats()
        if not stats["states"]["ready"]["count"] and not stats["states"]["in_flight"]["count"]:
            return
        time.sleep(0.2)
