"""The packet file: header, envelope, body, checksum (docs/packet-format.md, format 1).

```
offset    size  what
0         4     magic b"RNPK"
4         2     format version, unsigned big-endian (1)
6         4     envelope length E, unsigned big-endian (at most MAX_ENVELOPE_BYTES)
10        E     envelope: a UTF-8 JSON object, readable without keys
10+E      B     body (B = envelope "body_bytes"); sealed: ciphertext + 16-byte AEAD tag
10+E+B    32    sha256 of every byte before it (finds a damaged file without keys)
```

The plain body is `u32 M | manifest (M bytes of UTF-8 JSON) | Ed25519 signature (64) | parts`,
the parts concatenated in the order the manifest lists them.

This module knows the layout only; keys and crypto live in `packet` and `seal`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from node.evidence import PRIORITY_MAX, PRIORITY_MIN, PacketError

MAGIC = b"RNPK"
FORMAT_VERSION = 1
PREFIX = struct.Struct(">4sHI")  # magic, version, envelope length
MAX_ENVELOPE_BYTES = 16_384
MAX_HEAD_BYTES = PREFIX.size + MAX_ENVELOPE_BYTES  # read this much to get any envelope
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
CHECKSUM_BYTES = 32
SIGNATURE_BYTES = 64
MANIFEST_LEN = struct.Struct(">I")
SIGNATURE_DOMAIN = b"roadnode-packet/1\x00"  # signed: SIGNATURE_DOMAIN + manifest bytes

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
PART_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KEY_ID_RE = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class SealInfo:
    """How a sealed body was encrypted (the envelope's "seal" object)."""

    alg: str
    recipient: str  # key id of the central's X25519 public key
    ephemeral: bytes  # the sender's one-time X25519 public key, raw 32 bytes
    nonce: bytes  # 12 bytes

    def as_json(self) -> dict[str, str]:
        return {
            "alg": self.alg,
            "recipient": self.recipient,
            "ephemeral": base64.b64encode(self.ephemeral).decode("ascii"),
            "nonce": base64.b64encode(self.nonce).decode("ascii"),
        }


@dataclass(frozen=True)
class Envelope:
    """What anyone can read from a packet without keys: enough to index, order and route it."""

    packet_id: str
    node_id: str
    kind: str
    priority: int  # lower = sent sooner (see node.evidence)
    sealed: bool
    created_utc_ns: int
    format_version: int
    body_bytes: int
    header_bytes: int  # offset of the body in the file
    seal: SealInfo | None = None

    @property
    def total_bytes(self) -> int:
        """The size the whole file must have."""
        return self.header_bytes + self.body_bytes + CHECKSUM_BYTES


def _field(env: dict[str, Any], key: str, kind: type, check: Any, wants: str) -> Any:
    if key not in env:
        raise PacketError(f"envelope: '{key}' is missing")
    value = env[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PacketError(f"envelope: '{key}' must be {wants}, got {value!r:.60}")
    if check is not None and not check(value):
        raise PacketError(f"envelope: '{key}' must be {wants}, got {value!r:.60}")
    return value


def _seal_info(raw: Any) -> SealInfo:
    if not isinstance(raw, dict):
        raise PacketError("envelope: a sealed packet needs a 'seal' object")
    s: dict[str, Any] = raw
    alg = _field(s, "alg", str, None, "a string")
    recipient = _field(s, "recipient", str, KEY_ID_RE.fullmatch, "a key id (16 hex digits)")
    out = []
    for key, size in (("ephemeral", 32), ("nonce", 12)):
        text = _field(s, key, str, None, f"base64 of {size} bytes")
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            value = b""
        if len(value) != size:
            raise PacketError(f"envelope: seal '{key}' must be base64 of {size} bytes")
        out.append(value)
    return SealInfo(alg, recipient, out[0], out[1])


def parse_head(data: bytes) -> Envelope:
    """The envelope from the start of a packet (`data` may be just the first bytes)."""
    if len(data) < PREFIX.size:
        raise PacketError(f"truncated: {len(data)} bytes, shorter than the packet header")
    magic, version, env_len = PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise PacketError(f"not a roadnode packet (starts with {bytes(data[:4])!r}, not {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise PacketError(
            f"packet format version {version} is not supported (this reader knows {FORMAT_VERSION})"
        )
    if env_len > MAX_ENVELOPE_BYTES:
        raise PacketError(f"envelope length {env_len} is over the limit {MAX_ENVELOPE_BYTES}")
    header = PREFIX.size + env_len
    if len(data) < header:
        raise PacketError(f"truncated: the envelope needs {header} bytes, the file has {len(data)}")
    try:
        env = json.loads(bytes(data[PREFIX.size : header]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PacketError(f"envelope is not valid JSON: {e}") from None
    if not isinstance(env, dict):
        raise PacketError("envelope is not a JSON object")
    sealed = _field(env, "sealed", bool, None, "true or false")
    return Envelope(
        packet_id=_field(env, "packet_id", str, UUID_RE.fullmatch, "a lowercase UUID"),
        node_id=_field(env, "node_id", str, NODE_ID_RE.fullmatch, "a node id"),
        kind=_field(env, "kind", str, KIND_RE.fullmatch, "a kind ([a-z][a-z0-9_]*)"),
        priority=_field(
            env,
            "priority",
            int,
            lambda p: PRIORITY_MIN <= p <= PRIORITY_MAX,
            f"{PRIORITY_MIN} … {PRIORITY_MAX}",
        ),
        sealed=sealed,
        created_utc_ns=_field(env, "created_utc_ns", int, lambda t: t >= 0, "UTC nanoseconds"),
        format_version=version,
        body_bytes=_field(
            env, "body_bytes", int, lambda n: 0 <= n <= MAX_BODY_BYTES, f"0 … {MAX_BODY_BYTES}"
        ),
        header_bytes=header,
        seal=_seal_info(env.get("seal")) if sealed else None,
    )


def check_length(data: bytes, env: Envelope) -> None:
    if len(data) < env.total_bytes:
        raise PacketError(f"truncated: {len(data)} of {env.total_bytes} bytes")
    if len(data) > env.total_bytes:
        raise PacketError(f"{len(data) - env.total_bytes} bytes of trailing data after the packet")


def check_checksum(data: bytes, env: Envelope) -> None:
    end = env.total_bytes - CHECKSUM_BYTES
    if hashlib.sha256(data[:end]).digest() != bytes(data[end : env.total_bytes]):
        raise PacketError("file checksum mismatch: the packet is damaged")


def read_envelope(data: bytes, *, check_body: bool = True) -> Envelope:
    """The envelope of a packet, without keys. With `check_body` (the default) the file must
    be whole: its length and checksum are checked. Without, `data` may be just the first
    `MAX_HEAD_BYTES` (or fewer) of the file. Raises PacketError naming the problem."""
    env = parse_head(data)
    if check_body:
        check_length(data, env)
        check_checksum(data, env)
    return env


def header_bytes(envelope: dict[str, Any]) -> bytes:
    """The header (prefix + envelope JSON) for an envelope dict."""
    text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    if len(text) > MAX_ENVELOPE_BYTES:
        raise PacketError(f"envelope is {len(text)} bytes, over the limit {MAX_ENVELOPE_BYTES}")
    return PREFIX.pack(MAGIC, FORMAT_VERSION, len(text)) + text


def with_checksum(data: bytes) -> bytes:
    return data + hashlib.sha256(data).digest()


def plain_body(manifest: bytes, signature: bytes, parts: list[bytes]) -> bytes:
    return b"".join([MANIFEST_LEN.pack(len(manifest)), manifest, signature, *parts])


def split_body(body: bytes) -> tuple[bytes, bytes, memoryview]:
    """(manifest bytes, signature, the parts' bytes) of a plain body."""
    if len(body) < MANIFEST_LEN.size:
        raise PacketError("body: truncated before the manifest length")
    (m,) = MANIFEST_LEN.unpack_from(body)
    if m > MAX_MANIFEST_BYTES:
        raise PacketError(f"body: manifest length {m} is over the limit {MAX_MANIFEST_BYTES}")
    end = MANIFEST_LEN.size + m
    if len(body) < end + SIGNATURE_BYTES:
        raise PacketError("body: truncated in the manifest or signature")
    view = memoryview(body)
    return (
        bytes(view[MANIFEST_LEN.size : end]),
        bytes(view[end : end + SIGNATURE_BYTES]),
        view[end + SIGNATURE_BYTES :],
    )
