"""The offline packet store: every packet survives power cuts until the central has acked it.

Layout of `<state-dir>/store/` (see docs/store.md for the reasoning):

    index.sqlite        SQLite in WAL mode, synchronous=FULL: one row per packet
    blobs/<id>          ready and in-flight packets: a header line, then the packet bytes
    acked/<id>          acked packets kept for `keep_acked_hours`
    quarantine/<id>     packets whose bytes no longer match their sha256; never uploaded
    lock                flock held by the one process that owns the store

The blob files are the truth and the index is a cache of them: every blob carries its own
metadata (id, priority, kind, creation time, size, sha256) in a one-line header, so a corrupt
index is moved aside and rebuilt from the files. The directory a blob is in says its state
(blobs/ = not yet acked), so a rebuilt index never sends an acked packet again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config import StoreConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAGIC = b"roadnode-store-blob 1\n"
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
KIND_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_PRIORITY = 9
MAX_HEADER = 4096
MB = 1024 * 1024
STATES = ("ready", "in_flight", "acked", "quarantined")
PRIORITY_NAMES = {0: "hotlist", 1: "red light", 2: "violation", 3: "telemetry"}
COUNTERS = ("refused", "evicted", "dropped", "quarantined", "lost", "write_errors")
EXPIRE_EVERY_S = 60.0

_SCHEMA = """
CREATE TABLE packets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL,
    kind TEXT NOT NULL,
    created_utc_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    file_size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    state_utc_ns INTEGER NOT NULL,
    has_blob INTEGER NOT NULL,
    reason TEXT
);
CREATE INDEX packets_claim ON packets (state, priority, created_utc_ns, seq);
CREATE INDEX packets_age ON packets (state, state_utc_ns);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_COLUMNS = "id, priority, kind, created_utc_ns, size, offset, file_size, sha256, state, has_blob"


class StoreError(Exception):
    """A store operation failed; the message is one line and names the packet or file."""


class StoreFull(StoreError):  # noqa: N818 (the interface's name)
    """An append was refused by the full policy."""


class StoreBusy(StoreError):  # noqa: N818 (like StoreFull)
    """Another process owns the store."""


@dataclass(frozen=True)
class Claimed:
    """A packet handed to the uploader. Its bytes are `size` bytes at `offset` in `path`;
    `PacketStore.read` returns them checked against `sha256`."""

    id: str
    priority: int
    kind: str
    size: int
    sha256: str
    created_utc_ns: int
    path: Path
    offset: int


@dataclass(frozen=True)
class CheckReport:
    """What `PacketStore.check` found: `bad` is (packet id, reason) per quarantined blob."""

    checked: int
    ok: int
    bytes: int
    bad: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Row:
    id: str
    priority: int
    kind: str
    created_utc_ns: int
    size: int
    offset: int
    file_size: int
    sha256: str
    state: str
    has_blob: bool


