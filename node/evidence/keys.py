"""Keys: the node's Ed25519 signing key and the central's X25519 sealing keys.

- The node key is made on first start when missing (`load_or_create_node_key`): written to a
  temporary file in the same directory with mode 0600, fsynced, hard-linked into place (so a
  key file is never half written and never replaced), then the directory is fsynced. A key
  file that group or others may read is refused with an error naming it; it is never
  repaired silently, and a malformed one is never replaced (the central knows the node by
  it). Key material never goes into an error message or a log line.
- Private keys are PEM (PKCS#8, unencrypted: the unit must start unattended). Public keys
  travel as text: the raw 32 bytes in base64, one line (`public_key_text`), like WireGuard's.
- `key_id(pub)`: the first 16 hex digits of the sha256 of the raw public key, for naming a
  key in envelopes, logs and status without quoting it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import stat
from pathlib import Path
from typing import Literal, overload

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from node.evidence import KeyFileError

log = logging.getLogger(__name__)

NODE_KEY_FILE = Path("keys") / "node.key"  # under the state dir, unless configured
CENTRAL_PRIVATE_FILE = "central.key"
CENTRAL_PUBLIC_FILE = "central.pub"
MAX_KEY_FILE_BYTES = 16_384
PublicKey = Ed25519PublicKey | X25519PublicKey
PrivateKey = Ed25519PrivateKey | X25519PrivateKey


def node_key_path(state_dir: Path, configured: str = "") -> Path:
    """Where the node key lives: `configured` (evidence.node_key) or STATE_DIR/keys/node.key."""
    return Path(configured) if configured else state_dir / NODE_KEY_FILE


def raw_public(pub: PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(pub: PublicKey) -> str:
    """The public key as one line: base64 of its raw 32 bytes."""
    return base64.b64encode(raw_public(pub)).decode("ascii")


def key_id(pub: PublicKey) -> str:
    """16 hex digits that name the key (sha256 of its raw bytes), safe to log."""
    return hashlib.sha256(raw_public(pub)).hexdigest()[:16]


# --- private keys ----------------------------------------------------------------------------


def _read_private(path: Path) -> bytes:
    """The bytes of a private key file, refusing one that group or others may read.

    Raises FileNotFoundError when it is missing (the caller decides), KeyFileError otherwise.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise KeyFileError(f"{path}: cannot open key file: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(
                f"{path}: private key is readable or writable by group or others (mode "
                f"{mode:04o}); refusing to use it: chmod 600 it, and replace it if others "
                "may have read it"
            )
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{path}: {st.st_size} bytes is too big for a key file")
        chunks = []
        while chunk := os.read(fd, MAX_KEY_FILE_BYTES + 1):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _parse_private(path: Path, data: bytes, what: str) -> object:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # the library's message is not quoted: it may describe the key's contents
        raise KeyFileError(
            f"{path}: not an unencrypted PEM private key (expected {what})"
        ) from None


def _wrong_kind(path: Path, key: object, what: str) -> KeyFileError:
    return KeyFileError(f"{path}: holds a {type(key).__name__}, expected {what}")


