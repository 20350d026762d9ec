"""A console log handler left by one test must not break the next test's stderr."""

from __future__ import annotations

import io
import logging
import sys

from agent.logs import setup_logging
from tests.fixtures.logging_cleanup import drop_agent_handlers


def test_handlers_bound_to_a_closed_stream_are_dropped(monkeypatch) -> None:
    """After the cleanup a warning goes nowhere broken: no '--- Logging error ---' on stderr."""
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    setup_logging(None, console=True)
    captured.close()  # what pytest does to its capture stream after the test
    assert drop_agent_handlers() == 1
    errors = io.StringIO()
    monkeypatch.setattr(sys, "stderr", errors)
    logging.getLogger("wallets.ogmios").warning("cannot reach Ogmios")
    assert "Logging error" not in errors.getvalue()
