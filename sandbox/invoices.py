"""Invoices the T API twin issued, their state machine, and prepaid partner credits (in memory).

States: ``pending`` (issued, unpaid) → ``submitted`` (payment seen in the mempool, waiting for
a block) → ``confirmed`` (payment verified on the ledger) → ``consumed`` (the paid call was
served). A ``pending`` invoice past its timeout is ``expired``; a ``submitted`` one whose
transaction vanished before it confirmed and after the timeout is ``failed``. A refused
attempt never changes an invoice: only the transitions below do.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Mapping

from sandbox.errors import SandboxError

STATUSES = ("pending", "submitted", "confirmed", "consumed", "expired", "failed")
_NEXT: Mapping[str, frozenset[str]] = {
    "pending": frozenset({"submitted", "confirmed", "consumed", "expired"}),
    "submitted": frozenset({"confirmed", "consumed", "failed"}),
    "confirmed": frozenset({"consumed"}),
    "consumed": frozenset(),
    "expired": frozenset(),
    "failed": frozenset(),
}


class InvoiceStateError(SandboxError):
    """A transition the state machine forbids, or a transaction already bound to another invoice."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Output:
    """One output a paying transaction must contain."""

    address: str
    amount: int
    asset: str
    role: str


def iso(ts: datetime | None) -> str | None:
    """Format a UTC datetime as ISO-8601 with a ``Z`` suffix, or None."""
    return None if ts is None else ts.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Invoice:
    """An issued invoice and where its payment stands."""

    invoice_id: str
    route: str
    fingerprint: str
    chain: str
    asset_label: str
    amount_units: int
    decimals: int
    outputs: tuple[Output, ...]  # payTo first, then the split outputs
    split_mode: str | None
    partner: str | None
    batch_target: int
    wallet: str | None
    issued_at: datetime
    expires_at: datetime
    status: str = "pending"
    tx_hash: str | None = None
    settled_at: datetime | None = None
    error: str | None = None

    @property
    def pay_to(self) -> str:
        """The address that receives the invoice's main output."""
        return self.outputs[0].address

    @property
    def timeout_s(self) -> int:
        """Seconds the invoice stays payable after it was issued."""
        return int((self.expires_at - self.issued_at).total_seconds())

    def to_402(self) -> dict:
        """Return the canonical ``detail`` object of the 402 answer (x402-cardano.md section 1)."""
        extra: dict = {"lovelace": self.asset_label == "ADA", "babel": False}
        if self.partner is not None:
            extra["partner"] = self.partner
            extra["batchTarget"] = self.batch_target
        if len(self.outputs) > 1:
            extra["outputs"] = [
                {"address": o.address, "amountUnits": str(o.amount), "asset": self.asset_label, "role": o.role}
                for o in self.outputs[1:]
            ]
            extra["splitMode"] = self.split_mode or "additional"
        return {
            "version": "0.1",
            "invoiceId": self.invoice_id,
            "chain": self.chain,
            "asset": self.asset_label,
            "amountUnits": str(self.amount_units),
            "decimals": self.decimals,
            "payTo": self.pay_to,
            "timeout": self.timeout_s,
            "extra": extra,
        }

    def to_status(self) -> dict:
        """Return the ``GET /payments/status/{id}`` answer (x402-cardano.md section 5)."""
        return {
            "invoiceId": self.invoice_id,
            "status": self.status,
            "txHash": self.tx_hash,
            "chain": self.chain,
            "asset": self.asset_label,
            "amountUnits": str(self.amount_units),
            "expiresAt": iso(self.expires_at),
            "settledAt": iso(self.settled_at),
            "error": self.error,
        }


