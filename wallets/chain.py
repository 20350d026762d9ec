"""What the wallet needs from the chain: one interface, ``Chain``, and the types its answers use.

``OgmiosChain`` (wallets/ogmios.py) and ``BlockfrostChain`` (wallets/blockfrost.py) implement it
over the network. Unit tests use ``sandbox.memchain.MemoryChain``, the same interface over the
sandbox's in-memory ledger (the packages never import the sandbox; tests do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence, runtime_checkable

from wallets.errors import ChainError
from wallets.types import OutputRef, ProtocolParams, Tip, Utxo


class IntersectionNotFoundError(ChainError):
    """The chain does not hold the point a lookup starts from (rolled back, or history not kept).

    Nothing can be concluded from such a lookup: it is not evidence either way.
    """


@dataclass(frozen=True, slots=True)
class TxLookup:
    """What the chain's blocks say about one transaction, read from a point up to the tip.

    ``block`` is the (slot, block id) holding the transaction, or None if no block read holds
    it. ``spent_by`` maps each asked input that another transaction spent in the blocks read to
    that transaction's id. ``tip_slot`` is the slot of the last block read.
    """

    tx_id: str
    block: tuple[int, str] | None
    tip_slot: int
    spent_by: Mapping[OutputRef, str] = field(default_factory=dict)

    @property
    def landed(self) -> bool:
        """True if a block holds the transaction."""
        return self.block is not None

MAINNET_PARAMS = ProtocolParams(min_fee_coefficient=44, min_fee_constant=155381, coins_per_utxo_byte=4310,
                                max_tx_size=16384, max_value_size=5000)


@runtime_checkable
class Chain(Protocol):
    """Chain access for paying: tip, parameters, UTxOs, submit, mempool membership."""

    def tip(self) -> Tip:
        """The current tip."""
        ...

    def protocol_params(self) -> ProtocolParams:
        """The protocol parameters the payment builder needs (may be cached briefly)."""
        ...

    def utxos_at(self, address: str) -> list[Utxo]:
        """Confirmed unspent outputs at ``address``."""
        ...

    def utxos_by_refs(self, refs: Sequence[OutputRef]) -> list[Utxo]:
        """Confirmed unspent outputs among ``refs``."""
        ...

    def submit(self, cbor: bytes) -> str:
        """Submit a signed transaction; return its id or raise a ``SubmitError`` subclass."""
        ...

    def current_slot(self, now: float | None = None) -> int:
        """The slot the ledger's clock is in at ``now`` (epoch seconds; None: now), which may be past the tip.

        A chain that keeps no slot clock answers the tip's slot.
        """
        ...

    def slot_time(self, slot: int) -> float | None:
        """The instant (epoch seconds) ``slot`` starts at; None if the chain keeps no slot clock."""
        ...

    def in_mempool(self, tx_id: str) -> bool:
        """Whether ``tx_id`` is waiting in the mempool."""
        ...

    def find_transaction(self, tx_id: str, *, since: tuple[int, str] | None,
                         inputs: Sequence[OutputRef] = ()) -> TxLookup:
        """Did ``tx_id`` land, and in which block? Read every block after ``since`` up to the tip.

        ``since`` is a (slot, block id) point on the chain before the transaction existed (None:
        from the origin). ``inputs`` are the transaction's inputs: the answer says which of them
        another transaction spent. Raises IntersectionNotFoundError if the chain lacks ``since``.
        """
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


__all__ = ["MAINNET_PARAMS", "Chain", "IntersectionNotFoundError", "TxLookup"]