def _private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write `key` to `path` (mode 0600) atomically; FileExistsError if `path` exists.

    Run as root, the file is given to the owner of its directory (the service's user).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            if os.geteuid() == 0:
                owner = os.stat(path.parent)
                os.fchown(fd, owner.st_uid, owner.st_gid)
            data = memoryview(_private_pem(key))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces an existing key
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: rename, after a last look
            if path.exists():
                raise FileExistsError(path) from None
            os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def load_node_key(path: Path) -> Ed25519PrivateKey:
    """The node's signing key from `path`; KeyFileError when missing, open or malformed."""
    try:
        data = _read_private(path)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no node key here") from None
    what = "an Ed25519 node key"
    key = _parse_private(path, data, what)
    if not isinstance(key, Ed25519PrivateKey):
        raise _wrong_kind(path, key, what)
    return key


def load_or_create_node_key(path: Path) -> Ed25519PrivateKey:
    """The node's signing key, made (and logged by its key id only) when `path` is missing."""
    try:
        return load_node_key(path)
    except KeyFileError:
        if path.exists() or path.is_symlink():
            raise
    key = Ed25519PrivateKey.generate()
    try:
        write_private_key(path, key)
    except FileExistsError:  # made meanwhile by another process: that one is the key
        return load_node_key(path)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot write a new node key: {e.strerror or e}") from None
    log.warning("made a new node key at %s (key id %s)", path, key_id(key.public_key()))
    return key


def load_central_private_key(path: Path) -> X25519PrivateKey:
    """The central's X25519 private key (to unseal packets); KeyFileError when unusable."""
    try:
        data = _read_private(Path(path))
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such central key file") from None
    what = "an X25519 central key"
    key = _parse_private(Path(path), data, what)
    if not isinstance(key, X25519PrivateKey):
        raise _wrong_kind(Path(path), key, what)
    return key


def write_central_keypair(directory: Path) -> tuple[Path, Path]:
    """Make the central's X25519 keypair: DIRECTORY/central.key (0600) and central.pub (the
    public key text). Refuses to replace either file."""
    priv, pub = directory / CENTRAL_PRIVATE_FILE, directory / CENTRAL_PUBLIC_FILE
    for p in (priv, pub):
        if p.exists():
            raise KeyFileError(f"{p}: exists; refusing to replace a key")
    key = X25519PrivateKey.generate()
    try:
        write_private_key(priv, key)
        tmp = pub.with_name(f".{pub.name}.{os.getpid()}.tmp")
        tmp.write_text(public_key_text(key.public_key()) + "\n", encoding="ascii")
        os.replace(tmp, pub)
        _fsync_dir(directory)
    except FileExistsError:
        raise KeyFileError(f"{priv}: exists; refusing to replace a key") from None
    except OSError as e:
        raise KeyFileError(f"{directory}: cannot write the central keys: {e.strerror}") from None
    return priv, pub


# --- public keys -----------------------------------------------------------------------------


def _public_from_text(text: str, kind: Literal["ed25519", "x25519"]) -> PublicKey | None:
    """The key in `text` (base64 raw or PEM), or None when it is not key text at all."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii", "replace"))
        except (ValueError, UnsupportedAlgorithm):
            return None
        if kind == "ed25519":
            return key if isinstance(key, Ed25519PublicKey) else None
        return key if isinstance(key, X25519PublicKey) else None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 32:
        return None
    if kind == "ed25519":
        return Ed25519PublicKey.from_public_bytes(raw)
    return X25519PublicKey.from_public_bytes(raw)


@overload
def load_public_key(
    source: str | Path, kind: Literal["ed25519"] = "ed25519"
) -> Ed25519PublicKey: ...
@overload
def load_public_key(source: str | Path, kind: Literal["x25519"]) -> X25519PublicKey: ...
def load_public_key(
    source: str | Path, kind: Literal["ed25519", "x25519"] = "ed25519"
) -> PublicKey:
    """A public key from key text (base64 of the raw 32 bytes, or PEM) or from a file that
    holds such text. `kind`: "ed25519" (a node's key) or "x25519" (the central's).
    KeyFileError names the source when it is neither."""
    what = "an Ed25519 node public key" if kind == "ed25519" else "an X25519 central public key"
    if isinstance(source, str):
        key = _public_from_text(source, kind)
        if key is not None:
            return key
    path = Path(source)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(f"{source}: neither key text nor an existing file") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read: {e.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: too big for a key file")
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path}: holds a private key; give the public key")
    key = _public_from_text(data.decode("ascii", "replace"), kind)
    if key is None:
        raise KeyFileError(f"{path}: does not hold {what} (base64 of 32 bytes, or PEM)")
    return key


def load_central_public_key(source: str | Path) -> X25519PublicKey:
    return load_public_key(source, "x25519")


def evidence_keys(
    state_dir: Path, node_key: str = "", central_key: str = ""
) -> tuple[Ed25519PrivateKey, X25519PublicKey | None]:
    """What the packet builder needs, from `[evidence]`: the node key (made when missing)
    and the central's public key (None when `central_key` is empty: packets are not sealed).
    Call as `evidence_keys(state_dir, cfg.evidence.node_key, cfg.evidence.central_key)`."""
    key = load_or_create_node_key(node_key_path(state_dir, node_key))
    central = load_central_public_key(central_key) if central_key else None
    return key, central
