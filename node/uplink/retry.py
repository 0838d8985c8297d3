"""When to try again: one immutable retry policy, and what a failed request tells us.

- `RetryPolicy.delay(attempt, rng, retry_after)`: capped exponential backoff with full jitter
  (a uniform draw in [0, min(cap, base * 2**attempt)]), so a fleet that lost the central at
  the same moment does not come back in step. A server's `Retry-After` is honoured (never
  waited less than it asks) up to `retry_after_max_s`.
- `classify(exc)`: a request that failed before a byte of it left the node (connection
  refused, DNS, connect timeout, TLS handshake) is `NEVER_LEFT`: the link or the central is
  down, the packet is certainly not there, and the uploader probes cheaply before it sends
  again. Anything after the connection was made (read timeout, reset mid-request or
  mid-response) is `MAYBE_DELIVERED`: the central may have stored the packet, so it is sent
  again with the same packet id (the idempotency key) and the central answers `duplicate`.
  An error that cannot be told apart is `MAYBE_DELIVERED` (resending is always safe).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import random
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

NEVER_LEFT = "never_left"
MAYBE_DELIVERED = "maybe_delivered"


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter; `Retry-After` honoured up to a cap."""

    base_s: float = 2.0
    max_s: float = 300.0
    retry_after_max_s: float = 900.0
    multiplier: float = 2.0
    min_s: float = 0.05  # a floor under the jitter: never a busy loop, even on a 0.0 draw

    def __post_init__(self) -> None:
        if not (self.base_s > 0 and self.max_s > 0 and self.retry_after_max_s >= 0):
            raise ValueError("retry policy: base_s, max_s must be > 0, retry_after_max_s >= 0")
        if not 0 < self.min_s <= self.max_s:
            raise ValueError(f"retry policy: min_s must be in (0, max_s], got {self.min_s}")
        if self.multiplier < 1:
            raise ValueError(f"retry policy: multiplier must be >= 1, got {self.multiplier}")

    def ceiling(self, attempt: int) -> float:
        """The most the `attempt`-th retry (0 = first) may wait, before jitter."""
        exp = min(max(attempt, 0), 64)
        try:
            return min(self.max_s, self.base_s * self.multiplier**exp)
        except OverflowError:
            return self.max_s

    def delay(
        self, attempt: int, rng: random.Random | None = None, retry_after: float | None = None
    ) -> float:
        """Seconds to wait before retry number `attempt` (0-based). Full jitter: uniform in
        [0, ceiling], at least `min_s`. With the server's `retry_after`, at least that (capped
        at `retry_after_max_s`)."""
        draw = max(self.min_s, (rng or random).uniform(0.0, self.ceiling(attempt)))
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            return max(draw, min(retry_after, self.retry_after_max_s))
        return draw


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 10**9))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception it wraps (args, urllib3's `reason`, cause, context)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for inner in (*e.args, getattr(e, "reason", None), e.__cause__, e.__context__):
            if isinstance(inner, BaseException):
                todo.append(inner)


def classify(exc: BaseException) -> str:
    """NEVER_LEFT when `exc` proves the request never reached the server, else
    MAYBE_DELIVERED."""
    import requests
    import urllib3.exceptions as u3

    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, (u3.ReadTimeoutError, requests.exceptions.ReadTimeout)):
            return MAYBE_DELIVERED
    for e in chain:
        if isinstance(
            e,
            (
                requests.exceptions.ConnectTimeout,
                requests.exceptions.SSLError,
                requests.exceptions.InvalidURL,
                requests.exceptions.ProxyError,
                u3.NewConnectionError,  # refused, unreachable, DNS (NameResolutionError)
                u3.ConnectTimeoutError,
                u3.SSLError,
                ssl.SSLError,  # the handshake: nothing of the request was sent
            ),
        ):
            return NEVER_LEFT
    return MAYBE_DELIVERED


def describe(exc: BaseException) -> str:
    """One line for status and logs: the innermost useful message, no URLs with secrets."""
    import requests

    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted: {e.verify_message or e.reason}"
    for e in chain:
        if isinstance(e, ssl.SSLError):
            return f"TLS handshake failed: {e.reason or e}"
    kinds = (
        (requests.exceptions.ConnectTimeout, "connect timeout"),
        (requests.exceptions.ReadTimeout, "read timeout: no answer in time"),
    )
    for kind, text in kinds:
        if isinstance(exc, kind):
            return text
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, ConnectionResetError):
            return "connection reset by the server"
        if isinstance(e, (BrokenPipeError, ConnectionAbortedError)):
            return "connection closed by the server while sending"
    for e in chain:
        name = type(e).__name__
        if name == "NameResolutionError":
            return "DNS: cannot resolve the central's host name"
        if name == "RemoteDisconnected":
            return "connection closed by the server without an answer"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"
