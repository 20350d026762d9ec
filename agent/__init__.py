"""cardano-pay-agent: pays x402 invoices for API calls from a Cardano wallet, unattended.

Public names are loaded on first use (PEP 562), so ``cardano-agent --help`` does not pay
for importing pycardano.
"""

from __future__ import annotations

import importlib
from typing import Any

from agent.errors import (
    AgentError,
    ApiError,
    ApprovalRequiredError,
    BudgetExceededError,
    ConfigError,
    InvoiceError,
    JobError,
    PaymentError,
    PaymentRefusedError,
    PolicyError,
    ServerFlowError,
    StoreError,
    TransientApiError,
)

_LAZY = {
    "Agent": "agent.app",
    "TClient": "agent.tapi",
    "X402Auth": "agent.auth",
    "AsyncX402Auth": "agent.auth",
    "Invoice": "agent.x402",
    "parse_invoice": "agent.x402",
}

__all__ = [
    "Agent",
    "AgentError",
    "ApiError",
    "ApprovalRequiredError",
    "AsyncX402Auth",
    "BudgetExceededError",
    "ConfigError",
    "Invoice",
    "InvoiceError",
    "JobError",
    "PaymentError",
    "PaymentRefusedError",
    "PolicyError",
    "ServerFlowError",
    "StoreError",
    "TClient",
    "TransientApiError",
    "X402Auth",
    "parse_invoice",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
