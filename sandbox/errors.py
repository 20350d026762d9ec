"""Errors raised by the sandbox (devnet and T API twin).

SandboxError
├── LedgerRejection   the ledger refused a transaction; Ogmios ``code``, ``message`` and ``data``
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
