"""The update bundle: one POSIX tar file, a signed manifest and the files it names.

    manifest.json     what the bundle is (kind, version, target, every file's sha256 and size)
    manifest.sig      {"alg": "ed25519", "key_id": ..., "sig": base64} over manifest.json's bytes
    payload/<path>    the files, regular files only, in any order after the two above

`verify()` reads the tar once, front to back, and refuses (BundleError, one line) anything
that is not exactly what a trusted fleet key signed: an unknown key or a bad signature, a
member whose bytes or size differ from the manifest, one missing or extra, a path that is
absolute, holds `..` or is not a plain name, a link, device or fifo, a member listed twice,
more members or bytes than the limits allow, a truncated or damaged tar. `extract()` writes
the files of a verified bundle into a fresh folder, hashing them again as it writes (the file
could have changed since), never following or creating a link.

The bundle id is the sha256 of manifest.json's bytes: it names the bundle everywhere (the
rollout cohort, the journal, the rejected/ folder, the model folder).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import io
import json
import os
import platform
import re
import stat
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from node.fleet import KINDS, BundleError

FORMAT = "roadnode-bundle/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PAYLOAD = "payload/"
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_PATH = 1024
CHUNK = 256 * 1024
VERSION_PATTERN = r"[0-9]{1,9}(\.[0-9]{1,9}){0,3}"
SHA256_PATTERN = r"[0-9a-f]{64}"
# what each kind must hold (docs/fleet-updates.md)
CONFIG_MEMBER = "config.toml"
HOTLIST_MEMBER = "hotlist.json"  # a config bundle's optional hotlist (docs/fleet-updates.md)
CONFIG_MEMBERS = (CONFIG_MEMBER, HOTLIST_MEMBER)  # all a config bundle may hold
MODEL_MEMBER = "model.json"
PRIVATE_KEY_FILE = "fleet.key"
PUBLIC_KEY_FILE = "fleet.pub"


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 512 * 1024 * 1024  # the file, and the sum of its members
    max_members: int = 10_000


@dataclass(frozen=True)
class Member:
    path: str  # relative, under payload/
    sha256: str
    size: int
    executable: bool = False


@dataclass(frozen=True)
class Target:
    """Where a bundle may go. Empty tuples and strings: no constraint."""

    arch: tuple[str, ...] = ()  # platform.machine(): aarch64, armv7l, x86_64
    hardware: tuple[str, ...] = ()  # substrings of the device-tree model ("Raspberry Pi 4")
    min_installed: str = ""  # installed software version range, inclusive
    max_installed: str = ""
    nodes: tuple[str, ...] = ()  # node ids


NO_TARGET = Target()
DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Manifest:
    kind: str
    version: str
    created: str
    files: tuple[Member, ...]
    target: Target = field(default_factory=Target)
    rollout_pct: int = 100
    downgrade: bool = False
    requirement: str = ""  # software: what pip installs (default roadnode==VERSION)
    description: str = ""

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT,
            "kind": self.kind,
            "version": self.version,
            "created": self.created,
            "description": self.description,
            "target": {
                "arch": list(self.target.arch),
                "hardware": list(self.target.hardware),
                "min_installed": self.target.min_installed,
                "max_installed": self.target.max_installed,
                "nodes": list(self.target.nodes),
            },
            "rollout_pct": self.rollout_pct,
            "downgrade": self.downgrade,
            "requirement": self.requirement,
            "files": [
                {"path": m.path, "sha256": m.sha256, "size": m.size, "executable": m.executable}
                for m in self.files
            ],
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")

    @property
    def total_bytes(self) -> int:
        return sum(m.size for m in self.files)


@dataclass(frozen=True)
class Verified:
    """A bundle whose signature and every member checked out."""

    path: Path
    manifest: Manifest
    bundle_id: str  # sha256 of manifest.json's bytes
    key_id: str

    @property
    def label(self) -> str:
        return f"{self.manifest.kind} {self.manifest.version} ({self.bundle_id[:12]})"


# --- versions, paths, cohort -----------------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...]:
    """`1.2.3` → (1, 2, 3, 0); up to four numbers, compared as numbers."""
    if not isinstance(text, str) or not re.fullmatch(VERSION_PATTERN, text):
        raise BundleError(f"version {text!r}: expected 1 to 4 dot-separated numbers (1.2.3)")
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (4 - len(parts))


def safe_path(name: str) -> str:
    """`name` when it is a plain relative path (no `..`, `.`, empty parts, backslashes,
    control characters); BundleError otherwise."""
    shown = name[:80].encode("unicode_escape").decode("ascii")
    if not name or len(name) > MAX_PATH:
        raise BundleError(f"member path {shown!r}: empty or longer than {MAX_PATH} characters")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise BundleError(f"member path {shown!r}: absolute paths are refused")
    if "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BundleError(f"member path {shown!r}: backslash or control character refused")
    parts = name.split("/")
    if ".." in parts:
        raise BundleError(f"member path {shown!r}: '..' is refused (path traversal)")
    if any(p in ("", ".") for p in parts):
        raise BundleError(f"member path {shown!r}: empty or '.' parts are refused")
    return name


def cohort(node_id: str, bundle_id: str) -> int:
    """The node's place 0..99 in a bundle's rollout: the same node and bundle always give
    the same number, and different bundles spread nodes differently."""
    digest = hashlib.sha256((node_id + bundle_id).encode("utf-8")).digest()
    return int.from_bytes(digest, "big") % 100


def in_rollout(node_id: str, verified: Verified) -> bool:
    return cohort(node_id, verified.bundle_id) < verified.manifest.rollout_pct


# --- keys ------------------------------------------------------------------------------------


def raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(pub: Ed25519PublicKey) -> str:
    """16 hex digits naming the key (sha256 of its raw bytes), safe to log."""
    return hashlib.sha256(raw_public(pub)).hexdigest()[:16]


def public_text(pub: Ed25519PublicKey) -> str:
    return base64.b64encode(raw_public(pub)).decode("ascii")


def public_key(source: str | Path) -> Ed25519PublicKey:
    """A fleet public key from its text (base64 of the raw 32 bytes) or a file holding it."""
    text = str(source).strip()
    raw: bytes | None = None
    if re.fullmatch(r"[A-Za-z0-9+/]{43}=", text):
        raw = base64.b64decode(text)
    else:
        path = Path(source)
        try:
            data = path.read_bytes()[:4096]
        except OSError as e:
            raise BundleError(
                f"{source}: neither a fleet public key nor a readable file: {e.strerror or e}"
            ) from None
        if b"PRIVATE KEY" in data:
            raise BundleError(f"{path}: holds a private key; give the public key (.pub)")
        try:
            raw = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = None
        if raw is None or len(raw) != 32:
            raise BundleError(f"{path}: not a fleet public key (base64 of 32 bytes)")
    return Ed25519PublicKey.from_public_bytes(raw)


def trusted_keys(sources: Iterable[str | Path]) -> dict[str, Ed25519PublicKey]:
    """The fleet keys a node trusts, by key id (empty sources are skipped)."""
    keys = {}
    for source in sources:
        if str(source).strip():
            pub = public_key(source)
            keys[key_id(pub)] = pub
    return keys


def generate_keypair(directory: Path) -> tuple[Path, Path]:
    """Write a new fleet keypair: DIR/fleet.key (PEM, 0600) and DIR/fleet.pub (base64 line).
    Never replaces existing files."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    priv, pub = directory / PRIVATE_KEY_FILE, directory / PUBLIC_KEY_FILE
    for path in (priv, pub):
        if path.exists() or path.is_symlink():
            raise BundleError(f"{path}: already exists; refusing to replace a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_new(priv, pem, 0o600)
    _write_new(pub, (public_text(key.public_key()) + "\n").encode("ascii"), 0o644)
    return priv, pub


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def private_key(path: Path) -> Ed25519PrivateKey:
    """The fleet signing key in `path`; refused when group or others may read it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise BundleError(f"{path}: cannot open fleet key: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 16384:
            raise BundleError(f"{path}: not a key file")
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise BundleError(
                f"{path}: private key is readable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        data = os.read(fd, 16384)
    finally:
        os.close(fd)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise BundleError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path}: not an Ed25519 key")
    return key


# --- building --------------------------------------------------------------------------------


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def collect(paths: Iterable[Path]) -> dict[str, Path]:
    """Bundle path → file on disk. A file goes in under its name; a folder's contents go in
    under their paths relative to the folder. Links are refused."""
    out: dict[str, Path] = {}

    def add(name: str, path: Path) -> None:
        safe_path(name)
        if name in out:
            raise BundleError(f"{path}: a second file named {name!r}")
        out[name] = path

    for top in paths:
        if top.is_symlink():
            raise BundleError(f"{top}: a link; bundles hold regular files only")
        if top.is_dir():
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                for d in dirnames:
                    if Path(dirpath, d).is_symlink():
                        raise BundleError(f"{Path(dirpath, d)}: a link; bundles hold no links")
                for fname in sorted(filenames):
                    path = Path(dirpath) / fname
                    if path.is_symlink() or not path.is_file():
                        raise BundleError(f"{path}: not a regular file; bundles hold no links")
                    add(path.relative_to(top).as_posix(), path)
        elif top.is_file():
            add(top.name, top)
        else:
            raise BundleError(f"{top}: no such file or folder")
    return out


def check_content(kind: str, names: Iterable[str]) -> None:
    """What each kind must hold: config.toml (and at most hotlist.json besides: never a key
    file, which each node has provisioned on its own); model.json; at least one top-level
    wheel."""
    names = set(names)
    if kind == "config" and CONFIG_MEMBER not in names:
        raise BundleError(f"a config bundle must hold {CONFIG_MEMBER}")
    if kind == "config" and names - set(CONFIG_MEMBERS):
        extra = sorted(names - set(CONFIG_MEMBERS))[0]
        raise BundleError(
            f"a config bundle holds only {' and '.join(CONFIG_MEMBERS)}, not {extra!r} "
            "(a hotlist key is provisioned on each node, never shipped)"
        )
    if kind == "model" and MODEL_MEMBER not in names:
        raise BundleError(f"a model bundle must hold {MODEL_MEMBER} (the detector manifest)")
    if kind == "software" and not any("/" not in n and n.endswith(".whl") for n in names):
        raise BundleError("a software bundle must hold the wheels (*.whl) at its top level")


def check_hotlist_source(path: Path) -> None:
    """Refuse to build a config bundle whose hotlist a node would refuse: not JSON, a bad
    entry, or already stale (BundleError naming the file). The node checks again, with its
    key, before it switches."""
    import time

    from node.plates.hotlist import HotlistError, check_document, read_document

    try:
        check_document(read_document(path), str(path), time.time())
    except HotlistError as e:
        raise BundleError(str(e)) from None


def _hash_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def signature_bytes(manifest_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    sig = key.sign(manifest_bytes)
    doc = {
        "alg": "ed25519",
        "key_id": key_id(key.public_key()),
        "sig": base64.b64encode(sig).decode(),
    }
    return (json.dumps(doc, sort_keys=True) + "\n").encode("ascii")


def _tar_info(name: str, size: int, mtime: int, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def create(
    out: Path,
    kind: str,
    version: str,
    paths: Iterable[Path],
    key: Ed25519PrivateKey | None,
    target: Target = NO_TARGET,
    rollout_pct: int = 100,
    downgrade: bool = False,
    description: str = "",
    created: str | None = None,
) -> Manifest:
    """Build a bundle at `out` (written aside, then renamed); signed when `key` is given."""
    if kind not in KINDS:
        raise BundleError(f"kind {kind!r}: must be one of {', '.join(KINDS)}")
    parse_version(version)
    if not 0 <= rollout_pct <= 100:
        raise BundleError(f"rollout {rollout_pct}: must be 0..100 percent")
    files = collect(paths)
    check_content(kind, files)
    if kind == "config" and HOTLIST_MEMBER in files:
        check_hotlist_source(files[HOTLIST_MEMBER])
    members = []
    for name, path in sorted(files.items()):
        digest, size = _hash_file(path)
        members.append(Member(name, digest, size, bool(path.stat().st_mode & 0o111)))
    manifest = Manifest(
        kind=kind,
        version=version,
        created=created or utc_now(),
        files=tuple(members),
        target=target,
        rollout_pct=rollout_pct,
        downgrade=downgrade,
        requirement=f"roadnode=={version}" if kind == "software" else "",
        description=description,
    )
    _parse_manifest(manifest.to_json())  # the node will read it back: check it now
    data = manifest.to_json()
    sig = signature_bytes(data, key) if key is not None else None
    _write_tar(out, data, sig, [(m, files[m.path]) for m in members])
    return manifest


def _write_tar(
    out: Path, manifest: bytes, sig: bytes | None, members: list[tuple[Member, Path | IO[bytes]]]
) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    mtime = int(dt.datetime.now(dt.UTC).timestamp())
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            tf.addfile(_tar_info(MANIFEST, len(manifest), mtime), io.BytesIO(manifest))
            if sig is not None:
                tf.addfile(_tar_info(SIGNATURE, len(sig), mtime), io.BytesIO(sig))
            for member, source in members:
                info = _tar_info(
                    PAYLOAD + member.path, member.size, mtime, 0o755 if member.executable else 0o644
                )
                if isinstance(source, Path):
                    with source.open("rb") as f:
                        tf.addfile(info, f)
                else:
                    tf.addfile(info, source)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def sign(path: Path, key: Ed25519PrivateKey, limits: Limits = DEFAULT_LIMITS) -> Manifest:
    """(Re)sign the bundle at `path` with `key`: the manifest is unchanged, the signature
    replaced. Every member is checked against the manifest first."""
    manifest_bytes, manifest, _ = _read_head(path, limits)
    sig = signature_bytes(manifest_bytes, key)
    with tarfile.open(path, "r:") as src:
        payload = []
        for info in src:
            if info.name.startswith(PAYLOAD):
                f = src.extractfile(info)
                if f is None:
                    raise BundleError(f"{path}: {info.name!r} is not a regular file")
                payload.append((info.name[len(PAYLOAD) :], f.read()))
    by_path = {m.path: m for m in manifest.files}
    members: list[tuple[Member, Path | IO[bytes]]] = []
    for name, data in payload:
        m = by_path.get(name)
        if m is None or hashlib.sha256(data).hexdigest() != m.sha256:
            raise BundleError(f"{path}: member {name!r} does not match the manifest")
        members.append((m, io.BytesIO(data)))
    _write_tar(path, manifest_bytes, sig, members)
    return manifest


# --- reading and verifying -------------------------------------------------------------------


def _str_list(doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(v, str) and 0 < len(v) <= 128 for v in value
    ):
        raise BundleError(f"manifest {where}{key}: must be a list of short strings")
    if len(value) > 1000:
        raise BundleError(f"manifest {where}{key}: more than 1000 entries")
    return tuple(value)


def _field(doc: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(f"manifest {where}{key}: must be a {kind.__name__}, got {value!r:.60}")
    return value


def _parse_manifest(data: bytes) -> Manifest:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"manifest is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BundleError("manifest is not a JSON object")
    if doc.get("format") != FORMAT:
        raise BundleError(f"manifest format {doc.get('format')!r:.40}: this node reads {FORMAT}")
    kind = _field(doc, "kind", str)
    if kind not in KINDS:
        raise BundleError(f"manifest kind {kind!r:.40}: must be one of {', '.join(KINDS)}")
    version = _field(doc, "version", str)
    parse_version(version)
    created = _field(doc, "created", str)
    try:
        dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise BundleError(
            f"manifest created {created!r:.40}: expected YYYY-MM-DDTHH:MM:SSZ"
        ) from None
    t = _field(doc, "target", dict)
    target = Target(
        arch=_str_list(t, "arch", "target."),
        hardware=_str_list(t, "hardware", "target."),
        min_installed=_field(t, "min_installed", str, "target."),
        max_installed=_field(t, "max_installed", str, "target."),
        nodes=_str_list(t, "nodes", "target."),
    )
    for bound in (target.min_installed, target.max_installed):
        if bound:
            parse_version(bound)
    rollout = _field(doc, "rollout_pct", int)
    if not 0 <= rollout <= 100:
        raise BundleError(f"manifest rollout_pct {rollout}: must be 0..100")
    raw_files = _field(doc, "files", list)
    members: list[Member] = []
    seen: set[str] = set()
    for i, f in enumerate(raw_files):
        if not isinstance(f, dict):
            raise BundleError(f"manifest files[{i}]: must be an object")
        path = safe_path(_field(f, "path", str, f"files[{i}]."))
        digest = _field(f, "sha256", str, f"files[{i}].")
        if not re.fullmatch(SHA256_PATTERN, digest):
            raise BundleError(f"manifest files[{i}].sha256: not 64 lowercase hex digits")
        size = _field(f, "size", int, f"files[{i}].")
        if size < 0:
            raise BundleError(f"manifest files[{i}].size: negative")
        if path in seen:
            raise BundleError(f"manifest lists {path!r} twice")
        seen.add(path)
        members.append(Member(path, digest, size, bool(f.get("executable", False))))
    requirement = _field(doc, "requirement", str)
    if kind == "software" and not re.fullmatch(r"[A-Za-z0-9._-]+==[0-9A-Za-z.+!-]+", requirement):
        raise BundleError(f"manifest requirement {requirement!r:.60}: expected NAME==VERSION")
    description = doc.get("description", "")
    if not isinstance(description, str) or len(description) > 2000:
        raise BundleError("manifest description: must be a string of at most 2000 characters")
    return Manifest(
        kind=kind,
        version=version,
        created=created,
        files=tuple(members),
        target=target,
        rollout_pct=rollout,
        downgrade=_field(doc, "downgrade", bool),
        requirement=requirement,
        description=description,
    )


def _read_small(tf: tarfile.TarFile, info: tarfile.TarInfo, limit: int) -> bytes:
    if not info.isreg():
        raise BundleError(f"{info.name!r}: not a regular file")
    if info.size > limit:
        raise BundleError(f"{info.name}: {info.size} bytes, more than {limit}")
    f = tf.extractfile(info)
    assert f is not None
    data = f.read()
    if len(data) != info.size:
        raise BundleError(f"{info.name}: truncated")
    return data


def _open_tar(path: Path, limits: Limits) -> tarfile.TarFile:
    try:
        st = os.stat(path)
    except OSError as e:
        raise BundleError(f"{path}: cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{path}: not a regular file")
    overhead = MAX_MANIFEST_BYTES + 4096 + 1536 * (limits.max_members + 2)  # headers, padding
    if st.st_size > limits.max_bytes + overhead:
        raise BundleError(f"{path}: {st.st_size} bytes, more than the limit of {limits.max_bytes}")
    try:
        return tarfile.open(path, "r:")  # uncompressed tar only
    except tarfile.TarError:
        with open(path, "rb") as f:
            magic = f.read(4)
        what = "a zip file" if magic.startswith(b"PK") else "not a tar file"
        raise BundleError(f"{path}: {what}; bundles are uncompressed POSIX tar") from None


def _read_head(path: Path, limits: Limits) -> tuple[bytes, Manifest, dict[str, Any] | None]:
    """manifest.json (bytes and parsed) and manifest.sig (parsed, or None when unsigned)."""
    try:
        with _open_tar(path, limits) as tf:
            first = tf.next()
            if first is None or first.name != MANIFEST:
                raise BundleError(f"{path}: the first member must be {MANIFEST}")
            data = _read_small(tf, first, MAX_MANIFEST_BYTES)
            second = tf.next()
            sig = None
            if second is not None and second.name == SIGNATURE:
                raw_sig = _read_small(tf, second, 4096)
                try:
                    sig = json.loads(raw_sig)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise BundleError(f"{path}: {SIGNATURE} is not valid JSON") from None
                if not isinstance(sig, dict):
                    raise BundleError(f"{path}: {SIGNATURE} is not a JSON object")
    except (tarfile.TarError, EOFError) as e:
        raise BundleError(f"{path}: truncated or damaged tar ({e})") from None
    try:
        return data, _parse_manifest(data), sig
    except BundleError as e:
        raise BundleError(f"{path}: {e}") from None


def read_manifest(path: Path, limits: Limits = DEFAULT_LIMITS) -> tuple[Manifest, str]:
    """The manifest and bundle id, unverified (for display only)."""
    data, manifest, _ = _read_head(path, limits)
    return manifest, hashlib.sha256(data).hexdigest()


def check_signature(
    path: Path, data: bytes, sig: dict[str, Any] | None, keys: Mapping[str, Ed25519PublicKey]
) -> str:
    """The key id that signed `data`; BundleError when unsigned, unknown or bad."""
    if sig is None:
        raise BundleError(f"{path}: not signed (no {SIGNATURE})")
    if not keys:
        raise BundleError(f"{path}: no fleet key is configured (fleet.key): nothing is trusted")
    kid = sig.get("key_id")
    if (
        sig.get("alg") != "ed25519"
        or not isinstance(kid, str)
        or not isinstance(sig.get("sig"), str)
    ):
        raise BundleError(f"{path}: {SIGNATURE} is malformed")
    pub = keys.get(kid)
    if pub is None:
        raise BundleError(
            f"{path}: signed by unknown key {kid[:16]!r} (trusted: {', '.join(sorted(keys))})"
        )
    try:
        raw = base64.b64decode(sig["sig"], validate=True)
        pub.verify(raw, data)
    except (binascii.Error, ValueError, InvalidSignature):
        raise BundleError(f"{path}: bad signature (key {kid})") from None
    return kid


def verify(
    path: Path, keys: Mapping[str, Ed25519PublicKey], limits: Limits = DEFAULT_LIMITS
) -> Verified:
    """Check the signature, then every member against the manifest; see the module doc."""
    data, manifest, sig = _read_head(path, limits)
    kid = check_signature(path, data, sig, keys)
    if len(manifest.files) > limits.max_members:
        raise BundleError(f"{path}: {len(manifest.files)} files, more than {limits.max_members}")
    if manifest.total_bytes > limits.max_bytes:
        raise BundleError(
            f"{path}: {manifest.total_bytes} bytes of files, more than {limits.max_bytes}"
        )
    try:
        check_content(manifest.kind, (m.path for m in manifest.files))
    except BundleError as e:
        raise BundleError(f"{path}: {e}") from None
    _check_members(path, manifest, limits, None)
    return Verified(path, manifest, hashlib.sha256(data).hexdigest(), kid)


def _check_members(path: Path, manifest: Manifest, limits: Limits, dest: Path | None) -> None:
    """Read every member after the head; hash it (and write it under `dest` when given)."""
    expected = {m.path: m for m in manifest.files}
    seen: set[str] = set()
    count = 0
    try:
        with _open_tar(path, limits) as tf:
            for info in tf:
                if info.name in (MANIFEST, SIGNATURE) and count < 2:
                    count += 1
                    continue
                _check_member(path, tf, info, expected, seen, dest)
    except (tarfile.TarError, EOFError) as e:
        raise BundleError(f"{path}: truncated or damaged tar ({e})") from None
    missing = sorted(set(expected) - seen)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise BundleError(f"{path}: member {missing[0]!r}{more} missing (truncated bundle?)")


def _check_member(
    path: Path,
    tf: tarfile.TarFile,
    info: tarfile.TarInfo,
    expected: Mapping[str, Member],
    seen: set[str],
    dest: Path | None,
) -> None:
    name = info.name
    if info.isdir():  # directory entries carry nothing; their paths must still be safe
        safe_path(name.rstrip("/") or "/")
        return
    if not name.startswith(PAYLOAD):
        safe_path(name)
        raise BundleError(f"{path}: unexpected member {name!r} outside {PAYLOAD}")
    rel = safe_path(name[len(PAYLOAD) :])
    if not info.isreg():
        what = (
            "a symlink"
            if info.issym()
            else "a hard link"
            if info.islnk()
            else "a device or fifo"
            if info.isdev()
            else "not a regular file"
        )
        raise BundleError(f"{path}: member {rel!r} is {what}; only regular files are allowed")
    if rel in seen:
        raise BundleError(f"{path}: member {rel!r} appears twice")
    m = expected.get(rel)
    if m is None:
        raise BundleError(f"{path}: member {rel!r} is not in the manifest")
    if info.size != m.size:
        raise BundleError(
            f"{path}: member {rel!r} is {info.size} bytes, the manifest says {m.size}"
        )
    f = tf.extractfile(info)
    assert f is not None
    h = hashlib.sha256()
    got = 0
    out = _create_under(dest, rel, m.executable) if dest is not None else None
    try:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            got += len(chunk)
            if out is not None:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
        if got != m.size:
            raise BundleError(f"{path}: member {rel!r} truncated ({got} of {m.size} bytes)")
        if h.hexdigest() != m.sha256:
            raise BundleError(f"{path}: member {rel!r} does not match its sha256 (tampered?)")
        if out is not None:
            os.fsync(out)
    finally:
        if out is not None:
            os.close(out)
    seen.add(rel)


def _create_under(dest: Path, rel: str, executable: bool) -> int:
    """Create dest/rel afresh: parents made as real folders; nothing followed, nothing replaced."""
    parent = dest
    for part in rel.split("/")[:-1]:
        parent = parent / part
        try:
            os.mkdir(parent, 0o755)
        except FileExistsError:
            if parent.is_symlink() or not parent.is_dir():
                raise BundleError(f"{parent}: exists and is not a folder") from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(dest / rel, flags, 0o755 if executable else 0o644)


def extract(verified: Verified, dest: Path, limits: Limits = DEFAULT_LIMITS) -> None:
    """Write the bundle's files into `dest` (made here; must not exist), hashing them again.
    OSError (disk full...) and BundleError propagate; the caller removes `dest`."""
    os.mkdir(dest, 0o755)
    data, manifest, _ = _read_head(verified.path, limits)
    if hashlib.sha256(data).hexdigest() != verified.bundle_id:
        raise BundleError(f"{verified.path}: changed since it was verified")
    _check_members(verified.path, manifest, limits, dest)


# --- where a bundle may go -------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    arch: str
    hardware: str  # the device-tree model, "" off a board

    @staticmethod
    def detect() -> Platform:
        hardware = ""
        for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
            try:
                hardware = Path(p).read_bytes().rstrip(b"\x00").decode("utf-8", "replace")
                break
            except OSError:
                continue
        return Platform(platform.machine(), hardware.strip())


def check_target(manifest: Manifest, node_id: str, installed_software: str, here: Platform) -> None:
    """BundleError when the bundle is not meant for this node."""
    t = manifest.target
    if t.arch and here.arch not in t.arch:
        raise BundleError(f"for {', '.join(t.arch)}; this node is {here.arch}")
    if t.hardware and not any(h.lower() in here.hardware.lower() for h in t.hardware):
        raise BundleError(
            f"for {', '.join(t.hardware)}; this node is {here.hardware or 'unknown hardware'!r}"
        )
    if t.nodes and node_id not in t.nodes:
        raise BundleError(f"for other nodes; not for {node_id}")
    have = parse_version(installed_software)
    if t.min_installed and have < parse_version(t.min_installed):
        raise BundleError(
            f"needs software {t.min_installed} or newer; {installed_software} is installed"
        )
    if t.max_installed and have > parse_version(t.max_installed):
        raise BundleError(
            f"needs software {t.max_installed} or older; {installed_software} is installed"
        )
