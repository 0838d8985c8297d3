"""Evidence packets: build one (generic, or from a violation), read its envelope, verify it.

One file is one packet (layout in `node.evidence.format`, spec in docs/packet-format.md):
an envelope readable without keys (id, node, kind, priority, sealed, creation time), then the
body: the manifest (JSON), its Ed25519 signature by the node, and the parts (JPEG images, or
any bytes), each part's size and sha256 listed in the manifest. With a central public key the
body is sealed (`node.evidence.seal`).

What the signature covers: the manifest bytes, which carry every part's sha256 and repeat the
envelope's fields (packet id, node id, kind, priority, creation time, format, and the central
key id the body was sealed to). `verify` requires the envelope to agree with the signed
manifest, so a changed envelope fails too; a sealed packet's signature is checked after
unsealing, and its envelope is also the AEAD's associated data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from node import __version__
from node.evidence import (
    KIND_VIOLATION,
    PRIORITY_MAX,
    PRIORITY_MIN,
    PacketError,
    violation_priority,
)
from node.evidence.format import (
    FORMAT_VERSION,
    KIND_RE,
    PART_NAME_RE,
    SIGNATURE_DOMAIN,
    UUID_RE,
    Envelope,
    check_checksum,
    check_length,
    header_bytes,
    parse_head,
    plain_body,
    read_envelope,
    split_body,
    with_checksum,
)
from node.evidence.keys import key_id
from node.evidence.seal import Sealer, unseal

if TYPE_CHECKING:
    from node.capture.frame import Frame, Image
    from node.clock import ClockState
    from node.config import Config, EvidenceConfig, NodeConfig
    from node.infer.detector import Detection
    from node.rules.signal import SignalState
    from node.rules.violations import Violation

__all__ = [
    "BuiltPacket",
    "Envelope",
    "ModelInfo",
    "VerifiedPacket",
    "build",
    "from_violation",
    "read_envelope",
    "verify",
]

# Manifest keys `build` sets itself; `manifest_fields` may not set them.
RESERVED = frozenset(
    {"format", "packet_id", "kind", "priority", "created_utc_ns", "created_utc", "node",
     "software", "signing_key", "sealed_to", "parts"}
)  # fmt: skip
ENVELOPE_ECHO = ("packet_id", "kind", "priority", "created_utc_ns")
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".json": "application/json"}


class ModelInfo(Protocol):
    """The detector model a violation was found with (a `ModelManifest` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True)
class BuiltPacket:
    """A packet ready for the store: `data` is the whole file."""

    id: str
    kind: str
    priority: int
    data: bytes
    part_sizes: dict[str, int]
    node_id: str = ""
    created_utc_ns: int = 0
    sealed: bool = False
    plate_scaled: bool = False  # the plate crop came from a scaled-up picture (see manifest)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class VerifiedPacket:
    """A packet whose signature, parts and envelope all checked out."""

    envelope: Envelope
    manifest: dict[str, Any]
    parts: dict[str, bytes]
    signing_key: str  # key id of the node key that signed it


