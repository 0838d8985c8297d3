"""`roadnode identity`, `roadnode central-keygen`, `roadnode verify-packet`.

Only the standard library at the top: the crypto is imported by the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MAX_PACKET_FILE_BYTES = 80 * 1024 * 1024


def register(sub: Any) -> None:
    from node.cli import config_args, state_dir_arg

    ident = sub.add_parser(
        "identity",
        help="print the node's public key (making the node key if there is none)",
        description="Print this node's Ed25519 public key (base64, one line), to register the "
        "node with the central. Makes the node key on first use, like the first start does.",
    )
    config_args(ident)
    state_dir_arg(ident)
    ident.add_argument("--json", action="store_true", help="node id, key, key id and file")
    ident.set_defaults(handler=cmd_identity)

    keygen = sub.add_parser(
        "central-keygen",
        help="make the central's X25519 sealing keypair in a directory",
        description="Write DIR/central.key (private, mode 0600: keep it at the central only) "
        "and DIR/central.pub (the public key text for evidence.central_key on the nodes).",
    )
    keygen.add_argument("dir", type=Path, metavar="DIR")
    keygen.set_defaults(handler=cmd_central_keygen)

    check = sub.add_parser(
        "verify-packet",
        help="check an evidence packet: seal, signature, every part",
        description="Exit 0 and print a summary when everything checks out; exit 1 and print "
        "the one thing that is wrong otherwise.",
    )
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument(
        "--central-key", type=Path, metavar="K", help="central private key file, to unseal"
    )
    check.add_argument(
        "--node-key",
        action="append",
        default=[],
        metavar="[ID=]K",
        help="a node public key (base64 text or a file); without ID= it is taken as the key of "
        "the node the packet names (repeatable)",
    )
    check.add_argument("--json", action="store_true", help="print the manifest as JSON")
    check.set_defaults(handler=cmd_verify_packet)


def cmd_identity(args: argparse.Namespace) -> int:
    from node.configload import load
    from node.evidence import KeyFileError
    from node.evidence.keys import key_id, load_or_create_node_key, node_key_path, public_key_text

    cfg = load(args.config, args.overrides)
    path = node_key_path(args.state_dir, cfg.evidence.node_key)
    existed = path.exists()
    try:
        key = load_or_create_node_key(path)
    except KeyFileError as e:
        print(f"roadnode: {e}", file=sys.stderr)
        return 1
    pub = key.public_key()
    if not existed:
        print(f"roadnode: made a new node key at {path}", file=sys.stderr)
    if args.json:
        out = {"node_id": cfg.node.id, "public_key": public_key_text(pub)}
        out |= {"key_id": key_id(pub), "key_file": str(path)}
        print(json.dumps(out))
    else:
        print(public_key_text(pub))
    return 0


def cmd_central_keygen(args: argparse.Namespace) -> int:
    from node.evidence import KeyFileError
    from node.evidence.keys import key_id, load_central_public_key, write_central_keypair

    try:
        priv, pub = write_central_keypair(args.dir)
    except KeyFileError as e:
        print(f"roadnode: {e}", file=sys.stderr)
        return 1
    text = pub.read_text(encoding="ascii").strip()
    print(f"private key {priv} (mode 0600; keep it at the central)", file=sys.stderr)
    print(f"public key  {pub} (key id {key_id(load_central_public_key(text))})", file=sys.stderr)
    print(text)
    return 0


def _node_keys(specs: list[str], packet_node: str) -> dict[str, Ed25519PublicKey]:
    from node.evidence.format import NODE_ID_RE
    from node.evidence.keys import load_public_key

    keys: dict[str, Ed25519PublicKey] = {}
    for spec in specs:
        node, sep, source = spec.partition("=")
        if not sep or not source or not NODE_ID_RE.fullmatch(node):
            # not ID=KEY (base64 text may end in '=' too): the key of the packet's node
            node, source = packet_node, spec
        keys[node] = load_public_key(source, "ed25519")
    return keys


def _summary(v: Any) -> str:
    m, env = v.manifest, v.envelope
    from node.evidence.packet import iso_utc

    lines = [
        f"OK  packet {env.packet_id}",
        f"    kind {env.kind}  priority {env.priority}  node {env.node_id}"
        f"  signed by key {v.signing_key}",
        f"    created {iso_utc(env.created_utc_ns)}  sealed "
        + (f"to key {env.seal.recipient}" if env.seal else "no"),
    ]
    violation = m.get("violation")
    if isinstance(violation, dict):
        capture = m.get("capture") or {}
        clock = capture.get("clock") or {}
        synced = "synced" if clock.get("synced") else "NOT synced"
        lines.append(
            f"    {violation.get('rule')} at {capture.get('utc')} (clock {synced}, est. error "
            f"{clock.get('est_error_s')} s)  confidence {violation.get('confidence')}"
        )
    total = sum(len(b) for b in v.parts.values())
    lines.append(f"    {len(v.parts)} parts, {total / 1000:.1f} kB:")
    for name, data in v.parts.items():
        lines.append(f"      {name:<22} {len(data) / 1000:>8.1f} kB")
    return "\n".join(lines)


def _unwrap_store_blob(path: Path, data: bytes) -> bytes:
    """A file from the node's store (`STATE/store/blobs/ID`) carries a one-line store header
    before the packet: check that header's size and sha256, then verify the packet inside."""
    import hashlib

    from node.evidence import PacketError
    from node.store.store import MAGIC, parse_header

    if not data.startswith(MAGIC):
        return data
    try:
        meta, offset = parse_header(path)
    except ValueError as e:
        raise PacketError(f"store blob: {e}") from None
    inner = data[offset:]
    if hashlib.sha256(inner).hexdigest() != meta["sha256"]:
        raise PacketError("store blob: packet bytes do not match the store's sha256")
    return inner


def cmd_verify_packet(args: argparse.Namespace) -> int:
    from node.evidence import KeyFileError, PacketError
    from node.evidence.format import parse_head
    from node.evidence.keys import load_central_private_key
    from node.evidence.packet import verify

    name = args.file
    try:
        with args.file.open("rb") as f:
            data = f.read(MAX_PACKET_FILE_BYTES + 1)
        if len(data) > MAX_PACKET_FILE_BYTES:
            raise PacketError(f"over {MAX_PACKET_FILE_BYTES} bytes: not a packet")
        data = _unwrap_store_blob(args.file, data)
        env = parse_head(data)
        node_keys = _node_keys(args.node_key, env.node_id)
        central = load_central_private_key(args.central_key) if args.central_key else None
        if not node_keys and not (env.sealed and central is None):
            raise PacketError(f"unknown node {env.node_id}: give its key with --node-key")
        result = verify(data, node_keys, central)
    except OSError as e:
        print(f"{name}: FAILED: cannot read: {e.strerror}")
        return 1
    except (PacketError, KeyFileError) as e:
        print(f"{name}: FAILED: {e}")
        return 1
    if args.json:
        print(json.dumps(result.manifest, indent=2, ensure_ascii=False))
    else:
        print(f"{name}: " + _summary(result))
    return 0
