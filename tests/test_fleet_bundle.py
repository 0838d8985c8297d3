"""The update bundle: signature, members, tar-slip, limits, keys, cohort, the CLI."""

from __future__ import annotations

import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.cli import main
from node.fleet import BundleError
from node.fleet.bundle import (
    PAYLOAD,
    Limits,
    Platform,
    Target,
    check_target,
    cohort,
    extract,
    generate_keypair,
    parse_version,
    read_manifest,
    trusted_keys,
    verify,
)
from tests import fleethelp as fh


@pytest.fixture
def key() -> fh.Key:
    return fh.new_key()


def keys(*k: fh.Key) -> dict[str, Ed25519PublicKey]:
    return trusted_keys([x.public for x in k])


def test_good_bundle_verifies_and_extracts(tmp_path: Path, key: fh.Key) -> None:
    b = fh.software(tmp_path, "1.2.0", key)
    v = verify(b, keys(key))
    assert v.manifest.kind == "software"
    assert v.manifest.version == "1.2.0"
    assert v.manifest.requirement == "roadnode==1.2.0"
    assert {m.path for m in v.manifest.files} == {
        "behaviour.txt",
        "roadnode-1.2.0-py3-none-any.whl",
    }
    extract(v, tmp_path / "out")
    assert (tmp_path / "out" / "behaviour.txt").read_text() == "ok"
    assert read_manifest(b)[1] == v.bundle_id


def test_bad_signature_refused(tmp_path: Path, key: fh.Key) -> None:
    b = fh.config(tmp_path, "1.0", key, "schema_version = 2\n")
    with tarfile.open(b) as tf:
        members = [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf]  # type: ignore[union-attr]
    manifest = members[0][1]
    assert manifest is not None
    members[0][0].size = len(manifest.replace(b'"1.0"', b'"1.1"'))
    with tarfile.open(tmp_path / "forged.tar", "w", format=tarfile.PAX_FORMAT) as out:
        import io

        out.addfile(members[0][0], io.BytesIO(manifest.replace(b'"1.0"', b'"1.1"')))
        for info, data in members[1:]:
            out.addfile(info, io.BytesIO(data or b""))
    with pytest.raises(BundleError, match="bad signature"):
        verify(tmp_path / "forged.tar", keys(key))


def test_unknown_key_and_unsigned_refused(tmp_path: Path, key: fh.Key) -> None:
    other = fh.new_key()
    b = fh.software(tmp_path, "1.0", other)
    with pytest.raises(BundleError, match="unknown key"):
        verify(b, keys(key))
    unsigned = fh.software(tmp_path, "1.1", None)
    with pytest.raises(BundleError, match="not signed"):
        verify(unsigned, keys(key))
    with pytest.raises(BundleError, match="no fleet key"):
        verify(b, {})


def test_two_trusted_keys_for_rotation(tmp_path: Path, key: fh.Key) -> None:
    new = fh.new_key()
    both = keys(key, new)
    assert (
        verify(fh.software(tmp_path, "1.0", key), both).key_id
        != verify(fh.software(tmp_path, "1.1", new), both).key_id
    )


def test_tampered_member_refused(tmp_path: Path, key: fh.Key) -> None:
    b = fh.forge(
        tmp_path / "t.tar", key, {"config.toml": b"a = 1\n"}, [fh.reg("config.toml", b"a = 2\n")]
    )
    with pytest.raises(BundleError, match="does not match its sha256"):
        verify(b, keys(key))


def test_size_mismatch_missing_extra_and_duplicate_members(tmp_path: Path, key: fh.Key) -> None:
    listed = {"config.toml": b"a = 1\n"}
    cases = {
        "is 7 bytes": [fh.reg("config.toml", b"a = 10\n")],
        "missing": [],
        "not in the manifest": [fh.reg("config.toml", b"a = 1\n"), fh.reg("x", b"")],
        "appears twice": [fh.reg("config.toml", b"a = 1\n"), fh.reg("config.toml", b"a = 1\n")],
    }
    for i, (message, members) in enumerate(cases.items()):
        b = fh.forge(tmp_path / f"{i}.tar", key, listed, members)
        with pytest.raises(BundleError, match=message):
            verify(b, keys(key))


def test_truncated_bundle_refused(tmp_path: Path, key: fh.Key) -> None:
    b = fh.software(tmp_path, "1.0", key)
    data = b.read_bytes()
    with tarfile.open(b) as tf:
        last = tf.getmembers()[-1]
    # inside the manifest, the signature, the last member's header and its data
    for cut in (100, 700, 1600, last.offset + 100, last.offset_data + last.size - 1):
        t = tmp_path / f"cut{cut}.tar"
        t.write_bytes(data[:cut])
        with pytest.raises(BundleError, match=r"truncated|damaged|missing|first member"):
            verify(t, keys(key))


