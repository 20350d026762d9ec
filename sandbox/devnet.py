"""The devnet runtime: a ledger with a slot clock and a block timer, served over Ogmios v6.

``Devnet.start()`` returns once the Ogmios server is listening in a background thread that
runs its own asyncio loop. Slots are one second long; the current slot is the wall-clock slot
or the last block's slot, whichever is later. With ``block_time_s > 0`` the timer makes a block
every beat, an empty one when nothing waits (the tip keeps up with the clock, as on a real
chain); a block carries at most ``max_block_body_size`` bytes (mainnet's 90,112) in arrival
order and the mempool holds two blocks' worth, the rest waiting (see :meth:`DevnetNode.tick`).
With ``block_time_s=0`` every accepted transaction becomes its own block at once (each block's
slot is at least one past the last) and no empty blocks are made, which is what tests use.
The faucet key is deterministic (:func:`faucet_signing_key`), so ``cardano-agent sandbox fund``
can pay from it in another process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from sandbox.errors import SandboxConfigError, SandboxError
from sandbox.utxo_ledger import Block, Ledger, LedgerParams, MempoolFullError, TxOut
from sandbox.ogmios_json import Genesis
from sandbox.ogmios_server import OgmiosServer
from wallets.types import OutputRef, is_native_asset

log = logging.getLogger(__name__)

DEVNET_TOKEN = "82888098ca0a60c75af54db1b9817832a9da4b7a32ea575c461568a2.4445564e4554"
"""``DEVNET`` under the policy of a native script locked to the faucet key; the faucet holds plenty."""
FAUCET_ADDRESS = "addr_test1vp7zw3kkyls6nexvjcdly8pqznztrazn43n8y2awy6umepq63vkm5"
FAUCET_SEED = hashlib.blake2b(b"cardano-pay-agent devnet faucet", digest_size=32).digest()
FAUCET_LOVELACE = 10**15  # one billion ADA
FAUCET_TOKENS = 10**15
EPOCH_LENGTH = 432_000
TOKEN_ONLY_LOVELACE = 10_000_000  # lovelace carried by a genesis output asked for tokens only
STATE_FILE = "devnet.json"
STATE_VERSION = 1
SAVE_INTERVAL_S = 1.0
IDLE_SAVE_INTERVAL_S = 60.0  # when only empty blocks came: the state file is not rewritten every beat


def faucet_signing_key() -> Any:
    """The faucet's pycardano ``PaymentSigningKey`` (derived from a fixed, public seed)."""
    from pycardano import PaymentSigningKey

    return PaymentSigningKey(FAUCET_SEED)


def build_faucet_tx(inputs: list[tuple[OutputRef, int, dict[str, int]]], *, to_address: str, lovelace: int,
                    assets: Mapping[str, int], params: Any) -> tuple[bytes, tuple[int, int, dict[str, int]]]:
    """A signed faucet payment: ``inputs`` → ``to_address`` plus change back to the faucet.

    Returns:
        (transaction CBOR, (change output index, change lovelace, change assets)).

    Raises:
        SandboxConfigError: the inputs cannot cover the payment, or the amounts are negative.
    """
    from pycardano import (Address, Asset, AssetName, MultiAsset, ScriptHash, Transaction, TransactionBody,
                           TransactionId, TransactionInput, TransactionOutput, TransactionWitnessSet, Value,
                           VerificationKeyWitness)

    from sandbox.txcbor import DecodeError, address_from_str

    if lovelace <= 0 or any(q <= 0 for q in assets.values()):
        raise SandboxConfigError("faucet amounts must be positive")
    try:
        address_from_str(to_address)
    except DecodeError:
        raise SandboxConfigError(f"not a bech32 payment address: {to_address[:120]!r}") from None
    if any(not is_native_asset(a) for a in assets):
        raise SandboxConfigError("asset ids must be <policy id hex>.<asset name hex>")
    have_lovelace = sum(n for _, n, _ in inputs)
    have_assets: dict[str, int] = {}
    for _, _, held in inputs:
        for asset, qty in held.items():
            have_assets[asset] = have_assets.get(asset, 0) + qty
    change_assets = {a: have_assets.get(a, 0) - assets.get(a, 0) for a in set(have_assets) | set(assets)}
    if any(q < 0 for q in change_assets.values()):
        raise SandboxConfigError("the faucet does not hold enough of the requested assets")
    change_assets = {a: q for a, q in change_assets.items() if q}

    def value(coin: int, held: Mapping[str, int]) -> Any:
        if not held:
            return coin
        multi = MultiAsset()
        for asset_id, qty in sorted(held.items()):
            policy, _, name = asset_id.partition(".")
            multi.setdefault(ScriptHash(bytes.fromhex(policy)), Asset())[AssetName(bytes.fromhex(name))] = qty
        return Value(coin, multi)

    key = faucet_signing_key()
    vkey = key.to_verification_key()
    fee, settled = 200_000, False
    for _ in range(6):
        change = have_lovelace - lovelace - fee
        if change < 2_000_000:
            raise SandboxConfigError("the faucet does not hold enough lovelace")
        body = TransactionBody(
            inputs=[TransactionInput(TransactionId(bytes.fromhex(r.tx_id)), r.index) for r, _, _ in inputs],
            outputs=[TransactionOutput(Address.from_primitive(to_address), value(lovelace, assets)),
                     TransactionOutput(Address.from_primitive(FAUCET_ADDRESS), value(change, change_assets))],
            fee=fee,
        )
        witness = VerificationKeyWitness(vkey, key.sign(body.hash()))
        cbor = Transaction(body, TransactionWitnessSet(vkey_witnesses=[witness])).to_cbor()
        needed = params.min_fee_coefficient * (len(cbor) - 1) + params.min_fee_constant
        if needed == fee or (needed < fee and settled):
            return cbor, (1, change, change_assets)
        settled = needed < fee  # one more pass at the exact fee; a smaller fee never grows the size
        fee = needed
    raise SandboxError("could not settle the faucet transaction fee")


