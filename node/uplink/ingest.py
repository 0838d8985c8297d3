"""The reference ingest: the central's side of docs/uplink-protocol.md, executable.

`IngestServer(store_dir, node_keys, central_private)` is a ThreadingHTTPServer (HTTP/1.1,
keep-alive; TLS and client certificates optional) that:

1. reads `POST /v1/packets` (the body is one packet file, `Idempotency-Key` its packet id;
   at most `max_bytes`, else 413);
2. checks the packet (`node.evidence.packet.verify`): the node must be known (a public key
   file `<node_id>.pub` in the node-keys folder, else 403: the node is not enrolled), the
   signature, the envelope against the signed manifest, every part's sha256, the checksum.
   A sealed packet is unsealed first with the central's private key; without that key only
   what needs no key is checked (structure, envelope, length, file checksum, node known), and
   the record says so (`"verified": "envelope"`);
3. deduplicates by packet id and stores atomically: the packet file as received (temp file,
   fsync, rename, fsync the folder), then its record (`<id>.json`, same steps, but linked into
   place so that of two racing writers exactly one wins). The record is the commit point:
   a packet is stored when its record exists;
4. answers `200 {"packet_id", "status": "stored"|"duplicate"}`, 400 (a bad request), 403
   (unknown node), 413 (too large), 415 (not a packet), 422 (a packet that fails
   verification), each with `error`; 503/507 only for its own trouble (a disk error), never
   for bad input.

Layout of the store folder: `packets/<id[:2]>/<id>.<sha256[:16]>.rnpk` (the bytes as received),
`packets/<id[:2]>/<id>.json` (the record), `parts/<id>/<name>` with `extract_parts` (the
verified parts, for a developer's eyes), `tmp/`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from node import __version__
from node.evidence import KeyFileError, PacketError
from node.evidence.format import NODE_ID_RE, PART_NAME_RE, UUID_RE, read_envelope
from node.evidence.keys import load_public_key
from node.evidence.packet import verify

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

log = logging.getLogger(__name__)

MAX_BYTES = 16 * 1024 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024  # an oversize body up to this is read and dropped, then 413
ACCEPTED_TYPES = ("application/vnd.roadnode.packet", "application/octet-stream")
KEY_RELOAD_S = 2.0
SOCKET_TIMEOUT_S = 30.0


class Rejected(Exception):  # noqa: N818 (an answer, not a failure of the server)
    """A request the ingest refuses: HTTP `code`, one-line `reason`."""

    def __init__(self, code: int, reason: str, packet_id: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.packet_id = packet_id


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(tmp_dir: Path, data: bytes) -> Path:
    """`data` in a new fsynced temp file under `tmp_dir`."""
    path = tmp_dir / f".{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}.tmp"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return path


class NodeKeys:
    """Node public keys from a folder: `<node_id>.pub` (key text), re-read on an unknown node
    (at most every KEY_RELOAD_S), so a node can be enrolled without a restart."""

    def __init__(self, source: Path | Mapping[str, Ed25519PublicKey]) -> None:
        self.directory = source if isinstance(source, Path) else None
        self._keys: dict[str, Ed25519PublicKey] = {} if isinstance(source, Path) else dict(source)
        self._loaded = 0.0
        self._lock = threading.Lock()
        if self.directory is not None:
            if not self.directory.is_dir():
                raise KeyFileError(f"{self.directory}: node keys folder does not exist")
            self._load()

    def _load(self) -> None:
        assert self.directory is not None
        keys: dict[str, Ed25519PublicKey] = {}
        for path in sorted(self.directory.iterdir()):
            node_id = path.name.removesuffix(".pub")
            if path.name.startswith(".") or not NODE_ID_RE.fullmatch(node_id):
                continue
            try:
                keys[node_id] = load_public_key(path)
            except KeyFileError as e:
                log.warning("ingest: node key skipped: %s", e)
        self._keys = keys
        self._loaded = time.monotonic()

    def get(self, node_id: str) -> Ed25519PublicKey | None:
        with self._lock:
            key = self._keys.get(node_id)
            if (
                key is None
                and self.directory is not None
                and time.monotonic() - self._loaded > KEY_RELOAD_S
            ):
                self._load()
                key = self._keys.get(node_id)
            return key

    def __len__(self) -> int:
        return len(self._keys)


class IngestStore:
    """Packets on disk, deduplicated by packet id (layout in the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.packets = self.directory / "packets"
        self.parts = self.directory / "parts"
        self.tmp = self.directory / "tmp"
        for d in (self.directory, self.packets, self.parts, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():  # temp files of a crash
            leftover.unlink(missing_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def record_path(self, packet_id: str) -> Path:
        return self.packets / packet_id[:2] / f"{packet_id}.json"

    def record(self, packet_id: str) -> dict[str, Any] | None:
        try:
            value = json.loads(self.record_path(packet_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return value if isinstance(value, dict) else None

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.packets.glob("*/*.json"))

    def packet_file(self, packet_id: str) -> Path | None:
        rec = self.record(packet_id)
        return None if rec is None else self.packets / packet_id[:2] / rec["file"]

    def _lock_for(self, packet_id: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(packet_id, threading.Lock())

    def put(
        self, packet_id: str, data: bytes, record: dict[str, Any], parts: Mapping[str, bytes]
    ) -> tuple[str, dict[str, Any]]:
        """Store `data` under `packet_id` unless it is there: ("stored"|"duplicate", record)."""
        lock = self._lock_for(packet_id)
        try:
            with lock:
                return self._put(packet_id, data, record, parts)
        finally:
            with self._locks_lock:
                if not lock.locked():
                    self._locks.pop(packet_id, None)

    def _put(
        self, packet_id: str, data: bytes, record: dict[str, Any], parts: Mapping[str, bytes]
    ) -> tuple[str, dict[str, Any]]:
        existing = self.record(packet_id)
        if existing is not None:
            return "duplicate", existing
        sha = hashlib.sha256(data).hexdigest()
        shard = self.packets / packet_id[:2]
        shard.mkdir(exist_ok=True)
        name = f"{packet_id}.{sha[:16]}.rnpk"
        tmp = _write_durable(self.tmp, data)
        os.replace(tmp, shard / name)  # content-addressed: a racing writer writes the same
        for part_name, part in parts.items():
            part_dir = self.parts / packet_id
            part_dir.mkdir(parents=True, exist_ok=True)
            os.replace(_write_durable(self.tmp, part), part_dir / part_name)
            _fsync_dir(part_dir)
        _fsync_dir(shard)
        record = {**record, "file": name, "sha256": sha, "bytes": len(data)}
        text = json.dumps(record, indent=1, sort_keys=True).encode("utf-8")
        tmp = _write_durable(self.tmp, text)
        try:
            os.link(tmp, self.record_path(packet_id))  # the commit; never replaces
        except FileExistsError:  # another process stored it meanwhile
            existing = self.record(packet_id)
            if existing is not None:
                return "duplicate", existing
            raise
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(shard)
        return "stored", record


class IngestServer:
    """The reference ingest on `host:port` (0 = any free port); start(), stop(), `port`,
    `url`, `counts`. `on_result(packet_id, status)` is called for every POST answered."""

    def __init__(
        self,
        store_dir: Path,
        node_keys: Path | Mapping[str, Ed25519PublicKey],
        central_private: X25519PrivateKey | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_bytes: int = MAX_BYTES,
        tls: ssl.SSLContext | None = None,
        extract_parts: bool = False,
        on_result: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = IngestStore(store_dir)
        self.keys = NodeKeys(node_keys)
        self.central_private = central_private
        self.max_bytes = max_bytes
        self.tls = tls
        self.extract_parts = extract_parts
        self.on_result = on_result
        self.counts = {"stored": 0, "duplicate": 0, "rejected": 0, "errors": 0}
        self._counts_lock = threading.Lock()
        self._httpd = _Server((host, port), _Handler, self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> IngestServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.name = f"ingest:{self.port}"
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (as a crashed server would)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(10)
            self._thread = None
        self._httpd.server_close()
        self._httpd.cut_connections()

    def __enter__(self) -> IngestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, name: str) -> None:
        with self._counts_lock:
            self.counts[name] += 1

    # ---- one packet ---------------------------------------------------------------------

    def ingest(
        self, data: bytes, key_header: str | None, remote: str
    ) -> tuple[int, dict[str, Any]]:
        """Check and store one uploaded packet: (HTTP status, JSON answer)."""
        try:
            env = read_envelope(data, check_body=False)
        except PacketError as e:
            raise Rejected(422, f"not a valid packet: {e}") from None
        pid = env.packet_id
        if not key_header:
            raise Rejected(400, "Idempotency-Key header missing (must be the packet id)", pid)
        if key_header != pid:
            raise Rejected(
                400, f"Idempotency-Key {key_header[:64]!r} is not the packet's id {pid}", pid
            )
        if self.keys.get(env.node_id) is None:
            raise Rejected(403, f"unknown node {env.node_id}: not enrolled at this central", pid)
        record: dict[str, Any] = {
            "packet_id": pid,
            "node_id": env.node_id,
            "kind": env.kind,
            "priority": env.priority,
            "sealed": env.sealed,
            "created_utc_ns": env.created_utc_ns,
            "received_utc_ns": time.time_ns(),
            "remote": remote,
            "ingest_version": __version__,
        }
        parts: dict[str, bytes] = {}
        try:
            if env.sealed and self.central_private is None:
                read_envelope(data)  # length and file checksum
                record |= {"verified": "envelope", "manifest": None, "signing_key": None}
            else:
                checked = verify(data, _KeyView(self.keys), self.central_private)
                record |= {
                    "verified": "signature",
                    "manifest": checked.manifest,
                    "signing_key": checked.signing_key,
                }
                if self.extract_parts:
                    for name, part in checked.parts.items():
                        if not PART_NAME_RE.fullmatch(name):
                            raise PacketError(f"part name {name[:64]!r} is not a plain name")
                        parts[name] = part
        except PacketError as e:
            raise Rejected(422, str(e), pid) from None
        except Exception as e:  # a reader bug must not turn bad input into a 5xx retry loop
            log.exception("ingest: packet %s could not be checked", pid)
            raise Rejected(422, f"packet could not be checked: {type(e).__name__}", pid) from None
        status, _ = self.store.put(pid, data, record, parts)
        return 200, {"packet_id": pid, "status": status}


class _KeyView(Mapping[str, "Ed25519PublicKey"]):
    """NodeKeys as the Mapping `verify` wants."""

    def __init__(self, keys: NodeKeys) -> None:
        self._keys = keys

    def __getitem__(self, node_id: str) -> Ed25519PublicKey:
        key = self._keys.get(node_id)
        if key is None:
            raise KeyError(node_id)
        return key

    def get(self, node_id: str, default: Any = None) -> Any:
        key = self._keys.get(node_id)
        return default if key is None else key

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return len(self._keys)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: Any, ingest: IngestServer) -> None:
        self.ingest = ingest
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.ingest.tls is not None:  # handshake in the handler's thread, not here
            sock = self.ingest.tls.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    def cut_connections(self) -> None:
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # the answer goes out as headers then body: with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms a packet; drain 15 -> see docs/uplink-protocol.md)
    disable_nagle_algorithm = True
    server_version = f"roadnode-ingest/{__version__}"
    timeout = SOCKET_TIMEOUT_S
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError) as e:
                log.info("ingest: TLS handshake with %s failed: %s", self.client_address[0], e)
                self.close_connection = True
                self.rfile = _EmptyReader()  # type: ignore[assignment]

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("ingest: %s %s", self.client_address[0], format % args)

    def _answer(self, code: int, doc: dict[str, Any], headers: Mapping[str, str] = {}) -> None:
        body = json.dumps(doc).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/v1/health":
            self._answer(200, {"status": "ok", "version": __version__})
            return
        if path.startswith("/v1/packets/"):
            pid = path.rsplit("/", 1)[1]
            rec = self.server.ingest.store.record(pid) if UUID_RE.fullmatch(pid) else None
            if rec is not None:
                self._answer(200, {"packet_id": pid, "status": "stored", "record": rec})
                return
            self._answer(404, {"packet_id": None, "status": "unknown", "error": "no such packet"})
            return
        self._answer(404, {"status": "rejected", "error": f"no such endpoint: GET {path[:80]}"})

    def _read_body(self) -> bytes | None:
        """The request body, or None when an answer was sent already (or the client left)."""
        ingest = self.server.ingest
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._reject(Rejected(411, "chunked bodies are not accepted: send Content-Length"))
            return None
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.strip().isdigit():
            self.close_connection = True
            self._reject(Rejected(411, "Content-Length header missing or not a number"))
            return None
        length = int(length_text)
        if length > ingest.max_bytes:
            self.close_connection = True
            if length <= DRAIN_LIMIT:  # read it, so that the client sees the answer
                left = length
                while left > 0 and (chunk := self.rfile.read(min(left, 65_536))):
                    left -= len(chunk)
            self._reject(
                Rejected(413, f"packet is {length} bytes, more than the {ingest.max_bytes} taken")
            )
            return None
        data = self.rfile.read(length)
        if len(data) < length:  # the client went away mid-body
            self.close_connection = True
            return None
        return data

    def _reject(self, e: Rejected) -> None:
        self.server.ingest.count("rejected")
        if e.packet_id and self.server.ingest.on_result:
            self.server.ingest.on_result(e.packet_id, f"rejected {e.code}")
        log.info("ingest: %s: %d %s", e.packet_id or "request", e.code, e.reason)
        self._answer(e.code, {"packet_id": e.packet_id, "status": "rejected", "error": e.reason})

    def do_POST(self) -> None:
        ingest = self.server.ingest
        path = urlsplit(self.path).path
        if path != "/v1/packets":
            self.close_connection = True
            self._answer(404, {"status": "rejected", "error": f"no such endpoint: POST {path}"})
            return
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        data = self._read_body()
        if data is None:
            return
        if ctype not in ACCEPTED_TYPES:
            self._reject(Rejected(415, f"Content-Type must be {ACCEPTED_TYPES[0]}"))
            return
        try:
            code, doc = ingest.ingest(
                data, self.headers.get("Idempotency-Key"), self.client_address[0]
            )
        except Rejected as e:
            self._reject(e)
            return
        except OSError as e:
            ingest.count("errors")
            log.error("ingest: cannot store a packet: %s", e)
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            self._answer(
                507 if full else 503,
                {"status": "error", "error": "storage full" if full else "storage error"},
                {"Retry-After": "30"},
            )
            return
        ingest.count(doc["status"])
        if ingest.on_result:
            ingest.on_result(doc["packet_id"], doc["status"])
        self._answer(code, doc)


class _EmptyReader:
    """The reader of a connection whose TLS handshake failed: at end of file at once."""

    def readline(self, *args: Any) -> bytes:
        return b""

    def read(self, *args: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass


def server_tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server TLS context (TLS >= 1.2); with `client_ca`, clients need a certificate it
    signed (mutual TLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
