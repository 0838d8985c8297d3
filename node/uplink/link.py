"""Link economy: a bandwidth cap (token bucket) and upload windows.

- `TokenBucket(rate, burst)`: at most `rate` bytes/s on average, `burst` bytes at once. The
  uploader streams a packet's body in chunks through `ThrottledBody`, so the cap holds while a
  packet is on the wire, not just between packets. Waiting is an `Event.wait`: stop() ends it.
- `UploadWindows.parse("22:00-06:00, 12:00-13:00")`: local-time windows (a window may wrap
  past midnight); `is_open(now)` and `seconds_until_open(now)`. Empty = always open.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from node.config import UplinkConfig

CHUNK_BYTES = 16_384
_WINDOW = re.compile(r"\s*([0-2][0-9]):([0-5][0-9])\s*-\s*([0-2][0-9]):([0-5][0-9])\s*")


class Stopped(Exception):  # noqa: N818 (a signal, not a failure)
    """A wait was cut short by stop()."""


class TokenBucket:
    """`rate` bytes/s on average, up to `burst` bytes at once; thread-safe."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket: rate and burst must be positive, got {rate}, {burst}")
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now

    def reserve(self, n: int) -> float:
        """Take `n` bytes' worth (n <= burst) and return how long to wait before sending."""
        n = min(n, self.burst)
        with self._lock:
            self._refill()
            self._tokens -= n
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def take(self, n: int, stop: threading.Event) -> None:
        """Block until `n` bytes may go (in chunks of at most `burst`); Stopped on stop."""
        while n > 0:
            chunk = min(n, self.burst)
            wait = self.reserve(chunk)
            if wait > 0 and stop.wait(wait):
                raise Stopped
            n -= chunk


class ThrottledBody:
    """A request body that goes out through a TokenBucket, chunk by chunk. `len()` gives
    requests the Content-Length, so the body is not sent chunked."""

    def __init__(self, data: bytes, bucket: TokenBucket, stop: threading.Event) -> None:
        self._data = memoryview(data)
        self._bucket = bucket
        self._stop = stop
        self.sent = 0

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self._data), CHUNK_BYTES):
            chunk = self._data[start : start + CHUNK_BYTES]
            self._bucket.take(len(chunk), self._stop)
            self.sent += len(chunk)
            yield bytes(chunk)


@dataclass(frozen=True)
class UploadWindows:
    """Daily windows in local time, as minutes after midnight [start, end); end <= start wraps
    past midnight. No windows = always open."""

    windows: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> UploadWindows:
        """From `HH:MM-HH:MM[, HH:MM-HH:MM ...]`; ValueError names the bad window."""
        if not text.strip():
            return cls()
        out = []
        for item in text.split(","):
            m = _WINDOW.fullmatch(item)
            if not m:
                raise ValueError(f"upload window {item.strip()!r}: expected HH:MM-HH:MM")
            h1, m1, h2, m2 = (int(g) for g in m.groups())
            if h1 > 23 or h2 > 24 or (h2 == 24 and m2):
                raise ValueError(f"upload window {item.strip()!r}: hours are 00 … 23")
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if start == end:
                raise ValueError(f"upload window {item.strip()!r}: starts where it ends")
            out.append((start, end))
        return cls(tuple(out))

    @property
    def always(self) -> bool:
        return not self.windows

    def is_open(self, now: dt.datetime) -> bool:
        if not self.windows:
            return True
        minute = now.hour * 60 + now.minute
        for start, end in self.windows:
            if start < end and start <= minute < end:
                return True
            if start > end and (minute >= start or minute < end):
                return True
        return False

    def seconds_until_open(self, now: dt.datetime) -> float:
        """0 when open now, else seconds until the next window opens."""
        if self.is_open(now):
            return 0.0
        into_day = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
        waits = [(start * 60 - into_day) % 86_400 for start, _ in self.windows]
        return max(1.0, min(waits))

    def describe(self) -> str:
        if not self.windows:
            return "always"
        return ", ".join(
            f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}" for s, e in self.windows
        )


def config_problems(cfg: UplinkConfig) -> list[str]:
    """Problems of `[uplink]` that span keys (one line each); empty when it is usable."""
    problems = []
    if cfg.url.startswith("http://") and not cfg.allow_plain_http:
        problems.append(
            "uplink.url: plain http:// needs uplink.allow_plain_http = true "
            "(packets would travel unencrypted)"
        )
    if bool(cfg.client_cert) != bool(cfg.client_key):
        problems.append("uplink.client_cert/client_key: give both or neither")
    if cfg.backoff_base_s > cfg.backoff_max_s:
        problems.append(
            f"uplink.backoff_base_s: must not exceed uplink.backoff_max_s ({cfg.backoff_max_s:g})"
        )
    try:
        UploadWindows.parse(cfg.windows)
    except ValueError as e:
        problems.append(f"uplink.windows: {e}")
    return problems