@pytest.mark.parametrize(
    "name", ["/etc/cron.d/evil", "../evil", PAYLOAD + "../../evil", PAYLOAD + "a/../../evil"]
)
def test_tar_slip_paths_refused(tmp_path: Path, key: fh.Key, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.size = 4
    b = fh.forge(tmp_path / "slip.tar", key, {"config.toml": b"a=1\n"}, [(info, b"evil")])
    with pytest.raises(BundleError, match=r"absolute|'\.\.'"):
        verify(b, keys(key))
    assert not (tmp_path.parent / "evil").exists()


def test_links_and_devices_refused(tmp_path: Path, key: fh.Key) -> None:
    for i, (kind, what) in enumerate(
        [
            (tarfile.SYMTYPE, "a symlink"),
            (tarfile.LNKTYPE, "a hard link"),
            (tarfile.CHRTYPE, "a device"),
            (tarfile.FIFOTYPE, "a device or fifo"),
        ]
    ):
        info = tarfile.TarInfo(PAYLOAD + "config.toml")
        info.type = kind
        info.linkname = "/etc/shadow"
        b = fh.forge(tmp_path / f"l{i}.tar", key, {"config.toml": b"a=1\n"}, [(info, None)])
        with pytest.raises(BundleError, match=what):
            verify(b, keys(key))


def test_manifest_paths_checked_too(tmp_path: Path, key: fh.Key) -> None:
    b = fh.forge(tmp_path / "m.tar", key, {"../config.toml": b"x"}, [])
    with pytest.raises(BundleError, match="path traversal"):
        verify(b, keys(key))


def test_zip_and_garbage_refused(tmp_path: Path, key: fh.Key) -> None:
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../evil", "x")
    with pytest.raises(BundleError, match="zip file"):
        verify(z, keys(key))
    g = tmp_path / "g.tar"
    g.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(BundleError):
        verify(g, keys(key))


def test_limits(tmp_path: Path, key: fh.Key) -> None:
    b = fh.software(tmp_path, "1.0", key)
    with pytest.raises(BundleError, match="more than 1"):
        verify(b, keys(key), Limits(max_members=1))
    with pytest.raises(BundleError, match="more than"):
        verify(b, keys(key), Limits(max_bytes=10))


def test_versions_targets_and_cohort() -> None:
    assert parse_version("1.10") > parse_version("1.9.9")
    assert parse_version("2") == parse_version("2.0.0.0")
    for bad in ("1.x", "", "1..2", "1.2.3.4.5", "v1"):
        with pytest.raises(BundleError):
            parse_version(bad)
    from node.fleet.bundle import Manifest

    pi = Platform("aarch64", "Raspberry Pi 4 Model B Rev 1.4")

    def m(**t: object) -> Manifest:
        return Manifest("software", "2.0", "2026-01-01T00:00:00Z", (), Target(**t))  # type: ignore[arg-type]

    check_target(
        m(arch=("aarch64",), hardware=("Raspberry Pi 4",), min_installed="1.0"), "n1", "1.5", pi
    )
    for target, message in [
        ({"arch": ("armv7l",)}, "aarch64"),
        ({"hardware": ("Raspberry Pi 5",)}, "Raspberry Pi 4"),
        ({"nodes": ("n2",)}, "not for n1"),
        ({"min_installed": "1.6"}, "1.6 or newer"),
        ({"max_installed": "1.4"}, "1.4 or older"),
    ]:
        with pytest.raises(BundleError, match=message):
            check_target(m(**target), "n1", "1.5", pi)  # type: ignore[arg-type]
    assert cohort("node-7", "abc") == cohort("node-7", "abc")
    spread = [cohort(f"node-{i}", "bundle-x") for i in range(2000)]
    assert sum(c < 10 for c in spread) in range(140, 260)  # ~10 % of the fleet
    assert [cohort(f"node-{i}", "bundle-y") for i in range(50)] != spread[:50]


def test_keygen_private_key_is_0600_and_never_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fleet-keygen", str(tmp_path / "k")]) == 0
    priv = tmp_path / "k" / "fleet.key"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    before = priv.read_bytes()
    assert main(["fleet-keygen", str(tmp_path / "k")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert priv.read_bytes() == before
    with pytest.raises(BundleError, match="private key"):
        trusted_keys([priv])
    generate_keypair(tmp_path / "k2")


def test_cli_create_sign_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet-keygen", str(tmp_path / "k")]) == 0
    (tmp_path / "config.toml").write_text("schema_version = 2\n")
    out = tmp_path / "c.tar"
    args = ["bundle", "create", "--kind", "config", "--version", "3.1", "--out", str(out)]
    assert main([*args, "--rollout-pct", "20", str(tmp_path / "config.toml")]) == 0
    pub = str(tmp_path / "k" / "fleet.pub")
    capsys.readouterr()
    assert main(["bundle", "verify", str(out), "--fleet-key", pub]) == 1
    assert "not signed" in capsys.readouterr().err
    assert main(["bundle", "sign", str(out), "--key", str(tmp_path / "k" / "fleet.key")]) == 0
    assert main(["bundle", "verify", str(out), "--fleet-key", pub, "--json"]) == 0
    assert '"rollout_pct": 20' in capsys.readouterr().out
    (tmp_path / "k" / "fleet.key").chmod(0o644)
    assert (
        main([*args, "--key", str(tmp_path / "k" / "fleet.key"), str(tmp_path / "config.toml")])
        == 1
    )
    assert "chmod 600" in capsys.readouterr().err
    assert main([*args, "--kind", "model", str(tmp_path / "config.toml")]) == 1
    assert "model.json" in capsys.readouterr().err
    (tmp_path / "link").symlink_to(tmp_path / "config.toml")
    assert main([*args, str(tmp_path / "link")]) == 1
    assert "link" in capsys.readouterr().err
