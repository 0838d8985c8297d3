"""Shared test set-up."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _node_logging_restored() -> Iterator[None]:
    """A command run in-process (`main(["agent", ...])`) points the `node` loggers at stderr
    and stops propagation, as the real process should; put them back so that later tests'
    `caplog` still sees the node's log lines."""
    logger = logging.getLogger("node")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
