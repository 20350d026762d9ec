"""Paying an invoice from the wallet: the ``PaymentHandler`` behind ``X402Auth``.

Order of steps, each durable before the next side effect::

    parse ─► policy ─► reserve budget (ledger row ``reserved``) ─► build + sign
          ─► record the signed tx (``signed``) ─► submit (``submitted``) ─► proof

Refusals before the reservation are recorded as ``refused`` rows and nothing is built;
anything that fails between the reservation and the submission releases the row and the
wallet inputs, so nothing is paid and no budget stays held.

Crash safety (:mod:`agent.recovery`): each unfinished row is owned by the live payer that
made it; :meth:`WalletPayer.recover` takes over only rows whose owner is gone, and decides
from evidence (mempool, chain sync from the slot the row was signed at), never from missing
unspent outputs. A signed transaction that landed or waits in the mempool is kept, and its
job retries the call with the stored proof (:meth:`WalletPayer.resume_proof`); one that is
nowhere while its TTL is open is submitted again, byte for byte (never rebuilt); one that can
provably never land (TTL passed, or an input spent by another transaction) is released, and
its job starts over. Without such evidence a row stays as it is: never released on a guess,
never released because a later submit failed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Iterator

from agent.approvals import Approvals, PayeePins, invoice_terms
from agent.auth import Proof, proof_headers, response_detail
from agent.faults import crash_point
from agent.errors import (
    AgentError,
    ApprovalRequiredError,
    BudgetExceededError,
    InvoiceError,
    PaymentError,
    PaymentInFlightError,
    PolicyError,
    StopRequestedError,
)
from agent import recovery
from agent.lanes import HOST as LANES_HOST
from agent.ledger import RESERVED, SIGNED, SUBMITTED, PaymentRow, SpendLedger
from agent.policy import Decision, PaymentPolicy, check_invoice
from agent.x402 import Invoice, PaymentPending, parse_402
from wallets.errors import (
    ChainUnavailableError,
    InputsSpentError,
    OutsideValidityError,
    SubmitError,
    WalletError,
)
from wallets.networks import NetworkInfo
from wallets.slots import slot_now
from wallets.types import LOVELACE, ProtocolParams, Tip

if TYPE_CHECKING:
    import httpx

    from agent.workers import ProcessRegistry
    from wallets.chain import Chain
    from wallets.payment import SignedPayment
    from wallets.sender import PaymentSender

log = logging.getLogger(__name__)

# Rows written before the ledger kept the invoice's expiry (payments.expires_at) resume with this
# much time to have the proof accepted: the invoice it paid is not known any more.
LEGACY_PROOF_WINDOW_S = 300.0

TTL_MARGIN_S = 5
"""Seconds kept between the transaction's TTL and the invoice's expiry (clock skew)."""
TIP_REUSE_S = 1.0
"""A payment reuses the chain tip another payment read less than this long ago (see ``_read_tip``)."""
MIN_PAYABLE_S = 15
"""An invoice with less time left than this is not worth paying: it would expire in flight."""


@dataclass(frozen=True, slots=True)
class JobContext:
    """Who is paying: the job (if any), its tags and its named budget."""

    job_id: int | None = None
    tags: tuple[str, ...] = ()
    budget: str | None = None
    on_state: Callable[[str], None] | None = None
    """Told ``paying`` before a payment is built and ``awaiting_settlement`` once it is sent."""
    confirm_overpay: Callable[[str], bool] | None = None
    """Asked (with a sentence) whether to pay when no change output is possible and the rest of
    the wallet's coins would go to the fee beyond ``max_fee_overpay``; None (unattended): refuse."""

    def notify(self, state: str) -> None:
        """Report the job's payment progress (never lets a reporting failure stop a payment)."""
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception as exc:  # noqa: BLE001 - progress display only
                log.debug("job %s: could not record state %s: %s", self.job_id, state, exc)

    @property
    def budget_tags(self) -> tuple[str, ...]:
        """Tags used to match budgets: the job's tags plus ``budget:<name>`` for its named budget."""
        return self.tags + ((f"budget:{self.budget}",) if self.budget else ())


_context = threading.local()