def iso_utc(utc_ns: int) -> str:
    """`utc_ns` as ISO 8601 UTC with milliseconds, e.g. 2026-03-01T07:15:02.125Z."""
    t = dt.datetime.fromtimestamp(utc_ns // 1_000_000_000, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{utc_ns % 1_000_000_000 // 1_000_000:03d}Z"


def _jsonable(value: Any) -> Any:
    """`value` with tuples as lists, numpy scalars as numbers and non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # a numpy scalar
        return _jsonable(value.item())
    raise PacketError(f"manifest: cannot store a {type(value).__name__}")


def _node_json(node: NodeConfig) -> dict[str, Any]:
    return {
        "id": node.id,
        "site": node.site,
        "latitude": node.latitude,
        "longitude": node.longitude,
        "heading_deg": node.heading_deg,
    }


def build(
    kind: str,
    priority: int,
    manifest_fields: Mapping[str, Any],
    parts: Mapping[str, bytes],
    key: Ed25519PrivateKey,
    node: NodeConfig,
    central_public_key: X25519PublicKey | None = None,
    *,
    packet_id: str | None = None,
    created_utc_ns: int | None = None,
) -> BuiltPacket:
    """Sign (and, with `central_public_key`, seal) a packet of `kind` carrying `parts`.

    `manifest_fields` go into the manifest beside the keys `build` sets (`RESERVED`); the
    packet id is a new uuid4 unless given (violations give theirs, so the same offence is
    always the same packet). Raises PacketError for a bad kind, priority, id or part name.
    """
    if not KIND_RE.fullmatch(kind):
        raise PacketError(f"kind {kind!r}: must match [a-z][a-z0-9_]*, at most 32 characters")
    if type(priority) is not int or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise PacketError(f"priority {priority!r}: must be {PRIORITY_MIN} … {PRIORITY_MAX}")
    pid = packet_id or str(uuid.uuid4())
    if not UUID_RE.fullmatch(pid):
        raise PacketError(f"packet id {pid!r}: must be a lowercase UUID")
    if clash := sorted(RESERVED & set(manifest_fields)):
        raise PacketError(f"manifest fields {clash} are set by the packet builder")
    for name in parts:
        if not PART_NAME_RE.fullmatch(name):
            raise PacketError(f"part name {name!r}: must match [A-Za-z0-9][A-Za-z0-9._-]*")
    created = time.time_ns() if created_utc_ns is None else created_utc_ns
    if type(created) is not int or created < 0:
        raise PacketError(f"created_utc_ns {created!r}: must be a whole number, at least 0")
    sealer = Sealer(central_public_key) if central_public_key is not None else None
    part_list = [
        {
            "name": name,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "media_type": MEDIA_TYPES.get(
                name[name.rfind(".") :].lower(), "application/octet-stream"
            ),
        }
        for name, data in parts.items()
    ]
    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "packet_id": pid,
        "kind": kind,
        "priority": priority,
        "created_utc_ns": created,
        "created_utc": iso_utc(created),
        "node": _node_json(node),
        "software": {"name": "roadnode", "version": __version__},
        "signing_key": key_id(key.public_key()),
        "sealed_to": sealer.info.recipient if sealer else None,
        **_jsonable(dict(manifest_fields)),
        "parts": part_list,
    }
    manifest_bytes = json.dumps(
        manifest, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
    signature = key.sign(SIGNATURE_DOMAIN + manifest_bytes)
    body = plain_body(manifest_bytes, signature, list(parts.values()))
    envelope: dict[str, Any] = {
        "packet_id": pid,
        "node_id": node.id,
        "kind": kind,
        "priority": priority,
        "sealed": sealer is not None,
        "created_utc_ns": created,
        "body_bytes": sealer.sealed_size(len(body)) if sealer else len(body),
    }
    if sealer:
        envelope["seal"] = sealer.info.as_json()
    header = header_bytes(envelope)
    data = with_checksum(header + (sealer.seal(header, body) if sealer else body))
    sizes = {name: len(b) for name, b in parts.items()}
    return BuiltPacket(pid, kind, priority, data, sizes, node.id, created, sealer is not None)


# --- verification ----------------------------------------------------------------------------


def _manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PacketError(f"manifest is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise PacketError("manifest is not a JSON object")
    return manifest


def _check_echo(env: Envelope, manifest: dict[str, Any]) -> None:
    """The envelope must say what the signed manifest says."""
    pairs: list[tuple[str, Any, Any]] = [
        (k, getattr(env, k), manifest.get(k)) for k in ENVELOPE_ECHO
    ]
    node = manifest.get("node")
    pairs.append(("node_id", env.node_id, node.get("id") if isinstance(node, dict) else None))
    pairs.append(("format", env.format_version, manifest.get("format")))
    sealed_to = env.seal.recipient if env.seal else None
    pairs.append(("sealed_to", sealed_to, manifest.get("sealed_to")))
    for name, outside, signed in pairs:
        if outside != signed or type(outside) is not type(signed):
            raise PacketError(
                f"envelope {name} {outside!r} differs from the signed manifest's {signed!r}"
            )


def _parts(manifest: dict[str, Any], payload: memoryview) -> dict[str, bytes]:
    listed = manifest.get("parts")
    if not isinstance(listed, list):
        raise PacketError("manifest: 'parts' is missing or not a list")
    out: dict[str, bytes] = {}
    offset = 0
    for i, p in enumerate(listed):
        if not (
            isinstance(p, dict)
            and isinstance(p.get("name"), str)
            and isinstance(p.get("bytes"), int)
            and isinstance(p.get("sha256"), str)
            and p["bytes"] >= 0
        ):
            raise PacketError(f"manifest: parts[{i}] needs a name, bytes and sha256")
        name, size = p["name"], p["bytes"]
        if name in out:
            raise PacketError(f"manifest: part {name} is listed twice")
        if offset + size > len(payload):
            raise PacketError(f"part {name}: truncated ({len(payload) - offset} of {size} bytes)")
        data = bytes(payload[offset : offset + size])
        offset += size
        if hashlib.sha256(data).hexdigest() != p["sha256"]:
            raise PacketError(f"part {name}: sha256 mismatch")
        out[name] = data
    if offset != len(payload):
        raise PacketError(f"body: {len(payload) - offset} bytes after the last listed part")
    return out


def verify(
    data: bytes,
    node_keys: Mapping[str, Ed25519PublicKey],
    central_private: X25519PrivateKey | None = None,
) -> VerifiedPacket:
    """Check everything about the packet `data`: structure, length, seal, signature by the key
    `node_keys` has for its node, the envelope against the signed manifest, every part's
    sha256, the file checksum. Raises PacketError naming the first thing that is wrong."""
    env = parse_head(data)
    check_length(data, env)
    if env.sealed:
        if central_private is None:
            assert env.seal is not None
            raise PacketError(f"sealed: central key needed (sealed to key {env.seal.recipient})")
        body = unseal(data, central_private)
    else:
        body = data[env.header_bytes : env.header_bytes + env.body_bytes]
    manifest_bytes, signature, payload = split_body(body)
    pub = node_keys.get(env.node_id)
    if pub is None:
        raise PacketError(f"unknown node {env.node_id}: no public key for it")
    try:
        pub.verify(signature, SIGNATURE_DOMAIN + manifest_bytes)
    except InvalidSignature:
        raise PacketError(f"signature does not verify for node {env.node_id}") from None
    manifest = _manifest(manifest_bytes)
    _check_echo(env, manifest)
    parts = _parts(manifest, payload)
    check_checksum(data, env)
    return VerifiedPacket(env, manifest, parts, key_id(pub))


# --- violations ------------------------------------------------------------------------------

ROLES = {
    2: ("before", "after"),
    3: ("before", "at", "after"),
    4: ("before", "approach", "at", "after"),
}


def _nearest(seqs: Sequence[int], target: int) -> int:
    return min(seqs, key=lambda s: (abs(s - target), s))


def _context_seqs(v: Violation, available: Sequence[int], count: int) -> list[tuple[str, int]]:
    """(role, seq) of the context frames: the first sighting in the window (before), the
    offence (at), the end of the window (after), and midway before the offence (approach)."""
    seen = [s for s, _ in v.plate_boxes if v.seq_before <= s < v.seq_at]
    before = min(seen) if seen else v.seq_before
    targets = {"before": before, "approach": (before + v.seq_at) // 2}
    targets |= {"at": v.seq_at, "after": v.seq_after}
    chosen: list[tuple[str, int]] = []
    for role in ROLES[count]:
        seq = _nearest(available, targets[role])
        if all(seq != s for _, s in chosen):
            chosen.append((role, seq))
    return chosen


def _box(b: Sequence[float]) -> list[float]:
    return [round(float(x), 1) for x in b]


def _signal_json(s: SignalState | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "phase": s.phase,
        "phase_age_s": round(s.phase_age_s, 3),
        "info_age_s": round(s.info_age_s, 3) if math.isfinite(s.info_age_s) else None,
        "stale": s.stale,
        "source": s.source,
        "reason": s.reason or None,
    }


def _violation_parts(
    v: Violation, frames: Mapping[int, Frame], ev: EvidenceConfig
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The parts (plate crop, context frames, overview) and the manifest fields about them.

    A frame the ring has slimmed (`KeptRef`) gives its context picture for context frames and
    the overview, and its full-resolution plate windows for the crop; the crop comes from the
    frame nearest the offence that still holds the plate at full resolution, else (never on
    a healthy node) from the nearest one scaled up, with `full_resolution: false`."""
    from node.capture.frame import KeptRef
    from node.evidence.images import annotate, crop, crop_box, downscale, encode, fit, ladder

    boxes = dict(v.plate_boxes)
    mains: dict[int, Image] = {}

    def main(seq: int) -> Image:
        if seq not in mains:
            mains[seq] = frames[seq].main.array()
        return mains[seq]

    def picture(seq: int) -> Image:
        ref = frames[seq].main
        return ref.context() if isinstance(ref, KeptRef) else main(seq)

    def sharp(seq: int, cbox: tuple[int, int, int, int]) -> Image | None:
        ref = frames[seq].main
        return ref.region(cbox) if isinstance(ref, KeptRef) else crop(main(seq), cbox)

    with_box = [s for s in boxes if s in frames]
    if not with_box:
        raise PacketError(f"violation {v.id}: none of the kept frames shows the plate")
    shape = next(iter(frames.values())).main.shape
    mw = shape[1]
    pixels, full_res = None, True
    for plate_seq in sorted(with_box, key=lambda s: (abs(s - v.seq_at), s)):
        cbox = crop_box(boxes[plate_seq], ev.plate_margin, shape)
        if (pixels := sharp(plate_seq, cbox)) is not None:
            break
    if pixels is None:
        plate_seq = _nearest(with_box, v.seq_at)
        cbox = crop_box(boxes[plate_seq], ev.plate_margin, shape)
        pixels, full_res = crop(main(plate_seq), cbox), False
    plate = encode(
        pixels,
        ladder(ev.plate_quality, ev.plate_min_quality, 4),
        ev.plate_max_kb * 1000,
        "444",  # plate colour tells the vehicle class: keep full chroma
    )
    parts = {"plate.jpg": plate.data}
    fields: dict[str, Any] = {
        "plate": {
            "part": "plate.jpg",
            "seq": plate_seq,
            "box": _box(boxes[plate_seq]),
            "crop_box": list(cbox),
            "width": plate.width,
            "height": plate.height,
            "quality": plate.quality,
            "scale": 1.0,
            "full_resolution": full_res,
        }
    }
    context = []
    rungs = ladder(ev.context_quality, ev.context_min_quality, 10)
    for role, seq in _context_seqs(v, sorted(frames), ev.context_frames):
        enc, _ = fit(picture(seq), ev.context_width, rungs, ev.context_max_kb * 1000)
        scale = enc.width / mw
        name = f"frame-{role}.jpg"
        parts[name] = enc.data
        context.append(
            {
                "role": role,
                "part": name,
                "seq": seq,
                "utc_ns": frames[seq].utc_ns,
                "width": enc.width,
                "height": enc.height,
                "scale": round(scale, 6),
                "quality": enc.quality,
                "plate_box": _box(boxes[seq]) if seq in boxes else None,
            }
        )
    fields["context"] = context
    if ev.overview:
        at = plate_seq  # the frame nearest the offence that shows the plate
        small, _ = downscale(picture(at), ev.overview_width)
        marked = annotate(small, [boxes[at]], small.shape[1] / mw)
        enc, _ = fit(
            marked,
            ev.overview_width,
            ladder(ev.overview_quality, ev.context_min_quality, 10),
            ev.context_max_kb * 1000,
        )
        scale = enc.width / mw
        parts["overview.jpg"] = enc.data
        fields["overview"] = {
            "part": "overview.jpg",
            "seq": at,
            "width": enc.width,
            "height": enc.height,
            "scale": round(scale, 6),
            "quality": enc.quality,
        }
    return parts, fields


def from_violation(
    violation: Violation,
    frames: Iterable[Frame],
    cfg: Config,
    key: Ed25519PrivateKey,
    central_pub: X25519PublicKey | None,
    model_info: ModelInfo | None,
    signal_info: SignalState | None,
    *,
    detections: Mapping[int, Sequence[Detection]] | None = None,
    clock: ClockState | None = None,
    plate_read: Mapping[str, Any] | None = None,
) -> BuiltPacket:
    """The evidence packet of `violation`, from the ring's `frames` (any that fall in its
    window; the nearest ones stand in for missing ones). Its id is the violation's id.

    `detections`: every plate the detector found, by frame seq, in main-stream pixels
    (optional; the offender's tracked box is always recorded). `clock`: the clock's state
    at capture (default: read now). Raises PacketError when no kept frame shows the plate.
    """
    from node.clock import sync_state

    v = violation
    by_seq = {f.seq: f for f in frames if v.seq_before <= f.seq <= v.seq_after}
    if not by_seq:
        raise PacketError(
            f"violation {v.id}: no frames kept between seq {v.seq_before} and {v.seq_after}"
        )
    parts, fields = _violation_parts(v, by_seq, cfg.evidence)
    state = clock if clock is not None else sync_state()
    first = next(iter(by_seq.values()))
    mh, mw, _ = first.main.shape
    seen = dict(v.plate_boxes)
    per_frame = []
    for seq in sorted(set(seen) | set(detections or {})):
        if not v.seq_before <= seq <= v.seq_after:
            continue
        entry: dict[str, Any] = {"seq": seq, "plate_box": _box(seen[seq]) if seq in seen else None}
        if seq in by_seq:
            entry["utc_ns"] = by_seq[seq].utc_ns
        if detections is not None:
            entry["detections"] = [
                {"box": _box(d.box), "score": round(float(d.score), 3)}
                for d in detections.get(seq, ())
            ]
        per_frame.append(entry)
    manifest = {
        "violation": {
            "id": v.id,
            "rule": v.rule,
            "track_id": v.track_id,
            "confidence": v.confidence,
            "measured": v.measured.as_dict(),
            "seq_before": v.seq_before,
            "seq_at": v.seq_at,
            "seq_after": v.seq_after,
        },
        "capture": {
            "utc_ns": v.utc_ns,
            "utc": iso_utc(v.utc_ns),
            "clock": state.as_dict(),
            "main_width": mw,
            "main_height": mh,
        },
        "signal": _signal_json(signal_info),
        "model": (
            {"name": model_info.name, "version": model_info.version, "sha256": model_info.sha256}
            if model_info is not None
            else None
        ),
        **fields,
        "detections": per_frame,
        # the plate number as read on the node: fused text, its confidence, every frame's read
        # (None: not read: no reader, or the plate was never big enough)
        "plate_read": _jsonable(dict(plate_read)) if plate_read is not None else None,
    }
    packet = build(
        KIND_VIOLATION,
        violation_priority(v.rule),
        manifest,
        parts,
        key,
        cfg.node,
        central_pub,
        packet_id=v.id,
    )
    if not fields["plate"]["full_resolution"]:
        packet = replace(packet, plate_scaled=True)
    return packet