def _now_ns() -> int:
    return time.time_ns()


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of `data` to `fd` (the store's one write path: tests inject ENOSPC)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_message(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on device"
    if e.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if e.errno == errno.EFBIG:
        return "file too large"
    return e.strerror or str(e)


def check_id(packet_id: str) -> str:
    if not isinstance(packet_id, str) or not ID_RE.fullmatch(packet_id):
        shown = repr(packet_id)[:60]
        raise StoreError(f"packet id {shown}: must be 1-128 of A-Z a-z 0-9 . _ - (not first . _ -)")
    return packet_id


def _header(packet_id: str, priority: int, kind: str, created: int, size: int, sha: str) -> bytes:
    meta = {
        "id": packet_id,
        "priority": priority,
        "kind": kind,
        "created_utc_ns": created,
        "size": size,
        "sha256": sha,
    }
    return MAGIC + json.dumps(meta, separators=(",", ":")).encode() + b"\n"


def parse_header(path: Path) -> tuple[dict[str, Any], int]:
    """The metadata a blob file carries and the offset of its packet bytes; ValueError if the
    header is unreadable or the file is shorter than it says."""
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER)
        total = os.fstat(f.fileno()).st_size
    if not head.startswith(MAGIC):
        raise ValueError("not a store blob (bad magic)")
    end = head.find(b"\n", len(MAGIC))
    if end < 0:
        raise ValueError("header line not terminated")
    try:
        meta = json.loads(head[len(MAGIC) : end])
    except ValueError as e:
        raise ValueError(f"header is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError("header is not an object")
    for key, kind in (("priority", int), ("created_utc_ns", int), ("size", int)):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise ValueError(f"header field {key} missing or not an integer")
    for key in ("id", "kind", "sha256"):
        if not isinstance(meta.get(key), str):
            raise ValueError(f"header field {key} missing or not a string")
    if meta["id"] != path.name:
        raise ValueError(f"header names packet {meta['id']!r}, file is {path.name!r}")
    offset = end + 1
    if total != offset + meta["size"]:
        raise ValueError(f"file has {total - offset} packet bytes, header says {meta['size']}")
    return meta, offset


def _check_append(packet_id: str, data: object, priority: int, kind: str, created: int) -> bytes:
    """Refuse bad append arguments with one line naming the packet."""
    check_id(packet_id)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise StoreError(f"packet {packet_id}: priority must be an integer")
    if not 0 <= priority <= MAX_PRIORITY:
        raise StoreError(f"packet {packet_id}: priority {priority} not in 0..{MAX_PRIORITY}")
    if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
        raise StoreError(f"packet {packet_id}: kind {str(kind)[:40]!r} is not a plain word")
    if not isinstance(created, int) or isinstance(created, bool):
        raise StoreError(f"packet {packet_id}: created_utc_ns must be an integer")
    if created < 0:
        raise StoreError(f"packet {packet_id}: created_utc_ns is negative")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StoreError(f"packet {packet_id}: data must be bytes")
    return bytes(data)


def _is_corruption(e: sqlite3.DatabaseError) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    text = str(e)
    return "malformed" in text or "not a database" in text or "quick_check" in text


class PacketStore:
    """Durable priority queue of opaque packets: ready -> in_flight -> acked, or quarantined.

    Thread-safe: one SQLite connection behind one lock. Blob writes and fsyncs of an append
    happen outside the lock, so a slow card does not stall the uploader's claims.
    """

    def __init__(self, directory: Path, cfg: StoreConfig) -> None:
        self.directory = Path(directory)
        self.cfg = cfg
        self.blobs = self.directory / "blobs"
        self.acked_dir = self.directory / "acked"
        self.quarantine_dir = self.directory / "quarantine"
        self.db_path = self.directory / "index.sqlite"
        self._lock = threading.RLock()
        self._pending: dict[str, int] = {}  # appends writing their blob: id -> bytes
        self._disk: dict[str, int] = dict.fromkeys(STATES, 0)  # blob bytes per state
        self._last_expire = 0.0
        self._closed = False
        self._lock_fd = -1
        self._seq = 0
        self.rebuilt = False
        try:
            for d in (self.directory, self.blobs, self.acked_dir, self.quarantine_dir):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._take_lock()
        except OSError as e:
            raise StoreError(f"store {self.directory}: {_os_message(e)}") from None
        try:
            self._conn = self._open_db()
            self._recover()
            self._expire(force=True)
        except BaseException:
            self._release_lock()
            raise

    # ---- opening ------------------------------------------------------------------------

    def _take_lock(self) -> None:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreBusy(f"store {self.directory}: in use by another process") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = -1

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.db_path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.db_path}: cannot use WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {_one_line(result, 120)}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.db_path}: index schema {version} is newer than this software "
                    f"({SCHEMA_VERSION}); refusing to touch it"
                )
            if version == 0:
                conn.executescript(
                    f"BEGIN; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
                )
            conn.execute("SELECT count(*) FROM packets").fetchone()
            conn.execute("SELECT count(*) FROM counters").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_db(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as e:
            if not _is_corruption(e):
                raise StoreError(f"{self.db_path}: {_one_line(str(e))}") from None
            reason = _one_line(str(e), 120)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.db_path.with_name(f"index.sqlite.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.db_path}{suffix}")
            if src.exists():
                src.rename(Path(f"{aside}{suffix}"))
        _fsync_dir(self.directory)
        log.error(
            "store index %s is corrupt (%s): moved aside to %s, rebuilding it from the blob files",
            self.db_path,
            reason,
            aside.name,
        )
        self.rebuilt = True
        try:
            return self._connect()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.db_path}: cannot create a new index: {e}") from None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (durable on exit: WAL + synchronous=FULL)."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"store index {self.db_path}: {_one_line(str(e))}") from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"store index {self.db_path}: {_one_line(str(e))}") from None
            raise

    def _count(self, conn: sqlite3.Connection, name: str, n: int = 1) -> None:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, n),
        )

    def _recover(self) -> None:
        """Make the index agree with the files after a crash (or rebuild it from them)."""
        for d in (self.blobs, self.acked_dir, self.quarantine_dir):
            for entry in os.scandir(d):
                if entry.name.startswith("."):  # temp files of appends that never finished
                    os.unlink(entry.path)
        files = {
            d: {e.name for e in os.scandir(d) if e.is_file()}
            for d in (self.blobs, self.acked_dir, self.quarantine_dir)
        }
        in_blobs, in_acked, in_quar = (
            files[self.blobs],
            files[self.acked_dir],
            files[self.quarantine_dir],
        )
        now = _now_ns()
        adopted = moved = lost = 0
        with self._tx() as conn:
            conn.execute(
                "UPDATE packets SET state = 'ready', state_utc_ns = ? WHERE state = 'in_flight'",
                (now,),
            )
            rows = conn.execute("SELECT id, state, has_blob FROM packets").fetchall()
            known = set()
            for packet_id, state, has_blob in rows:
                known.add(packet_id)
                if state == "ready":
                    if packet_id in in_blobs:
                        continue
                    if packet_id in in_acked:  # an ack renamed it, then the power went
                        self._set_state(conn, packet_id, "acked", now, has_blob=True)
                        moved += 1
                    elif packet_id in in_quar:
                        self._set_state(conn, packet_id, "quarantined", now, has_blob=True)
                        conn.execute(
                            "UPDATE packets SET reason = ? WHERE id = ?",
                            ("quarantined while the node stopped", packet_id),
                        )
                        moved += 1
                    else:
                        log.error("packet %s: blob file missing from %s", packet_id, self.blobs)
                        self._set_state(conn, packet_id, "quarantined", now, has_blob=False)
                        conn.execute(
                            "UPDATE packets SET reason = ? WHERE id = ?",
                            ("blob file missing", packet_id),
                        )
                        self._count(conn, "lost")
                        lost += 1
                elif state == "acked":
                    if packet_id in in_blobs:  # defensive: never send an acked packet again
                        self._rename(self.blobs / packet_id, self.acked_dir / packet_id)
                        in_acked.add(packet_id)
                    if has_blob and packet_id not in in_acked:
                        conn.execute("UPDATE packets SET has_blob = 0 WHERE id = ?", (packet_id,))
                    elif not has_blob and packet_id in in_acked:
                        os.unlink(self.acked_dir / packet_id)
                elif state == "quarantined":
                    if packet_id in in_blobs:
                        self._rename(self.blobs / packet_id, self.quarantine_dir / packet_id)
                        in_quar.add(packet_id)
                    if has_blob and packet_id not in in_quar:
                        conn.execute("UPDATE packets SET has_blob = 0 WHERE id = ?", (packet_id,))
            for d, state in (
                (self.blobs, "ready"),
                (self.acked_dir, "acked"),
                (self.quarantine_dir, "quarantined"),
            ):
                for name in sorted(files[d] - known):
                    self._adopt(conn, d / name, state, now)
                    adopted += 1
            self._reload_totals(conn)
        if self.rebuilt:
            log.warning("store index rebuilt from %d blob files", adopted)
        elif adopted or moved or lost:
            log.warning(
                "store recovered after an interruption: %d blob files indexed, %d moved, %d lost",
                adopted,
                moved,
                lost,
            )

    def _adopt(self, conn: sqlite3.Connection, path: Path, state: str, now: int) -> None:
        """Index a blob file the index does not know (an append cut short, or a rebuild)."""
        try:
            meta, offset = parse_header(path)
            if not ID_RE.fullmatch(meta["id"]) or not 0 <= meta["priority"] <= MAX_PRIORITY:
                raise ValueError("header id or priority out of range")
        except (OSError, ValueError) as e:
            why = f"unreadable blob file: {_one_line(str(e), 120)}"
            log.error("store file %s: %s; quarantined", path, why)
            if state != "quarantined":
                path = self._rename(path, self.quarantine_dir / path.name)
            if not ID_RE.fullmatch(path.name):
                return
            size = path.stat().st_size
            conn.execute(
                f"INSERT INTO packets ({_COLUMNS}, state_utc_ns, reason) "
                "VALUES (?, 0, 'unknown', 0, ?, 0, ?, '', 'quarantined', 1, ?, ?)",
                (path.name, size, size, now, why),
            )
            self._count(conn, "quarantined")
            return
        has_blob = 1
        reason: str | None = None
        if state == "acked" and self.cfg.keep_acked_hours <= 0:
            os.unlink(path)
            has_blob = 0
        if state == "quarantined":
            reason = "found in quarantine/ when the index was rebuilt"
        conn.execute(
            f"INSERT INTO packets ({_COLUMNS}, state_utc_ns, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                meta["id"],
                meta["priority"],
                meta["kind"],
                meta["created_utc_ns"],
                meta["size"],
                offset,
                offset + meta["size"],
                meta["sha256"],
                state,
                has_blob,
                now,
                reason,
            ),
        )

    def _reload_totals(self, conn: sqlite3.Connection) -> None:
        self._disk = dict.fromkeys(STATES, 0)
        for state, total in conn.execute(
            "SELECT state, sum(file_size) FROM packets WHERE has_blob = 1 GROUP BY state"
        ):
            self._disk[state] = int(total or 0)

    # ---- helpers ------------------------------------------------------------------------

    def _rename(self, src: Path, dst: Path, durable: bool = True) -> Path:
        """Move a blob between state directories, durably (both directories fsynced) unless
        `durable` is false (an ack: see `ack`)."""
        os.rename(src, dst)
        if durable:
            _fsync_dir(dst.parent)
            _fsync_dir(src.parent)
        return dst

    def _set_state(
        self, conn: sqlite3.Connection, packet_id: str, state: str, now: int, has_blob: bool
    ) -> None:
        conn.execute(
            "UPDATE packets SET state = ?, state_utc_ns = ?, has_blob = ? WHERE id = ?",
            (state, now, int(has_blob), packet_id),
        )

    def _row(self, packet_id: str) -> _Row | None:
        r = self._conn.execute(
            f"SELECT {_COLUMNS} FROM packets WHERE id = ?", (packet_id,)
        ).fetchone()
        if r is None:
            return None
        return _Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9]))

    def _need(self, packet_id: str) -> _Row:
        if self._closed:
            raise StoreError(f"store {self.directory}: closed")
        check_id(packet_id)
        row = self._row(packet_id)
        if row is None:
            raise StoreError(f"packet {packet_id}: not in the store")
        return row

    def _dir_of(self, state: str) -> Path:
        return {"acked": self.acked_dir, "quarantined": self.quarantine_dir}.get(state, self.blobs)

    def _disk_free(self) -> int:
        return shutil.disk_usage(self.directory).free

    def _used(self) -> int:
        return sum(self._disk.values()) + sum(self._pending.values())

    def _unacked(self) -> int:
        busy = self._disk["ready"] + self._disk["in_flight"] + self._disk["quarantined"]
        return busy + sum(self._pending.values())

    def _capacity(self, free: int) -> int:
        """Bytes the store may hold now: max_mb, or less when the disk is filling up."""
        return max(0, min(self.cfg.max_mb * MB, self._used() + free - self.cfg.min_free_mb * MB))

    def _fill_limit_pct(self, priority: int) -> int:
        violation = self.cfg.violation_fill_pct
        if priority >= 3:
            return min(self.cfg.telemetry_fill_pct, violation)
        return violation if priority == 2 else 100

    # ---- the full policy ----------------------------------------------------------------

    def _admit(self, packet_id: str, priority: int, kind: str, need: int) -> None:
        """Make room for `need` bytes of a packet of `priority`, or raise StoreFull."""
        free = self._disk_free()
        capacity = self._capacity(free)
        pct = self._fill_limit_pct(priority)
        if pct < 100 and (self._unacked() + need) * 100 > capacity * pct:
            self._refuse(
                packet_id,
                priority,
                kind,
                f"store {pct}% full for priority {priority}; "
                f"{self._unacked() / MB:.1f} of {capacity / MB:.1f} MB in use",
            )

        def short() -> int:
            by_max = self._used() + need - self.cfg.max_mb * MB
            by_free = self.cfg.min_free_mb * MB + need - self._disk_free()
            return max(by_max, by_free)

        if short() > 0 and short() > self._reclaimable(priority):
            self._refuse(
                packet_id,
                priority,
                kind,
                f"store full: {self._used() / MB:.1f} MB used (max {self.cfg.max_mb} MB), "
                f"{self._disk_free() / MB:.1f} MB free on disk (min {self.cfg.min_free_mb} MB), "
                "nothing less urgent to give up",
            )
        if short() > 0:
            self._evict_acked(short)
        if short() > 0:
            self._drop_lower(priority, short)
        if short() > 0:
            self._refuse(
                packet_id,
                priority,
                kind,
                f"store full: {self._used() / MB:.1f} MB used (max {self.cfg.max_mb} MB), "
                f"{self._disk_free() / MB:.1f} MB free on disk (min {self.cfg.min_free_mb} MB)",
            )

    def _reclaimable(self, priority: int) -> int:
        """Bytes the full policy may free for a packet of `priority`: kept acked blobs and
        ready packets that are less urgent."""
        lower = self._conn.execute(
            "SELECT sum(file_size) FROM packets WHERE state = 'ready' AND priority > ?",
            (priority,),
        ).fetchone()[0]
        return self._disk["acked"] + int(lower or 0)

    def _refuse(self, packet_id: str, priority: int, kind: str, why: str) -> None:
        with self._tx() as conn:
            self._count(conn, "refused")
            self._count(conn, f"refused_p{priority}")
        level = logging.ERROR if priority <= 1 else logging.WARNING
        log.log(level, "packet %s (priority %d, %s) refused: %s", packet_id, priority, kind, why)
        raise StoreFull(f"packet {packet_id} refused: {why}")

    def _evict_acked(self, short: Callable[[], int]) -> None:
        """Delete the oldest kept acked blobs until `short()` <= 0."""
        while short() > 0:
            rows = self._conn.execute(
                "SELECT id, file_size FROM packets WHERE state = 'acked' AND has_blob = 1 "
                "ORDER BY state_utc_ns LIMIT 64"
            ).fetchall()
            if not rows:
                return
            with self._tx() as conn:
                n = 0
                for packet_id, file_size in rows:
                    if short() <= 0:
                        break
                    conn.execute("UPDATE packets SET has_blob = 0 WHERE id = ?", (packet_id,))
                    self._disk["acked"] -= file_size
                    n += 1
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.acked_dir / packet_id)
                self._count(conn, "evicted", n)
            log.info("store full: evicted %d acked packets kept for re-send", n)

    def _drop_lower(self, priority: int, short: Callable[[], int]) -> None:
        """Drop the least urgent, oldest ready packets below `priority` until it fits. Each one
        is logged and counted: this is the only way the store gives up an unacked packet."""
        while short() > 0:
            rows = self._conn.execute(
                "SELECT id, priority, kind, file_size FROM packets "
                "WHERE state = 'ready' AND priority > ? "
                "ORDER BY priority DESC, created_utc_ns, seq LIMIT 16",
                (priority,),
            ).fetchall()
            if not rows:
                return
            with self._tx() as conn:
                for packet_id, prio, kind, file_size in rows:
                    if short() <= 0:
                        break
                    conn.execute("DELETE FROM packets WHERE id = ?", (packet_id,))
                    self._count(conn, "dropped")
                    self._count(conn, f"dropped_p{prio}")
                    self._disk["ready"] -= file_size
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.blobs / packet_id)
                    log.warning(
                        "store full: dropped unacked packet %s (priority %d, %s) to make room "
                        "for priority %d",
                        packet_id,
                        prio,
                        kind,
                        priority,
                    )

    def _expire(self, force: bool = False) -> None:
        """Delete acked blobs older than keep_acked_hours and forget old acked ids."""
        mono = time.monotonic()
        if not force and mono - self._last_expire < EXPIRE_EVERY_S:
            return
        self._last_expire = mono
        now = _now_ns()
        keep_before = now - int(self.cfg.keep_acked_hours * 3600e9)
        forget_before = now - int(max(self.cfg.remember_acked_days * 86400e9, 0))
        rows = self._conn.execute(
            "SELECT id, file_size FROM packets WHERE state = 'acked' AND state_utc_ns < ? "
            "AND has_blob = 1",
            (keep_before,),
        ).fetchall()
        with self._tx() as conn:
            for packet_id, file_size in rows:
                conn.execute("UPDATE packets SET has_blob = 0 WHERE id = ?", (packet_id,))
                self._disk["acked"] -= file_size
            conn.execute(
                "DELETE FROM packets WHERE state = 'acked' AND has_blob = 0 AND state_utc_ns < ?",
                (forget_before,),
            )
        for packet_id, _ in rows:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.acked_dir / packet_id)

    # ---- the interface ------------------------------------------------------------------

    def append(
        self,
        packet_id: str,
        data: bytes,
        *,
        priority: int,
        kind: str,
        created_utc_ns: int,
    ) -> None:
        """Store a packet; durable when this returns. The same id again is a no-op (logged
        when its bytes differ: the first copy is kept). Raises StoreFull when the full policy
        refuses it and StoreError when it cannot be written (nothing half-written remains)."""
        data = _check_append(packet_id, data, priority, kind, created_utc_ns)
        sha = hashlib.sha256(data).hexdigest()
        header = _header(packet_id, priority, kind, created_utc_ns, len(data), sha)
        need = len(header) + len(data)
        with self._lock:
            if self._closed:
                raise StoreError(f"store {self.directory}: closed")
            if packet_id in self._pending:
                raise StoreError(f"packet {packet_id}: an append of it is already in progress")
            row = self._row(packet_id)
            if row is not None:
                if row.sha256 != sha:
                    log.warning(
                        "packet %s appended again with different bytes; the first copy is kept",
                        packet_id,
                    )
                return
            self._expire()
            self._admit(packet_id, priority, kind, need)
            self._pending[packet_id] = need
        final = self.blobs / packet_id
        try:
            self._write_blob(final, header, data)
        except OSError as e:
            with self._lock:
                del self._pending[packet_id]
                self._note_write_error()
            msg = f"packet {packet_id}: cannot write to {self.blobs}: {_os_message(e)}"
            log.error("%s", msg)
            raise StoreError(msg) from None
        with self._lock:
            del self._pending[packet_id]
            try:
                with self._tx() as conn:
                    conn.execute(
                        f"INSERT INTO packets ({_COLUMNS}, state_utc_ns) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ready', 1, ?)",
                        (
                            packet_id,
                            priority,
                            kind,
                            created_utc_ns,
                            len(data),
                            len(header),
                            need,
                            sha,
                            _now_ns(),
                        ),
                    )
            except StoreError as e:
                _unlink_quietly(final)
                self._note_write_error()
                log.error("packet %s: not stored: %s", packet_id, e)
                raise StoreError(f"packet {packet_id}: not stored: {e}") from None
            self._disk["ready"] += need

    def _note_write_error(self) -> None:
        try:
            with self._tx() as conn:
                self._count(conn, "write_errors")
        except StoreError:
            pass  # the disk that refused the blob may refuse the counter too

    def _write_blob(self, final: Path, header: bytes, data: bytes) -> None:
        self._seq += 1
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{self._seq}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                _write_all(fd, header + data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        try:
            _fsync_dir(final.parent)
        except BaseException:
            _unlink_quietly(final)
            raise

    def claim(self, limit: int = 1) -> list[Claimed]:
        """Hand out up to `limit` ready packets, most urgent (lowest priority number) first,
        then oldest; they are in flight until acked, released, or the store is reopened."""
        if limit < 1:
            raise StoreError(f"claim limit must be at least 1, got {limit}")
        with self._lock:
            if self._closed:
                raise StoreError(f"store {self.directory}: closed")
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM packets WHERE state = 'ready' "
                "ORDER BY priority, created_utc_ns, seq LIMIT ?",
                (limit,),
            ).fetchall()
            if not rows:
                return []
            now = _now_ns()
            with self._tx() as conn:
                conn.executemany(
                    "UPDATE packets SET state = 'in_flight', state_utc_ns = ? WHERE id = ?",
                    [(now, r[0]) for r in rows],
                )
            moved = sum(r[6] for r in rows)
            self._disk["ready"] -= moved
            self._disk["in_flight"] += moved
            return [
                Claimed(
                    id=r[0],
                    priority=r[1],
                    kind=r[2],
                    size=r[4],
                    sha256=r[7],
                    created_utc_ns=r[3],
                    path=self.blobs / r[0],
                    offset=r[5],
                )
                for r in rows
            ]

    def read(self, packet_id: str) -> bytes:
        """The packet's bytes, checked against its sha256; a mismatch quarantines it."""
        with self._lock:
            row = self._need(packet_id)
            if row.state == "quarantined":
                raise StoreError(f"packet {packet_id}: quarantined, never uploaded")
            if not row.has_blob:
                raise StoreError(f"packet {packet_id}: acked and deleted")
            path = self._dir_of(row.state) / packet_id
            problem = None
            try:
                with open(path, "rb") as f:
                    f.seek(row.offset)
                    data = f.read(row.size + 1)
            except FileNotFoundError:
                problem = "blob file missing"
            except OSError as e:
                problem = f"blob unreadable: {_os_message(e)}"
            else:
                if len(data) != row.size:
                    problem = f"blob has {len(data)} bytes, expected {row.size}"
                elif hashlib.sha256(data).hexdigest() != row.sha256:
                    problem = "sha256 mismatch"
            if problem is None:
                return data
            self._quarantine(row, problem)
            raise StoreError(f"packet {packet_id}: {problem}; quarantined")

    def ack(self, packet_id: str) -> None:
        """The central has the packet: it is never handed out again. Its blob is kept for
        keep_acked_hours (evicted first when full), or deleted now when that is 0."""
        with self._lock:
            row = self._need(packet_id)
            if row.state == "acked":
                return
            if row.state == "quarantined":
                log.warning("packet %s acked by the central while quarantined", packet_id)
                return
            keep = self.cfg.keep_acked_hours > 0
            # An ack survives a crash of the process (the rename and the WAL commit are in the
            # kernel when this returns) but is not fsynced: after a power cut the packet may
            # come back as ready and be sent again, and the central answers "duplicate" (the
            # packet id is the idempotency key). Evidence is never at stake; an fsync per ack
            # would halve the drain rate (docs/store.md).
            try:
                self._rename(self.blobs / packet_id, self.acked_dir / packet_id, durable=False)
            except FileNotFoundError:
                pass  # lost blob: the ack still stands
            except OSError as e:
                raise StoreError(f"packet {packet_id}: cannot ack: {_os_message(e)}") from None
            self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._tx() as conn:
                    self._set_state(conn, packet_id, "acked", _now_ns(), has_blob=keep)
            finally:
                self._conn.execute("PRAGMA synchronous=FULL")
            self._disk[row.state] -= row.file_size
            if keep:
                self._disk["acked"] += row.file_size
            else:
                _unlink_quietly(self.acked_dir / packet_id)
            self._expire()

    def most_urgent_ready(self) -> int | None:
        """The lowest priority number among ready packets; None when none is ready."""
        with self._lock:
            if self._closed:
                raise StoreError(f"store {self.directory}: closed")
            row = self._conn.execute(
                "SELECT priority FROM packets WHERE state = 'ready' ORDER BY priority LIMIT 1"
            ).fetchone()
        return None if row is None else int(row[0])

    def release(self, packet_id: str) -> None:
        """Put an in-flight packet back to ready (the upload failed for now)."""
        with self._lock:
            row = self._need(packet_id)
            if row.state == "ready":
                return
            if row.state != "in_flight":
                raise StoreError(f"packet {packet_id}: is {row.state}, not in flight")
            with self._tx() as conn:
                self._set_state(conn, packet_id, "ready", _now_ns(), has_blob=True)
            self._disk["in_flight"] -= row.file_size
            self._disk["ready"] += row.file_size

    def quarantine(self, packet_id: str, reason: str) -> None:
        """Never upload this packet; its blob is kept in quarantine/ and `reason` reported."""
        with self._lock:
            row = self._need(packet_id)
            if row.state == "quarantined":
                return
            self._quarantine(row, _one_line(reason) or "no reason given")

    def _quarantine(self, row: _Row, reason: str) -> None:
        has_blob = row.has_blob
        if has_blob:
            try:
                self._rename(self._dir_of(row.state) / row.id, self.quarantine_dir / row.id)
            except FileNotFoundError:
                has_blob = False
            except OSError as e:
                raise StoreError(f"packet {row.id}: cannot quarantine: {_os_message(e)}") from None
        with self._tx() as conn:
            self._set_state(conn, row.id, "quarantined", _now_ns(), has_blob=has_blob)
            conn.execute("UPDATE packets SET reason = ? WHERE id = ?", (reason, row.id))
            self._count(conn, "quarantined")
        if row.has_blob:
            self._disk[row.state] -= row.file_size
        if has_blob:
            self._disk["quarantined"] += row.file_size
        log.error("packet %s quarantined: %s", row.id, reason)

    def check(self) -> CheckReport:
        """Read every stored blob and check its sha256; bad ones are quarantined."""
        with self._lock:
            if self._closed:
                raise StoreError(f"store {self.directory}: closed")
            ids = [
                r[0]
                for r in self._conn.execute(
                    "SELECT id FROM packets WHERE has_blob = 1 AND state != 'quarantined' "
                    "ORDER BY seq"
                )
            ]
        checked = ok = total = 0
        bad: list[tuple[str, str]] = []
        for packet_id in ids:
            with self._lock:  # one packet at a time: the uploader is not held up
                row = self._row(packet_id)
                if row is None or not row.has_blob or row.state == "quarantined":
                    continue
                checked += 1
                try:
                    total += len(self.read(packet_id))
                    ok += 1
                except StoreError as e:
                    bad.append((packet_id, str(e).split(": ", 1)[-1]))
        return CheckReport(checked=checked, ok=ok, bytes=total, bad=tuple(bad))

    def stats(self) -> dict[str, Any]:
        """Counts and bytes per state and per priority, oldest ready age, disk, counters."""
        with self._lock:
            if self._closed:
                raise StoreError(f"store {self.directory}: closed")
            return collect_stats(self._conn, self.directory, self.cfg, self._unacked())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            finally:
                self._release_lock()

    def __enter__(self) -> PacketStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _bulk_fill(self, n: int, size: int = 256, priority: int = 3) -> None:
        """Benchmark helper: add `n` small ready packets quickly (no fsync per packet)."""
        data = os.urandom(size)
        sha = hashlib.sha256(data).hexdigest()
        now = _now_ns()
        rows = []
        for i in range(n):
            packet_id = f"fill-{i:07d}"
            header = _header(packet_id, priority, "fill", now + i, size, sha)
            with open(self.blobs / packet_id, "wb") as f:
                f.write(header + data)
            rows.append(
                (
                    packet_id,
                    priority,
                    "fill",
                    now + i,
                    size,
                    len(header),
                    len(header) + size,
                    sha,
                    now,
                )
            )
        with self._lock, self._tx() as conn:
            conn.executemany(
                f"INSERT INTO packets ({_COLUMNS}, state_utc_ns) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ready', 1, ?)",
                rows,
            )
            self._reload_totals(conn)
        os.sync()


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def priority_name(priority: int) -> str:
    return PRIORITY_NAMES.get(priority, f"priority {priority}")


