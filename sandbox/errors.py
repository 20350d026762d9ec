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


def require_web_extra(service: str) -> None:
    """Refuse in one line when the sandbox's web servers are not installed (they are an extra)."""
    from importlib.util import find_spec

    missing = [name for name in ("fastapi", "uvicorn", "multipart") if find_spec(name) is None]
    if missing:
        raise SandboxConfigError(
            f"{service} needs the sandbox's web servers ({', '.join(missing)} missing): "
            "pip install 'cardano-pay-agent[sandbox]'")
