"""Hotlist alerts: a signed, high-priority evidence packet made the moment a wanted plate is read.

The packet (kind `alert`, priority `PRIORITY_ALERT` = 0) carries the plate crop and a context
frame (JPEG parts `plate.jpg`, `context.jpg`) and a manifest section `alert` with the hit
(reason, exact or fuzzy, low confidence), the fused read with every per-frame read, the
track, the frame, the capture time and the node's place (the builder adds the node block).
The store claims packets by ascending priority, then age, so an alert is uploaded before
every violation already queued.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from node.evidence import KIND_ALERT, PRIORITY_ALERT

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    from node.config import NodeConfig
    from node.evidence.packet import BuiltPacket
    from node.plates.fusion import FusedRead
    from node.plates.hotlist import HotlistHit


def make_alert(
    read: FusedRead,
    plate_crop_jpeg: bytes,
    context_frame: bytes,
    *,
    hit: HotlistHit,
    key: Ed25519PrivateKey,
    node: NodeConfig,
    central_public_key: X25519PublicKey | None = None,
    track_id: int = -1,
    seq: int = -1,
    utc_ns: int | None = None,
    plate_box: Sequence[float] | None = None,
    reader_model: dict[str, str] | None = None,
) -> BuiltPacket:
    """The alert packet for `hit` on the track's fused `read`. `plate_crop_jpeg` and
    `context_frame` are JPEG bytes (see `node.evidence.images.encode`); `utc_ns`: capture
    time of frame `seq` (default now). Raises `node.evidence.PacketError` on bad input."""
    from node.evidence import PacketError
    from node.evidence.packet import build, iso_utc

    for name, data in (("plate crop", plate_crop_jpeg), ("context frame", context_frame)):
        if not isinstance(data, bytes) or data[:3] != b"\xff\xd8\xff":
            raise PacketError(f"alert {name}: must be JPEG bytes")
    captured = time.time_ns() if utc_ns is None else utc_ns
    manifest: dict[str, Any] = {
        "alert": {
            **hit.as_dict(),
            "track_id": track_id,
            "seq": seq,
            "plate_box": [round(float(v), 1) for v in plate_box] if plate_box else None,
        },
        "capture": {"utc_ns": captured, "utc": iso_utc(captured)},
        "plate_read": read.as_dict(per_frame=True),
        "reader_model": reader_model,
        "parts_info": {"plate": "plate.jpg", "context": "context.jpg"},
    }
    return build(
        KIND_ALERT,
        PRIORITY_ALERT,
        manifest,
        {"plate.jpg": plate_crop_jpeg, "context.jpg": context_frame},
        key,
        node,
        central_public_key,
    )
