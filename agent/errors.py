"""Errors raised by the agent package.

AgentError
├── ConfigError               agent.toml or an option is invalid (names the key and line)
├── InvoiceError              a 402 body that is not a payable invoice
│   └── ServerFlowError       the server could not issue an invoice (``payment_flow_error``)
├── PolicyError               an invoice the policy refuses (wrong network, payee, asset, too dear, ...)
│   └── ApprovalRequiredError the payment is parked until a human approves it
├── BudgetExceededError       a budget would be overshot; ``budget``, ``limit``, ``spent``, ``requested``
├── PaymentError              paying failed after the policy allowed it
│   ├── PaymentRefusedError   the server refused a payment already made (row marked ``unsettled``)
│   └── PaymentInFlightError  the invoice's payment is in flight (another process, or its fate unknown): retry later
├── ApiError                  the API answered with an error status; ``status``, ``detail``, ``request_id``
│   └── TransientApiError     5xx, timeouts: retryable
├── JobError                  a job that cannot be added or found
├── StopRequestedError        the agent is stopping (SIGTERM): a wait cut short, no new payment
└── StoreError                the local database failed (locked, full disk); retryable
"""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    """Root of every error the agent package raises."""

    exit_code = 1


class ConfigError(AgentError):
    """The configuration is invalid. The message names the key and, where known, the line."""

    exit_code = 2


class InvoiceError(AgentError):
    """A 402 answer that does not carry a payable invoice."""


class ServerFlowError(InvoiceError):
    """The server said it could not issue an invoice: a server error, not a price."""


class PolicyError(AgentError):
    """The payment policy refuses this invoice. ``reason`` is a short machine-readable code."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ApprovalRequiredError(PolicyError):
    """The payment is above the approval threshold and waits for ``cardano-agent approve``."""

    def __init__(self, message: str, *, approval_id: str) -> None:
        super().__init__(message, reason="approval_required")
        self.approval_id = approval_id


class BudgetExceededError(AgentError):
    """Reserving ``requested`` would take ``budget`` past ``limit`` (``spent`` already used)."""

    def __init__(self, budget: str, limit: int, spent: int, requested: int, asset: str = "lovelace") -> None:
        super().__init__(
            f"budget {budget!r} would be exceeded: {_units(spent, asset)} already used + "
            f"{_units(requested, asset)} for this payment > the limit of {_units(limit, asset)}"
        )
        self.budget = budget
        self.limit = limit
        self.spent = spent
        self.requested = requested
        self.asset = asset


class PaymentError(AgentError):
    """Paying failed after the policy allowed it."""


class PaymentRefusedError(PaymentError):
    """The server refused a payment that was already made; the invoice is never paid again."""


class PaymentInFlightError(PaymentError):
    """The invoice already has a signed payment whose fate is not known yet (retryable, never re-paid).

    Another live process owns it, or the chain cannot yet say whether it landed; a new
    payment for the invoice waits until the chain gives definitive evidence.
    """


class ApiError(AgentError):
    """The API answered with an error status."""

    def __init__(self, message: str, *, status: int, detail: Any = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.request_id = request_id


class TransientApiError(ApiError):
    """A 5xx answer or a timeout: worth retrying with backoff."""


class JobError(AgentError):
    """A job that cannot be added, found or changed."""


class StoreError(AgentError):
    """The local database failed (locked, disk full). Retryable; nothing recorded is lost."""


class StopRequestedError(AgentError):
    """The agent is stopping (SIGTERM): a wait was cut short or a new payment not started.

    Whatever was already paid is durable (``signed``/``submitted``); the job resumes at the
    next start with the proof of that payment.
    """


def _units(quantity: int, asset: str) -> str:
    """A quantity for a person: ADA with six decimals for lovelace, smallest units for a token."""
    if asset == "lovelace":
        whole, frac = divmod(int(quantity), 1_000_000)
        return f"{whole}.{frac:06d} ADA"
    return f"{quantity} {asset}"
