"""Logging to stderr in a form journald understands.

Under systemd (`JOURNAL_STREAM` set) each line starts with the sd-daemon priority prefix
(`<3>` error, `<4>` warning, `<6>` info, `<7>` debug) so the journal records the level; on a
terminal the level is spelled out instead. One line per record: newlines in messages are
escaped, so a log line can never forge another.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """`<6>capture: message` under systemd, `INFO capture: message` on a terminal."""

    def __init__(self, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            message += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        message = message.replace("\r", "\\r").replace("\n", "\\n")
        name = record.name.removeprefix("node.")
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{name}: {message}"
        return f"{record.levelname} {name}: {message}"


def setup_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send the `node` loggers to stderr (or `stream`) at `level`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JournalFormatter(journald="JOURNAL_STREAM" in os.environ))
    root = logging.getLogger("node")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
