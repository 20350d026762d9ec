"""The local Cardano devnet (Ogmios v6 over a rule-enforcing ledger) and the T API twin."""

from __future__ import annotations

from sandbox.errors import LedgerRejection, SandboxConfigError, SandboxError

__all__ = ["LedgerRejection", "SandboxConfigError", "SandboxError"]
