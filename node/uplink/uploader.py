"""The uploader: drains the offline store to the central ingest, each packet exactly once.

One thread claims packets from the store in priority order (lowest number first, then oldest)
and POSTs each to `{url}/v1/packets` (docs/uplink-protocol.md): the body is the packet file,
`Idempotency-Key` its packet id. It acks a packet only on a 2xx whose JSON body names that
packet id with status `stored` or `duplicate`; transport success alone is never an ack.

What happens on each answer (`interpret`):

- 2xx acknowledging the packet (or 409 saying `duplicate`): ack in the store.
- 2xx not acknowledging it (another id, no JSON): not acked; released, retried with backoff.
- 408, 425, 429, 5xx: released, retried with backoff (`Retry-After` honoured up to a cap).
- 401, 403, 404, 405, 407, 421, 426 and 3xx: about the node or its configuration, not the
  packet (not enrolled, wrong URL, certificate): released, retried at the backoff cap, and
  status says why. Quarantining on these would bury the whole queue for a config mistake.
- any other 4xx (400, 413, 422 ...): permanent for this packet: quarantined with the reason.
- connection errors: released. Those where the request never left (refused, DNS, TLS, connect
  timeout) mark the link down: the uploader waits (backoff) and probes with a cheap
  `GET {url}/v1/health` before sending again. Those where the central may have the packet
  (read timeout, reset) resend it after a backoff; the ingest dedupes by packet id.

Nothing here spins: every wait is an `Event.wait` that `upload_now()` and `stop()` cut short.
After a restart the store hands out only packets that were never acked, so an acked packet is
never sent again.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import os
import random
import ssl
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter

from node import __version__
from node.config import UplinkConfig
from node.store import Claimed, PacketStore, StoreError
from node.uplink.link import Stopped, ThrottledBody, TokenBucket, UploadWindows, config_problems
from node.uplink.retry import NEVER_LEFT, RetryPolicy, classify, describe, parse_retry_after

if TYPE_CHECKING:
    from urllib3.poolmanager import PoolManager

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.roadnode.packet"
PACKETS_PATH = "/v1/packets"
HEALTH_PATH = "/v1/health"
MAX_ANSWER_BYTES = 65_536  # an answer longer than this is cut (and not an ack)
RATE_WINDOW_S = 60.0
CLAIM_BATCH = 8
RETRY_CODES = frozenset({408, 425, 429})
NODE_LEVEL_CODES = frozenset({401, 403, 404, 405, 407, 421, 426})
ACK_STATUSES = frozenset({"stored", "duplicate"})

ACK, RETRY, REFUSED, PERMANENT = "ack", "retry", "refused", "permanent"


class UplinkError(Exception):
    """The uplink cannot be set up as configured; the message is one line naming the key."""


@dataclass(frozen=True)
class Answer:
    """What an HTTP answer means for the packet: ACK, RETRY, REFUSED (node-level), PERMANENT."""

    outcome: str
    reason: str
    retry_after: float | None = None
    status: str = ""  # "stored" or "duplicate" for an ack


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _answer_json(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def interpret(code: int, headers: Any, body: bytes, packet_id: str) -> Answer:
    """What the answer (`code`, `headers`, `body`) to the upload of `packet_id` means."""
    doc = _answer_json(body)
    named = doc is not None and doc.get("packet_id") == packet_id
    status = str(doc.get("status", "")) if doc else ""
    error = (
        _one_line(str(doc.get("error", ""))) if doc else _one_line(body.decode("utf-8", "replace"))
    )
    retry_after = parse_retry_after(headers.get("Retry-After") if headers else None)
    if 200 <= code < 300:
        if named and status in ACK_STATUSES:
            return Answer(ACK, status, status=status)
        if doc is None:
            why = "no JSON answer"
        elif "packet_id" not in doc:
            why = "no packet id in the answer"
        elif not named:
            why = f"answer names packet {_one_line(str(doc.get('packet_id')), 60)!r}"
        else:
            why = f"answer status {_one_line(status, 40)!r}"
        return Answer(RETRY, f"HTTP {code} does not acknowledge the packet: {why}")
    if code == 409 and named and status == "duplicate":
        return Answer(ACK, "duplicate", status="duplicate")
    reason = f"HTTP {code}" + (f": {error}" if error else "")
    if code in RETRY_CODES or code >= 500:
        return Answer(RETRY, reason, retry_after)
    if code in NODE_LEVEL_CODES or not 400 <= code < 500:
        return Answer(REFUSED, reason, retry_after)
    return Answer(PERMANENT, reason)


# --- the HTTP session ------------------------------------------------------------------------


class TLSAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections use one SSLContext (CA pinned, TLS >= 1.2, mTLS)."""

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self.context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self.context
        super().init_poolmanager(*args, **kwargs)  # type: ignore[no-untyped-call]

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> PoolManager:
        kwargs["ssl_context"] = self.context
        return super().proxy_manager_for(proxy, **kwargs)  # type: ignore[no-untyped-call,no-any-return]


