"""The technician PIN: a slow salted hash (scrypt) in the config, and a persisted lockout.

The hash string is `scrypt$<log2 N>$<r>$<p>$<salt>$<key>` (salt and key in base64), made by
`roadnode console-pin`. The PIN itself is never stored or logged.

`PinGuard` counts wrong PINs in a file in the state dir, so pulling the cable or restarting the
console does not reset the count: after `attempts` wrong PINs in a row the console locks for
`lockout_s`; after that every further wrong PIN locks it again for twice as long as the last
time (up to `lockout_max_s`), until a right PIN resets the count. While locked the PIN is not
even checked.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "console-pin.json"
DEFAULT_LOG2_N = 15  # 32 MiB of memory per check (128 * r * N): slow on purpose, fine on 1 GB
MAX_LOG2_N = 16  # a config may not ask for more (64 MiB)
PIN_PATTERN = re.compile(r"[\x21-\x7e]{4,64}")  # printable ASCII, no spaces


class PinError(ValueError):
    """A PIN or a PIN hash that cannot be used."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_pin(pin: str, log2_n: int = DEFAULT_LOG2_N, r: int = 8, p: int = 1) -> str:
    """The config string for `pin` (a fresh random salt each time)."""
    if not PIN_PATTERN.fullmatch(pin):
        raise PinError("PIN: must be 4 to 64 printable ASCII characters without spaces")
    if not 10 <= log2_n <= MAX_LOG2_N:
        raise PinError(f"PIN hash: log2 N must be between 10 and {MAX_LOG2_N}, got {log2_n}")
    salt = secrets.token_bytes(16)
    key = _derive(pin, salt, log2_n, r, p)
    return f"scrypt${log2_n}${r}${p}${_b64(salt)}${_b64(key)}"


def _derive(pin: str, salt: bytes, log2_n: int, r: int, p: int, dklen: int = 32) -> bytes:
    n = 1 << log2_n
    maxmem = 128 * r * n * p + 1024 * 1024
    return hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)


def verify_pin(pin: str, encoded: str) -> bool:
    """Whether `pin` matches the config string `encoded` (PinError if that is malformed)."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise PinError("console.pin_hash: not a scrypt$... string from `roadnode console-pin`")
    try:
        log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except ValueError as e:
        raise PinError(f"console.pin_hash: malformed ({e})") from None
    if not 10 <= log2_n <= MAX_LOG2_N or not 1 <= r <= 32 or not 1 <= p <= 4 or len(key) < 16:
        raise PinError("console.pin_hash: parameters out of range")
    if not PIN_PATTERN.fullmatch(pin):
        return False
    return hmac.compare_digest(_derive(pin, salt, log2_n, r, p, len(key)), key)


@dataclass(frozen=True)
class PinResult:
    ok: bool
    locked_s: float = 0.0  # > 0: locked out for this many more seconds (PIN not checked)
    left: int = 0  # wrong PIN: attempts left before a lockout


class PinGuard:
    """Checks PINs against `encoded`, with lockout state kept in `state_dir`."""

    def __init__(
        self,
        state_dir: Path,
        encoded: str,
        attempts: int = 5,
        lockout_s: float = 60.0,
        lockout_max_s: float = 3600.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = state_dir / STATE_FILE
        self.encoded = encoded
        self.attempts = attempts
        self.lockout_s = lockout_s
        self.lockout_max_s = max(lockout_s, lockout_max_s)
        self.wall = wall

    @property
    def configured(self) -> bool:
        return bool(self.encoded)

    def _load(self) -> tuple[int, float, float]:
        """(wrong PINs in a row, locked until (wall clock), length of the last lockout)."""
        try:
            raw = json.loads(self.path.read_text(encoding="ascii"))
            failures = int(raw["failures"])
            until = float(raw["locked_until"])
            last = float(raw["last_lockout_s"])
        except FileNotFoundError:
            return 0, 0.0, 0.0
        except (OSError, ValueError, KeyError, TypeError):
            # unreadable or damaged: the safe reading is "locked out", for the longest time,
            # written back so that the lockout ends when that time is over
            state = (self.attempts, self.wall() + self.lockout_max_s, self.lockout_max_s)
            with contextlib.suppress(OSError):
                self._save(*state)
            return state
        return max(0, failures), until, max(0.0, last)

    def _save(self, failures: int, until: float, last: float) -> None:
        data = json.dumps({"failures": failures, "locked_until": until, "last_lockout_s": last})
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def locked_for(self) -> float:
        """Seconds of lockout left (0 when not locked)."""
        _, until, last = self._load()
        left = until - self.wall()
        # a clock stepped backwards must not lock for longer than the lockout itself
        return max(0.0, min(left, last or self.lockout_max_s))

    def check(self, pin: str) -> PinResult:
        """Check one PIN attempt (PinError when no or a malformed hash is configured)."""
        if not self.encoded:
            raise PinError("console.pin_hash: no technician PIN is set in this unit's config")
        locked = self.locked_for()
        if locked > 0:
            return PinResult(False, locked_s=locked)
        failures, _, last = self._load()
        if verify_pin(pin, self.encoded):
            if failures or last:
                self._save(0, 0.0, 0.0)
            return PinResult(True)
        failures += 1
        if failures >= self.attempts:
            length = min(self.lockout_max_s, last * 2 if last else self.lockout_s)
            self._save(failures, self.wall() + length, length)
            return PinResult(False, locked_s=length)
        self._save(failures, 0.0, last)
        return PinResult(False, left=self.attempts - failures)

    def reset(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
