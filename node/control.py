"""The control socket: a Unix stream socket in the state dir, JSON request → JSON response.

One request per connection, one JSON object per line each way: `{"cmd": "status"}` →
`{"ok": true, ...}` or `{"ok": false, "error": "..."}`. Mode 0660, so the service's group (the
console, the fleet agent) may connect and nobody else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 64 * 1024
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(Exception):
    """The control socket could not be reached or answered badly."""


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


class _RequestHandler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST + 1)
        try:
            if len(line) > MAX_REQUEST:
                raise ValueError(f"request longer than {MAX_REQUEST} bytes")
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise ValueError('expected a JSON object with a "cmd" string')
            reply = self.server.handle_request_dict(request)
        except ValueError as e:  # includes json.JSONDecodeError
            reply = {"ok": False, "error": f"bad request: {e}"}
        except Exception as e:  # a handler fault answers, never kills the server
            log.exception("control request failed")
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, handler: Handler) -> None:
        self.handle_request_dict = handler
        super().__init__(path, _RequestHandler)


class ControlServer:
    """Serves `handler` on `<state_dir>/control.sock` from a background thread."""

    def __init__(self, state_dir: Path, handler: Handler) -> None:
        self.path = socket_path(state_dir)
        if len(os.fsencode(self.path)) >= 108:
            raise ControlError(f"{self.path}: path too long for a Unix socket (max 107 bytes)")
        self._claim_path()
        old_umask = os.umask(0o117)
        try:
            self._server = _Server(str(self.path), handler)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="control",
            daemon=True,
        )

    def _claim_path(self) -> None:
        """Remove a stale socket left by a crash; refuse when a live service owns it."""
        if not self.path.exists() and not self.path.is_symlink():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()
            return
        finally:
            probe.close()
        raise ControlError(f"{self.path}: another roadnode service is running on this state dir")

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def query(state_dir: Path, request: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
    """Send one request to the running service and return its answer."""
    path = socket_path(state_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = sock.makefile("rb").readline(16 * 1024 * 1024)
        except FileNotFoundError:
            raise ControlError(
                f"no roadnode service running on {state_dir} ({path.name} not found)"
            ) from None
        except ConnectionRefusedError:
            raise ControlError(
                f"no roadnode service running on {state_dir} ({path.name} refuses connections)"
            ) from None
        except OSError as e:
            raise ControlError(f"{path}: {e.strerror or e}") from e
    try:
        reply = json.loads(data)
    except json.JSONDecodeError as e:
        raise ControlError(f"{path}: the service answered with invalid JSON") from e
    if not isinstance(reply, dict):
        raise ControlError(f"{path}: the service answered with {type(reply).__name__}")
    return reply
