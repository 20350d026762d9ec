"""Errors raised by the sandbox (devnet and T API twin).

SandboxError
├── LedgerRejection   the ledger refused a transaction; Ogmios ``code``, ``message`` and ``data``
├── MempoolFullError  no room in the mempool until a block makes some (a node's submit waits)
├── PointNotFoundError  a chain point outside the devnet's recent history
└── SandboxConfigError  bad sandbox options or billing config
"""

from __future__ import annotations

from typing import Any


class SandboxError(Exception):
    """Root of every error the sandbox raises."""

    exit_code = 1


class LedgerRejection(SandboxError):
    """A submitted transaction broke a ledger rule. Carries the Ogmios error code and data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class SandboxConfigError(SandboxError):
    """Bad sandbox options or billing configuration."""


def require_web_extra(service: str) -> None:
    """Refuse in one line when the sandbox's web servers are not installed (they are an extra)."""
    from importlib.util import find_spec

    missing = [name for name in ("fastapi", "uvicorn", "multipart") if find_spec(name) is None]
    if missing:
        raise SandboxConfigError(
            f"{service} needs the sandbox's web servers ({', '.join(missing)} missing): "
            "pip install 'cardano-pay-agent[sandbox]'")


class MempoolFullError(SandboxError):
    """The mempool cannot take the transaction until a block makes room (a node's submit waits)."""

    def __init__(self, size_bytes: int, capacity_bytes: int) -> None:
        super().__init__(f"the mempool is full ({size_bytes} of {capacity_bytes} bytes)")
        self.size_bytes = size_bytes
        self.capacity_bytes = capacity_bytes


class PointNotFoundError(SandboxError):
    """A point that is not (or no longer) in the devnet's recent history."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
