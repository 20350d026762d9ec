"""``[wallet] lanes`` for ``run``: the wallet's split and merge transactions, kept in the spend ledger.

A split or merge pays only the wallet itself, but its fee is money spent: each one is a row of the
spend ledger (invoice ``wallet:<kind>:<id>``, host ``wallet``, tag ``lanes``), reserved against the
budgets, made durable once signed and before it is submitted, and settled when the chain confirms
it. After a crash, recovery resolves such a row like any signed payment (kept if it landed,
the same bytes again if it is nowhere and still valid, released once it can never land): nothing
is signed twice, and the ledger agrees with the chain.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable

from agent.faults import crash_point
from wallets.payment import SignedPayment

log = logging.getLogger(__name__)

HOST = "wallet"
TAG = "lanes"


class LedgerJournal:
    """A :class:`wallets.lanes.LaneJournal` over the agent's spend ledger, for one payer's wallet."""

    def __init__(self, ledger: Any, chain: Any, *, owner: str, clock: Callable[[], float]) -> None:
        self.ledger = ledger
        self.chain = chain
        self.owner = owner  # the payer's live owner: recovery leaves these rows alone while it lives
        self.clock = clock
        self._tips: dict[str, Any] = {}

    def begin(self, kind: str, fee_estimate_lovelace: int) -> str:
        tip = self.chain.tip()  # read before the transaction exists: recovery reads the chain from here
        row = self.ledger.reserve(invoice_id=f"{HOST}:{kind}:{uuid.uuid4().hex}", host=HOST, route=None, job_id=None,
                                  tags=(TAG,), outputs=(), amounts={}, fee_estimate_lovelace=fee_estimate_lovelace,
                                  now=self.clock(), owner=self.owner)
        owner = str(row.id)
        self._tips[owner] = tip
        crash_point("lane_after_reserve")
        return owner

    def signed(self, owner: str, payment: SignedPayment) -> None:
        tip = self._tips.pop(owner, None)
        self.ledger.mark_signed(int(owner), tx_id=payment.tx_id, cbor=payment.cbor, fee_lovelace=payment.fee_lovelace,
                                inputs=payment.inputs, ttl_slot=payment.ttl_slot, cost_lovelace=payment.fee_lovelace,
                                now=self.clock(), sync_point=None if tip is None else (tip.slot, tip.id))
        crash_point("lane_after_sign")

    def submitted(self, owner: str) -> None:
        if self.ledger.get(int(owner)).state == "signed":
            self.ledger.mark_submitted(int(owner), now=self.clock())
        crash_point("lane_after_submit")

    def abandoned(self, owner: str, reason: str) -> None:
        self._tips.pop(owner, None)
        row = self.ledger.get(int(owner))
        if row.state in ("reserved", "signed"):
            self.ledger.release(row.id, reason, now=self.clock())

    def left_unsettled(self) -> list[str]:
        """Owners of this wallet's split/merge rows sent but not yet seen confirmed (an earlier run's)."""
        return [str(r.id) for r in self.ledger.unfinished() if r.host == HOST and r.state == "submitted"]

    def settled(self, owner: str, tx_id: str, confirmed: bool) -> None:
        try:
            row = self.ledger.get(int(owner))
            if confirmed:
                if row.state == "signed":
                    row = self.ledger.mark_submitted(row.id, now=self.clock())
                if row.state == "submitted":
                    self.ledger.mark_settled(row.id, now=self.clock())
            elif row.state in ("signed", "submitted"):
                self.ledger.release_unlanded(row.id, f"transaction {tx_id} left the mempool after its TTL",
                                             now=self.clock())
        except Exception as exc:  # noqa: BLE001 - recovery settles the row at the next start
            log.warning("lanes: could not record the settlement of %s: %s", tx_id, exc)


def lane_tender(agent: Any) -> Callable[[int], Any] | None:
    """``[wallet] lanes``: the runner's hook, called with the queue depth at each new block.

    Acts only once a payment has unlocked the wallet (lanes never ask for the passphrase); None
    when lanes are off (0 or 1).
    """
    lanes = agent.config.wallet.lanes
    if lanes <= 1:
        return None
    keepers: list[Any] = []

    def tend(queue_depth: int) -> Any:
        payer = agent.opened_payer()
        if payer is None:
            return None
        if not keepers:
            from wallets.lanes import LaneKeeper

            journal = LedgerJournal(agent.ledger, agent.chain, owner=payer.owner, clock=payer.clock)
            keeper = LaneKeeper(payer.sender, agent.chain, lanes=lanes, journal=journal)
            keeper.adopt(journal.left_unsettled())  # recovery tracks them: settle them when they confirm
            keepers.append(keeper)
        return keepers[0].tend(queue_depth)

    return tend
