"""Logs: journald priority prefixes under systemd, one line per record, levels on a terminal."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from node.journal import setup_logging


@pytest.fixture(autouse=True)
def restore_node_logger() -> Iterator[None]:
    logger = logging.getLogger("node")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def emit(monkeypatch: pytest.MonkeyPatch, journald: bool) -> list[str]:
    if journald:
        monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    else:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    setup_logging("debug", out)
    log = logging.getLogger("node.capture")
    log.debug("dbg")
    log.info("frame %d", 7)
    log.warning("two\nlines\rhere")
    log.error("bad")
    return out.getvalue().splitlines()


def test_journald_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert emit(monkeypatch, journald=True) == [
        "<7>capture: dbg",
        "<6>capture: frame 7",
        "<4>capture: two\\nlines\\rhere",
        "<3>capture: bad",
    ]


def test_terminal_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    assert emit(monkeypatch, journald=False) == [
        "DEBUG capture: dbg",
        "INFO capture: frame 7",
        "WARNING capture: two\\nlines\\rhere",
        "ERROR capture: bad",
    ]


def test_level_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    setup_logging("warning", out)
    logging.getLogger("node.x").info("hidden")
    logging.getLogger("node.x").warning("shown")
    assert out.getvalue() == "WARNING x: shown\n"
