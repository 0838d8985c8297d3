"""Shared parts of the uplink and ingest tests: packets, a store, certificates, and a fault
server that plays scripted misbehaviour in front of the real ingest (loopback only)."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import ipaddress
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.config import NodeConfig, StoreConfig, UplinkConfig
from node.evidence import PRIORITY_VIOLATION
from node.evidence.packet import BuiltPacket, build
from node.store import PacketStore
from node.uplink.ingest import IngestServer
from node.uplink.retry import RetryPolicy

NODE = NodeConfig(id="test-node-01")
FAST = RetryPolicy(base_s=0.02, max_s=0.15, retry_after_max_s=5.0, min_s=0.01)


def node_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def packets(
    n: int,
    key: Ed25519PrivateKey,
    *,
    size: int = 600,
    priority: int = PRIORITY_VIOLATION,
    central: X25519PublicKey | None = None,
    node: NodeConfig = NODE,
) -> list[BuiltPacket]:
    """`n` real signed packets with one part of `size` bytes each, ascending creation time."""
    base = time.time_ns()
    return [
        build(
            "violation",
            priority,
            {"test": i},
            {"blob.bin": (uuid.uuid4().bytes * (size // 16 + 1))[:size]},
            key,
            node,
            central,
            created_utc_ns=base + i,
        )
        for i in range(n)
    ]


def fill(store: PacketStore, items: list[BuiltPacket]) -> None:
    for p in items:
        store.append(
            p.id, p.data, priority=p.priority, kind=p.kind, created_utc_ns=p.created_utc_ns
        )


def open_store(directory: Path) -> PacketStore:
    return PacketStore(directory, StoreConfig(keep_acked_hours=1.0, min_free_mb=0, low_disk_mb=0))


def uplink_cfg(url: str, **kw: object) -> UplinkConfig:
    base: dict[str, object] = {
        "url": url,
        "allow_plain_http": url.startswith("http://"),
        "connect_timeout_s": 2.0,
        "read_timeout_s": 5.0,
        "idle_poll_s": 0.1,
    }
    return UplinkConfig(**(base | kw))  # type: ignore[arg-type]


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.01)


def acked_ids(store: PacketStore) -> set[str]:
    conn = store._conn  # the test looks inside the index
    return {r[0] for r in conn.execute("SELECT id FROM packets WHERE state = 'acked'")}


def state_of(store: PacketStore, packet_id: str) -> str:
    row = store._conn.execute("SELECT state FROM packets WHERE id = ?", (packet_id,)).fetchone()
    return str(row[0])


@dataclass
class Results:
    """Every answer the ingest gave: (packet id, status), thread-safe."""

    items: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, packet_id: str, status: str) -> None:
        with self.lock:
            self.items.append((packet_id, status))

    def of(self, packet_id: str) -> list[str]:
        with self.lock:
            return [s for p, s in self.items if p == packet_id]

    def count(self, status: str) -> int:
        with self.lock:
            return sum(1 for _, s in self.items if s == status)


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory: Path, label: str, *, server: bool = True) -> Pki:
    """A CA and a certificate it signed (for 127.0.0.1 and localhost), as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{label} CA"))
        .issuer_name(_name(f"{label} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{label} {'server' if server else 'client'}"))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Pki(
        directory / f"{label}-ca.pem", directory / f"{label}.pem", directory / f"{label}.key"
    )
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths.key.chmod(0o600)
    return paths


# --- the fault server -----------------------------------------------------------------------


class FaultServer:
    """HTTP on loopback that plays one scripted action per request, then forwards to the real
    ingest at `upstream` (host, port) by default. Actions: "forward"; "500", "503" (an error
    answer); "429:N" (Retry-After N); "hang" (never answers); "reset" (resets the connection
    halfway through the body); "drop" (forwards, so the ingest stores it, then closes without
    answering); "wrong_id" (200 naming another packet). `default` is played when the script is
    empty. `seen` lists (action, packet id, monotonic time) per request."""

    def __init__(self, upstream: tuple[str, int], script: list[str], default: str = "forward"):
        self.upstream = upstream
        self.script = list(script)
        self.default = default
        self.seen: list[tuple[str, str, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def set_default(self, action: str) -> None:
        with self._lock:
            self.default = action

    def actions(self) -> list[str]:
        with self._lock:
            return [a for a, _, _ in self.seen]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _next(self, pid: str) -> str:
        with self._lock:
            action = self.script.pop(0) if self.script else self.default
            self.seen.append((action, pid, time.monotonic()))
            return action

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        f = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                line = f.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (h := f.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0"))
                pid = headers.get("idempotency-key", "")
                action = self._next(pid) if method == "POST" else "forward"
                if action == "reset":
                    f.read(length // 2)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.close()
                    return
                body = f.read(length)
                if action == "hang":
                    self._stop.wait()
                    return
                if action in ("500", "503") or action.startswith("429"):
                    code = int(action[:3])
                    extra = f"Retry-After: {action[4:]}\r\n" if ":" in action else ""
                    self._reply(conn, code, {"status": "error", "error": "scripted"}, extra)
                    continue
                if action == "wrong_id":
                    doc = {"packet_id": str(uuid.uuid4()), "status": "stored"}
                    self._reply(conn, 200, doc)
                    continue
                code, answer = self._forward(method, path, headers, body)
                if action == "drop":
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
                    return
                self._reply_raw(conn, code, answer)
        except (OSError, ValueError):
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        c = http.client.HTTPConnection(*self.upstream, timeout=30)
        keep = ("content-type", "idempotency-key", "content-length")
        c.request(method, path, body=body, headers={k: v for k, v in headers.items() if k in keep})
        r = c.getresponse()
        out = (r.status, r.read())
        c.close()
        return out

    def _reply(self, conn: socket.socket, code: int, doc: object, extra: str = "") -> None:
        self._reply_raw(conn, code, json.dumps(doc).encode(), extra)

    def _reply_raw(self, conn: socket.socket, code: int, body: bytes, extra: str = "") -> None:
        head = (
            f"HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        )
        conn.sendall(head.encode() + body)


def ingest_address(server: IngestServer) -> tuple[str, int]:
    return ("127.0.0.1", server.port)