def collect_stats(
    conn: sqlite3.Connection, directory: Path, cfg: StoreConfig, unacked: int | None = None
) -> dict[str, Any]:
    """The store's figures from its index (shared by the live store and read-only viewers)."""
    now = _now_ns()
    states = {s: {"count": 0, "bytes": 0, "blob_bytes": 0} for s in STATES}
    for state, count, size, blob_bytes in conn.execute(
        "SELECT state, count(*), sum(size * has_blob), sum(file_size * has_blob) FROM packets "
        "GROUP BY state"
    ):
        states[state] = {
            "count": count,
            "bytes": int(size or 0),
            "blob_bytes": int(blob_bytes or 0),
        }
    states["acked"]["kept"] = conn.execute(
        "SELECT count(*) FROM packets WHERE state = 'acked' AND has_blob = 1"
    ).fetchone()[0]
    priorities: dict[str, dict[str, int]] = {}
    for priority, state, count, size in conn.execute(
        "SELECT priority, state, count(*), sum(size) FROM packets "
        "WHERE state IN ('ready', 'in_flight') GROUP BY priority, state ORDER BY priority"
    ):
        p = priorities.setdefault(str(priority), {"ready": 0, "in_flight": 0, "bytes": 0})
        p[state] = count
        p["bytes"] += int(size or 0)
    oldest = conn.execute(
        "SELECT min(created_utc_ns) FROM packets WHERE state = 'ready'"
    ).fetchone()[0]
    counters = dict.fromkeys(COUNTERS, 0)
    counters.update(dict(conn.execute("SELECT name, value FROM counters").fetchall()))
    quarantined = [
        {"id": i, "reason": r or "", "at_utc_ns": t}
        for i, r, t in conn.execute(
            "SELECT id, reason, state_utc_ns FROM packets WHERE state = 'quarantined' "
            "ORDER BY state_utc_ns DESC LIMIT 10"
        )
    ]
    disk = shutil.disk_usage(directory)
    used = sum(s["blob_bytes"] for s in states.values())
    if unacked is None:
        unacked = sum(states[s]["blob_bytes"] for s in ("ready", "in_flight", "quarantined"))
    capacity = max(0, min(cfg.max_mb * MB, used + disk.free - cfg.min_free_mb * MB))
    refusing = [
        priority
        for priority, pct in (
            (3, min(cfg.telemetry_fill_pct, cfg.violation_fill_pct)),
            (2, cfg.violation_fill_pct),
        )
        if unacked * 100 > capacity * pct
    ]
    return {
        "directory": str(directory),
        "states": states,
        "priorities": priorities,
        "oldest_ready_utc_ns": oldest,
        "oldest_ready_age_s": None if oldest is None else max(0.0, (now - oldest) / 1e9),
        "used_bytes": used,
        "unacked_bytes": unacked,
        "max_bytes": cfg.max_mb * MB,
        "capacity_bytes": capacity,
        "fill_pct": 100.0 if capacity == 0 else round(100.0 * unacked / capacity, 1),
        "refusing_priorities": sorted(refusing),
        "disk_free_bytes": disk.free,
        "disk_total_bytes": disk.total,
        "min_free_bytes": cfg.min_free_mb * MB,
        "low_disk": disk.free < max(cfg.low_disk_mb, cfg.min_free_mb) * MB,
        "counters": counters,
        "quarantined": quarantined,
    }


def read_stats(directory: Path, cfg: StoreConfig) -> dict[str, Any]:
    """Stats of a store without opening it for writing (the service may own it)."""
    db = Path(directory) / "index.sqlite"
    if not db.is_file():
        raise StoreError(f"{directory}: no packet store here")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
        try:
            return collect_stats(conn, Path(directory), cfg)
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise StoreError(f"{db}: {_one_line(str(e))}") from None
