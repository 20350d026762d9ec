"""Paying x402 v2 requirements from the wallet: choose, judge, reserve, build, sign, store; never submit.

The same policy, budgets, pins, approvals and ledger as the T dialect (``agent.payer``), with
the v2 rules: the client signs but never broadcasts; the facilitator submits. Order of steps,
each durable before the next::

    choose among accepts (cheapest first) ─► policy ─► reserve (row ``reserved``) ─► build + sign
      ─► row ``signed`` + the PAYMENT-SIGNATURE stored (table ``x402v2_payments``) ─► send

Never paying twice: the stored header is what every retry presents (after a 5xx, a
``settlement_pending``, a crash and restart) while the transaction's TTL can still land; its
inputs stay reserved until it is seen on chain or the TTL has passed. What became of a
payment whose answer was lost is decided from the chain (``agent.recovery``: mempool and chain
sync from the signing point), never guessed: seen ⇒ paid; provably never landing ⇒ released;
otherwise kept and presented again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Mapping

from agent import recovery
from agent import x402v2 as v2
from agent.auth import Proof
from agent.errors import AgentError, ApprovalRequiredError, BudgetExceededError, PaymentError, PolicyError
from agent.faults import crash_point
from agent.ledger import SETTLED, SIGNED, SUBMITTED, UNSETTLED, PaymentRow
from agent import x402v2_store  # noqa: F401 - registers the x402v2_payments table
from agent.store import Database
from agent.x402 import Invoice
from wallets.errors import AmountError, InsufficientFundsError, WalletError

if TYPE_CHECKING:
    import httpx

    from agent.payer import WalletPayer

log = logging.getLogger(__name__)

DIALECT = "x402v2"
INVOICE_PREFIX = "x402v2:"



@dataclass(frozen=True)
class StoredPayload:
    """The signed, unsubmitted payment as it is presented: header, nonce and TTL instant."""

    payment_id: int
    header_name: str
    header_value: str
    nonce: str
    ttl_at: float
    settle_tx: str | None
    settle_status: str | None
    error_reason: str | None = None

    def __repr__(self) -> str:
        return f"StoredPayload(payment_id={self.payment_id}, nonce={self.nonce!r}, ttl_at={self.ttl_at})"


def is_v2(row: PaymentRow) -> bool:
    """True for a ledger row paid in the x402 v2 dialect."""
    return row.invoice_id.startswith(INVOICE_PREFIX)


def stored(db: Database, payment_id: int) -> StoredPayload | None:
    """The stored payload of payment ``payment_id``, if one was stored."""
    r = db.execute("SELECT * FROM x402v2_payments WHERE payment_id = ?", (payment_id,)).fetchone()
    if r is None:
        return None
    return StoredPayload(r["payment_id"], r["header_name"], r["header_value"], r["nonce"], r["ttl_at"],
                         r["settle_tx"], r["settle_status"], r["error_reason"])


def _store(db: Database, payment_id: int, headers: Mapping[str, str], *, nonce: str, network: str, pay_to: str,
           ttl_at: float, now: float) -> None:
    ((name, value),) = headers.items()
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO x402v2_payments (payment_id, header_name, header_value, nonce, network, pay_to, ttl_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (payment_id, name, value, nonce, network, pay_to, ttl_at, now))


def _record_answer(db: Database, payment_id: int, answer: v2.SettleAnswer | None, *, error: str | None,
                   now: float) -> None:
    with db.atomic() as conn:
        conn.execute(
            "UPDATE x402v2_payments SET settle_tx = COALESCE(?, settle_tx), settle_status = COALESCE(?, settle_status),"
            " confirmations = COALESCE(?, confirmations), error_reason = ?, updated_at = ? WHERE payment_id = ?",
            (answer.transaction or None if answer else None,
             (answer.status or ("settled" if answer.success else "failed")) if answer else None,
             answer.confirmations if answer else None, error, now, payment_id))


def _host(request: httpx.Request) -> str:
    netloc = request.url.netloc
    return netloc.decode() if isinstance(netloc, bytes) else str(netloc)


# --- paying -----------------------------------------------------------------------------------


def pay(payer: WalletPayer, request: httpx.Request, response: httpx.Response) -> Proof:
    """Pay a v2 (or v1) 402 for ``request`` from ``payer``'s wallet; raise an AgentError to refuse.

    Args:
        payer: the ``agent.payer.WalletPayer`` (ledger, policy, pins, approvals, sender, chain).
        request: the httpx request that got the 402 (its ``X-Request-Id`` names the call).
        response: the 402 response (headers and body read).
    """
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    body = response.content if hasattr(response, "content") else b""
    return pay_requirements(payer, response.headers, body, host=_host(request), route=request.url.path,
                            request_id=request_id)


def pay_requirements(payer: WalletPayer, headers: Mapping[str, str], body: bytes, *, host: str, route: str,
                     request_id: str) -> Proof:
    """Choose, judge, reserve, build, sign and store the payment of a 402's requirements."""
    from agent.payer import current_job

    if payer._refused_open:
        settle_refused(payer)
    now = payer.clock()
    ctx = current_job()
    refusal_id = f"{INVOICE_PREFIX}refused:{request_id}"[:64]
    try:
        pr = v2.parse_payment_required(headers, body)
    except v2.PaymentRequiredError as exc:
        payer.ledger.record_refusal(invoice_id=refusal_id, host=host, route=route, job_id=ctx.job_id,
                                    reason=f"payment_required_invalid: {exc}", now=now, tags=ctx.tags)
        raise
    ok, rejected = v2.candidates(pr, network=payer.network)
    # The same call already paid (a resend after a crash or a 5xx): present the same payload.
    # A job's earlier attempt (another request id) that may still land counts too.
    if ctx.job_id is not None:
        wanted = {(r.pay_to, r.asset, r.amount) for r in ok}
        for row in reversed(payer.ledger.by_job(ctx.job_id)):
            out = row.outputs[0] if row.outputs else {}
            if is_v2(row) and row.state in (SIGNED, SUBMITTED) and \
                    (out.get("address"), out.get("asset"), out.get("amount")) in wanted:
                proof = proof_for_row(payer, row)
                if proof is not None and proof.expires_at.timestamp() > now:
                    log.info("job %s: presenting payment %s again, never a second one", ctx.job_id, row.id)
                    return proof
    for req in ok:
        existing = payer.ledger.by_invoice(v2.invoice_id_for(req, request_id=request_id))
        if existing is not None and existing.state in (SIGNED, SUBMITTED):
            proof = proof_for_row(payer, existing)
            if proof is not None:
                return proof
        if existing is not None and existing.paid:
            raise PaymentError(f"this call's payment {existing.id} was already made ({existing.state}): "
                               "never paid twice")
    return _choose_and_pay(payer, pr, ok, rejected, host=host, route=route, request_id=request_id,
                           refusal_id=refusal_id)


