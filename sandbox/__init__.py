"""The local Cardano devnet (Ogmios v6 over a rule-enforcing ledger) and the T API twin.

Heavy modules are loaded on first use (PEP 562), so ``import sandbox`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from sandbox.errors import LedgerRejection, SandboxConfigError, SandboxError

_LAZY = {
    "Ledger": "sandbox.utxo_ledger",
    "LedgerParams": "sandbox.utxo_ledger",
    "Devnet": "sandbox.devnet",
    "DEVNET_TOKEN": "sandbox.devnet",
    "ApiTwin": "sandbox.twin",
    "TwinConfig": "sandbox.billing",
    "load_twin_config": "sandbox.billing",
    "create_app": "sandbox.tapi",
}

__all__ = ["DEVNET_TOKEN", "ApiTwin", "Devnet", "Ledger", "LedgerParams", "LedgerRejection",
           "SandboxConfigError", "SandboxError", "TwinConfig", "create_app", "load_twin_config"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
