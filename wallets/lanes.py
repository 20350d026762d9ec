"""Keep a wallet's UTxOs in enough lanes: split one when the queue is deep, merge dust when idle.

A lane is a free ADA-only UTxO worth at least ``min_lane_lovelace``: a payment can start from it
at once, and chain on its change. One UTxO carries a whole chain of payments, but every payment
of the wallet then waits on the one before it and a dropped transaction takes its descendants
with it; with several lanes, payments spread. :class:`LaneKeeper` is called with the depth of the
payment queue (by the runner, at each new block):

- queue deeper than the lanes, fewer than ``lanes``: one transaction splits the largest free UTxO
  into as many lanes as are missing (never more than ``lanes`` in all, never below the minimum);
- queue empty and nothing in flight: one transaction merges the dust (free ADA-only UTxOs below
  the minimum, up to ``MERGE_MAX_INPUTS``) into one output.

Both are payments to the wallet itself, through the sender's reservations (an input a payment
holds is never touched), logged at INFO, and written to a :class:`LaneJournal` when one is given
(the agent's spend ledger: their fees are money spent, and recovery resolves them after a crash
like any signed transaction, never signing again). Token-carrying UTxOs are left alone.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Protocol, Sequence

from wallets.errors import ChainUnavailableError, InsufficientFundsError, WalletError
from wallets.payment import SignedPayment, min_fee, plan_payment
from wallets.types import RequiredOutput, Utxo

if TYPE_CHECKING:
    from wallets.chain import Chain
    from wallets.sender import PaymentSender

log = logging.getLogger(__name__)

DEFAULT_LANES = 8
MAX_LANES = 100
"""Outputs of one split are bounded by the transaction size; 100 lanes is far past what helps."""
MIN_LANE_LOVELACE = 5_000_000
SPLIT_FEE_RESERVE = 1_000_000
"""Kept out of the parts of a split for its fee (the change output takes the unused rest)."""
MERGE_MAX_INPUTS = 60
TTL_S = 900


class LaneJournal(Protocol):
    """Where split and merge transactions are recorded durably (the agent's spend ledger)."""

    def begin(self, kind: str, fee_estimate_lovelace: int) -> str:
        """Record the intent; return the reservation owner for it. Raising stops the rearrangement."""
        ...

    def signed(self, owner: str, payment: SignedPayment) -> None:
        """Make the signed transaction durable before it is submitted."""
        ...

    def submitted(self, owner: str) -> None:
        """The chain took it."""
        ...

    def abandoned(self, owner: str, reason: str) -> None:
        """Not built, or refused by the chain: nothing was spent."""
        ...

    def settled(self, owner: str, tx_id: str, confirmed: bool) -> None:
        """The sender saw it confirmed, or dropped for good (its TTL passed out of the mempool)."""
        ...


class LaneKeeper:
    """Splits and merges one wallet's UTxOs through its ``PaymentSender`` (thread-safe; one at a time)."""

    def __init__(self, sender: PaymentSender, chain: Chain, *, lanes: int = DEFAULT_LANES,
                 min_lane_lovelace: int = MIN_LANE_LOVELACE, ttl_s: int = TTL_S,
                 journal: LaneJournal | None = None) -> None:
        """Args:
            sender: the wallet's sender (its reservations are the payments').
            chain: for the slot (TTL) and protocol parameters.
            lanes: the most lanes kept; 0 or 1 disables splitting and merging.
            min_lane_lovelace: a lane's least value; free ADA-only UTxOs below it are dust.
            ttl_s: validity of a split or merge transaction, in slots (seconds) from now.
            journal: where the transactions are recorded (told of their settlement through the
                sender's ``on_settled``, which this keeper takes).
        """
        if not 0 <= lanes <= MAX_LANES:
            raise ValueError(f"lanes must be between 0 and {MAX_LANES}")
        self.sender = sender
        self.chain = chain
        self.lanes = lanes
        self.min_lane_lovelace = min_lane_lovelace
        self.ttl_s = ttl_s
        self.journal = journal
        self._lock = threading.Lock()
        self._count = 0
        self._mine: set[str] = set()  # owners of split/merge transactions in flight
        if journal is not None:
            sender.on_settled = self._on_settled

    def adopt(self, owners: Sequence[str]) -> None:
        """Split/merge transactions of an earlier run that the sender tracks (after recovery): settle them too."""
        self._mine.update(owners)

    def _on_settled(self, tx_id: str, owner: str, confirmed: bool) -> None:
        if owner in self._mine and self.journal is not None:
            self._mine.discard(owner)
            self.journal.settled(owner, tx_id, confirmed)

    @property
    def enabled(self) -> bool:
        return self.lanes > 1

    def _is_lane(self, u: Utxo) -> bool:
        return not u.assets and u.lovelace >= self.min_lane_lovelace

    def lanes_now(self) -> list[Utxo]:
        """The lanes: ADA-only UTxOs worth at least ``min_lane_lovelace``, free or held by a payment being built."""
        free, held = self.sender.utxo_view()
        return [u for u in free + held if self._is_lane(u)]

    def tend(self, queue_depth: int) -> SignedPayment | None:
        """Split or merge if the queue calls for it; return the transaction submitted, or None.

        Raises:
            WalletError: the chain refused or could not be reached (nothing stays reserved after
                a refusal; the next call looks afresh).
        """
        if not self.enabled:
            return None
        with self._lock:
            free_all, held = self.sender.utxo_view()
            free = [u for u in free_all if not u.assets]
            lanes = [u for u in free + held if self._is_lane(u)]
            if queue_depth > len(lanes) and len(lanes) < self.lanes:
                return self._split(free, lanes, want=min(self.lanes, queue_depth))
            if queue_depth <= 0 and not self.sender.in_flight():
                dust = sorted((u for u in free if u.lovelace < self.min_lane_lovelace),
                              key=lambda u: (u.lovelace, u.ref.tx_id, u.ref.index))
                if len(dust) >= 2:
                    return self._merge(dust[:MERGE_MAX_INPUTS])
            return None

    def _send(self, kind: str, inputs: Sequence[Utxo], amounts: Sequence[int], fee_estimate: int) -> SignedPayment:
        """Reserve, sign, record and submit one transaction to the wallet itself."""
        journal = self.journal
        if journal is None:
            self._count += 1
            owner = f"lanes:{kind}:{self._count}"
        else:
            owner = journal.begin(kind, fee_estimate)
        try:
            payment = self.sender.build_self(inputs, amounts, ttl_slot=self._ttl(), owner=owner)
        except BaseException as exc:
            if journal is not None:
                journal.abandoned(owner, f"not built: {exc}")
            raise
        if journal is not None:
            try:
                journal.signed(owner, payment)
            except BaseException as exc:
                self.sender.release(owner)
                journal.abandoned(owner, f"not recorded: {exc}")
                raise
            self._mine.add(owner)
        try:
            self.sender.submit_tracked(payment, owner=owner)
        except ChainUnavailableError:
            raise  # kept signed and tracked: it may have gone through (recovery decides after a restart)
        except BaseException as exc:
            self._mine.discard(owner)
            if journal is not None:
                journal.abandoned(owner, f"refused: {exc}")
            raise
        if journal is not None:
            journal.submitted(owner)
        return payment

    def _ttl(self) -> int:
        return self.chain.current_slot() + self.ttl_s

    def _split(self, free: list[Utxo], lanes: list[Utxo], *, want: int) -> SignedPayment | None:
        if not free:
            return None  # every UTxO is held by a payment being built: next block
        source = max(free, key=lambda u: (u.lovelace, u.ref.tx_id, u.ref.index))
        # The source is a lane itself when big enough: it is consumed, its parts replace it.
        missing = want - len(lanes) + (1 if source in lanes else 0)
        parts = min(missing, (source.lovelace - SPLIT_FEE_RESERVE) // self.min_lane_lovelace)
        if parts < 2:
            log.debug("lanes: no UTxO large enough to split (largest %d lovelace)", source.lovelace)
            return None
        share = (source.lovelace - SPLIT_FEE_RESERVE) // parts
        payment = self._send("split", [source], [share] * (parts - 1), SPLIT_FEE_RESERVE)
        log.info("lanes: split %d lovelace into %d lanes (tx %s, fee %d): queue deeper than the %d free lane(s)",
                 source.lovelace, parts, payment.tx_id, payment.fee_lovelace, len(lanes))
        return payment

    def _merge(self, dust: list[Utxo]) -> SignedPayment | None:
        total = sum(u.lovelace for u in dust)
        fee = self._least_merge_fee(dust, total)
        if fee is None:
            log.debug("lanes: %d dust UTxOs (%d lovelace) cannot pay for their merge", len(dust), total)
            return None
        payment = self._send("merge", dust, [total - fee], fee)
        log.info("lanes: merged %d dust UTxOs into one of %d lovelace (tx %s, fee %d): the queue is idle",
                 len(dust), total - fee, payment.tx_id, payment.fee_lovelace)
        return payment

    def _least_merge_fee(self, dust: list[Utxo], total: int) -> int | None:
        """The least fee for which one output of ``total - fee`` spends every dust input with no change."""
        params = self.chain.protocol_params()
        ttl = self._ttl()
        address = self.sender.address
        refs = {u.ref for u in dust}

        def works(fee: int) -> bool:
            if total - fee <= 0:
                return False
            try:
                plan = plan_payment([RequiredOutput(address, total - fee)], utxos=dust, change_address=address,
                                    params=params, ttl_slot=ttl)
            except (InsufficientFundsError, WalletError):
                return False
            return set(plan.inputs) == refs and plan.fee_lovelace == fee

        # An upper bound on the merge's size (an input is about 38 bytes): below the least change output.
        low, high = 0, min_fee(min(params.max_tx_size, 300 + 50 * len(dust)), params)
        if not works(high):
            return None
        while low < high:  # the fee a transaction needs grows with nothing but its size: monotone
            mid = (low + high) // 2
            if works(mid):
                high = mid
            else:
                low = mid + 1
        return high
