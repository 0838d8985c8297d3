"""Helpers for the fleet tests: keys, bundles (good and forged), a fake installer."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.fleet import InstallError
from node.fleet.bundle import (
    MANIFEST,
    PAYLOAD,
    SIGNATURE,
    Manifest,
    Member,
    Target,
    create,
    public_text,
    signature_bytes,
    utc_now,
)

MODEL_BYTES = b"TFL3 not really a model, but its sha256 is right"


@dataclass(frozen=True)
class Key:
    private: Ed25519PrivateKey
    public: str  # base64 text, as fleet.key takes it


def new_key() -> Key:
    k = Ed25519PrivateKey.generate()
    return Key(k, public_text(k.public_key()))


def software(
    folder: Path,
    version: str,
    key: Key | None,
    behaviour: str = "ok",
    name: str | None = None,
    **kw: object,
) -> Path:
    """A software bundle: a (dummy) wheel and behaviour.txt for the fake service."""
    src = folder / f"src-sw-{version}-{behaviour}"
    src.mkdir(parents=True, exist_ok=True)
    (src / f"roadnode-{version}-py3-none-any.whl").write_bytes(b"PK wheel " + version.encode())
    (src / "behaviour.txt").write_text(behaviour)
    out = folder / (name or f"sw-{version}-{behaviour}.bundle")
    create(out, "software", version, [src], key.private if key else None, **kw)  # type: ignore[arg-type]
    return out


def model(folder: Path, version: str, key: Key, behaviour: str = "ok", **kw: object) -> Path:
    src = folder / f"src-model-{version}-{behaviour}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "plates.tflite").write_bytes(MODEL_BYTES)
    manifest = {
        "name": "plates",
        "version": version,
        "format": "centernet-ltrb-log/v1",
        "file": "plates.tflite",
        "sha256": hashlib.sha256(MODEL_BYTES).hexdigest(),
        "input_width": 64,
        "input_height": 64,
    }
    (src / "model.json").write_text(json.dumps(manifest))
    (src / "behaviour.txt").write_text(behaviour)
    out = folder / f"model-{version}-{behaviour}.bundle"
    create(out, "model", version, [src], key.private, **kw)  # type: ignore[arg-type]
    return out


def config(folder: Path, version: str, key: Key, text: str, **kw: object) -> Path:
    src = folder / f"src-config-{version}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "config.toml").write_text(text)
    out = folder / f"config-{version}.bundle"
    create(out, "config", version, [src / "config.toml"], key.private, **kw)  # type: ignore[arg-type]
    return out


def forge(
    out: Path,
    key: Key,
    listed: dict[str, bytes],
    members: Sequence[tuple[tarfile.TarInfo, bytes | None]],
    kind: str = "config",
) -> Path:
    """A correctly signed manifest listing `listed`, followed by arbitrary tar `members`."""
    files = tuple(
        Member(p, hashlib.sha256(d).hexdigest(), len(d)) for p, d in sorted(listed.items())
    )
    m = Manifest(kind, "9.0", utc_now(), files, Target())
    data = m.to_json()
    sig = signature_bytes(data, key.private)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, blob in ((MANIFEST, data), (SIGNATURE, sig)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
        for info, content in members:
            tf.addfile(info, io.BytesIO(content) if content is not None else None)
    return out


def reg(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(PAYLOAD + name if not name.startswith(("/", "..")) else name)
    info.size = len(data)
    return info, data


def fake_installer(release: Path, manifest: Manifest) -> None:
    """Stands in for `python -m venv` + pip (one test runs the real one)."""
    if "install-fails" in (release / "wheels" / "behaviour.txt").read_text():
        raise InstallError("pip install failed (exit 1): no matching distribution")
    (release / "venv").mkdir()
    (release / "venv" / "VERSION").write_text(manifest.version)
