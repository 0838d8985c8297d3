"""Sealing at rest: the body encrypted to the central's X25519 key (an ECIES-style box).

For each packet the node makes a one-time X25519 key, agrees a secret with the central's public
key, derives a 32-byte key with HKDF-SHA256 (salt: the one-time public key then the central's,
info: `INFO`) and encrypts the body with ChaCha20-Poly1305 (fast without AES instructions, as
on a Raspberry Pi 4), a random 12-byte nonce, and the packet's header (prefix and envelope,
exactly as stored) as associated data: the envelope cannot be changed without the body
failing to open. The node cannot open its own sealed packets: a stolen unit leaks nothing.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from node.evidence import PacketError
from node.evidence.format import SealInfo, check_length, parse_head
from node.evidence.keys import key_id, raw_public

ALG = "x25519-hkdf-sha256-chacha20poly1305"
INFO = b"roadnode packet seal v1"
TAG_BYTES = 16


def _derive(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=INFO)
    return hkdf.derive(shared)


class Sealer:
    """One packet's sealing: make it, put `info` into the envelope, then `seal(header, body)`."""

    def __init__(self, central: X25519PublicKey) -> None:
        ephemeral = X25519PrivateKey.generate()
        eph_raw = raw_public(ephemeral.public_key())
        self._key = _derive(ephemeral.exchange(central), eph_raw, raw_public(central))
        self.info = SealInfo(ALG, key_id(central), eph_raw, os.urandom(12))

    def sealed_size(self, plain_size: int) -> int:
        return plain_size + TAG_BYTES

    def seal(self, header: bytes, body: bytes) -> bytes:
        return ChaCha20Poly1305(self._key).encrypt(self.info.nonce, body, header)


def unseal(data: bytes, central_private: X25519PrivateKey) -> bytes:
    """The plain body of the sealed packet `data`; PacketError says why it cannot be opened."""
    env = parse_head(data)
    check_length(data, env)
    if env.seal is None:
        raise PacketError("not sealed: nothing to unseal")
    info = env.seal
    if info.alg != ALG:
        raise PacketError(f"sealed with {info.alg!r}, this reader knows {ALG!r}")
    central_pub = central_private.public_key()
    if info.recipient != key_id(central_pub):
        raise PacketError(
            f"sealed to central key {info.recipient}, not to the given key {key_id(central_pub)}"
        )
    try:
        peer = X25519PublicKey.from_public_bytes(info.ephemeral)
        key = _derive(central_private.exchange(peer), info.ephemeral, raw_public(central_pub))
    except ValueError:  # an all-zero shared secret: a forged ephemeral key
        raise PacketError("sealed body does not open: bad ephemeral key") from None
    start = env.header_bytes
    try:
        return ChaCha20Poly1305(key).decrypt(
            info.nonce, data[start : start + env.body_bytes], data[:start]
        )
    except InvalidTag:
        raise PacketError(
            "sealed body does not open: the envelope or the body was changed"
        ) from None
