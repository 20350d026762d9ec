"""An in-memory ``Chain`` for unit tests: the devnet's ledger, without a server or a clock.

:class:`MemoryChain` answers the wallet's ``Chain`` interface (wallets/chain.py) from a
:class:`sandbox.utxo_ledger.Ledger`, so every submission is checked by the same phase-1 rules
(:mod:`sandbox.rules`, :mod:`sandbox.txcbor`: the transaction id is the hash of the body bytes
as received) that the devnet's Ogmios and Blockfrost servers apply, and refusals are the typed
``SubmitError`` subclasses with Ogmios's codes and data, as ``OgmiosChain`` raises them.

Time is in the test's hands: nothing happens unless a test control makes it happen.
``auto_confirm`` makes a block of each accepted transaction at once (the devnet with
``block_time_s=0``); without it transactions wait in the mempool until :meth:`produce_block`.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Mapping, Sequence

from sandbox.errors import LedgerRejection, MempoolFullError
from sandbox.utxo_ledger import Ledger, LedgerParams
from sandbox.txcbor import decode_transaction
from wallets.chain import MAINNET_PARAMS, IntersectionNotFoundError, TxLookup
from wallets.errors import MempoolFullError as WalletMempoolFullError
from wallets.errors import submit_error
from wallets.types import OutputRef, ProtocolParams, Tip, Utxo


class MemoryChain:
    """``Chain`` over an in-memory sandbox ledger, with test controls (funding, blocks, faults).

    The chain starts with one empty block at ``slot``; each block after it is one slot later
    than the one before (or at the slot :meth:`advance` moved the clock to). The tip is the
    last block, as on a real chain; ``current_slot`` is the ledger's clock.
    """

    def __init__(self, params: ProtocolParams = MAINNET_PARAMS, *, slot: int = 0, auto_confirm: bool = True,
                 network_id: int = 0, max_block_body_size: int = LedgerParams.max_block_body_size) -> None:
        """``max_block_body_size`` also sizes the mempool (two blocks' worth), to fill it in tests."""
        self.params = params
        self.auto_confirm = auto_confirm
        self.ledger = Ledger(LedgerParams(
            network_id=network_id, min_fee_coefficient=params.min_fee_coefficient,
            min_fee_constant=params.min_fee_constant, coins_per_utxo_byte=params.coins_per_utxo_byte,
            max_tx_size=params.max_tx_size, max_value_size=params.max_value_size,
            max_block_body_size=max_block_body_size), slot=slot)
        self._lock = threading.RLock()
        self._faults: dict[str, list[Exception]] = {}
        # What each block holds, for find_transaction: block id -> [(tx id, inputs it spent)].
        self._block_txs: dict[str, list[tuple[str, tuple[OutputRef, ...]]]] = {}
        self.calls: Counter[str] = Counter()
        self.accepted: list[str] = []
        self.closed = False
        self._make_block()

    def __repr__(self) -> str:
        return f"MemoryChain(tip={self.ledger.tip!r})"

    # --- test controls ---------------------------------------------------------------------

    def fund(self, address: str, lovelace: int, assets: Mapping[str, int] | None = None) -> OutputRef:
        """Create a confirmed output at ``address`` out of nothing (genesis funds); return its reference."""
        with self._lock:
            return self.ledger.add_genesis_utxo(address, lovelace, assets)

    def fail_next(self, method: str, error: Exception) -> None:
        """Make the next call of ``method`` raise ``error`` (fault injection)."""
        with self._lock:
            self._faults.setdefault(method, []).append(error)

    def produce_block(self) -> list[str]:
        """Make a block of the mempool (what fits, in arrival order; expired ones dropped); return its tx ids.

        A block is made even when the mempool is empty (the chain moves on, as on schedule).
        """
        with self._lock:
            return list(self._make_block())

    def advance(self, slots: int) -> None:
        """Let ``slots`` slots pass: the clock moves on and the block made then holds what the mempool can.

        As on the devnet, time passing makes a block; a transaction whose TTL passed is dropped.
        """
        with self._lock:
            self.ledger.advance_to(self.ledger.slot + slots)
            self._make_block()

    def confirm_elsewhere(self, tx_id: str, spends: Sequence[OutputRef]) -> None:
        """A block holding only ``tx_id``, a transaction from another wallet spending ``spends``.

        The outputs it spends leave the UTxO set; mempool transactions that needed them are
        dropped when the mempool is checked again after the block, as a node does.
        """
        with self._lock:
            waiting = self.ledger.mempool()
            self._clear_mempool()
            for ref in spends:
                if self.ledger.utxos_by_refs([ref]):
                    self.ledger._remove_confirmed(ref)  # a transaction the ledger never saw spent it
            block = self.ledger.produce_block(force=True)
            assert block is not None
            self._block_txs[block.id] = [(tx_id, tuple(spends))]
            self._resubmit(waiting)

    def drop_mempool(self) -> None:
        """Forget every mempool transaction (as if they expired)."""
        with self._lock:
            self._clear_mempool()

    def _clear_mempool(self) -> None:
        self.ledger._keep_in_mempool([])  # the ledger has no public way to forget its mempool

    def _resubmit(self, waiting: list[tuple[str, bytes]]) -> None:
        for _tx_id, cbor in waiting:
            try:
                self.ledger.submit(cbor)
            except (LedgerRejection, MempoolFullError):
                continue  # no longer valid after the block

    def _make_block(self) -> tuple[str, ...]:
        block = self.ledger.produce_block(force=True)
        assert block is not None  # forced
        _block, raws = self.ledger.block_at(self.ledger.block_count() - 1)
        txs = []
        for raw in raws:
            tx = decode_transaction(raw)
            txs.append((tx.tx_id, tuple(OutputRef(t, i) for t, i in tx.inputs)))
        self._block_txs[block.id] = txs
        return block.tx_ids

    def _fault(self, method: str) -> None:
        self.calls[method] += 1
        queue = self._faults.get(method)
        if queue:
            raise queue.pop(0)

    # --- Chain -------------------------------------------------------------------------------

    def tip(self) -> Tip:
        """The last block."""
        with self._lock:
            self._fault("tip")
            tip = self.ledger.tip
            assert tip is not None  # a block is made at construction
            return Tip(tip.slot, tip.id)

    def current_slot(self, now: float | None = None) -> int:
        """The ledger's clock (``now`` is ignored: time moves only with :meth:`advance` and blocks)."""
        with self._lock:
            self._fault("current_slot")
            return self.ledger.slot

    def slot_time(self, slot: int) -> float | None:
        """None: this chain's slots have no wall-clock instant (time moves only with :meth:`advance`)."""
        return None

    def protocol_params(self) -> ProtocolParams:
        """The parameters the ledger enforces."""
        with self._lock:
            self._fault("protocol_params")
            return self.params

    def utxos_at(self, address: str) -> list[Utxo]:
        """Confirmed unspent outputs at ``address``."""
        with self._lock:
            self._fault("utxos_at")
            return [Utxo(ref, out.address, out.lovelace, dict(out.assets))
                    for ref, out in self.ledger.utxos_at([address])]

    def utxos_by_refs(self, refs: Sequence[OutputRef]) -> list[Utxo]:
        """Confirmed unspent outputs among ``refs``."""
        with self._lock:
            self._fault("utxos_by_refs")
            return [Utxo(ref, out.address, out.lovelace, dict(out.assets))
                    for ref, out in self.ledger.utxos_by_refs(refs)]

    def submit(self, cbor: bytes) -> str:
        """Check ``cbor`` with the ledger rules and add it to the mempool (a block at once with ``auto_confirm``).

        Raises:
            SubmitError: the typed subclass for the Ogmios code of the rule that failed.
            wallets.errors.MempoolFullError: no room in the mempool (nothing taken; retry after a block).
        """
        with self._lock:
            self._fault("submit")
            try:
                tx_id = self.ledger.submit(cbor)
            except LedgerRejection as exc:
                raise submit_error(exc.code, exc.message, exc.data) from None
            except MempoolFullError as exc:  # a node would hold the submission; here no block comes by itself
                raise WalletMempoolFullError(str(exc), accepted_unknown=False) from None
            self.accepted.append(tx_id)
            if self.auto_confirm:
                self._make_block()
            return tx_id

    def in_mempool(self, tx_id: str) -> bool:
        """Whether ``tx_id`` waits in the mempool."""
        with self._lock:
            self._fault("in_mempool")
            return self.ledger.in_mempool(tx_id)

    def find_transaction(self, tx_id: str, *, since: tuple[int, str] | None,
                         inputs: Sequence[OutputRef] = ()) -> TxLookup:
        """Read the blocks after ``since`` (None: all) for ``tx_id`` and for other spenders of ``inputs``."""
        with self._lock:
            self._fault("find_transaction")
            start = 0
            if since is not None:
                position = self.ledger.block_position(since[1])
                if position is None or self.ledger.block_at(position)[0].slot != since[0]:
                    raise IntersectionNotFoundError(f"the chain has no block {since[1][:16]} at slot {since[0]}")
                start = position + 1
            wanted = set(inputs)
            spent_by: dict[OutputRef, str] = {}
            for index in range(start, self.ledger.block_count()):
                block, _raws = self.ledger.block_at(index)
                for other, spent in self._block_txs[block.id]:
                    if other == tx_id:
                        return TxLookup(tx_id, (block.slot, block.id), self._tip_slot())
                    for ref in wanted.intersection(spent):
                        spent_by[ref] = other
            return TxLookup(tx_id, None, self._tip_slot(), spent_by)

    def _tip_slot(self) -> int:
        tip = self.ledger.tip
        assert tip is not None
        return tip.slot

    def close(self) -> None:
        """Nothing to release."""
        self.closed = True


__all__ = ["MemoryChain"]