@contextmanager
def job_context(ctx: JobContext) -> Iterator[None]:
    """Attribute every payment made in this thread, inside the block, to ``ctx``."""
    previous = getattr(_context, "value", None)
    _context.value = ctx
    try:
        yield
    finally:
        _context.value = previous


def current_job() -> JobContext:
    """The job context of this thread (an anonymous one outside any job)."""
    return getattr(_context, "value", None) or JobContext()


def estimate_fee_lovelace(n_outputs: int, params: ProtocolParams) -> int:
    """A safe upper estimate of the fee before building: used to hold budget, then trued up."""
    size = 450 + 110 * (n_outputs + 1)
    return params.min_fee_coefficient * size + params.min_fee_constant


class WalletPayer:
    """Pays invoices from one wallet, under a policy and budgets, recording every step.

    Args:
        sender: ``wallets.sender.PaymentSender`` for the wallet.
        chain: chain access (tip for the TTL, mempool and ledger checks on recovery).
        ledger: the spend ledger (with its budget book).
        policy: the payment policy.
        pins, approvals: payee pins and parked approvals (``agent.approvals``).
        network: the wallet's network.
        proof: ``"hash"`` (submit, send the tx id) or ``"cbor"`` (send the signed CBOR).
        partner: partner name for billing headers, if any.
        clock: epoch seconds.
        stopping: once set (SIGTERM), no new payment is started.
    """

    def __init__(self, *, sender: PaymentSender, chain: Chain, ledger: SpendLedger, policy: PaymentPolicy,
                 pins: PayeePins, approvals: Approvals, network: NetworkInfo, proof: str = "hash",
                 partner: str | None = None, clock: Callable[[], float] = time.time,
                 stopping: threading.Event | None = None) -> None:
        if proof not in ("hash", "cbor"):
            raise AgentError(f"proof must be 'hash' or 'cbor', not {proof!r}")
        self.sender = sender
        self.chain = chain
        self.ledger = ledger
        self.policy = policy
        self.pins = pins
        self.approvals = approvals
        self.network = network
        self.proof_mode = proof
        self.partner = partner
        self.wallet_address: str = sender.address
        self.clock = clock
        self.stopping = stopping
        self.owner = recovery.new_owner()
        """This payer's id as the owner of the rows it makes (``agent.recovery``)."""
        self._active: set[int] = set()  # rows a thread of this payer is building or submitting now
        self._active_lock = threading.Lock()
        self._refused_open: set[int] = set()  # v2 rows a server refused while it holds their signed bytes
        self._refused_lock = threading.Lock()
        self._tip_read: tuple[float, Tip] | None = None  # (monotonic time, tip) of the last tip read

    def close(self) -> None:
        """This payer stops: rows it left unfinished may be recovered, by this process too."""
        recovery.forget_owner(self.owner)

    # -- PaymentHandler ---------------------------------------------------------------------
    def pay(self, request: httpx.Request, response_body: bytes) -> Proof:
        """Pay the invoice in a 402 body for ``request``; raise an AgentError to refuse (nothing paid)."""
        if self.stopping is not None and self.stopping.is_set():
            raise StopRequestedError("the agent is stopping: no new payment started")
        now = self.clock()
        # Expiry is judged by the stricter of the local clock and the chain's (a slow local
        # clock must not make an expired invoice look payable, nor stretch the TTL).
        tip = self._read_tip()  # once per payment: judging expiry, the TTL and recovery's sync point
        now_dt = datetime.fromtimestamp(self._judged_now(now, tip=tip), tz=timezone.utc)
        try:
            body = json.loads(response_body or b"null")
        except ValueError:
            raise InvoiceError("the 402 answer is not JSON: no invoice to pay") from None
        except RecursionError:
            raise InvoiceError("the 402 answer nests JSON too deeply: no invoice to pay") from None
        parsed = parse_402(body, now=now_dt)
        if isinstance(parsed, PaymentPending):
            raise InvoiceError(f"the server says invoice {parsed.invoice_id} is {parsed.status}, "
                               "but this call paid nothing: refusing to guess")
        invoice = parsed
        host = request.url.netloc.decode() if isinstance(request.url.netloc, bytes) else str(request.url.netloc)
        route = request.url.path
        ctx = current_job()

        existing = self.ledger.by_invoice(invoice.invoice_id)
        if existing is not None and existing.state in (RESERVED, SIGNED):
            existing = self._settle_left_behind(existing)  # recovery: evidence decides, never a guess
        if existing is not None and existing.state in (SIGNED, SUBMITTED):
            log.info("invoice %s already paid by payment %s; presenting its proof", invoice.invoice_id, existing.id)
            return self._proof(existing, invoice.expires_at, partner=request.headers.get("X-Partner"))
        if existing is not None and existing.paid:
            raise PaymentError(f"invoice {invoice.invoice_id} was already paid ({existing.state}): never paid twice")
        # A refused or released row paid nothing: the invoice is judged afresh.

        params = self.chain.protocol_params()
        fee_estimate = estimate_fee_lovelace(len(invoice.outputs), params)
        estimated_cost = self._cost_estimate(invoice, params) + fee_estimate

        def record_refusal(reason: str) -> None:
            self.ledger.record_refusal(invoice_id=invoice.invoice_id, host=host, route=route, job_id=ctx.job_id,
                                       reason=reason, now=now, amounts=invoice.total_by_asset(),
                                       outputs=invoice.outputs, tags=ctx.tags)

        try:
            if invoice.seconds_left(now_dt) < MIN_PAYABLE_S:
                raise PolicyError(f"invoice {invoice.invoice_id} expires in {invoice.seconds_left(now_dt)}s: "
                                  "too close to pay safely", reason="expired")
            decision = self._authorize(invoice, host=host, route=route, now=now, now_dt=now_dt,
                                       cost_lovelace=estimated_cost, what=f"invoice {invoice.invoice_id}")
        except PolicyError as exc:
            if exc.reason == "payee_changed":
                approval_id = self.approvals.park(invoice_id=invoice.invoice_id, host=host, route=route,
                                                  job_id=ctx.job_id, terms=invoice_terms(invoice, host),
                                                  summary={"new_payees": sorted(invoice.payees)}, now=now)
                # Same error type, its message naming the approval that lets the new payee in.
                exc.args = (f"{exc}; if the new payee is right, run `cardano-agent approve {approval_id}`",)
                setattr(exc, "approval_id", str(approval_id))
            record_refusal(f"{exc.reason}: {exc}")
            raise
        try:
            row = self._reserve(invoice, host=host, route=route, fee_estimate=fee_estimate, now=now,
                                partner=request.headers.get("X-Partner") or invoice.partner,
                                batch_target=invoice.batch_target or 1)
        except BudgetExceededError as exc:
            record_refusal(f"budget: {exc}")
            raise
        crash_point("after_reserve")
        ctx.notify("paying")
        with self._working_on(row.id):
            proof = self._build_and_send(invoice, row, decision.pin, host, partner=request.headers.get("X-Partner"),
                                         tip=tip)
        ctx.notify("awaiting_settlement")
        return proof

    def pay_v2(self, request: httpx.Request, response: httpx.Response) -> Proof:
        """Pay an x402 v2 (or v1) 402 for ``request`` (see ``agent.x402v2_payer``)."""
        from agent import x402v2_payer

        return x402v2_payer.pay(self, request, response)

    def settled(self, proof: Proof, response: httpx.Response) -> None:
        """The paid retry succeeded: the payment is settled."""
        if proof.payment_id is None:
            return
        if proof.dialect != "t":
            from agent import x402v2_payer

            return x402v2_payer.settled(self, proof, response)
        row = self.ledger.get(int(proof.payment_id))
        if row.state in (SUBMITTED, "unsettled"):
            self.ledger.mark_settled(row.id, now=self.clock())

    def refused(self, proof: Proof, response: httpx.Response) -> None:
        """The server refused a payment already made: mark it unsettled; it is never paid again."""
        if proof.payment_id is None:
            return
        if proof.dialect != "t":
            from agent import x402v2_payer

            return x402v2_payer.refused(self, proof, response)
        row = self.ledger.get(int(proof.payment_id))
        detail = response_detail(response)
        reason = f"HTTP {response.status_code}: {json.dumps(detail)[:300]}"
        if row.state == SIGNED:
            if self.proof_mode == "hash" and not self._judge(row).out_there:
                # We never submitted it and it is nowhere: nothing was paid. Recovery decides.
                log.warning("payment %s for invoice %s refused before it was sent: %s", row.id, row.invoice_id,
                            reason)
                return
            self.ledger.mark_submitted(row.id, now=self.clock())
        if self.ledger.get(row.id).state == SUBMITTED:
            self.ledger.mark_unsettled(row.id, reason, now=self.clock())
        log.warning("payment %s for invoice %s refused after paying: %s", row.id, row.invoice_id, reason)

    # -- steps ------------------------------------------------------------------------------
    def _build_and_send(self, invoice: Invoice, row: PaymentRow, pin: frozenset[str], host: str, *,
                        partner: str | None, tip: Tip | None = None) -> Proof:
        owner = str(row.id)
        try:
            # ``tip``: read before this transaction exists (in ``pay``), so recovery may read from it.
            tip = tip if tip is not None else self.chain.tip()
            now = self._judged_now(self.clock(), tip=tip)
            seconds_left = invoice.seconds_left(datetime.fromtimestamp(now, tz=timezone.utc))
            ttl_slot = self._slot_now(now, tip=tip) + max(1, seconds_left - TTL_MARGIN_S)
            payment = self.sender.build(invoice.outputs, ttl_slot=ttl_slot, metadata=invoice.metadata(), owner=owner)
        except (AgentError, WalletError) as exc:
            self._not_built(row, exc)
            raise
        row = self._sign(row, payment, tip, check_overpay=True)
        crash_point("after_sign")
        if self.proof_mode == "hash":
            try:
                self.sender.submit(payment, owner=owner)
            except ChainUnavailableError:
                # The submission may or may not have reached the node: keep the signed row;
                # recovery decides from the chain, and never builds a second transaction.
                raise
            except SubmitError as exc:
                self._after_failed_submit(row, exc)  # returns only if the transaction is out there
        else:
            # The server submits the CBOR; track it so its change can be chained on once seen.
            self.sender.track(owner, payment.tx_id, inputs=payment.inputs, change=payment.change,
                              ttl_slot=payment.ttl_slot)
        crash_point("after_submit")
        row = self.ledger.mark_submitted(row.id, now=self.clock())
        log.info("paid invoice %s: tx %s, %d lovelace + fee %d", invoice.invoice_id, payment.tx_id,
                 payment.cost_lovelace - payment.fee_lovelace, payment.fee_lovelace)
        return self._proof(row, invoice.expires_at, partner=partner)

    # -- the steps both dialects share (``agent.x402v2_payer`` uses them too) ------------------
    def _authorize(self, invoice: Invoice, *, host: str, route: str, now: float, now_dt: datetime,
                   cost_lovelace: int, what: str) -> Decision:
        """Policy, approval and first-contact pins for ``invoice``: its decision, or a PolicyError.

        ``now_dt`` is the instant the policy judges expiry by; ``now`` stamps approvals and pins.
        Above the approval threshold and not yet approved, the payment is parked for
        ``cardano-agent approve`` and ApprovalRequiredError (``what`` costs about...) is raised.
        Nothing is recorded in the ledger: the caller records its refusal its own way.
        """
        ctx = current_job()
        decision = check_invoice(invoice, self.policy, network=self.network, host=host, now=now_dt,
                                 cost_lovelace=cost_lovelace, pinned=self.pins.pinned(host))
        terms = invoice_terms(invoice, host)
        if decision.approval_required and not self.approvals.approved_for(
                invoice_id=invoice.invoice_id, terms=terms, job_id=ctx.job_id):
            approval_id = self.approvals.park(
                invoice_id=invoice.invoice_id, host=host, route=route, job_id=ctx.job_id, terms=terms,
                summary={"cost_lovelace": cost_lovelace, "payees": sorted(invoice.payees),
                         "amounts": invoice.total_by_asset(), "expires_at": terms["expires_at"]}, now=now)
            raise ApprovalRequiredError(
                f"{what} costs about {cost_lovelace / 1e6:.6f} ADA, above the approval threshold: "
                f"run `cardano-agent approve {approval_id}`", approval_id=str(approval_id))
        if decision.pin:
            # First contact: pin atomically; a competing first contact that pinned other
            # payees first wins, and this invoice is judged against its pins (parked).
            pinned = self.pins.claim_first(host, decision.pin, now)
            if pinned != decision.pin:
                check_invoice(invoice, self.policy, network=self.network, host=host, now=now_dt,
                              cost_lovelace=cost_lovelace, pinned=pinned)
        return decision

    def _reserve(self, invoice: Invoice, *, host: str, route: str, fee_estimate: int, now: float,
                 partner: str | None = None, batch_target: int = 1) -> PaymentRow:
        """Hold the budget for ``invoice`` (row ``reserved``, owned by this payer); BudgetExceededError if it cannot."""
        ctx = current_job()
        return self.ledger.reserve(invoice_id=invoice.invoice_id, host=host, route=route, job_id=ctx.job_id,
                                   tags=ctx.budget_tags, outputs=invoice.outputs, amounts=invoice.total_by_asset(),
                                   fee_estimate_lovelace=fee_estimate, now=now,
                                   expires_at=invoice.expires_at.timestamp(), partner=partner,
                                   batch_target=batch_target, owner=self.owner)

    def _not_built(self, row: PaymentRow, exc: Exception) -> None:
        """Building ``row``'s transaction failed: free its inputs and its budget (nothing was paid)."""
        self.sender.release(str(row.id))
        self.ledger.release(row.id, f"not built: {exc}", now=self.clock())

    def _sign(self, row: PaymentRow, payment: SignedPayment, tip: Tip, *, check_overpay: bool) -> PaymentRow:
        """Record ``payment`` as ``row``'s signed transaction, signed after ``tip`` (recovery reads from it).

        Refused (inputs freed, row ``refused``, the error raised) if it costs over the per-call
        maximum or the budget with its actual fee, or (``check_overpay``) if it would give the
        rest of the wallet's coins to the fee beyond what the policy or the person allows.
        """
        try:
            if check_overpay:
                self._check_fee_overpay(payment)
            cap = self.policy.max_per_call_lovelace
            if cap is not None and payment.cost_lovelace > cap:
                raise PolicyError(f"payment would cost {payment.cost_lovelace / 1e6:.6f} ADA with its fee, over the "
                                  f"per-call maximum of {cap / 1e6:.6f} ADA", reason="over_max_per_call")
            return self.ledger.mark_signed(row.id, tx_id=payment.tx_id, cbor=payment.cbor,
                                           fee_lovelace=payment.fee_lovelace, inputs=payment.inputs,
                                           ttl_slot=payment.ttl_slot, cost_lovelace=payment.cost_lovelace,
                                           now=self.clock(), sync_point=(tip.slot, tip.id))
        except (PolicyError, BudgetExceededError) as exc:
            self.sender.release(str(row.id))
            self.ledger.mark_refused(row.id, str(exc), now=self.clock())
            raise

    def _read_tip(self) -> Tip | None:
        """The chain tip, or None when the chain cannot say now (the payment then reads it again).

        A tip read less than :data:`TIP_REUSE_S` ago serves again: it is still a point before
        this payment's transaction exists (recovery reads the chain from it; earlier only means
        a few more blocks to read), and expiry and the TTL are judged by the later of it and the
        clock. Many payments a second then cost one tip query, not one each.
        """
        read = self._tip_read
        at = time.monotonic()
        if read is not None and 0 <= at - read[0] < TIP_REUSE_S:
            return read[1]
        try:
            tip = self.chain.tip()
        except WalletError as exc:
            log.debug("chain tip unavailable (%s)", exc)
            return None
        self._tip_read = (at, tip)
        return tip

    def _judged_now(self, now: float, *, tip: Tip | None = None) -> float:
        """``now``, or the start of the chain tip's slot when that is later (the local clock is slow)."""
        try:
            tip_slot = (tip if tip is not None else self.chain.tip()).slot
            started = self.chain.slot_time(tip_slot) if tip_slot > 0 else None
        except WalletError as exc:
            log.debug("chain time unavailable (%s); judging by the local clock", exc)
            return now
        return max(now, started) if started is not None else now

    def _after_failed_submit(self, row: PaymentRow, exc: SubmitError) -> None:
        """The ledger refused our first submission: release only if it provably never lands.

        Returns (so the payment goes on as submitted) if the transaction is in a block or in the
        mempool after all: a 3117 can mean it is already there. Raises otherwise.
        """
        current = self.ledger.get(row.id)
        if current.state != SIGNED or current.owner != self.owner:
            raise PaymentInFlightError(f"payment {row.id} moved on while it was submitted ({current.state}); "
                                       "not touching it") from exc
        if not isinstance(exc, (InputsSpentError, OutsideValidityError)):
            # The node judged these very bytes invalid (fee, signature, size...): they can never land.
            self.sender.release(str(row.id))
            self.ledger.release(row.id, f"rejected by the ledger: {exc}", now=self.clock())
            raise exc
        evidence = self._judge(current)
        if evidence.out_there:
            log.info("payment %s: the ledger answered %s, but the transaction is %s; paid once",
                     row.id, exc.code, evidence.detail)
            self._track(current)
            return
        if evidence.verdict == recovery.NEVER:
            self.sender.release(str(row.id))
            self.ledger.release_unlanded(row.id, evidence.detail, now=self.clock())
            raise exc
        raise PaymentInFlightError(
            f"payment {row.id} for invoice {row.invoice_id}: the ledger answered {exc}; whether it "
            f"landed is not known yet ({evidence.detail}); it is kept until the chain says") from exc

    def _check_fee_overpay(self, payment: SignedPayment) -> None:
        """Before signing: a payment with no change whose fee is above the ledger minimum gives the
        rest of the wallet's coins to the fee. Say so; pay only within ``max_fee_overpay`` or if the
        person at the terminal agrees; otherwise refuse (PolicyError, nothing paid)."""
        from wallets.payment import min_fee

        if payment.change:
            return
        minimum = min_fee(payment.size_bytes, self.chain.protocol_params())
        extra = payment.fee_lovelace - minimum
        if extra <= 0:
            return
        sentence = (f"no change possible: {extra / 1e6:.6f} ADA would go to the fee on top of its "
                    f"{minimum / 1e6:.6f} ADA minimum (what is left would be below the smallest change output)")
        if extra <= self.policy.max_fee_overpay_lovelace:
            log.warning("%s; paying: within [policy] max_fee_overpay_ada", sentence)
            return
        confirm = current_job().confirm_overpay
        if confirm is not None and confirm(sentence + "; pay anyway?"):
            log.warning("%s; paying: agreed at the terminal", sentence)
            return
        raise PolicyError(f"{sentence}; refused: add funds to the wallet, or allow it with [policy] "
                          f"max_fee_overpay_ada = {extra / 1e6:.6f}", reason="fee_overpay")

    def _slot_now(self, now: float, *, tip: Tip | None = None) -> int:
        """The ledger's current slot: from the chain's clock where it has one, never behind the tip."""
        return slot_now(self.chain, now, tip=tip)

    def _proof(self, row: PaymentRow, expires_at: datetime, *, partner: str | None = None) -> Proof:
        assert row.tx_id is not None and row.cbor is not None
        payment = row.tx_id if self.proof_mode == "hash" else row.cbor.hex()
        partner = partner or self.partner
        headers = proof_headers(row.invoice_id, payment, partner=partner,
                                wallet_address=self.wallet_address if partner else None)
        return Proof(invoice_id=row.invoice_id, payment=payment, headers=headers, expires_at=expires_at,
                     payment_id=str(row.id))

    def _cost_estimate(self, invoice: Invoice, params: ProtocolParams) -> int:
        """Lovelace that will leave the wallet, before the fee: ADA outputs plus min-ADA of token outputs."""
        from wallets.payment import min_utxo_lovelace

        total = 0
        for out in invoice.outputs:
            if out.asset == LOVELACE:
                total += out.amount
            else:
                total += min_utxo_lovelace(out.address, 0, {out.asset: out.amount}, params)
        return total

    # -- crash recovery ---------------------------------------------------------------------
    @contextmanager
    def _working_on(self, payment_id: int) -> Iterator[None]:
        with self._active_lock:
            self._active.add(payment_id)
        try:
            yield
        finally:
            with self._active_lock:
                self._active.discard(payment_id)

    def _mine_to_settle(self, row: PaymentRow) -> bool:
        """Take ``row`` over if its owner is gone (or it is ours and no thread works on it)."""
        if row.owner == self.owner:
            with self._active_lock:
                return row.id not in self._active
        if not recovery.owner_is_gone(row.owner, updated_at=row.updated_at, now=self.clock(),
                                      registry=self._registry()):
            return False
        return self.ledger.take_over(row.id, owner=self.owner, previous=row.owner, now=self.clock())

    def _registry(self) -> ProcessRegistry:
        """The shared store's process leases (to judge owners on other hosts)."""
        from agent.workers import ProcessRegistry

        return ProcessRegistry(self.ledger.db)

    def _settle_left_behind(self, row: PaymentRow) -> PaymentRow | None:
        """Before paying an invoice that has a reserved or signed row: resolve that row first.

        Returns the row as it is now (released rows let the invoice be judged afresh); raises
        PaymentInFlightError while a live process works on it or the chain cannot yet tell.
        """
        if not self._mine_to_settle(row):
            raise PaymentInFlightError(f"invoice {row.invoice_id} is being paid (payment {row.id}, "
                                       f"{row.state}) by a live process; not paying it again")
        self._resolve(self.ledger.get(row.id), {})
        row = self.ledger.get(row.id)
        if row.state in (RESERVED, SIGNED):
            raise PaymentInFlightError(f"payment {row.id} for invoice {row.invoice_id} is signed but the chain "
                                       "cannot yet say whether it landed; it is kept, never paid again")
        return row

    def resume_proof(self, job_id: int) -> Proof | None:
        """The proof of a job's payment that left the wallet but is not settled (resolving rows left behind).

        Raises PaymentInFlightError while one of the job's payments is signed and its fate not
        yet known (or another live process works on it): the job must not pay a new invoice then.
        """
        for row in reversed(self.ledger.by_job(job_id)):
            if row.invoice_id.startswith("x402v2:"):  # decided in agent.x402v2_payer (settled ones too)
                from agent import x402v2_payer

                proof = x402v2_payer.resume_proof(self, job_id)
                if proof is not None:
                    return proof
                continue
            if row.state in (RESERVED, SIGNED) and self._mine_to_settle(row):
                self._resolve(self.ledger.get(row.id), {})
                row = self.ledger.get(row.id)
            if row.state in (RESERVED, SIGNED):
                raise PaymentInFlightError(
                    f"job {job_id}: payment {row.id} for invoice {row.invoice_id} is {row.state} and whether it "
                    "landed is not known yet; the job waits rather than paying a new invoice")
            if row.state == SUBMITTED and row.tx_id:
                return self._proof(row, self._stored_expiry(row))
        return None

    def _stored_expiry(self, row: PaymentRow) -> datetime:
        """The invoice's expiry as the row recorded it; rows from before the column get a short window."""
        at = row.expires_at if row.expires_at is not None else self.clock() + LEGACY_PROOF_WINDOW_S
        return datetime.fromtimestamp(at, tz=timezone.utc)

    def recover(self) -> dict[str, int]:
        """Resolve the unfinished payments whose owner is gone; return counts of what was done.

        ``busy``: rows a live process owns (left alone); ``unresolved``: rows the chain cannot
        yet decide (kept as they are, tried again at the next start or payment).
        """
        counts = {"kept": 0, "resubmitted": 0, "released": 0, "unresolved": 0, "busy": 0}
        owners_before = self._reservation_owners()  # before the rows: a reservation made after is live
        unfinished = self.ledger.unfinished()
        self._forget_finished_reservations(owners_before - {str(r.id) for r in unfinished})
        for row in unfinished:
            if not self._mine_to_settle(row):
                counts["busy"] += 1
                continue
            if row.invoice_id.startswith("x402v2:"):  # the facilitator submits: decided from the chain only
                from agent import x402v2_payer

                counts[x402v2_payer.recover_row(self, self.ledger.get(row.id))] += 1
                continue
            self._resolve(self.ledger.get(row.id), counts)
        return counts

    def _resolve(self, row: PaymentRow, counts: dict[str, int]) -> None:
        """Resolve one unfinished row this payer owns, from evidence; count the outcome in ``counts``."""
        def count(key: str) -> None:
            counts[key] = counts.get(key, 0) + 1

        owner = str(row.id)
        if row.state == RESERVED or not row.cbor or not row.tx_id:
            self.sender.release(owner)
            self.ledger.release(row.id, "the agent stopped before signing", now=self.clock())
            count("released")
            return
        evidence = self._judge(row)
        if evidence.out_there:
            self._keep(row, evidence)
            count("kept")
            return
        if evidence.verdict == recovery.NEVER:
            self._let_go(row, evidence)
            count("released")
            return
        if row.ttl_slot is not None and self._slot_now(self.clock()) >= row.ttl_slot:
            log.warning("recovery: payment %s (tx %s) left as %s: %s", row.id, row.tx_id, row.state, evidence.detail)
            count("unresolved")
            return
        try:
            self.chain.submit(row.cbor)
        except ChainUnavailableError as exc:
            log.warning("recovery: payment %s not resubmitted, the chain is unreachable: %s", row.id, exc)
            count("unresolved")
            return
        except SubmitError as exc:
            # Already there (3117), its TTL passed meanwhile (3118), or the bytes are refused:
            # only the chain says which.
            again = self._judge(row)
            if again.out_there:
                self._keep(row, again)
                count("kept")
            elif again.verdict == recovery.NEVER:
                self._let_go(row, again)
                count("released")
            else:
                log.warning("recovery: payment %s resubmission refused (%s) and %s; kept as %s",
                            row.id, exc, again.detail, row.state)
                count("unresolved")
            return
        if row.state == SIGNED:
            self.ledger.mark_submitted(row.id, now=self.clock())
        self._track(row)
        count("resubmitted")
        log.info("recovery: resubmitted payment %s (tx %s)", row.id, row.tx_id)

    def _judge(self, row: PaymentRow) -> recovery.Evidence:
        try:
            slot_now = self._slot_now(self.clock())
        except (ChainUnavailableError, WalletError) as exc:
            return recovery.Evidence(recovery.UNKNOWN, f"the chain could not be read: {exc}")
        return recovery.judge(self.chain, row, slot_now=slot_now, parent_of=self.ledger.by_tx)

    def _keep(self, row: PaymentRow, evidence: recovery.Evidence) -> None:
        if row.state == SIGNED:
            self.ledger.mark_submitted(row.id, now=self.clock())
        self._track(row)
        if row.host == LANES_HOST and evidence.verdict == recovery.LANDED:
            # A split or merge pays only the wallet: no server settles it, being in a block does.
            self.ledger.mark_settled(row.id, now=self.clock())
            log.info("recovery: wallet transaction %s (tx %s) settled: %s", row.id, row.tx_id, evidence.detail)
            return
        log.info("recovery: payment %s (tx %s) kept: %s", row.id, row.tx_id, evidence.detail)

    def _let_go(self, row: PaymentRow, evidence: recovery.Evidence) -> None:
        self.sender.release(str(row.id))
        self.ledger.release_unlanded(row.id, evidence.detail, now=self.clock())
        log.info("recovery: payment %s (tx %s) released: %s", row.id, row.tx_id, evidence.detail)

    def _reservation_owners(self) -> set[str]:
        return self.sender.reservations.owners()

    def _forget_finished_reservations(self, stale_owners: set[str]) -> None:
        """Drop reservations and pending change left by payments that finished before a crash.

        A process killed after a payment settled, but before it saw the confirmation, leaves
        the payment's inputs reserved and its change recorded as spendable; that change may
        since have been spent, and offering it again would fail with 3117. ``stale_owners``
        were read before the unfinished rows, so a payment started meanwhile is never touched.
        """
        for owner in stale_owners:
            self.sender.reservations.release(owner)

    def _track(self, row: PaymentRow) -> None:
        if row.tx_id is None:
            return
        try:
            self.sender.track(str(row.id), row.tx_id, inputs=row.inputs, change=(), ttl_slot=row.ttl_slot)
        except WalletError as exc:
            log.debug("payment %s not tracked: %s", row.id, exc)

