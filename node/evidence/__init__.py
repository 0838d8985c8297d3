"""Evidence packets: one file per packet, signed by the node, sealed to the central.

- `node.evidence.packet`: building (`build`, `from_violation`), `read_envelope`, `verify`.
- `node.evidence.seal`: encryption to the central's X25519 key, `unseal`.
- `node.evidence.keys`: the node's Ed25519 key, the central's keys, key text.
- `node.clock`: the wall clock's sync state that goes into every manifest.

The format is specified in docs/packet-format.md. This module imports only the standard
library: the store and the CLI may import the constants without loading the crypto.
"""

from __future__ import annotations

# Priority contract with the store: lower number = sent sooner; the store claims packets in
# ascending priority, then oldest first.
PRIORITY_ALERT = 0  # hotlist hits: someone is waiting for these
PRIORITY_RED_LIGHT = 1
PRIORITY_VIOLATION = 2  # the other violations
PRIORITY_TELEMETRY = 3  # telemetry and heartbeats
PRIORITY_MIN, PRIORITY_MAX = 0, 9  # what an envelope may carry

KIND_VIOLATION = "violation"
KIND_ALERT = "alert"
KIND_TELEMETRY = "telemetry"
KIND_HEARTBEAT = "heartbeat"


class PacketError(Exception):
    """A packet cannot be built, read or verified; the message is one line naming the problem."""


class KeyFileError(Exception):
    """A key file is missing, unreadable, malformed or too open; the message names the file."""


def violation_priority(rule: str) -> int:
    """The priority of a violation packet for `rule`."""
    return PRIORITY_RED_LIGHT if rule == "red_light" else PRIORITY_VIOLATION
