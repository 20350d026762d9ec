"""The web console: overview, jobs, payments, approvals and schedules, plus /metrics and a JSON API."""

from __future__ import annotations

from typing import Any

__all__ = ["ConsoleServer", "ConsoleSettings"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from agent.console import server

        return getattr(server, name)
    raise AttributeError(name)
