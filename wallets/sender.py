"""Pay from one wallet under concurrency: reserve inputs, chain on change still in the mempool, notice confirmations.

Every payment reserves its inputs (for its ``owner``, e.g. a spend-ledger row) before it is
returned, and keeps them until its transaction is seen confirmed or dropped, so concurrent
payments never pick the same input. After a successful submit its change is recorded as
pending, so the next payment may spend it at once (the ledger validates against the UTxO set
plus the mempool): a single-UTxO wallet pays back to back without waiting for a block.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Collection, Mapping, Sequence

from wallets.chain import Chain
from wallets.errors import ChainUnavailableError, InputsSpentError, InsufficientFundsError, SubmitError
from wallets.payment import SignedPayment, Signer, plan_payment, sign_payment
from wallets.reservations import MemoryReservations, ReservationConflict, UtxoReservations
from wallets.types import OutputRef, RequiredOutput, Utxo

log = logging.getLogger(__name__)

_MAX_CONFLICTS = 32


@dataclass(frozen=True, slots=True)
class _InFlight:
    owner: str
    inputs: frozenset[OutputRef]
    change: frozenset[OutputRef]
    ttl_slot: int | None


class PaymentSender:
    """Builds, reserves and submits payments for one wallet (``signer``) over a ``Chain``."""

    def __init__(
        self,
        chain: Chain,
        signer: Signer,
        *,
        reservations: UtxoReservations | None = None,
        wait_s: float = 30.0,
        poll_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
            chain: chain access.
            signer: the wallet; its ``address`` holds the funds and receives change.
            reservations: where reservations live (default: in memory, this process only).
            wait_s: how long ``build`` waits for an in-flight payment to free funds before giving up.
            poll_s: how often a waiting ``build`` looks at the chain again for confirmations.
            clock: monotonic clock, for the wait deadline.
        """
        self._chain = chain
        self._signer = signer
        self._reservations: UtxoReservations = reservations if reservations is not None else MemoryReservations()
        self._wait_s = wait_s
        self._poll_s = poll_s
        self._clock = clock
        self._cond = threading.Condition()
        self._inflight: dict[str, _InFlight] = {}
        self._spent: set[OutputRef] = set()
        # Pending change that our confirmed payments spent, while its parent's pending record lingers.
        self._consumed: set[OutputRef] = set()
        self.on_settled: Callable[[str, str, bool], None] | None = None
        """Called (under the sender's lock: keep it short) with (tx id, owner, confirmed) as a payment settles."""
        # Pending change the ledger called unknown (3117): another process's record, its change spent
        # since (or its transaction dropped). Never offered again while that record lingers.
        self._dead_pending: set[OutputRef] = set()

    @property
    def address(self) -> str:
        """The paying wallet's address."""
        return self._signer.address

    @property
    def reservations(self) -> UtxoReservations:
        """The reservation store in use."""
        return self._reservations

    def in_flight(self) -> dict[str, str]:
        """Submitted, not yet confirmed payments: ``{tx_id: owner}``."""
        with self._cond:
            return {tx_id: f.owner for tx_id, f in self._inflight.items()}

    def build(self, outputs: Sequence[RequiredOutput], *, ttl_slot: int,
              metadata: Mapping[int, Any] | None = None, owner: str) -> SignedPayment:
        """Select free inputs, reserve them for ``owner`` and sign; nothing is submitted.

        If the free UTxOs cannot cover the payment but other payments are in flight, waits
        (up to ``wait_s``) for one of them to confirm or to leave change to chain on.

        Raises:
            InsufficientFundsError: the wallet cannot cover it, even after waiting.
            AmountError, AddressError, TransactionBuildError: from the builder, for bad outputs.
            ChainError: the chain could not be queried.
        """
        params = self._chain.protocol_params()
        deadline = self._clock() + self._wait_s
        conflicts = 0
        check_mempool = False
        with self._cond:
            while True:
                candidates = self._candidates(check_mempool=check_mempool)
                reserved = self._reservations.reserved_refs()
                free = [u for u in candidates if u.ref not in reserved]
                try:
                    plan = plan_payment(outputs, utxos=free, change_address=self.address, params=params,
                                        ttl_slot=ttl_slot, metadata=metadata)
                except InsufficientFundsError:
                    if not reserved or self._clock() >= deadline or not self._feasible(
                            outputs, candidates, params, ttl_slot, metadata):
                        raise
                    log.debug("no free inputs for %s; waiting for in-flight payments", owner)
                    self._cond.wait(timeout=max(0.0, min(self._poll_s, deadline - self._clock())))
                    check_mempool = True
                    continue
                try:
                    self._reservations.reserve(owner, plan.inputs)  # the intent, before the signature
                except ReservationConflict:
                    conflicts += 1
                    if conflicts > _MAX_CONFLICTS:
                        raise
                    log.debug("reservation conflict for %s; selecting again", owner)
                    continue
                try:
                    return sign_payment(plan, self._signer)
                except BaseException:
                    self._reservations.release(owner)
                    raise

    def submit(self, payment: SignedPayment, *, owner: str) -> str:
        """Submit ``payment``; on success its change becomes usable for the next payment.

        A refused transaction (``SubmitError``) frees the owner's inputs; on ``InputsSpentError``
        the spent inputs are also kept out of later selections. A lost connection
        (``ChainUnavailableError``) keeps the reservation: the transaction may have gone through.
        """
        # Under the lock: a payment confirmed at once must be recorded before anyone else looks at
        # the chain, or its change could be spent and then re-offered from a late pending record.
        with self._cond:
            try:
                tx_id = self._chain.submit(payment.cbor)
            except InputsSpentError as exc:
                spent = _refs_from_error(exc.data) or set(payment.inputs)
                self._spent |= spent
                self._dead_pending |= spent
                for parent in {r.tx_id for r in spent}:
                    if parent in self._inflight:
                        self._settled(parent, confirmed=False)  # its change is gone: dropped or replaced
                self._reservations.release(owner)
                self._cond.notify_all()
                raise
            except SubmitError:
                self._reservations.release(owner)
                self._cond.notify_all()
                raise
            self._reservations.record_pending(owner, tx_id, payment.change)
            self._inflight[tx_id] = _InFlight(owner, frozenset(payment.inputs),
                                              frozenset(u.ref for u in payment.change), payment.ttl_slot)
            self._cond.notify_all()
        return tx_id

    def pay(self, outputs: Sequence[RequiredOutput], *, ttl_slot: int,
            metadata: Mapping[int, Any] | None = None, owner: str) -> SignedPayment:
        """Build, reserve and submit in one call; return the submitted payment."""
        payment = self.build(outputs, ttl_slot=ttl_slot, metadata=metadata, owner=owner)
        self.submit(payment, owner=owner)
        return payment

    def free_utxos(self) -> list[Utxo]:
        """The wallet's UTxOs no payment has reserved: confirmed ones and pending change (a fresh look)."""
        with self._cond:
            reserved = self._reservations.reserved_refs()
            return [u for u in self._candidates(check_mempool=True) if u.ref not in reserved]

    def utxo_view(self) -> tuple[list[Utxo], list[Utxo]]:
        """(free, held): the wallet's UTxOs, and those a payment being built holds (a fresh look).

        Inputs of submitted payments are left out: their change, pending, stands for them.
        """
        with self._cond:
            candidates = self._candidates(check_mempool=True)
            sent: set[OutputRef] = set()
            for f in self._inflight.values():
                sent |= f.inputs
            reserved = self._reservations.reserved_refs()
            live = [u for u in candidates if u.ref not in sent]
            return [u for u in live if u.ref not in reserved], [u for u in live if u.ref in reserved]

    def build_self(self, inputs: Sequence[Utxo], amounts: Sequence[int], *, ttl_slot: int,
                   owner: str) -> SignedPayment:
        """Spend exactly ``inputs`` into outputs of ``amounts`` plus change, all to this wallet; sign, not submit.

        For rearranging the wallet's UTxOs (splitting into lanes, merging dust). The inputs must be
        free now; they are reserved for ``owner`` like any payment's. The payment's ``change`` lists
        every output, so that once submitted all of them are offered for chaining at once.

        Raises:
            ReservationConflict: an input is no longer free (reserved, or spent meanwhile).
            InsufficientFundsError, TransactionBuildError: the inputs cannot pay for the outputs.
        """
        wanted = {u.ref for u in inputs}
        with self._cond:
            params = self._chain.protocol_params()
            gone = wanted - {u.ref for u in self.free_utxos()}
            if gone:
                raise ReservationConflict(gone)
            plan = plan_payment([RequiredOutput(self.address, a) for a in amounts], utxos=list(inputs),
                                change_address=self.address, params=params, ttl_slot=ttl_slot)
            if set(plan.inputs) != wanted:
                raise InsufficientFundsError("the rearrangement would not spend exactly the inputs given")
            self._reservations.reserve(owner, plan.inputs)
            try:
                payment = sign_payment(plan, self._signer)
            except BaseException:
                self._reservations.release(owner)
                raise
            own = tuple(Utxo(OutputRef(payment.tx_id, i), self.address, lovelace, {})
                        for i, lovelace in enumerate(payment.output_lovelace))
            return replace(payment, change=own + payment.change)

    def submit_tracked(self, payment: SignedPayment, *, owner: str) -> str:
        """``submit``; on a lost connection the payment stays tracked (inputs reserved) until it confirms or expires."""
        try:
            return self.submit(payment, owner=owner)
        except ChainUnavailableError:
            self.track(owner, payment.tx_id, inputs=payment.inputs, change=(), ttl_slot=payment.ttl_slot)
            raise

    def release(self, owner: str) -> None:
        """The payment of ``owner`` was abandoned: free its inputs and forget its pending change."""
        with self._cond:
            for tx_id in [t for t, f in self._inflight.items() if f.owner == owner]:
                del self._inflight[tx_id]
            self._reservations.release(owner)
            self._cond.notify_all()

    def track(self, owner: str, tx_id: str, *, inputs: Collection[OutputRef], change: Sequence[Utxo],
              ttl_slot: int | None = None) -> None:
        """Watch a payment submitted elsewhere (before a restart, or by the API server) until it confirms.

        Its inputs stay reserved and its change is offered for chaining. With ``ttl_slot`` it is also
        dropped once the tip reaches that slot without it; without, only ``release`` drops it.
        """
        with self._cond:
            self._reservations.reserve(owner, inputs)
            self._reservations.record_pending(owner, tx_id, change)
            self._inflight[tx_id] = _InFlight(owner, frozenset(inputs), frozenset(u.ref for u in change), ttl_slot)

    def refresh(self) -> None:
        """Look at the chain now: free the inputs of payments that confirmed or left the mempool."""
        with self._cond:
            self._candidates(check_mempool=True)

    # --- internals (called with the condition's lock held) ---

    def _candidates(self, *, check_mempool: bool) -> list[Utxo]:
        """Confirmed UTxOs plus pending change, minus inputs known spent; settles confirmed payments first."""
        on_chain = self._chain.utxos_at(self.address)
        chain_refs = {u.ref for u in on_chain}
        if self._settle(chain_refs, check_mempool=check_mempool):
            # A payment whose inputs this snapshot still lists has left the mempool: it was dropped,
            # or it confirmed after the snapshot was taken. Only a fresh snapshot tells which.
            on_chain = self._chain.utxos_at(self.address)
            chain_refs = {u.ref for u in on_chain}
        self._spent &= chain_refs  # a spent input that left the UTxO set needs no remembering
        pending = self._reservations.pending_change()
        pending_refs = {u.ref for u in pending}
        self._consumed &= pending_refs
        self._dead_pending &= pending_refs
        merged = {u.ref: u for u in on_chain}
        for u in pending:
            if u.ref not in self._dead_pending:
                merged.setdefault(u.ref, u)
        return [u for ref, u in merged.items() if ref not in self._spent and ref not in self._consumed]

    def _settle(self, chain_refs: set[OutputRef], *, check_mempool: bool) -> bool:
        """Settle confirmed or dropped payments; True if the snapshot may be stale for a freed input."""
        stale, again = False, True
        tip: list[int] = []  # asked at most once, and only if an expiry must be checked
        while again and self._inflight:  # settling one payment can clear the pending change another spent
            again, stale = self._settle_pass(chain_refs, check_mempool=check_mempool, stale=stale, tip=tip)
        return stale

    def _expired(self, f: _InFlight, tip: list[int]) -> bool:
        if f.ttl_slot is None:
            return False
        if not tip:
            tip.append(self._chain.tip().slot)
        return tip[0] >= f.ttl_slot  # the ledger accepts a tx only while slot < ttl

    def _settle_pass(self, chain_refs: set[OutputRef], *, check_mempool: bool, stale: bool,
                     tip: list[int]) -> tuple[bool, bool]:
        settled_any = False
        # Once per pass, not per payment: with hundreds in flight the union per payment made every
        # selection quadratic in the calls waiting for their block.
        unspent = chain_refs | {u.ref for u in self._reservations.pending_change()}
        for tx_id, f in list(self._inflight.items()):
            if tx_id not in self._inflight:
                continue  # settled above as the parent of a confirmed payment
            if not f.change.isdisjoint(chain_refs):
                self._settled(tx_id, confirmed=True)  # its change is on the ledger
            elif not f.inputs.isdisjoint(unspent):
                # Inputs still unspent as far as the ledger or our pending view knows: waiting in the
                # mempool, or not yet submitted (the API server submits CBOR proofs). Dropped only once
                # past its TTL and out of the mempool: then it can never confirm. Ask only when waiting.
                if not (check_mempool and self._expired(f, tip) and not self._chain.in_mempool(tx_id)):
                    continue
                self._settled(tx_id, confirmed=False)
                stale = stale or bool(f.inputs & chain_refs)
            elif not self._chain.in_mempool(tx_id):
                self._settled(tx_id, confirmed=True)  # inputs gone and not waiting (change spent, or none)
            else:
                continue
            settled_any = True
        return settled_any, stale

    def _settled(self, tx_id: str, *, confirmed: bool) -> None:
        """Forget a payment: confirmed (its inputs are spent, and so are its parents confirmed) or dropped."""
        f = self._inflight.pop(tx_id)
        if confirmed:
            # Its inputs may be change still listed as pending under a parent's record: never offer them
            # again. A confirmed child means a confirmed parent.
            self._consumed |= f.inputs
            for parent in {r.tx_id for r in f.inputs}:
                if parent in self._inflight:  # (not yet settled by an earlier turn of this loop)
                    self._settled(parent, confirmed=True)
        self._reservations.clear_pending(tx_id)
        if not any(g.owner == f.owner for g in self._inflight.values()):
            self._reservations.release(f.owner)
        log.debug("payment %s of %s settled; inputs released", tx_id, f.owner)
        if self.on_settled is not None:
            try:
                self.on_settled(tx_id, f.owner, confirmed)
            except Exception:  # noqa: BLE001 - an observer's failure must not break the payments
                log.warning("settlement observer failed for %s", tx_id, exc_info=True)
        self._cond.notify_all()

    def _feasible(self, outputs: Sequence[RequiredOutput], candidates: list[Utxo], params: Any,
                  ttl_slot: int, metadata: Mapping[int, Any] | None) -> bool:
        """Could the payment be built if every reservation were released? If not, waiting cannot help."""
        try:
            plan_payment(outputs, utxos=candidates, change_address=self.address, params=params,
                         ttl_slot=ttl_slot, metadata=metadata)
        except InsufficientFundsError:
            return False
        return True


def _refs_from_error(data: Any) -> set[OutputRef]:
    """Parse Ogmios's ``unknownOutputReferences`` (3117) defensively."""
    refs: set[OutputRef] = set()
    items = data.get("unknownOutputReferences") if isinstance(data, dict) else None
    for item in items if isinstance(items, list) else []:
        try:
            refs.add(OutputRef(str(item["transaction"]["id"]), int(item["index"])))
        except (KeyError, TypeError, ValueError):
            continue
    return refs