def _choose_and_pay(payer: WalletPayer, pr: v2.PaymentRequired, ok: list[v2.Requirement],
                    rejected: list[tuple[int, str, str]], *, host: str, route: str, request_id: str,
                    refusal_id: str) -> Proof:
    from agent.payer import current_job, estimate_fee_lovelace

    now = payer.clock()
    now_dt = datetime.fromtimestamp(now, tz=timezone.utc)
    ctx = current_job()
    invoices = {r.index: v2.as_invoice(r, invoice_id=v2.invoice_id_for(r, request_id=request_id),
                                       network=payer.network, now=now_dt) for r in ok}
    fee_estimate, costs = 0, {}
    if ok:  # nothing to price otherwise: the chain is not asked
        params = payer.chain.protocol_params()
        fee_estimate = estimate_fee_lovelace(1, params)
        costs = {i: payer._cost_estimate(inv, params) + fee_estimate for i, inv in invoices.items()}
    chosen = None
    for req in v2.cheapest_first(ok, lambda r: costs[r.index]):
        invoice = invoices[req.index]
        try:
            payer._authorize(invoice, host=host, route=route, now=now, now_dt=now_dt, cost_lovelace=costs[req.index],
                             what=f"x402 payment of {req.describe()}")
        except ApprovalRequiredError:
            payer.ledger.record_refusal(invoice_id=invoice.invoice_id, host=host, route=route,
                                        job_id=ctx.job_id, reason="approval_required", now=now,
                                        amounts=invoice.total_by_asset(), outputs=invoice.outputs, tags=ctx.tags)
            raise
        except PolicyError as exc:
            rejected.append((req.index, exc.reason, str(exc)))
            continue
        try:
            row = payer._reserve(invoice, host=host, route=route, fee_estimate=fee_estimate, now=now)
        except BudgetExceededError as exc:
            rejected.append((req.index, "budget", f"budget: {exc}"))
            continue
        chosen = (req, invoice, row)
        break
    if chosen is None:
        line = v2.refusal_line(rejected, skipped=pr.skipped)
        error = v2.NoAcceptableOptionError(line, rejections=sorted(rejected))
        payer.ledger.record_refusal(invoice_id=refusal_id, host=host, route=route, job_id=ctx.job_id,
                                    reason=f"{error.reason}: {line}"[:1000], now=now, tags=ctx.tags)
        raise error
    req, invoice, row = chosen
    crash_point("after_reserve")
    ctx.notify("paying")
    proof = _build_and_store(payer, pr, req, invoice, row)
    ctx.notify("awaiting_settlement")
    return proof