class DevnetNode:
    """The chain the Ogmios server serves: a :class:`Ledger` behind a lock, with a slot clock.

    Every method is thread-safe. ``on_change`` is called (outside the lock) after anything that
    changes the mempool or the tip.
    """

    def __init__(self, ledger: Ledger, genesis: Genesis, *, block_time_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.genesis = genesis
        self.params = ledger.params
        self.block_time_s = block_time_s
        self.lock = threading.RLock()
        self._room = threading.Condition(self.lock)  # notified when a block frees mempool space
        self.dirty = False  # anything changed since the last snapshot (empty blocks included)
        self.dirty_transactions = False  # a transaction was accepted or confirmed since then
        self._version = 0
        self.on_change: Callable[[], None] = lambda: None
        self._clock = clock

    def _slot_locked(self) -> int:
        tip = self.ledger.tip
        return max(self.genesis.slot_at(self._clock()), tip.slot if tip else 0, self.ledger.slot)

    def current_slot(self) -> int:
        """max(wall-clock slot, last block slot)."""
        with self.lock:
            return self._slot_locked()

    def tip(self) -> Block | None:
        """The last block, or None before the first."""
        return self.ledger.tip

    def height(self) -> int:
        """Height of the last block (0 before the first)."""
        return self.ledger.height

    def utxos_at(self, addresses: Iterable[str]) -> list[tuple[OutputRef, TxOut]]:
        """Confirmed outputs at ``addresses``."""
        with self.lock:
            return self.ledger.utxos_at(addresses)

    def utxos_by_refs(self, refs: Iterable[OutputRef]) -> list[tuple[OutputRef, TxOut]]:
        """Confirmed unspent outputs among ``refs``."""
        with self.lock:
            return self.ledger.utxos_by_refs(refs)

    def all_utxos(self, point: tuple[int, str] | None = None) -> list[tuple[OutputRef, TxOut]]:
        """The whole confirmed UTxO set (at a recent ``(slot, block id)`` point when given)."""
        with self.lock:
            if point is not None:
                return self.ledger.at_point(*point).all_utxos()
            return [(ref, entry[0]) for ref, entry in self.ledger._utxo.items()]

    def utxos_at_point(self, point: tuple[int, str], addresses: Iterable[str]) -> list[tuple[OutputRef, TxOut]]:
        """Outputs at ``addresses`` as they were right after block ``point``.

        Raises:
            PointNotFoundError: the point is no longer (or never was) in the recent history.
        """
        with self.lock:
            return self.ledger.at_point(*point).utxos_at(addresses)

    def utxos_by_refs_at_point(self, point: tuple[int, str], refs: Iterable[OutputRef]) -> list[tuple[OutputRef, TxOut]]:
        """The unspent outputs among ``refs`` as they were right after block ``point``."""
        with self.lock:
            return self.ledger.at_point(*point).utxos_by_refs(refs)

    def has_point(self, point: tuple[int, str]) -> bool:
        """Whether ``(slot, block id)`` is the tip or a block within the kept history."""
        with self.lock:
            return self.ledger.has_point(*point)

    def check_point(self, point: tuple[int, str]) -> None:
        """Raise PointNotFoundError (with Ogmios's reason) unless the point can be acquired."""
        with self.lock:
            self.ledger.at_point(*point)

    def created_at(self, ref: OutputRef) -> tuple[int, str, int] | None:
        """(slot, block id, transaction index) of the block that made an unspent output."""
        with self.lock:
            return self.ledger.created_at(ref)

    def datum(self, datum_hash: str) -> str | None:
        """The CBOR hex of a datum seen inline on chain, by its hash."""
        with self.lock:
            return self.ledger.datums.get(datum_hash)

    def script(self, script_hash: str) -> str | None:
        """The ``[language, script]`` CBOR hex of a reference script seen on chain, by its hash."""
        with self.lock:
            return self.ledger.scripts.get(script_hash)

    def block_count(self) -> int:
        """Blocks in the chain history (for chain sync)."""
        with self.lock:
            return self.ledger.block_count()

    def block_position(self, block_id: str) -> int | None:
        """Where block ``block_id`` is in the history, or None."""
        with self.lock:
            return self.ledger.block_position(block_id)

    def block_at(self, index: int) -> tuple[Block, tuple[bytes, ...]]:
        """The ``index``-th block of the history and its transactions' CBOR."""
        with self.lock:
            return self.ledger.block_at(index)

    def mempool(self) -> list[tuple[str, bytes]]:
        """Waiting transactions, (id, cbor) in arrival order."""
        with self.lock:
            return self.ledger.mempool()

    def mempool_version(self) -> int:
        """A counter that moves whenever the mempool changes (a submission or a block)."""
        return self._version

    def submit(self, cbor: bytes, *, wait_s: float = 0.0) -> str:
        """Validate and queue ``cbor`` (a block at once when ``block_time_s`` is 0); return its id.

        When the mempool is full, waits up to ``wait_s`` for a block to make room, as a node's
        local submission does (the Ogmios server waits on its own loop instead).

        Raises:
            LedgerRejection: the Ogmios error of the rule that failed; the ledger is unchanged.
            MempoolFullError: still no room after ``wait_s``.
        """
        deadline = time.monotonic() + wait_s
        with self.lock:
            while True:
                self.ledger.advance_to(self._slot_locked())
                try:
                    tx_id = self.ledger.submit(cbor)
                    break
                except MempoolFullError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise
                    self._room.wait(left)
            if self.block_time_s == 0:
                self.ledger.produce_block(self._slot_locked())
            self.dirty = self.dirty_transactions = True
            self._version += 1
        self.on_change()
        return tx_id

    def evaluate(self, cbor: bytes) -> list[Any]:
        """Script budgets (always empty: no Plutus on the devnet)."""
        with self.lock:
            return self.ledger.evaluate(cbor)

    def produce_block(self, *, force: bool = False) -> Block | None:
        """Turn what fits of the mempool into a block at the current slot (None if empty and not forced)."""
        with self.lock:
            had_mempool = bool(self.ledger.mempool())
            block = self.ledger.produce_block(self._slot_locked(), force=force)
            if block is not None or had_mempool:
                self.dirty = True
                self.dirty_transactions = self.dirty_transactions or had_mempool
                self._version += 1
                self._room.notify_all()
        if block is not None or had_mempool:
            self.on_change()
        return block

    def tick(self) -> Block | None:
        """One beat of the block timer: a block of what the mempool holds, or an empty one.

        An empty block is made once the wall clock has passed the tip's slot, so the tip keeps
        up with time as a real chain's does (and never runs ahead of it on sub-second timers).
        """
        with self.lock:
            tip = self.ledger.tip
            due = tip is None or self.genesis.slot_at(self._clock()) > tip.slot
        return self.produce_block(force=due)

    def mempool_has_room(self, size_bytes: int) -> bool:
        """Whether a transaction of ``size_bytes`` fits in the mempool now."""
        with self.lock:
            return self.ledger.mempool_has_room(size_bytes)

    def mempool_bytes(self) -> int:
        """Bytes waiting in the mempool."""
        with self.lock:
            return self.ledger.mempool_bytes

    def snapshot(self) -> dict[str, Any]:
        """The ledger state for persistence (JSON-able); clears the dirty flag."""
        with self.lock:
            self.dirty = self.dirty_transactions = False
            return self.ledger.to_state()


def _new_chain(now: float, fund: Mapping[str, int], fund_assets: Mapping[str, Mapping[str, int]],
               params: LedgerParams | None = None) -> tuple[Ledger, Genesis]:
    """A fresh ledger: faucet and requested genesis outputs, then a genesis block.

    Slot 0 is one epoch before ``now`` so that the epoch is never 0 (the ``ogmios`` client
    treats epoch 0 as missing).
    """
    funds = {addr: int(fund.get(addr, TOKEN_ONLY_LOVELACE)) for addr in sorted(set(fund) | set(fund_assets))}
    genesis = Genesis(system_start=int(now) - EPOCH_LENGTH, epoch_length=EPOCH_LENGTH, initial_funds=funds)
    ledger = Ledger(params or LedgerParams(), slot=genesis.slot_at(now))
    ledger.add_genesis_utxo(FAUCET_ADDRESS, FAUCET_LOVELACE, {DEVNET_TOKEN: FAUCET_TOKENS})
    for address, lovelace in funds.items():
        ledger.add_genesis_utxo(address, lovelace, dict(fund_assets.get(address, {})))
    ledger.produce_block(force=True)
    return ledger, genesis


def _load_chain(path: Path) -> tuple[Ledger, Genesis]:
    try:
        state = json.loads(path.read_text())
        if state.get("version") != STATE_VERSION:
            raise SandboxConfigError(f"{path}: devnet state of an unknown version")
        genesis = Genesis(system_start=int(state["system_start"]), epoch_length=int(state["epoch_length"]),
                          initial_funds={a: int(n) for a, n in state["initial_funds"].items()})
        return Ledger.from_state(state["ledger"]), genesis
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SandboxConfigError(f"cannot read devnet state {path}: {exc}") from exc


class Devnet:
    """A running devnet: ledger, slot clock, block timer and Ogmios server in a background thread.

    Use :meth:`start`; stop with :meth:`stop` or as a context manager.
    """

    network = "devnet"

    def __init__(self, node: DevnetNode, *, host: str, ogmios_port: int, state_dir: Path | None) -> None:
        self._node = node
        self._state_dir = state_dir
        self._server = OgmiosServer(node, host=host, port=ogmios_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="devnet", daemon=True)
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopped = False
        self._faucet_change: tuple[OutputRef, int, dict[str, int]] | None = None
        self._save_lock = threading.Lock()
        self.ogmios_url = ""

    @classmethod
    def start(cls, *, host: str = "127.0.0.1", ogmios_port: int = 0, block_time_s: float = 1.0,
              fund: Mapping[str, int] | None = None,
              fund_assets: Mapping[str, Mapping[str, int]] | None = None,
              state_dir: Path | None = None, clock: Callable[[], float] = time.time,
              max_block_body_size: int | None = None) -> Devnet:
        """Create (or reload from ``state_dir``) the chain and serve it; return when listening.

        ``fund`` and ``fund_assets`` become one genesis output per address on a new chain (an
        address given only tokens gets ``TOKEN_ONLY_LOVELACE`` with them); on a reloaded chain,
        addresses not funded at its genesis are paid by the faucet with real transactions.
        ``clock`` (unix seconds) drives the slot clock; tests may inject one. ``max_block_body_size``
        (a new chain only; default mainnet's) also sizes the mempool, at two blocks' worth.

        Raises:
            SandboxConfigError: bad options or an unreadable state directory.
            SandboxError: the server could not start (e.g. the port is taken).
        """
        if block_time_s < 0:
            raise SandboxConfigError("block time must be >= 0 seconds")
        if max_block_body_size is not None and max_block_body_size <= 0:
            raise SandboxConfigError("max block body size must be positive")
        fund, fund_assets = dict(fund or {}), dict(fund_assets or {})
        path = Path(state_dir) / STATE_FILE if state_dir is not None else None
        reloaded = path is not None and path.exists()
        if reloaded:
            ledger, genesis = _load_chain(path)  # type: ignore[arg-type]
        else:
            params = LedgerParams(max_block_body_size=max_block_body_size) if max_block_body_size else None
            ledger, genesis = _new_chain(clock(), fund, fund_assets, params)
        node = DevnetNode(ledger, genesis, block_time_s=block_time_s, clock=clock)
        devnet = cls(node, host=host, ogmios_port=ogmios_port, state_dir=Path(state_dir) if state_dir else None)
        devnet._thread.start()
        if not devnet._ready.wait(30):
            devnet.stop()
            raise SandboxError("the devnet did not start within 30 s")
        if devnet._startup_error is not None:
            devnet._stopped = True
            devnet._thread.join(10)
            raise SandboxError(f"cannot serve Ogmios on {host}:{ogmios_port}: {devnet._startup_error}") from None
        devnet.ogmios_url = devnet._server.url
        if devnet._state_dir is not None:
            devnet._state_dir.mkdir(parents=True, exist_ok=True)
            devnet.save()
        if reloaded:
            for address in sorted(set(fund) | set(fund_assets)):
                if address not in genesis.initial_funds:
                    devnet.fund(address, fund.get(address, TOKEN_ONLY_LOVELACE), fund_assets.get(address))
        return devnet

    # --- public API ------------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        """The ledger, for test assertions (shared with the server thread; production code never uses it)."""
        return self._node.ledger

    @property
    def node(self) -> DevnetNode:
        """The thread-safe chain behind the server."""
        return self._node

    @property
    def faucet_address(self) -> str:
        """The faucet's enterprise address."""
        return FAUCET_ADDRESS

    def produce_block(self) -> Block | None:
        """Force a block now from the mempool; None when the mempool is empty."""
        return self._node.produce_block()

    def fund(self, address: str, lovelace: int, assets: Mapping[str, int] | None = None) -> str:
        """Pay ``lovelace`` (and ``assets``) from the faucet to ``address`` with a real transaction.

        Successive calls chain on the previous call's change, so no block is needed in between.

        Returns:
            The transaction id.

        Raises:
            LedgerRejection: the ledger refused it (e.g. 3125 when ``lovelace`` is below the
                minimum for an output carrying ``assets``).
        """
        with self._node.lock:
            inputs = self._faucet_inputs()
            cbor, change = build_faucet_tx(inputs, to_address=address, lovelace=lovelace,
                                           assets=dict(assets or {}), params=self._node.params)
            tx_id = self._node.submit(cbor, wait_s=max(30.0, 3 * self._node.block_time_s))
            self._faucet_change = (OutputRef(tx_id, change[0]), change[1], change[2])
        return tx_id

    def _faucet_inputs(self) -> list[tuple[OutputRef, int, dict[str, int]]]:
        ledger = self._node.ledger
        if self._faucet_change is not None:
            ref = self._faucet_change[0]
            if ledger.in_mempool(ref.tx_id) or ledger.utxos_by_refs([ref]):
                return [self._faucet_change]
        utxos = ledger.utxos_at([FAUCET_ADDRESS])
        if not utxos:
            raise SandboxError("the faucet has no funds left")
        ref, out = max(utxos, key=lambda pair: pair[1].lovelace)
        return [(ref, out.lovelace, dict(out.assets))]

    def save(self) -> None:
        """Write the chain to ``state_dir`` atomically (no-op without a state dir)."""
        if self._state_dir is None:
            return
        genesis = self._node.genesis
        path = self._state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        with self._save_lock:  # snapshot inside the lock: an older snapshot never overwrites a newer one
            state = {"version": STATE_VERSION, "system_start": genesis.system_start,
                     "epoch_length": genesis.epoch_length, "initial_funds": dict(genesis.initial_funds),
                     "ledger": self._node.snapshot()}
            with open(tmp, "w") as fh:
                json.dump(state, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)

    def stop(self) -> None:
        """Stop serving, wait for the thread, and save the chain. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive() and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join(30)
        self.save()

    def __enter__(self) -> Devnet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Devnet(url={self.ogmios_url!r}, tip={self._node.tip()!r})"

    # --- background thread ------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        server = self._server
        def on_change() -> None:
            loop.call_soon_threadsafe(server.notify_mempool_changed)

        self._node.on_change = on_change
        try:
            await server.start()
        except BaseException as exc:  # noqa: BLE001 - reported to start() in the caller's thread
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._tick_until_stopped()
        finally:
            self._node.on_change = lambda: None
            await server.stop()

    async def _tick_until_stopped(self) -> None:
        assert self._stop_event is not None
        block_time = self._node.block_time_s
        interval = block_time if block_time > 0 else SAVE_INTERVAL_S
        last_save = time.monotonic()
        while not self._stop_event.is_set():
            try:
                await asyncio.wait_for(self._stop_event.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass
            if block_time > 0 and not self._stop_event.is_set():
                self._node.tick()
            since = time.monotonic() - last_save
            if (self._node.dirty_transactions and since >= SAVE_INTERVAL_S
                    or self._node.dirty and since >= IDLE_SAVE_INTERVAL_S):
                last_save = time.monotonic()
                try:  # writing a large state off the loop keeps requests flowing meanwhile
                    await asyncio.get_running_loop().run_in_executor(None, self.save)
                except OSError as exc:
                    log.warning("could not save devnet state: %s", exc)


__all__ = ["DEVNET_TOKEN", "FAUCET_ADDRESS", "Devnet", "DevnetNode", "build_faucet_tx", "faucet_signing_key"]
