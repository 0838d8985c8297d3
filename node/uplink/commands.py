"""`roadnode ingest`: the reference central ingest; `roadnode bench-uplink`: drain rate.

Imports only the standard library at the top (the uplink is imported by the handlers).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "ingest",
        help="run the reference central ingest (verifies, dedupes, stores packets)",
        description="Receive packets over HTTP(S) as docs/uplink-protocol.md says: verify "
        "them against the enrolled node keys, deduplicate by packet id, store atomically.",
    )
    p.add_argument("--listen", type=_listen, default=("127.0.0.1", 8080), metavar="HOST:PORT")
    p.add_argument("--store", type=Path, required=True, metavar="DIR", help="where packets go")
    p.add_argument(
        "--node-keys",
        type=Path,
        required=True,
        metavar="DIR",
        help="one public key file per node: DIR/<node_id>.pub (re-read for unknown nodes)",
    )
    p.add_argument(
        "--central-key",
        type=Path,
        metavar="K",
        help="the central's X25519 private key: sealed packets are opened and fully verified",
    )
    p.add_argument("--tls-cert", type=Path, help="server certificate (PEM): serve HTTPS")
    p.add_argument("--tls-key", type=Path, help="private key of --tls-cert")
    p.add_argument("--client-ca", type=Path, help="require client certificates signed by this CA")
    p.add_argument("--max-mb", type=float, default=16.0, help="largest packet taken (default 16)")
    p.add_argument(
        "--extract-parts", action="store_true", help="also write each verified part to parts/ID/"
    )
    p.set_defaults(handler=cmd_ingest)

    b = sub.add_parser(
        "bench-uplink",
        help="measure how fast the uploader drains the store to a local ingest (loopback)",
    )
    b.add_argument("--count", type=int, default=300, help="packets (default 300)")
    b.add_argument("--size", type=int, default=120_000, help="bytes per packet (default 120000)")
    b.add_argument("--sealed", action="store_true", help="seal the packets to a central key")
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(handler=cmd_bench_uplink)


def cmd_ingest(args: argparse.Namespace) -> int:
    from node.evidence import KeyFileError
    from node.evidence.keys import load_central_private_key
    from node.journal import setup_logging
    from node.uplink.ingest import IngestServer, server_tls_context

    setup_logging("info")
    if bool(args.tls_cert) != bool(args.tls_key):
        print("roadnode: ingest: give both --tls-cert and --tls-key", file=sys.stderr)
        return 2
    try:
        central = load_central_private_key(args.central_key) if args.central_key else None
        tls = (
            server_tls_context(args.tls_cert, args.tls_key, args.client_ca)
            if args.tls_cert
            else None
        )
        server = IngestServer(
            args.store,
            args.node_keys,
            central,
            host=args.listen[0],
            port=args.listen[1],
            max_bytes=int(args.max_mb * 1024 * 1024),
            tls=tls,
            extract_parts=args.extract_parts,
        )
    except KeyFileError as e:
        print(f"roadnode: ingest: {e}", file=sys.stderr)
        return 1
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    server.start()
    mode = "unsealing and verifying" if central else "verifying (sealed packets: envelope only)"
    print(
        f"ingest listening on {server.url}, {len(server.keys)} node key(s), {mode}, "
        f"storing in {args.store}",
        flush=True,
    )
    while not done.wait(1.0):
        pass
    server.stop()
    print(f"ingest stopped: {json.dumps(server.counts)}", flush=True)
    return 0


def cmd_bench_uplink(args: argparse.Namespace) -> int:
    from node.uplink.bench import bench_drain, format_bench

    result = bench_drain(count=args.count, size=args.size, sealed=args.sealed)
    print(json.dumps(result, indent=2) if args.json else format_bench(result))
    return 0 if result["stored"] == args.count else 1