def _build_and_store(payer: WalletPayer, pr: v2.PaymentRequired, req: v2.Requirement, invoice: Invoice,
                     row: PaymentRow) -> Proof:
    owner = str(row.id)
    now = payer.clock()
    tip = payer.chain.tip()  # the chain point before the transaction exists: recovery reads from it
    slot_now = payer._slot_now(now, tip=tip)
    ttl_slot = slot_now + req.max_timeout_s - v2.TTL_MARGIN_S
    try:
        payment = payer.sender.build(invoice.outputs, ttl_slot=ttl_slot, metadata=None, owner=owner)
    except (AgentError, WalletError) as exc:
        if isinstance(exc, AmountError) and not isinstance(exc, InsufficientFundsError):
            # e.g. an ADA amount below its output's minimum: it can never be paid
            payer.sender.release(owner)
            payer.ledger.mark_refused(row.id, f"unpayable: {exc}", now=payer.clock())
        else:
            payer._not_built(row, exc)
        raise
    row = payer._sign(row, payment, tip, check_overpay=False)
    nonce = str(payment.inputs[0])
    payload = v2.build_payment_payload(pr, req, transaction_cbor=payment.cbor, nonce=nonce,
                                       payment_id=v2.payment_identifier_for(invoice.invoice_id))
    headers = v2.payment_headers(payload)
    ttl_at = now + (payment.ttl_slot - slot_now)
    # The signed transaction is durable before it leaves the process.
    _store(payer.ledger.db, row.id, headers, nonce=nonce, network=req.network_id, pay_to=req.pay_to,
           ttl_at=ttl_at, now=payer.clock())
    # Its inputs stay reserved until it is seen on chain or its TTL passes; its change is not
    # offered for chaining, since only the facilitator decides when (and whether) it is submitted.
    payer.sender.track(owner, payment.tx_id, inputs=payment.inputs, change=(), ttl_slot=payment.ttl_slot)
    crash_point("after_sign")
    log.info("x402 v2: signed %s for %s (tx %s, fee %d); the facilitator submits it", req.describe(),
             invoice.invoice_id, payment.tx_id, payment.fee_lovelace)
    return _proof(row, headers, ttl_at)


def _proof(row: PaymentRow, headers: Mapping[str, str], ttl_at: float) -> Proof:
    return Proof(invoice_id=row.invoice_id, payment=row.tx_id or "", headers=dict(headers),
                 expires_at=datetime.fromtimestamp(ttl_at, tz=timezone.utc), payment_id=str(row.id),
                 dialect=DIALECT)


def proof_for_row(payer: WalletPayer, row: PaymentRow) -> Proof | None:
    """The stored payload of a v2 row, as the proof to present again (None if none was stored)."""
    payload = stored(payer.ledger.db, row.id)
    if payload is None:
        return None
    return _proof(row, {payload.header_name: payload.header_value}, payload.ttl_at)


def resume_proof(payer: WalletPayer, job_id: int) -> Proof | None:
    """The payload a job's new attempt presents first: its latest v2 payment while the TTL is ahead.

    A payment that may still land (signed, submitted) is always presented again. A settled one
    is too (a crash after the paid call lost its answer): the server may serve the same paid
    call again without a second payment; if it refuses that, the refusal is recorded and the
    next attempt pays afresh, as a new call.
    """
    now = payer.clock()
    for row in reversed(payer.ledger.by_job(job_id)):
        if not is_v2(row) or row.state not in (SIGNED, SUBMITTED, SETTLED):
            continue
        payload = stored(payer.ledger.db, row.id)
        if payload is None or payload.ttl_at <= now:
            continue
        if row.state == SETTLED and payload.error_reason:
            continue
        return _proof(row, {payload.header_name: payload.header_value}, payload.ttl_at)
    return None


