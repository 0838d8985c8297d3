"""Pull: poll the central's desired-state endpoint and download the bundles it names.

    GET fleet.url   (If-None-Match: the last ETag; X-Roadnode-Node: the node id)
    → 304 Not Modified, or 200 with
    {"bundles": [{"kind": "software", "version": "1.3.0", "url": "b/sw-1.3.0.tar",
                  "size": 48211968, "sha256": "<of the bundle file>"}, ...]}

A bundle whose kind is already at that version, or whose file was processed before (by its
sha256), is not fetched. A download goes to downloads/<sha256>.part and resumes from where
it stopped with `Range: bytes=N-` (a 200 answer starts it over); it is refused the moment it
grows past its announced size or fleet.max_bundle_mb, and when its sha256 differs from the
announced one. A complete download is renamed into incoming/, where the updater verifies its
signature like any other bundle (the sha256 here only guards the transfer).

The interval is fleet.poll_interval_s, varied by up to ±fleet.poll_jitter_pct so that a fleet
that lost power together does not poll together; after a failure the next try comes sooner
(30 s, doubling up to the interval). The last desired state and its ETag are kept in
pull.json, so a 304 after an interrupted download still resumes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from node import __version__
from node.config import FleetConfig
from node.fleet import KINDS
from node.fleet.bundle import SHA256_PATTERN, parse_version
from node.fleet.install import read_json, write_json

log = logging.getLogger(__name__)

MB = 1024 * 1024
CHUNK = 64 * 1024
PULL_STATE = "pull.json"
MAX_DESIRED_BYTES = 1024 * 1024
MAX_SKIP = 200
FIRST_FAILURE_DELAY_S = 30.0


class PullError(Exception):
    """The desired state or a download failed (one line)."""


@dataclass(frozen=True)
class Wanted:
    kind: str
    version: str
    url: str
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.kind}-{self.version}-{self.sha256[:12]}.bundle"


def parse_desired(doc: Any, base_url: str, max_bytes: int) -> list[Wanted]:
    if not isinstance(doc, dict) or not isinstance(doc.get("bundles"), list):
        raise PullError('desired state: expected {"bundles": [...]}')
    out = []
    for i, b in enumerate(doc["bundles"][:32]):
        where = f"desired state bundles[{i}]"
        if not isinstance(b, dict):
            raise PullError(f"{where}: not an object")
        kind, version, url = b.get("kind"), b.get("version"), b.get("url")
        size, digest = b.get("size"), b.get("sha256")
        if kind not in KINDS or not isinstance(version, str) or not isinstance(url, str):
            raise PullError(f"{where}: needs kind, version and url")
        parse_version(version)
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= max_bytes:
            raise PullError(f"{where}: size {size!r} missing or above {max_bytes} bytes")
        if not isinstance(digest, str) or not re.fullmatch(SHA256_PATTERN, digest):
            raise PullError(f"{where}: sha256 missing or malformed")
        full = urljoin(base_url, url)
        if not full.startswith(("https://", "http://")):
            raise PullError(f"{where}: url must be http(s)")
        out.append(Wanted(kind, version, full, size, digest))
    return out


class Puller:
    def __init__(
        self,
        root: Path,
        cfg: FleetConfig,
        node_id: str,
        session: Any = None,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import requests

        self.root = root
        self.cfg = cfg
        self.node_id = node_id
        self.session = session or requests.Session()
        self.rng = rng
        self.clock = clock
        self.failures = 0
        self.downloads = root / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True, mode=0o750)
        # the first poll comes soon, spread over a minute (or the interval, if shorter)
        self.next_at = clock() + rng() * min(60.0, cfg.poll_interval_s)

    @property
    def max_bytes(self) -> int:
        return self.cfg.max_bundle_mb * MB

    def state(self) -> dict[str, Any]:
        doc = read_json(self.root / PULL_STATE) or {}
        doc.setdefault("skip", [])
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        doc["skip"] = doc["skip"][-MAX_SKIP:]
        write_json(self.root / PULL_STATE, doc)

    def processed(self, sha256: str) -> None:
        """The bundle file with this sha256 was handled (whatever the result): never again."""
        doc = self.state()
        if sha256 not in doc["skip"]:
            doc["skip"].append(sha256)
            self._save(doc)

    def delay(self) -> float:
        """Seconds until the next poll: the interval, jittered; sooner after failures."""
        base = self.cfg.poll_interval_s
        if self.failures:
            base = min(base, FIRST_FAILURE_DELAY_S * 2 ** (self.failures - 1))
        spread = self.cfg.poll_jitter_pct / 100.0
        return base * (1.0 + spread * (2.0 * self.rng() - 1.0))

    def due(self) -> bool:
        return self.clock() >= self.next_at

    def _headers(self) -> dict[str, str]:
        return {"User-Agent": f"roadnode/{__version__}", "X-Roadnode-Node": self.node_id}

    def poll(self, installed: Callable[[str], str | None], incoming: Path) -> list[Path]:
        """One poll: the bundles now in `incoming` (downloaded whole). Never raises; a
        failure is logged, kept in pull.json and retried sooner."""
        try:
            wanted = self._desired()
            out = []
            skip = set(self.state()["skip"])
            for w in wanted:
                if w.sha256 in skip or installed(w.kind) == w.version:
                    continue
                out.append(self.download(w, incoming))
            self.failures = 0
            self._note(error="")
            return out
        except PullError as e:
            self.failures += 1
            log.warning("fleet pull: %s", e)
            self._note(error=str(e))
            return []
        finally:
            self.next_at = self.clock() + self.delay()

    def _note(self, error: str) -> None:
        doc = self.state()
        doc["last_poll"] = time.time()
        doc["last_error"] = error
        self._save(doc)

    def _desired(self) -> list[Wanted]:
        import requests

        doc = self.state()
        headers = self._headers()
        if doc.get("etag") and doc.get("desired") is not None:
            headers["If-None-Match"] = doc["etag"]
        try:
            with self.session.get(
                self.cfg.url, headers=headers, timeout=self.cfg.timeout_s, stream=True
            ) as r:
                if r.status_code == 304:
                    desired = doc.get("desired")
                elif r.status_code == 200:
                    body = r.raw.read(MAX_DESIRED_BYTES + 1, decode_content=True)
                    if len(body) > MAX_DESIRED_BYTES:
                        raise PullError(f"desired state larger than {MAX_DESIRED_BYTES} bytes")
                    try:
                        desired = json.loads(body)
                    except (UnicodeDecodeError, json.JSONDecodeError) as e:
                        raise PullError(f"desired state is not JSON: {e}") from None
                    doc["desired"] = desired
                    doc["etag"] = r.headers.get("ETag")
                    self._save(doc)
                else:
                    raise PullError(
                        f"desired state: HTTP {r.status_code} from {_show(self.cfg.url)}"
                    )
        except requests.RequestException as e:
            raise PullError(f"desired state: {type(e).__name__}: {_short(e)}") from None
        return parse_desired(desired, self.cfg.url, self.max_bytes)

    def download(self, w: Wanted, incoming: Path) -> Path:
        """Fetch `w` into incoming/ (resuming a partial download); PullError on failure."""
        import requests

        part = self.downloads / f"{w.sha256}.part"
        have = part.stat().st_size if part.exists() else 0
        if have > w.size:
            part.unlink()
            have = 0
        headers = self._headers()
        if 0 < have < w.size:
            headers["Range"] = f"bytes={have}-"
        try:
            if have < w.size:
                with self.session.get(
                    w.url, headers=headers, timeout=self.cfg.timeout_s, stream=True
                ) as r:
                    have = self._receive(r, part, have, w)
        except requests.RequestException as e:
            raise PullError(
                f"{_show(w.url)}: {type(e).__name__}: {_short(e)} (kept "
                f"{part.stat().st_size if part.exists() else 0} bytes)"
            ) from None
        if have != w.size:
            raise PullError(f"{_show(w.url)}: got {have} of {w.size} bytes; will resume")
        if _sha256(part) != w.sha256:
            part.unlink()
            raise PullError(f"{_show(w.url)}: sha256 differs from the desired state; discarded")
        dest = incoming / w.filename
        os.replace(part, dest)
        log.info("fleet pull: downloaded %s %s (%d bytes)", w.kind, w.version, w.size)
        return dest

    def _receive(self, r: Any, part: Path, have: int, w: Wanted) -> int:
        if r.status_code == 416:  # our part is no prefix of theirs: start over next time
            part.unlink(missing_ok=True)
            raise PullError(f"{_show(w.url)}: range not satisfiable; starting over")
        if r.status_code == 206:
            start = _range_start(r.headers.get("Content-Range", ""))
            if start != have:
                raise PullError(f"{_show(w.url)}: server resumed at {start}, not {have}")
            mode = "ab"
        elif r.status_code == 200:
            have, mode = 0, "wb"  # the server ignored Range: from the start
        else:
            raise PullError(f"{_show(w.url)}: HTTP {r.status_code}")
        length = r.headers.get("Content-Length")
        if (
            length is not None
            and length.isdigit()
            and have + int(length) > min(w.size, self.max_bytes)
        ):
            raise PullError(
                f"{_show(w.url)}: {have + int(length)} bytes, more than announced {w.size}"
            )
        with part.open(mode) as f:
            for chunk in r.iter_content(CHUNK):
                have += len(chunk)
                if have > w.size or have > self.max_bytes:
                    f.close()
                    part.unlink(missing_ok=True)
                    raise PullError(
                        f"{_show(w.url)}: more than the announced {w.size} bytes; discarded"
                    )
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        return have


def _range_start(content_range: str) -> int | None:
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range.strip())
    return int(m.group(1)) if m else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def _show(url: str) -> str:
    """`url` without its query or credentials (they may carry a token): safe to log."""
    p = urlsplit(url)
    port = f":{p.port}" if p.port else ""
    return f"{p.scheme}://{p.hostname or ''}{port}{p.path}"


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:160] if str(e) else "no detail"
