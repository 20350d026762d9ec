"""The devnet's ledger: UTxO set with native assets, slot clock, mempool and blocks (pure, no I/O).

Transactions arrive as raw CBOR and are checked against Cardano's phase-1 rules
(:mod:`sandbox.rules`) against the UTxO set *as the mempool extends it*: outputs of
transactions still waiting count, inputs they spend are gone, as on a real node.
Work per transaction is proportional to its inputs and outputs, never to the UTxO set.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import cbor2

from sandbox.errors import LedgerRejection, MempoolFullError, PointNotFoundError, SandboxConfigError
from sandbox.ogmios_messages import MESSAGES
from sandbox.rules import RuleParams, Spent, decode_rejection, validate
from sandbox.txcbor import (
    Credential,
    script_ref,
    DecodedTx,
    DecodeError,
    address_from_str,
    address_network,
    address_to_str,
    decode_transaction,
    payment_credential,
)
from wallets.types import LOVELACE, OutputRef, is_native_asset

STATE_VERSION = 1


@dataclass(frozen=True)
class LedgerParams:
    """Protocol parameters the ledger enforces (mainnet's current values by default)."""

    network_id: int = 0
    min_fee_coefficient: int = 44
    min_fee_constant: int = 155381
    coins_per_utxo_byte: int = 4310
    max_tx_size: int = 16384
    max_value_size: int = 5000
    max_block_body_size: int = 90112
    min_fee_ref_script_cost_per_byte: int = 15
    max_ref_scripts_size: int = 204800

    @property
    def mempool_capacity_bytes(self) -> int:
        """Two blocks' worth of transactions, as a node sizes its mempool."""
        return 2 * self.max_block_body_size

    def rule_params(self) -> RuleParams:
        """The same values as the rules module reads them."""
        return RuleParams(
            network_id=self.network_id,
            min_fee_coefficient=self.min_fee_coefficient,
            min_fee_constant=self.min_fee_constant,
            coins_per_utxo_byte=self.coins_per_utxo_byte,
            max_tx_size=self.max_tx_size,
            max_value_size=self.max_value_size,
            min_fee_ref_script_cost_per_byte=self.min_fee_ref_script_cost_per_byte,
            max_ref_scripts_size=self.max_ref_scripts_size,
        )


@dataclass(frozen=True)
class TxOut:
    """An unspent output: bech32 address, lovelace, native assets (``policy.name`` → qty), datum.

    ``datum`` (hex CBOR of an inline datum) and ``script`` (hex CBOR ``[language, script]`` of a
    reference script) are additions to the contract; they default to None.
    """

    address: str
    lovelace: int
    assets: Mapping[str, int] = field(default_factory=dict)
    datum_hash: str | None = None
    datum: str | None = None
    script: str | None = None


@dataclass(frozen=True)
class Block:
    """A produced block: height (from 1), slot, header hash (64 hex) and its transaction ids."""

    height: int
    slot: int
    id: str
    tx_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Pending:
    tx: DecodedTx
    spent: tuple[OutputRef, ...]
    produced: tuple[OutputRef, ...]


@dataclass(frozen=True, slots=True)
class _Undo:
    """What a block changed in the UTxO set, kept to answer queries at recent points."""

    block: Block
    spent: tuple[tuple[OutputRef, TxOut], ...]
    produced: frozenset[OutputRef]


HISTORY_BLOCKS = 2160  # the security parameter k: how far back ledger states can be acquired


class Ledger:
    """UTxO set, mempool and chain of blocks of the devnet. Not thread-safe: callers lock."""

    def __init__(self, params: LedgerParams = LedgerParams(), *, slot: int = 0) -> None:
        self.params = params
        self._rule_params = params.rule_params()
        self.slot = slot
        self.tip: Block | None = None
        self._utxo: dict[OutputRef, tuple[TxOut, Credential]] = {}
        self._by_address: dict[str, set[OutputRef]] = {}
        self._mempool: dict[str, _Pending] = {}
        self._mempool_outputs: dict[OutputRef, tuple[TxOut, Credential]] = {}
        self._mempool_spent: dict[OutputRef, str] = {}
        self._mempool_bytes = 0
        self._genesis_count = 0
        # Every block with its transactions (raw CBOR), for chain sync; index by block id.
        self._blocks: list[tuple[Block, tuple[bytes, ...]]] = []
        self._block_index: dict[str, int] = {}
        self._history: deque[_Undo] = deque(maxlen=HISTORY_BLOCKS)
        self._created: dict[OutputRef, tuple[int, str, int]] = {}  # ref -> (slot, block id, tx index in block)
        self._unstamped: list[OutputRef] = []  # genesis outputs, stamped with the next block
        self.datums: dict[str, str] = {}  # datum hash -> datum CBOR hex, every inline datum seen on chain
        self.scripts: dict[str, str] = {}  # script hash -> [language, script] CBOR hex, every reference script

    # --- clock and chain --------------------------------------------------------------------

    @property
    def height(self) -> int:
        """The block height of the tip (0 before the first block)."""
        return self.tip.height if self.tip else 0

    def advance_to(self, slot: int) -> None:
        """Move the current slot forward to ``slot`` (never backwards)."""
        if slot > self.slot:
            self.slot = slot

    def add_genesis_utxo(self, address: str, lovelace: int, assets: Mapping[str, int] | None = None) -> OutputRef:
        """Create an output out of thin air (genesis funds) at ``address``; it is confirmed at once."""
        try:
            raw = address_from_str(address)
        except DecodeError as exc:
            raise SandboxConfigError(f"genesis address {address!r} is not a bech32 payment address") from exc
        if address_network(raw) != self.params.network_id:
            raise SandboxConfigError(f"genesis address {address!r} is not on network {self.params.network_id}")
        clean_assets = {a: q for a, q in (assets or {}).items() if q}
        amounts = [lovelace, *clean_assets.values()]
        if any(type(n) is not int or n < 0 for n in amounts) or not all(map(is_native_asset, clean_assets)):
            raise SandboxConfigError("genesis amounts must be non-negative and asset ids policy.name hex")
        self._genesis_count += 1
        seed = cbor2.dumps(["genesis", self._genesis_count, raw, lovelace, sorted(clean_assets.items())])
        ref = OutputRef(hashlib.blake2b(seed, digest_size=32).hexdigest(), 0)
        self._add_confirmed(ref, TxOut(address_to_str(raw), lovelace, clean_assets), payment_credential(raw))
        self._created[ref] = (self.slot, "", 0)
        self._unstamped.append(ref)
        return ref

    # --- submission ---------------------------------------------------------------------------

    def _resolve(self, ref: OutputRef) -> Spent | None:
        if ref in self._mempool_spent:
            return None
        entry = self._utxo.get(ref) or self._mempool_outputs.get(ref)
        if entry is None:
            return None
        out, credential = entry
        return Spent(out.lovelace, out.assets, credential, _script_size(out.script))

    def _decode(self, cbor: bytes) -> DecodedTx:
        if not isinstance(cbor, (bytes, bytearray, memoryview)):
            raise decode_rejection("the transaction must be bytes")
        try:
            return decode_transaction(bytes(cbor))
        except DecodeError as exc:
            raise decode_rejection(str(exc)) from None

    def submit(self, cbor: bytes) -> str:
        """Validate ``cbor`` against the UTxO set as the mempool extends it; add it to the mempool.

        Returns:
            The transaction id: blake2b-256 of the body bytes as received, in hex.

        Raises:
            LedgerRejection: with the Ogmios error code, message and data of the rule that failed.
        """
        tx = self._decode(cbor)
        validate(tx, resolve=self._resolve, slot=self.slot, params=self._rule_params)
        capacity = self.params.mempool_capacity_bytes
        if self._mempool_bytes + len(tx.raw) > capacity:
            raise MempoolFullError(self._mempool_bytes, capacity)
        self._add_to_mempool(tx)
        return tx.tx_id

    def mempool_has_room(self, size_bytes: int) -> bool:
        """Whether a transaction of ``size_bytes`` would fit in the mempool now."""
        return self._mempool_bytes + size_bytes <= self.params.mempool_capacity_bytes

    @property
    def mempool_bytes(self) -> int:
        """Total size of the transactions waiting in the mempool."""
        return self._mempool_bytes

    def _add_to_mempool(self, tx: DecodedTx) -> None:
        spent = tuple(OutputRef(tx_id, index) for tx_id, index in tx.inputs)
        produced = []
        for index, out in enumerate(tx.outputs):
            ref = OutputRef(tx.tx_id, index)
            txout = TxOut(out.address, out.lovelace, out.assets, out.datum_hash, out.datum, out.script)
            self._mempool_outputs[ref] = (txout, out.credential)
            produced.append(ref)
        for ref in spent:
            self._mempool_spent[ref] = tx.tx_id
        self._mempool[tx.tx_id] = _Pending(tx, spent, tuple(produced))
        self._mempool_bytes += len(tx.raw)

    def evaluate(self, cbor: bytes) -> list[Any]:
        """Script execution budgets: always ``[]`` (the devnet runs no Plutus scripts).

        Raises:
            LedgerRejection: -32602 for undecodable CBOR; 3004 when redeemers ask for evaluation.
        """
        tx = self._decode(cbor)
        if tx.redeemers:
            raise LedgerRejection(
                3004,
                MESSAGES[3004],
                {"reason": "the devnet does not execute Plutus scripts"},
            )
        return []

    # --- blocks ---------------------------------------------------------------------------------

    def produce_block(self, slot: int | None = None, *, force: bool = False) -> Block | None:
        """Move the mempool, in arrival order, into a new block at ``max(slot or current, tip slot + 1)``.

        The block takes the longest run of waiting transactions whose sizes fit in
        ``max_block_body_size``; the rest stays in the mempool for the next block. Transactions
        whose validity interval excludes the block's slot are dropped, and with them any
        transaction spending their outputs. Returns None (and makes no block) when nothing is
        included, unless ``force`` is set (an empty block, as a real chain makes on schedule).
        """
        block_slot = self.slot if slot is None else slot
        if self.tip is not None:
            block_slot = max(block_slot, self.tip.slot + 1)
        included: list[_Pending] = []
        kept: list[_Pending] = []
        body_bytes, full = 0, False
        dropped_outputs: set[OutputRef] = set()
        kept_outputs: set[OutputRef] = set()
        for pending in self._mempool.values():
            tx = pending.tx
            needs = pending.spent + tuple(OutputRef(t, i) for t, i in tx.reference_inputs + tx.collateral_inputs)
            if (tx.ttl is not None and block_slot >= tx.ttl) or any(r in dropped_outputs for r in needs):
                dropped_outputs.update(pending.produced)  # expired, or needs what an expired one made
                continue
            fits = body_bytes + len(tx.raw) <= self.params.max_block_body_size
            if full or not fits or (tx.valid_from or 0) > block_slot or any(r in kept_outputs for r in needs):
                full = full or not fits  # arrival order: once one does not fit, nothing jumps the queue
                kept.append(pending)
                kept_outputs.update(pending.produced)
                continue
            body_bytes += len(tx.raw)
            included.append(pending)
        if not included and not force:
            self._keep_in_mempool(kept)
            return None
        spent: list[tuple[OutputRef, TxOut]] = []
        produced: set[OutputRef] = set()
        for position, pending in enumerate(included):
            for ref in pending.spent:
                if ref in produced:  # made and spent within this block: no trace in the undo log
                    produced.discard(ref)
                else:
                    spent.append((ref, self._utxo[ref][0]))
                self._remove_confirmed(ref)
            for ref in pending.produced:
                out, credential = self._mempool_outputs[ref]
                self._add_confirmed(ref, out, credential)
                self._created[ref] = (block_slot, "", position)
                self._index_output(out)
                produced.add(ref)
        tx_ids = tuple(p.tx.tx_id for p in included)
        height = self.height + 1
        previous = bytes.fromhex(self.tip.id) if self.tip else b""
        header = cbor2.dumps([previous, height, block_slot, [bytes.fromhex(t) for t in tx_ids]])
        self.tip = Block(height, block_slot, hashlib.blake2b(header, digest_size=32).hexdigest(), tx_ids)
        for ref in list(produced) + self._unstamped:
            if ref in self._created:
                slot_no, _, position = self._created[ref]
                self._created[ref] = (slot_no, self.tip.id, position)
        self._unstamped.clear()
        self._history.append(_Undo(self.tip, tuple(spent), frozenset(produced)))
        self._append_block(self.tip, tuple(p.tx.raw for p in included))
        self._keep_in_mempool(kept)
        self.advance_to(block_slot)
        return self.tip

    def _keep_in_mempool(self, kept: list[_Pending]) -> None:
        """Make ``kept`` (in order) the whole mempool, with their outputs and spends."""
        self._mempool = {p.tx.tx_id: p for p in kept}
        self._mempool_outputs = {ref: self._mempool_outputs[ref] for p in kept for ref in p.produced}
        self._mempool_spent = {ref: p.tx.tx_id for p in kept for ref in p.spent}
        self._mempool_bytes = sum(len(p.tx.raw) for p in kept)

    def _index_output(self, out: TxOut) -> None:
        if out.datum is not None:
            self.datums[hashlib.blake2b(bytes.fromhex(out.datum), digest_size=32).hexdigest()] = out.datum
        if out.script is not None:
            self.scripts[script_ref(out.script).hash] = out.script

    def _append_block(self, block: Block, raws: tuple[bytes, ...]) -> None:
        self._block_index[block.id] = len(self._blocks)
        self._blocks.append((block, raws))

    # --- chain history (chain sync) -------------------------------------------------------------

    def block_count(self) -> int:
        """How many blocks the history holds (blocks made before history was kept are not in it)."""
        return len(self._blocks)

    def block_position(self, block_id: str) -> int | None:
        """The index in the history of block ``block_id``, or None if the history does not hold it."""
        return self._block_index.get(block_id)

    def block_at(self, index: int) -> tuple[Block, tuple[bytes, ...]]:
        """The block at ``index`` in the history, with its transactions' CBOR in block order."""
        return self._blocks[index]

    def _add_confirmed(self, ref: OutputRef, out: TxOut, credential: Credential) -> None:
        self._utxo[ref] = (out, credential)
        self._by_address.setdefault(out.address, set()).add(ref)

    def _remove_confirmed(self, ref: OutputRef) -> None:
        self._created.pop(ref, None)
        out, _credential = self._utxo.pop(ref)
        refs = self._by_address[out.address]
        refs.discard(ref)
        if not refs:
            del self._by_address[out.address]

    # --- queries --------------------------------------------------------------------------------

    def utxos_at(self, addresses: Iterable[str]) -> list[tuple[OutputRef, TxOut]]:
        """Confirmed unspent outputs at any of ``addresses``, sorted by reference."""
        refs = set()
        for address in addresses:
            refs |= self._by_address.get(address, set())
        return [(ref, self._utxo[ref][0]) for ref in sorted(refs, key=lambda r: (r.tx_id, r.index))]

    def utxos_by_refs(self, refs: Iterable[OutputRef]) -> list[tuple[OutputRef, TxOut]]:
        """The confirmed unspent outputs among ``refs`` (unknown or spent ones are left out)."""
        found = []
        for ref in dict.fromkeys(refs):
            entry = self._utxo.get(ref)
            if entry is not None:
                found.append((ref, entry[0]))
        return found

    def created_at(self, ref: OutputRef) -> tuple[int, str, int] | None:
        """(slot, block id, index of its transaction in the block) of an unspent output's block."""
        return self._created.get(ref)

    def at_point(self, slot: int, block_id: str) -> LedgerView:
        """A read-only view of the UTxO set as it was right after block ``(slot, block_id)``.

        Raises:
            PointNotFoundError: the point is older than the kept history, or not on this chain.
        """
        if self.tip is not None and (slot, block_id) == (self.tip.slot, self.tip.id):
            return LedgerView(self, [])
        undo: list[_Undo] = []
        for entry in reversed(self._history):
            if (entry.block.slot, entry.block.id) == (slot, block_id):
                return LedgerView(self, undo)
            undo.append(entry)
        oldest = self._history[0].block.slot if self._history else None
        if oldest is not None and slot < oldest:
            raise PointNotFoundError("Target point is too old.")
        raise PointNotFoundError("Target doesn't or no longer exist.")

    def has_point(self, slot: int, block_id: str) -> bool:
        """Whether block ``(slot, block_id)`` is the tip or within the kept history."""
        try:
            self.at_point(slot, block_id)
        except PointNotFoundError:
            return False
        return True

    def mempool(self) -> list[tuple[str, bytes]]:
        """The transactions waiting for a block: (id, cbor) in arrival order."""
        return [(tx_id, pending.tx.raw) for tx_id, pending in self._mempool.items()]

    def in_mempool(self, tx_id: str) -> bool:
        """Whether transaction ``tx_id`` is waiting in the mempool."""
        return tx_id in self._mempool

    def balance(self, address: str) -> dict[str, int]:
        """Confirmed holdings of ``address``: ``{"lovelace": n, "<policy>.<name>": qty, ...}``."""
        total = {LOVELACE: 0}
        for ref in self._by_address.get(address, ()):
            out = self._utxo[ref][0]
            total[LOVELACE] += out.lovelace
            for asset, qty in out.assets.items():
                total[asset] = total.get(asset, 0) + qty
        return total

    # --- persistence ----------------------------------------------------------------------------

    def to_state(self, *, blocks: bool = True) -> dict[str, Any]:
        """A JSON-able snapshot (hex strings and integers) that :meth:`from_state` restores.

        ``blocks=False`` leaves the block history out (a UTxO snapshot only).
        """
        utxo = []
        for ref, (out, credential) in sorted(self._utxo.items(), key=lambda kv: (kv[0].tx_id, kv[0].index)):
            item: dict[str, Any] = {"tx_id": ref.tx_id, "index": ref.index, "address": out.address,
                                    "lovelace": out.lovelace, "assets": dict(out.assets),
                                    "credential": [credential.kind, credential.hash]}
            if out.datum_hash is not None:
                item["datum_hash"] = out.datum_hash
            if out.datum is not None:
                item["datum"] = out.datum
            if out.script is not None:
                item["script"] = out.script
            created = self._created.get(ref)
            if created is not None:
                item["created"] = list(created)
            utxo.append(item)
        tip = None
        if self.tip is not None:
            tip = {"height": self.tip.height, "slot": self.tip.slot, "id": self.tip.id, "tx_ids": list(self.tip.tx_ids)}
        return {
            "version": STATE_VERSION,
            "params": {name: getattr(self.params, name) for name in LedgerParams.__dataclass_fields__},
            "slot": self.slot,
            "genesis_count": self._genesis_count,
            "tip": tip,
            "utxo": utxo,
            "mempool": [pending.tx.raw.hex() for pending in self._mempool.values()],
            **({"blocks": [{"height": b.height, "slot": b.slot, "id": b.id, "txs": [raw.hex() for raw in raws]}
                           for b, raws in self._blocks]} if blocks else {}),
            "datums": dict(self.datums),
            "scripts": dict(self.scripts),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Ledger:
        """Rebuild a ledger from :meth:`to_state` output; mempool transactions are re-validated.

        Raises:
            SandboxConfigError: when the state is not one this version wrote.
        """
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise SandboxConfigError("ledger state is missing or of an unknown version")
        try:
            ledger = cls(LedgerParams(**state["params"]), slot=int(state["slot"]))
            ledger._genesis_count = int(state["genesis_count"])
            if state["tip"] is not None:
                t = state["tip"]
                ledger.tip = Block(int(t["height"]), int(t["slot"]), str(t["id"]), tuple(t["tx_ids"]))
            for item in state["utxo"]:
                kind, key_hash = item["credential"]
                if kind not in ("key", "script", "byron") or len(bytes.fromhex(key_hash)) != 28:
                    raise ValueError(f"bad credential {item['credential']!r}")
                assets = {str(a): int(q) for a, q in item["assets"].items()}
                out = TxOut(str(item["address"]), int(item["lovelace"]), assets,
                            item.get("datum_hash"), item.get("datum"), item.get("script"))
                ref = OutputRef(str(item["tx_id"]), int(item["index"]))
                ledger._add_confirmed(ref, out, Credential(kind, key_hash))
                if "created" in item:
                    slot_no, block_id, position = item["created"]
                    ledger._created[ref] = (int(slot_no), str(block_id), int(position))
            ledger.datums = {str(h): str(d) for h, d in state.get("datums", {}).items()}
            ledger.scripts = {str(h): str(c) for h, c in state.get("scripts", {}).items()}
            mempool = list(state["mempool"])
            for item in state.get("blocks", ()):  # absent in states written before chain sync
                raws = tuple(bytes.fromhex(h) for h in item["txs"])
                tx_ids = tuple(decode_transaction(raw).tx_id for raw in raws)
                ledger._append_block(Block(int(item["height"]), int(item["slot"]), str(item["id"]), tx_ids), raws)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SandboxConfigError(f"ledger state is corrupt: {exc}") from exc
        for cbor_hex in mempool:
            try:
                ledger.submit(bytes.fromhex(cbor_hex))
            except (LedgerRejection, MempoolFullError):
                continue  # no longer valid (e.g. its TTL passed while the devnet was down)
        return ledger



def _script_size(script: str | None) -> int:
    return script_ref(script).size if script is not None else 0


class LedgerView:
    """The confirmed UTxO set at a recent point: the current set with later blocks undone."""

    def __init__(self, ledger: Ledger, undo: list[_Undo]) -> None:
        self._ledger = ledger
        self._undo = undo  # newest first
        self._added: dict[OutputRef, TxOut] = {}
        self._removed: set[OutputRef] = set()
        for entry in undo:
            for ref in entry.produced:
                self._removed.add(ref)
                self._added.pop(ref, None)
            for ref, out in entry.spent:
                self._added[ref] = out
                self._removed.discard(ref)

    def utxos_at(self, addresses: Iterable[str]) -> list[tuple[OutputRef, TxOut]]:
        """Unspent outputs at ``addresses`` at this point, sorted by reference."""
        wanted = set(addresses)
        found = {ref: out for ref, out in self._ledger.utxos_at(wanted) if ref not in self._removed}
        found.update({ref: out for ref, out in self._added.items() if out.address in wanted})
        return sorted(found.items(), key=lambda kv: (kv[0].tx_id, kv[0].index))

    def all_utxos(self) -> list[tuple[OutputRef, TxOut]]:
        """The whole UTxO set at this point, sorted by reference."""
        found = {ref: entry[0] for ref, entry in self._ledger._utxo.items() if ref not in self._removed}
        found.update(self._added)
        return sorted(found.items(), key=lambda kv: (kv[0].tx_id, kv[0].index))

    def utxos_by_refs(self, refs: Iterable[OutputRef]) -> list[tuple[OutputRef, TxOut]]:
        """The unspent outputs among ``refs`` at this point."""
        found = []
        for ref in dict.fromkeys(refs):
            if ref in self._added:
                found.append((ref, self._added[ref]))
            elif ref not in self._removed:
                found.extend(self._ledger.utxos_by_refs([ref]))
        return found
