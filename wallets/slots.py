"""The slot a transaction's validity is counted from: the ledger's clock, never behind the tip.

The tip is the slot of the last block, which lags the ledger's clock when blocks are rare; a
TTL counted from it can already be in the past when the transaction arrives. Every TTL the
agent and the wallet commands set is counted from :func:`slot_now`.
"""

from __future__ import annotations

from wallets.chain import Chain
from wallets.types import Tip


def slot_now(chain: Chain, now: float | None = None, *, tip: Tip | None = None) -> int:
    """The ledger's current slot at ``now`` (epoch seconds; None: now): the chain's clock, never behind the tip.

    ``tip``: the tip already asked for, to spare a round trip.
    """
    tip_slot = (tip or chain.tip()).slot
    return max(tip_slot, chain.current_slot(now))


def ttl_after(chain: Chain, valid_for: int, now: float | None = None, *, tip: Tip | None = None) -> int:
    """The TTL of a transaction valid for ``valid_for`` slots from now (at least one)."""
    return slot_now(chain, now, tip=tip) + max(1, valid_for)


__all__ = ["slot_now", "ttl_after"]