# --- the answers ------------------------------------------------------------------------------


def seen(payer: WalletPayer, row: PaymentRow) -> bool:
    """Is the row's transaction in the mempool or in a block (``agent.recovery``: chain sync, not UTxOs)?"""
    if not row.tx_id:
        return False
    return bool(payer._judge(row).out_there)


def _expired(payer: WalletPayer, row: PaymentRow) -> bool:
    return row.ttl_slot is not None and payer._slot_now(payer.clock()) >= row.ttl_slot


def settled(payer: WalletPayer, proof: Proof, response: httpx.Response) -> None:
    """A 2xx answered the paid retry: record PAYMENT-RESPONSE; the row is settled once the tx is evidenced."""
    row = payer.ledger.get(int(proof.payment_id or 0))
    answer = v2.parse_payment_response(response.headers)
    _record_answer(payer.ledger.db, row.id, answer, error=None, now=payer.clock())
    if answer is not None and answer.transaction and answer.transaction != row.tx_id:
        log.warning("payment %s: the server reports tx %s, ours is %s", row.id, answer.transaction, row.tx_id)
    if (answer is None or not answer.success) and not seen(payer, row):
        log.warning("payment %s: a 2xx without a successful PAYMENT-RESPONSE and the tx unseen; "
                    "left signed for the chain to decide", row.id)
        return
    if row.state == SIGNED:
        row = payer.ledger.mark_submitted(row.id, now=payer.clock())
    if row.state in (SUBMITTED, UNSETTLED):
        payer.ledger.mark_settled(row.id, now=payer.clock())


def refused(payer: WalletPayer, proof: Proof, response: httpx.Response) -> None:
    """The server finally refused the paid retry: decide from the chain whether anything was paid."""
    row = payer.ledger.get(int(proof.payment_id or 0))
    answer = v2.parse_payment_response(response.headers)
    reason = refusal_reason(response)
    _record_answer(payer.ledger.db, row.id, answer, error=reason, now=payer.clock())
    if row.state != SIGNED:
        if row.state == SUBMITTED:
            payer.ledger.mark_unsettled(row.id, reason, now=payer.clock())
        return
    if seen(payer, row):
        payer.ledger.mark_submitted(row.id, now=payer.clock())
        payer.ledger.mark_unsettled(row.id, reason, now=payer.clock())
        log.warning("payment %s: tx %s is on chain but the server refused the call: %s", row.id, row.tx_id, reason)
        return
    if answer is not None and answer.may_still_land and not _expired(payer, row):
        log.warning("payment %s may still land (%s); kept signed, never signed again", row.id, reason)
        return
    evidence = payer._judge(row)
    if evidence.verdict != recovery.NEVER:
        # The server holds the signed bytes and may still submit them until their TTL: whatever it
        # says, only the chain tells whether they were paid. Kept signed (and counted against the
        # budgets) until then; the payer's next payment, or recovery, looks again.
        with payer._refused_lock:
            payer._refused_open.add(row.id)
        log.warning("payment %s refused by the server (%s); the server holds its signed bytes until TTL slot %s, "
                    "so it is kept until the chain shows whether they land (%s)", row.id, reason, row.ttl_slot,
                    evidence.detail)
        return
    payer.ledger.mark_refused(row.id, f"{reason}; {evidence.detail}", now=payer.clock())
    log.warning("payment %s refused by the server, nothing paid: %s", row.id, reason)


def settle_refused(payer: WalletPayer) -> None:
    """Decide, from the chain, the payments a server refused while it held their signed bytes.

    On chain (the server submitted them after all): paid, ``unsettled`` with the refusal.
    Never landing (TTL passed, an input spent elsewhere): ``refused``, nothing paid. Otherwise
    kept for the next look. Called before each v2 payment of this payer; recovery does the same
    after a restart.
    """
    with payer._refused_lock:
        open_ids = sorted(payer._refused_open)
    for payment_id in open_ids:
        row = payer.ledger.get(payment_id)
        if row.state != SIGNED or row.owner != payer.owner:
            decided = True
        else:
            decided = _decide_refused(payer, row, payer._judge(row)) is not None
        if decided:
            with payer._refused_lock:
                payer._refused_open.discard(payment_id)


