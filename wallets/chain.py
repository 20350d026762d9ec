"""What the wallet needs from the chain (one interface), and an in-memory fake of it for unit tests.

``OgmiosChain`` (wallets/ogmios.py) is the real implementation. ``FakeChain`` keeps a UTxO set
and a mempool and checks submissions with the ledger rules the payment builder must satisfy
(validity interval, unknown or spent inputs, signatures, minimum UTxO, size, fee, value
conservation), raising the same typed errors with Ogmios's codes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import cbor2

from wallets.errors import ChainError, submit_error
from wallets.types import LOVELACE, OutputRef, ProtocolParams, Tip, Utxo


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


def _ref_json(ref: OutputRef) -> dict[str, Any]:
    return {"transaction": {"id": ref.tx_id}, "index": ref.index}


def _lovelace_json(n: int) -> dict[str, Any]:
    return {"ada": {"lovelace": n}}


class FakeChain:
    """In-memory chain with ledger checks. ``auto_confirm`` turns every accepted tx into a block at once."""

    def __init__(self, params: ProtocolParams = MAINNET_PARAMS, *, slot: int = 0, auto_confirm: bool = True) -> None:
        self.params = params
        self.auto_confirm = auto_confirm
        self._lock = threading.RLock()
        self._slot = slot
        self._height = 0
        self._utxos: dict[OutputRef, Utxo] = {}
        self._mempool: dict[str, tuple[tuple[OutputRef, ...], tuple[Utxo, ...]]] = {}
        self._faults: dict[str, list[Exception]] = {}
        self._genesis = 0
        # Chain history for find_transaction: (slot, block id, [(tx id, inputs)]) per block.
        self._blocks: list[tuple[int, str, list[tuple[str, tuple[OutputRef, ...]]]]] = [
            (slot, self._block_id(0), [])]
        self.calls: Counter[str] = Counter()
        self.accepted: list[str] = []
        self.closed = False

    # --- test controls ---
    def fund(self, address: str, lovelace: int, assets: Mapping[str, int] | None = None) -> OutputRef:
        """Create a confirmed UTxO out of nothing (genesis)."""
        with self._lock:
            self._genesis += 1
            ref = OutputRef(hashlib.blake2b(b"genesis%d" % self._genesis, digest_size=32).hexdigest(), 0)
            self._utxos[ref] = Utxo(ref, address, lovelace, dict(assets or {}))
            return ref

    def fail_next(self, method: str, error: Exception) -> None:
        """Make the next call of ``method`` raise ``error`` (fault injection)."""
        with self._lock:
            self._faults.setdefault(method, []).append(error)

    def produce_block(self) -> list[str]:
        """Confirm the whole mempool in arrival order; return the confirmed tx ids."""
        with self._lock:
            confirmed = list(self._mempool)
            txs = []
            for tx_id in confirmed:
                spent, created = self._mempool.pop(tx_id)
                for ref in spent:
                    self._utxos.pop(ref, None)
                for u in created:
                    self._utxos[u.ref] = u
                txs.append((tx_id, spent))
            self._slot += 1
            self._height += 1
            self._blocks.append((self._slot, self._block_id(self._height), txs))
            return confirmed

    def confirm_elsewhere(self, tx_id: str, spends: Sequence[OutputRef]) -> None:
        """A block holding a transaction from another wallet that spends ``spends`` (test control)."""
        with self._lock:
            for ref in spends:
                self._utxos.pop(ref, None)
            self._slot += 1
            self._height += 1
            self._blocks.append((self._slot, self._block_id(self._height), [(tx_id, tuple(spends))]))

    @staticmethod
    def _block_id(height: int) -> str:
        return hashlib.blake2b(b"block%d" % height, digest_size=32).hexdigest()

    def drop_mempool(self) -> None:
        """Forget every mempool transaction (as if they expired)."""
        with self._lock:
            self._mempool.clear()

    def advance(self, slots: int) -> None:
        """Move the tip ``slots`` forward without a transaction."""
        with self._lock:
            self._slot += slots

    def _fault(self, method: str) -> None:
        self.calls[method] += 1
        queue = self._faults.get(method)
        if queue:
            raise queue.pop(0)

    # --- Chain ---
    def tip(self) -> Tip:
        """The current tip (slot advances by one per block)."""
        with self._lock:
            self._fault("tip")
            return Tip(self._slot, self._blocks[-1][1])

    def protocol_params(self) -> ProtocolParams:
        """The configured parameters."""
        with self._lock:
            self._fault("protocol_params")
            return self.params

    def utxos_at(self, address: str) -> list[Utxo]:
        """Confirmed UTxOs at ``address``."""
        with self._lock:
            self._fault("utxos_at")
            return [u for u in self._utxos.values() if u.address == address]

    def utxos_by_refs(self, refs: Sequence[OutputRef]) -> list[Utxo]:
        """Confirmed UTxOs among ``refs``."""
        with self._lock:
            self._fault("utxos_by_refs")
            return [self._utxos[r] for r in refs if r in self._utxos]

    def in_mempool(self, tx_id: str) -> bool:
        """Whether ``tx_id`` waits in the mempool."""
        with self._lock:
            self._fault("in_mempool")
            return tx_id in self._mempool

    def find_transaction(self, tx_id: str, *, since: tuple[int, str] | None,
                         inputs: Sequence[OutputRef] = ()) -> TxLookup:
        """Read the blocks after ``since`` for ``tx_id`` and for other spenders of ``inputs``."""
        with self._lock:
            self._fault("find_transaction")
            start = 0
            if since is not None:
                # By id alone: this fake's tip slot moves with advance() while its block stays.
                found = [i for i, (_slot, block_id, _) in enumerate(self._blocks) if block_id == since[1]]
                if not found:
                    raise IntersectionNotFoundError(f"the chain has no block {since[1][:16]} at slot {since[0]}")
                start = found[0] + 1
            wanted = set(inputs)
            spent_by: dict[OutputRef, str] = {}
            for slot, block_id, txs in self._blocks[start:]:
                for other, spent in txs:
                    if other == tx_id:
                        return TxLookup(tx_id, (slot, block_id), self._slot)
                    for ref in wanted & set(spent):
                        spent_by[ref] = other
            return TxLookup(tx_id, None, self._slot, spent_by)

    def close(self) -> None:
        """Nothing to release."""
        self.closed = True

    def submit(self, cbor: bytes) -> str:
        """Validate like the ledger and add to the mempool (and confirm at once with ``auto_confirm``)."""
        with self._lock:
            self._fault("submit")
            tx_id, spent, created = self._validate(cbor)
            self._mempool[tx_id] = (spent, created)
            self.accepted.append(tx_id)
            if self.auto_confirm:
                self.produce_block()
            return tx_id

    def _available(self) -> dict[OutputRef, Utxo]:
        view = dict(self._utxos)
        for spent, created in self._mempool.values():
            for ref in spent:
                view.pop(ref, None)
            for u in created:
                view[u.ref] = u
        return view

    def _validate(self, cbor: bytes) -> tuple[str, tuple[OutputRef, ...], tuple[Utxo, ...]]:
        from wallets.payment import UTXO_ENTRY_OVERHEAD_BYTES, address_from_bytes, min_fee

        try:
            tx = cbor2.loads(cbor)
            body, witnesses, _valid, aux = tx
            body_bytes = cbor2.dumps(body)
            inputs = body[0].value if isinstance(body[0], cbor2.CBORTag) else body[0]
            refs = tuple(OutputRef(bytes(i[0]).hex(), int(i[1])) for i in inputs)
            raw_outputs = [(o[0], o[1]) for o in body[1]]  # legacy [addr, value] or map {0: addr, 1: value}
            fee, ttl = int(body[2]), body.get(3)
        except Exception as exc:
            raise submit_error(-32602, f"undecodable transaction: {exc}") from None
        tx_id = hashlib.blake2b(body_bytes, digest_size=32).hexdigest()
        if ttl is not None and self._slot >= ttl:  # valid while slot < ttl
            raise submit_error(3118, "outside validity interval",
                               {"validityInterval": {"invalidAfter": ttl}, "currentSlot": self._slot})
        if not refs:
            raise submit_error(3121, "empty inputs")
        view = self._available()
        unknown = [r for r in refs if r not in view]
        if unknown:
            raise submit_error(3117, "unknown or spent inputs",
                               {"unknownOutputReferences": [_ref_json(r) for r in unknown]})
        body_hash = bytes.fromhex(tx_id)
        signers = set()
        for vkey, sig in witnesses.get(0, []):
            if not _verify(bytes(vkey), bytes(sig), body_hash):
                raise submit_error(3100, "invalid signatures", {"invalidSignatories": [bytes(vkey).hex()]})
            signers.add(hashlib.blake2b(bytes(vkey), digest_size=28).digest())
        missing = {view[r].address for r in refs} - {a for a in (view[r].address for r in refs)
                                                      if _key_hash(a) in signers}
        if missing:
            raise submit_error(3101, "missing signatures", {"missingSignatories": sorted(missing)})
        produced: Counter[str] = Counter({LOVELACE: fee})
        created = []
        for i, (addr, value) in enumerate(raw_outputs):
            coin, assets = (value, {}) if isinstance(value, int) else (value[0], _flatten(value[1]))
            size = len(cbor2.dumps([addr, value]))
            need = (UTXO_ENTRY_OVERHEAD_BYTES + size) * self.params.coins_per_utxo_byte
            if coin < need:
                raise submit_error(3125, "output too small", {"insufficientlyFundedOutputs": [
                    {"output": {"address": address_from_bytes(bytes(addr)), "value": _lovelace_json(coin)},
                     "minimumRequiredValue": _lovelace_json(need)}]})
            produced[LOVELACE] += coin
            produced.update(assets)
            created.append(Utxo(OutputRef(tx_id, i), address_from_bytes(bytes(addr)), coin, assets))
        size = len(cbor) - 1
        if size > self.params.max_tx_size:
            raise submit_error(3119, "transaction too large",
                               {"measuredTransactionSize": size, "maximumTransactionSize": self.params.max_tx_size})
        if aux is not None and body.get(7) != hashlib.blake2b(cbor2.dumps(aux), digest_size=32).digest():
            raise submit_error(3106, "metadata hash mismatch")
        if fee < min_fee(size, self.params):
            raise submit_error(3122, "fee too small", {"minimumRequiredFee": _lovelace_json(min_fee(size, self.params)),
                                                       "providedFee": _lovelace_json(fee)})
        consumed: Counter[str] = Counter()
        for r in refs:
            consumed[LOVELACE] += view[r].lovelace
            consumed.update(view[r].assets)
        if +consumed != +produced:
            raise submit_error(3123, "value not conserved",
                               {"valueConsumed": dict(consumed), "valueProduced": dict(produced)})
        return tx_id, refs, tuple(created)


def _flatten(multiasset: Mapping[bytes, Mapping[bytes, int]]) -> dict[str, int]:
    return {f"{bytes(p).hex()}.{bytes(n).hex()}": q for p, names in multiasset.items() for n, q in names.items()}


def _key_hash(address: str) -> bytes | None:
    from wallets.payment import address_bytes

    raw = address_bytes(address)
    return raw[1:29] if (raw[0] >> 4) % 2 == 0 else None  # key-hash payment credential types are even


def _verify(vkey: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(vkey).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


__all__ = ["MAINNET_PARAMS", "Chain", "FakeChain", "IntersectionNotFoundError", "TxLookup"]