def _check_file(key: str, path: str, private: bool = False) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        raise UplinkError(f"uplink.{key}: {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UplinkError(f"uplink.{key}: {path}: not a regular file")
    if private and stat.S_IMODE(st.st_mode) & 0o077:
        raise UplinkError(
            f"uplink.{key}: {path}: private key is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
        )


def tls_context(cfg: UplinkConfig) -> ssl.SSLContext:
    """The client TLS context: the configured CA bundle (or the system's), TLS 1.2 or newer,
    hostname checked, the client certificate when configured."""
    if cfg.ca_bundle:
        _check_file("ca_bundle", cfg.ca_bundle)
    try:
        ctx = ssl.create_default_context(cafile=cfg.ca_bundle or None)
    except (OSError, ssl.SSLError) as e:
        raise UplinkError(f"uplink.ca_bundle: {cfg.ca_bundle}: not a PEM CA bundle ({e})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cfg.client_cert:
        _check_file("client_cert", cfg.client_cert)
        _check_file("client_key", cfg.client_key, private=True)
        try:
            ctx.load_cert_chain(cfg.client_cert, cfg.client_key)
        except (OSError, ssl.SSLError):
            raise UplinkError(
                f"uplink.client_cert: {cfg.client_cert} and {cfg.client_key} are not a matching "
                "PEM certificate and unencrypted key"
            ) from None
    return ctx


def make_session(cfg: UplinkConfig) -> requests.Session:
    """A requests.Session for the central: connections reused, TLS per `tls_context`, no
    environment settings (proxies, CA bundles) slipped in, no automatic retries."""
    problems = config_problems(cfg)
    if problems:
        raise UplinkError(problems[0])
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE etc. must not unpin the central's CA
    session.mount("https://", TLSAdapter(tls_context(cfg), pool_connections=1, max_retries=0))
    session.mount("http://", HTTPAdapter(pool_connections=1, max_retries=0))
    session.verify = cfg.ca_bundle or True
    session.headers["User-Agent"] = f"roadnode/{__version__}"
    return session


# --- the uploader ----------------------------------------------------------------------------


class Uploader:
    """Drains `store` to the central in its own thread: start(), stop(), status(),
    upload_now(). `policy` overrides the backoff built from `cfg`; `session` the HTTP session;
    `local_now` the clock the upload windows are read on (tests)."""

    def __init__(
        self,
        store: PacketStore,
        cfg: UplinkConfig,
        *,
        policy: RetryPolicy | None = None,
        session: requests.Session | None = None,
        rng: random.Random | None = None,
        local_now: Callable[[], dt.datetime] | None = None,
        name: str = "uplink",
    ) -> None:
        if not cfg.url:
            raise UplinkError("uplink.url: not set (the uplink is off)")
        self.store = store
        self.cfg = cfg
        self.policy = policy or RetryPolicy(
            cfg.backoff_base_s, cfg.backoff_max_s, cfg.retry_after_max_s
        )
        self.session = session or make_session(cfg)
        self.windows = UploadWindows.parse(cfg.windows)
        self.bucket = (
            TokenBucket(cfg.max_bytes_per_s, cfg.burst_bytes) if cfg.max_bytes_per_s else None
        )
        self._rng = rng or random.Random()
        self._local_now = local_now or (lambda: dt.datetime.now().astimezone())
        base = cfg.url.rstrip("/")
        self.packets_url = base + PACKETS_PATH
        self.health_url = base + HEALTH_PATH
        self.timeout = (cfg.connect_timeout_s, cfg.read_timeout_s)
        self.warnings: list[str] = []
        if base.startswith("http://"):
            self.warnings.append(
                "plain http: packets and answers travel unencrypted and the central is not "
                "authenticated; use https:// in production"
            )
        elif not cfg.ca_bundle:
            self.warnings.append("TLS trusts the system CAs: set uplink.ca_bundle to pin the CA")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self._name = name
        self._state = "stopped"
        self._down = False
        self._attempt = 0
        self._next_at: float | None = None
        self._counts = dict.fromkeys(
            (
                "sent",
                "acked",
                "duplicates",
                "quarantined",
                "retries",
                "maybe_delivered",
                "never_left",
                "not_acknowledged",
                "refused",
                "probes",
                "read_errors",
            ),
            0,
        )
        self._bytes = 0
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._last_success_ns: int | None = None
        self._last_error: str | None = None
        self._last_error_ns: int | None = None
        self._errors: collections.deque[str] = collections.deque(maxlen=5)

    # ---- control ------------------------------------------------------------------------

    def start(self) -> None:
        if self.thread is not None:
            raise RuntimeError("uploader already started")
        for w in self.warnings:
            log.warning("uplink: %s", w)
        self._stop.clear()
        self._state = "up"
        self.thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (an upload in progress is cut short: its packet is released)."""
        self._stop.set()
        self._wake.set()
        if self.thread is not None:
            self.thread.join(timeout)
        self.session.close()
        self._state = "stopped"

    def upload_now(self) -> None:
        """Wake the uploader: new packets, or an operator asks it to try the link now."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()
            recent = sum(n for _, n in self._recent)
            return {
                "state": self._state,
                "url": self.cfg.url,
                "windows": self.windows.describe(),
                "warnings": list(self.warnings),
                **self._counts,
                "bytes": self._bytes,
                "rate_bytes_per_s": round(recent / RATE_WINDOW_S, 1),
                "last_success_utc_ns": self._last_success_ns,
                "last_error": self._last_error,
                "last_error_utc_ns": self._last_error_ns,
                "recent_errors": list(self._errors),
                "next_attempt_in_s": (
                    None if self._next_at is None else round(max(0.0, self._next_at - now), 2)
                ),
            }

    # ---- the loop -----------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _error(self, text: str) -> None:
        with self._lock:
            if text != self._last_error:
                log.warning("uplink: %s", text)
            self._last_error = text
            self._last_error_ns = time.time_ns()
            self._errors.append(text)

    def _wait(self, seconds: float) -> None:
        self._next_at = time.monotonic() + seconds
        self._wake.wait(seconds)
        self._wake.clear()
        self._next_at = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self._step()
            except StoreError as e:  # the store is closed or failing: say so, try later
                self._error(f"store: {e}")
                delay = self.policy.max_s
            if delay > 0 and not self._stop.is_set():
                self._wait(delay)
        self._state = "stopped"

    def _backoff(self, retry_after: float | None = None, at_cap: bool = False) -> float:
        if at_cap:
            delay = max(self.policy.max_s, min(retry_after or 0.0, self.policy.retry_after_max_s))
        else:
            delay = self.policy.delay(self._attempt, self._rng, retry_after)
        self._attempt += 1
        return delay

    def _probe(self) -> bool:
        """A cheap look at the central while the link is down: any HTTP answer means up."""
        self._count("probes")
        try:
            r = self.session.get(
                self.health_url, timeout=(self.cfg.connect_timeout_s, 10.0), allow_redirects=False
            )
            r.close()
        except requests.RequestException as e:
            self._error(f"link down: {describe(e)}")
            return False
        return True

    def _step(self) -> float:
        """One round: probe if down, else claim a batch and send it. Returns the wait."""
        if self._down:
            if not self._probe():
                self._state = "down"
                return self._backoff()
            self._down = False
        claims = self.store.claim(CLAIM_BATCH)
        if not claims:
            self._state = "up"
            return self.cfg.idle_poll_s
        for i, claimed in enumerate(claims):
            closed = False
            if self._stop.is_set() or (i and self._overtaken(claimed)):
                delay = 0.0  # (overtaken: the rest go back, the urgent one is claimed next)
            elif not self._window_allows(claimed):
                closed = True
                delay = min(60.0, self.windows.seconds_until_open(self._local_now()))
            else:
                delay = self._send(claimed)
                if delay < 0:
                    continue
            for rest in claims[i:]:  # this one was not acked or quarantined, nor the rest
                self._release(rest.id)
            if closed:  # said once the packets are back in the queue, not before
                self._state = "window"
            return delay
        return 0.0

    def _overtaken(self, claimed: Claimed) -> bool:
        """A more urgent packet (a hotlist alert) arrived while this batch was going out."""
        if claimed.priority <= 0:
            return False
        try:
            urgent = self.store.most_urgent_ready()
        except StoreError:
            return False
        return urgent is not None and urgent < claimed.priority

    def _window_allows(self, claimed: Claimed) -> bool:
        if self.windows.always or claimed.priority <= self.cfg.urgent_priority:
            return True
        return self.windows.is_open(self._local_now())

    def _release(self, packet_id: str) -> None:
        try:
            self.store.release(packet_id)
        except StoreError as e:
            log.warning("uplink: cannot release packet %s: %s", packet_id, e)

    def _send(self, claimed: Claimed) -> float:
        """Upload one claimed packet. Returns -1 to go on with the batch, or the wait before
        the next round (the packet has then been released by `_step`)."""
        pid = claimed.id
        try:
            data = self.store.read(pid)
        except StoreError as e:  # damaged on the card: the store has quarantined it
            self._count("read_errors")
            self._error(f"packet {pid}: {e}")
            return -1.0
        body: Any = data
        if self.bucket is not None:
            body = ThrottledBody(data, self.bucket, self._stop)
        headers = {"Content-Type": CONTENT_TYPE, "Idempotency-Key": pid}
        self._count("sent")
        try:
            with self.session.post(
                self.packets_url,
                data=body,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            ) as r:
                answer_bytes = _read_bounded(r)
                answer = interpret(r.status_code, r.headers, answer_bytes, pid)
        except Stopped:
            return 0.0
        except requests.RequestException as e:
            return self._transport_failed(pid, e)
        return self._answered(claimed, len(data), answer)

    def _transport_failed(self, pid: str, e: requests.RequestException) -> float:
        if classify(e) == NEVER_LEFT:
            self._count("never_left")
            self._down = True
            self._state = "down"
            self._error(f"link down: {describe(e)}")
        else:
            self._count("maybe_delivered")
            self._state = "backoff"
            self._error(f"packet {pid}: {describe(e)} (the central may have it; resending)")
        self._count("retries")
        return self._backoff()

    def _answered(self, claimed: Claimed, size: int, answer: Answer) -> float:
        pid = claimed.id
        if answer.outcome == ACK:
            try:
                self.store.ack(pid)
            except StoreError as e:  # sent again after a restart; the central says duplicate
                self._error(f"packet {pid}: acked by the central, store ack failed: {e}")
                return self._backoff()
            now = time.monotonic()
            with self._lock:
                self._counts["acked"] += 1
                if answer.status == "duplicate":
                    self._counts["duplicates"] += 1
                self._bytes += size
                self._recent.append((now, size))
                self._last_success_ns = time.time_ns()
            self._attempt = 0
            self._state = "up"
            return -1.0
        if answer.outcome == PERMANENT:
            self._error(f"packet {pid}: refused for good: {answer.reason}; quarantined")
            try:
                self.store.quarantine(pid, f"central: {answer.reason}")
            except StoreError as e:
                self._error(f"packet {pid}: cannot quarantine: {e}")
                return self._backoff()
            self._count("quarantined")
            return -1.0
        self._count("retries")
        self._state = "backoff"
        if answer.outcome == REFUSED:
            self._count("refused")
            self._error(f"central refuses this node: {answer.reason}")
            return self._backoff(answer.retry_after, at_cap=True)
        if answer.reason.startswith("HTTP 2"):
            self._count("not_acknowledged")
        self._error(f"packet {pid}: {answer.reason}")
        return self._backoff(answer.retry_after)


def _read_bounded(r: requests.Response) -> bytes:
    out = bytearray()
    for chunk in r.iter_content(8192):
        out += chunk
        if len(out) > MAX_ANSWER_BYTES:
            return bytes(out[:MAX_ANSWER_BYTES])
    return bytes(out)
