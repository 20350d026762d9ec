"""The twin's billing gate: api-key, partner credits or an x402 invoice, decided per call.

``Gate.charge`` runs after a request body has been validated and before any work is done,
so a refused or failed attempt never consumes an invoice or credits anything.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from fastapi import HTTPException

from sandbox.billing import Partner, TwinConfig
from sandbox.invoices import CreditBook, Invoice, InvoiceStateError, InvoiceStore, Output
from sandbox.verifier import OgmiosUnreachableError, ProofRefusedError, TxView, Verifier, decode_tx, parse_proof

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Charge:
    """How a call was paid: ``api-key``, ``x402`` (with its invoice and tx) or ``prepaid``."""

    kind: str
    invoice_id: str | None = None
    tx_hash: str | None = None


def refuse(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> HTTPException:
    """Return the HTTP error for a refusal: ``detail`` is the one line ``"<code>: <message>"``."""
    return HTTPException(status, detail=f"{code}: {message}", headers=dict(headers or {}))


def _valid_devnet_address(text: str) -> bool:
    from wallets.address import parse_address_any_case
    from wallets.errors import AddressError

    try:
        return parse_address_any_case(text).testnet
    except AddressError:
        return False


class Gate:
    """Decides whether a call may run, issuing and settling x402 invoices as needed."""

    def __init__(self, config: TwinConfig, verifier: Verifier, *, clock: Clock,
                 store: InvoiceStore | None = None, credits: CreditBook | None = None,
                 sweeper: Any = None) -> None:
        self.config = config
        self.verifier = verifier
        self.sweeper = sweeper  # sandbox.sweep.PayeeSweeper when the payee spends what it receives
        self.clock = clock
        self.store = store or InvoiceStore()
        self.credits = credits or CreditBook()
        self._rng = random.Random(config.faults.seed)
        self._rng_lock = threading.Lock()

    def roll(self, rate: float) -> bool:
        """Return True with probability ``rate`` (seeded, so a test run is repeatable)."""
        if rate <= 0.0:
            return False
        with self._rng_lock:
            return self._rng.random() < rate

    def charge(self, headers: Mapping[str, str], route: str, *, fingerprint: str) -> Charge:
        """Let the call run (returning how it was paid) or raise the 400/401/402/403 answer."""
        key = headers.get("api-key")
        partner_name = headers.get("x-partner")
        if route == "images/variations" or (key is not None and partner_name is None):
            return self._api_key(key, route)
        partner = None
        if partner_name is not None:
            partner = self.config.partners.get(partner_name)
            if partner is None:
                raise refuse(403, "unknown_partner", f"no partner tier named {partner_name!r}")
        wallet = headers.get("x-wallet-address")
        if wallet is not None and not _valid_devnet_address(wallet):
            raise refuse(400, "invalid_wallet_address", "X-Wallet-Address is not a devnet address")
        batch = partner is not None and partner.batch_target > 1
        if batch and wallet is None:
            raise HTTPException(400, detail="wallet_address_required_for_prepaid_batches")
        invoice_id, proof = headers.get("x-invoice-id"), headers.get("x-payment")
        if invoice_id is not None or proof is not None:
            if invoice_id is None or proof is None:
                raise refuse(402, "payment_headers_incomplete", "send X-Invoice-Id and X-Payment together")
            try:
                return self._settle(invoice_id, proof, route, partner, wallet if batch else None)
            except HTTPException as exc:
                # A client re-sending the proof of the batch it already paid draws on that batch.
                consumed = str(exc.detail).startswith("invoice_consumed")
                if batch and consumed and partner and wallet and self.credits.draw(partner.name, wallet, now=self.clock()):
                    return Charge("prepaid")
                raise
        now = self.clock()
        if batch and partner is not None and wallet is not None and self.credits.draw(partner.name, wallet, now=now):
            return Charge("prepaid")
        invoice = self.issue(route, partner, wallet if batch else None, fingerprint=fingerprint, now=now)
        raise HTTPException(402, detail=invoice.to_402())

    def check_api_key(self, headers: Mapping[str, str], route: str) -> None:
        """Raise 401/403 if the request carries an api-key (and no partner) that may not call ``route``."""
        if headers.get("api-key") is not None and headers.get("x-partner") is None:
            self._api_key(headers.get("api-key"), route)

    def refresh(self, invoice_id: str) -> Invoice | None:
        """Return the invoice, first promoting a ``submitted`` one to ``confirmed`` if its tx is now on the ledger."""
        now = self.clock()
        inv = self.store.get(invoice_id, now=now)
        if inv is None or inv.status != "submitted" or inv.tx_hash is None:
            return inv
        try:
            view = self.verifier.reader.ledger_outputs(inv.tx_hash)
            if view is not None:
                self.verifier.check(view, inv.outputs)
                return self.store.advance(invoice_id, "confirmed", tx_hash=inv.tx_hash, now=now)
        except (OgmiosUnreachableError, ProofRefusedError, InvoiceStateError) as exc:
            log.info("status of %s not refreshed: %s", invoice_id, exc)
        return self.store.get(invoice_id, now=now)

    def _api_key(self, key: str | None, route: str) -> Charge:
        spec = self.config.api_keys.get(key) if key is not None else None
        if spec is None and key is None:
            only = " (images/variations is api-key only)" if route == "images/variations" else ""
            raise refuse(401, "missing_api_key", f"an api-key header is required{only}")
        if spec is None:
            raise refuse(401, "invalid_api_key", "the api-key is not valid")
        if not spec.allows(route):
            raise refuse(403, "insufficient_privileges", f"this api-key may not call {route}")
        return Charge("api-key")

    def issue(self, route: str, partner: Partner | None, wallet: str | None, *, fingerprint: str,
              now: datetime) -> Invoice:
        """Issue and store a fresh invoice for ``route`` under ``partner``'s tier."""
        need = self.config.required_payment(route, partner)
        outputs = tuple(Output(a, amt, asset, role) for a, amt, asset, role in need.outputs)
        return self.store.issue(
            route=route, fingerprint=fingerprint, chain=self.config.chain, asset_label=self.config.asset_label,
            amount_units=need.amount_units, decimals=self.config.decimals, outputs=outputs,
            split_mode=partner.split_mode if partner and partner.outputs else None,
            partner=partner.name if partner else None, batch_target=partner.batch_target if partner else 1,
            wallet=wallet, issued_at=now, expires_at=now + timedelta(seconds=self.config.invoice_timeout_s),
        )

    def _settle(self, invoice_id: str, proof: str, route: str, partner: Partner | None,
                wallet: str | None) -> Charge:
        try:
            return self._verify(invoice_id, proof, route, partner, wallet)
        except ProofRefusedError as exc:
            log.info("payment for %s refused: %s", invoice_id, exc.code)
            raise refuse(402, exc.code, exc.message) from None
        except InvoiceStateError as exc:
            raise refuse(402, exc.code, exc.message) from None
        except OgmiosUnreachableError as exc:
            raise refuse(503, "chain_unavailable", str(exc), {"Retry-After": "1"}) from None

    def _verify(self, invoice_id: str, proof: str, route: str, partner: Partner | None,
                wallet: str | None) -> Charge:
        now = self.clock()
        inv = self.store.get(invoice_id, now=now)
        if inv is None:
            raise ProofRefusedError("unknown_invoice", f"this server never issued invoice {invoice_id[:80]!r}")
        if inv.status in ("consumed", "expired", "failed"):
            raise ProofRefusedError(f"invoice_{inv.status}", f"invoice {invoice_id} is {inv.status}")
        if inv.route != route:
            raise ProofRefusedError("invoice_route_mismatch", f"invoice {invoice_id} is for {inv.route}, not {route}")
        if inv.partner != (partner.name if partner else None) or inv.wallet != wallet:
            raise ProofRefusedError("invoice_partner_mismatch",
                                      f"invoice {invoice_id} was issued to another partner or wallet")
        kind, value = parse_proof(proof)
        cbor_view: TxView | None = None
        if isinstance(value, bytes):
            cbor_view = decode_tx(value)
            tx_id = cbor_view.tx_id
        else:
            tx_id = value
        owner = self.store.owner_of(tx_id)
        if owner is not None and owner != invoice_id:
            raise ProofRefusedError("transaction_already_used", f"transaction {tx_id} already paid invoice {owner}")
        if inv.tx_hash is not None and inv.tx_hash != tx_id:
            raise ProofRefusedError("invoice_bound_to_other_transaction",
                                      f"invoice {invoice_id} is being paid by {inv.tx_hash}")
        view = self.verifier.locate(tx_id)
        if view is None and cbor_view is not None and isinstance(value, bytes):
            view = self.verifier.submit_proof(cbor_view, value, inv.outputs)
        elif view is None:
            if inv.status == "submitted" and now >= inv.expires_at:
                self.store.advance(invoice_id, "failed", now=now, error="payment vanished before it confirmed")
                raise ProofRefusedError("invoice_failed", f"invoice {invoice_id} expired before its payment confirmed")
            raise ProofRefusedError("payment_not_found", f"transaction {tx_id} is neither on the ledger nor in the mempool")
        else:
            self.verifier.check(view, inv.outputs)
        if view.where != "ledger" and not self.config.accept_mempool:
            if inv.status == "pending":
                self.store.advance(invoice_id, "submitted", tx_hash=tx_id, now=now)
            raise HTTPException(402, detail=self._progress(invoice_id, "pending", tx_id), headers={"Retry-After": "1"})
        if self.roll(self.config.faults.after_payment_402_rate):
            if inv.status != "confirmed":
                self.store.advance(invoice_id, "confirmed", tx_hash=tx_id, now=now)
            raise HTTPException(402, detail=self._progress(invoice_id, "submitted", tx_id), headers={"Retry-After": "1"})
        self.store.advance(invoice_id, "consumed", tx_hash=tx_id, now=now)
        if partner is not None and wallet is not None and partner.batch_target > 1:
            self.credits.credit(partner.name, wallet, partner.batch_target, now=now, validity_s=partner.batch_validity_s)
            self.credits.draw(partner.name, wallet, now=now)
        log.info("invoice %s paid by %s (%s)", invoice_id, tx_id, view.where)
        if self.sweeper is not None:
            self.sweeper.sweep_payment(tx_id)
        return Charge("x402", invoice_id, tx_id)

    def _progress(self, invoice_id: str, status: str, tx_id: str) -> dict:
        inv = self.store.get(invoice_id, now=self.clock())
        assert inv is not None
        return {"version": "0.1", "invoiceId": invoice_id, "status": status, "txHash": tx_id,
                "chain": inv.chain, "message": "payment seen; retry with the same headers"}