def _decide_refused(payer: WalletPayer, row: PaymentRow, evidence: recovery.Evidence) -> str | None:
    """A signed row the server refused: ``paid``, ``refused`` or None (not known yet), from ``evidence``."""
    payload = stored(payer.ledger.db, row.id)
    reason = (payload.error_reason if payload is not None else None) or row.reason or "refused by the server"
    if evidence.out_there:
        payer.ledger.mark_submitted(row.id, now=payer.clock())
        payer.ledger.mark_unsettled(row.id, f"{reason} (its transaction landed: {evidence.detail})",
                                    now=payer.clock())
        log.warning("payment %s: the server refused it but its transaction is %s; paid, unsettled",
                    row.id, evidence.detail)
        return "paid"
    if evidence.verdict == recovery.NEVER:
        payer.sender.release(str(row.id))
        payer.ledger.mark_refused(row.id, f"{reason}; {evidence.detail}", now=payer.clock())
        log.info("payment %s refused by the server; it can never land (%s): nothing paid", row.id, evidence.detail)
        return "refused"
    return None


def refusal_reason(response: httpx.Response) -> str:
    """The reason a v2 server gave: PAYMENT-RESPONSE errorReason, the new PAYMENT-REQUIRED error, or the status."""
    answer = v2.parse_payment_response(response.headers)
    if answer is not None and answer.error_reason:
        return f"facilitator: {answer.error_reason}"
    error = v2.retry_refusal_reason(response.headers)
    if error:
        return f"facilitator: {error}"
    return f"HTTP {response.status_code}"


# --- recovery ---------------------------------------------------------------------------------


def recover_row(payer: WalletPayer, row: PaymentRow) -> str:
    """Decide an unfinished v2 row after a restart, from the chain; returns ``kept`` or ``released``.

    Never submits: a signed payload is the facilitator's to submit. Seen on chain ⇒ paid
    (``submitted``); unseen with its TTL still ahead and a stored payload ⇒ kept for the job to
    present again; anything else ⇒ released (the bytes never left, or can no longer land).
    """
    owner = str(row.id)
    if row.state == "reserved" or not row.tx_id:
        payer.sender.release(owner)
        payer.ledger.release(row.id, "the agent stopped before signing", now=payer.clock())
        return "released"
    evidence = payer._judge(row)
    payload = stored(payer.ledger.db, row.id)
    if row.state == SIGNED and payload is not None and payload.error_reason:
        decided = _decide_refused(payer, row, evidence)  # the server refused it while holding its bytes
        if decided is not None:
            return "kept" if decided == "paid" else "released"
        with payer._refused_lock:
            payer._refused_open.add(row.id)
    if evidence.out_there:
        if row.state == SIGNED:
            payer.ledger.mark_submitted(row.id, now=payer.clock())
        payer._track(row)
        return "kept"
    if payload is None:  # the payload was never stored, so never sent
        payer.sender.release(owner)
        payer.ledger.release(row.id, "signed but never sent", now=payer.clock())
        return "released"
    if evidence.verdict == recovery.NEVER:
        payer.sender.release(owner)
        payer.ledger.release_unlanded(row.id, evidence.detail, now=payer.clock())
        return "released"
    payer._track(row)
    return "kept" if not _expired(payer, row) else "unresolved"


def reconcile(payer: WalletPayer) -> dict[str, int]:
    """Settle from the chain the v2 rows whose answer never came (the SDK path, lost answers)."""
    counts = {"paid": 0, "released": 0, "waiting": 0}
    for row in payer.ledger.unfinished():
        if not is_v2(row) or row.state != SIGNED:
            continue
        evidence = payer._judge(row)
        if evidence.out_there:
            payer.ledger.mark_submitted(row.id, now=payer.clock())
            counts["paid"] += 1
        elif evidence.verdict == recovery.NEVER:
            payer.sender.release(str(row.id))
            payer.ledger.release_unlanded(row.id, evidence.detail, now=payer.clock())
            counts["released"] += 1
        else:
            counts["waiting"] += 1
    return counts


__all__ = ["DIALECT", "StoredPayload", "is_v2", "pay", "pay_requirements", "proof_for_row", "reconcile", "resume_proof",
           "recover_row", "refused", "refusal_reason", "settled", "stored"]