class InvoiceStore:
    """Thread-safe in-memory invoices plus the map of transactions already used to pay one."""

    def __init__(self, *, retention_s: int = 86_400) -> None:
        self._lock = threading.Lock()
        self._invoices: dict[str, Invoice] = {}
        self._tx_owner: dict[str, str] = {}  # kept after an invoice is forgotten: replays stay refused
        self._retention = timedelta(seconds=retention_s)
        self._issued = 0

    def issue(self, **fields: object) -> Invoice:
        """Store a new ``pending`` invoice with a fresh id; ``fields`` are Invoice's other fields."""
        invoice = Invoice(invoice_id=f"inv_{secrets.token_hex(16)}", **fields)  # type: ignore[arg-type]
        with self._lock:
            self._invoices[invoice.invoice_id] = invoice
            self._issued += 1
            if self._issued % 256 == 0:
                self._forget_before(invoice.issued_at - self._retention)
        return invoice

    def _forget_before(self, cutoff: datetime) -> None:
        # A long-running twin forgets invoices expired more than retention_s ago (status 404 then).
        old = [k for k, inv in self._invoices.items() if inv.expires_at < cutoff and inv.status != "submitted"]
        for key in old:
            del self._invoices[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._invoices)

    def get(self, invoice_id: str, *, now: datetime) -> Invoice | None:
        """Return the invoice (a pending one past its timeout becomes ``expired``), or None."""
        with self._lock:
            invoice = self._invoices.get(invoice_id)
            if invoice is not None and invoice.status == "pending" and now >= invoice.expires_at:
                invoice = replace(invoice, status="expired", error="invoice expired unpaid")
                self._invoices[invoice_id] = invoice
            return invoice

    def owner_of(self, tx_hash: str) -> str | None:
        """Return the id of the invoice that ``tx_hash`` was bound to, if any."""
        with self._lock:
            return self._tx_owner.get(tx_hash)

    def advance(self, invoice_id: str, status: str, *, tx_hash: str | None = None,
                now: datetime | None = None, error: str | None = None) -> Invoice:
        """Move an invoice to ``status``, binding ``tx_hash`` to it; refuse forbidden moves and reused txs."""
        with self._lock:
            invoice = self._invoices.get(invoice_id)
            if invoice is None:
                raise InvoiceStateError("unknown_invoice", f"no invoice {invoice_id}")
            if status not in _NEXT[invoice.status]:
                raise InvoiceStateError(f"invoice_{invoice.status}",
                                        f"invoice {invoice_id} is {invoice.status}; cannot become {status}")
            if tx_hash is not None:
                owner = self._tx_owner.get(tx_hash)
                if owner is not None and owner != invoice_id:
                    raise InvoiceStateError("transaction_already_used",
                                            f"transaction {tx_hash} already paid invoice {owner}")
                if invoice.tx_hash is not None and invoice.tx_hash != tx_hash:
                    raise InvoiceStateError("invoice_bound_to_other_transaction",
                                            f"invoice {invoice_id} is being paid by {invoice.tx_hash}")
                self._tx_owner[tx_hash] = invoice_id
            settled = now if status in ("confirmed", "consumed") and invoice.settled_at is None else invoice.settled_at
            invoice = replace(invoice, status=status, tx_hash=tx_hash or invoice.tx_hash,
                              settled_at=settled, error=error)
            self._invoices[invoice_id] = invoice
            return invoice


@dataclass(frozen=True, slots=True)
class CreditBalance:
    """Prepaid calls left for one (partner, wallet) pair."""

    partner: str
    wallet: str
    remaining: int
    total: int
    expires_at: datetime | None

    def to_json(self) -> dict:
        """Return the ``GET /payments/balance`` answer."""
        return {"partner": self.partner, "wallet": self.wallet, "remaining": self.remaining,
                "total": self.total, "expiresAt": iso(self.expires_at)}


class CreditBook:
    """Prepaid batch credits per (partner, wallet): credited by a paid invoice, drawn one per call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._credits: dict[tuple[str, str], CreditBalance] = {}

    def balance(self, partner: str, wallet: str, *, now: datetime) -> CreditBalance:
        """Return what is left for the pair (zero once the batch has expired)."""
        with self._lock:
            return self._current(partner, wallet, now)

    def _current(self, partner: str, wallet: str, now: datetime) -> CreditBalance:
        bal = self._credits.get((partner, wallet))
        if bal is None or (bal.expires_at is not None and now >= bal.expires_at):
            return CreditBalance(partner, wallet, 0, 0, None)
        return bal

    def credit(self, partner: str, wallet: str, calls: int, *, now: datetime, validity_s: int) -> CreditBalance:
        """Add ``calls`` prepaid calls to the pair; the batch is valid for ``validity_s`` from now."""
        with self._lock:
            bal = self._current(partner, wallet, now)
            bal = CreditBalance(partner, wallet, bal.remaining + calls, bal.total + calls,
                                now + timedelta(seconds=validity_s))
            self._credits[(partner, wallet)] = bal
            return bal

    def draw(self, partner: str, wallet: str, *, now: datetime) -> bool:
        """Take one prepaid call; return False (and change nothing) when none is left."""
        with self._lock:
            bal = self._current(partner, wallet, now)
            if bal.remaining <= 0:
                return False
            self._credits[(partner, wallet)] = replace(bal, remaining=bal.remaining - 1)
            return True
