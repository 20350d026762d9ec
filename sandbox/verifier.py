"""The twin's payment verifier: reads the chain as an Ogmios client (the agent's), never through the ledger object.

A proof (``X-Payment``) is a 64-hex transaction id or the hex CBOR of a signed transaction.
The verifier finds the transaction on the ledger (``queryLedgerState/utxo`` by output
reference) or in the mempool (``acquireMempool`` / ``hasTransaction`` / ``nextTransaction``),
checks that it carries every required output, and submits CBOR proofs that pay.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from sandbox.errors import SandboxError
from sandbox.invoices import Output
from wallets.types import OutputRef

log = logging.getLogger(__name__)

LOVELACE = "lovelace"
MAX_PROOF_HEX = 2 * 16_384
_HEX = frozenset("0123456789abcdef")


class ProofRefusedError(SandboxError):
    """A payment proof that does not settle the invoice; ``code`` is a stable snake_case reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class OgmiosUnreachableError(SandboxError):
    """Ogmios could not be reached or answered something unexpected."""


@dataclass(frozen=True, slots=True)
class TxView:
    """A transaction's outputs as seen on the ledger, in the mempool, or in a CBOR proof."""

    tx_id: str
    outputs: tuple[tuple[str, Mapping[str, int]], ...]  # (bech32 address, {asset: quantity})
    where: str  # "ledger", "mempool" or "cbor"
    network_id: int | None = None


def parse_proof(proof: str) -> tuple[str, str | bytes]:
    """Return ``("hash", tx_id)`` or ``("cbor", bytes)``; raise ProofRefusedError for anything else."""
    text = proof.strip().lower()
    if not text or len(text) > MAX_PROOF_HEX or len(text) % 2 or not set(text) <= _HEX:
        raise ProofRefusedError("invalid_payment_proof", "X-Payment must be a 64-hex tx hash or hex signed CBOR")
    if len(text) == 64:
        return "hash", text
    return "cbor", bytes.fromhex(text)


def decode_tx(cbor: bytes) -> TxView:
    """Decode a signed transaction with the ledger's decoder: id (hash of the body as sent), outputs, network."""
    from sandbox.txcbor import DecodeError, decode_transaction

    try:
        tx = decode_transaction(cbor)
    except DecodeError as exc:  # any decoding failure means the proof is garbage
        raise ProofRefusedError("invalid_payment_proof", f"X-Payment is not a signed transaction ({exc})") from None
    outputs = tuple((out.address, {LOVELACE: out.lovelace, **out.assets}) for out in tx.outputs)
    return TxView(tx.tx_id, outputs, "cbor", tx.network_id)


def check_outputs(view: TxView, required: Sequence[Output], *, network_id: int = 0) -> None:
    """Raise ProofRefusedError unless ``view`` pays every required output, per address and asset."""
    wrong_prefix = "addr1" if network_id == 0 else "addr_test1"
    if (view.network_id is not None and view.network_id != network_id) or any(
        addr.startswith(wrong_prefix) for addr, _ in view.outputs
    ):
        raise ProofRefusedError("wrong_network", f"transaction {view.tx_id} is not for network id {network_id}")
    paid: dict[tuple[str, str], int] = defaultdict(int)
    for addr, assets in view.outputs:
        for asset, qty in assets.items():
            paid[(addr, asset)] += qty
    needed: dict[tuple[str, str], tuple[int, str]] = {}
    for out in required:
        amount, role = needed.get((out.address, out.asset), (0, out.role))
        needed[(out.address, out.asset)] = (amount + out.amount, role)
    for (addr, asset), (amount, role) in needed.items():
        got = paid.get((addr, asset), 0)
        if got == 0:
            raise ProofRefusedError("missing_output", f"no {asset} output to {role} {addr}")
        if got < amount:
            raise ProofRefusedError("short_output", f"{role} {addr} got {got} {asset}, needs {amount}")


POOLED_KEPT = 4096
"""Mempool transactions the reader keeps by id (two mainnet blocks hold about 600 payments)."""


def _pooled_view(tx: dict[str, Any]) -> TxView:
    """A mempool transaction as Ogmios shows it (``fields: all``), as a :class:`TxView`."""
    from wallets.errors import ChainProtocolError
    from wallets.ogmios import parse_value

    outs = []
    for out in tx.get("outputs") or ():
        lovelace, assets = parse_value(out.get("value") if isinstance(out, dict) else None)
        address = out.get("address")
        if not isinstance(address, str):
            raise ChainProtocolError("bad address in a mempool transaction's output")
        outs.append((address, {LOVELACE: lovelace, **assets}))
    network = {"mainnet": 1, "testnet": 0}.get(str(tx.get("network")))
    return TxView(str(tx.get("id")), tuple(outs), "mempool", network)


class OgmiosReader:
    """The verifier's reads and submissions, through the agent's Ogmios client (``wallets.ogmios``).

    One client for every Ogmios reader: the same parsing, reconnection and typed errors as the
    payer's. Chain failures become :class:`OgmiosUnreachableError`, node refusals of a submitted
    proof :class:`ProofRefusedError`.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0, max_outputs: int = 64) -> None:
        from wallets.ogmios import OgmiosChain

        self.url = url
        self.max_outputs = max_outputs
        self._chain = OgmiosChain(url, timeout_s=timeout_s)
        self._pooled: dict[str, TxView] = {}  # mempool transactions seen, oldest first
        self._pooled_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OgmiosReader({self.url!r})"

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        self._chain.close()

    def unspent_outputs(self, tx_id: str) -> list[tuple[int, str, dict[str, int]]]:
        """The transaction's outputs still unspent on the ledger: (index, address, {asset: quantity}), by index."""
        from wallets.errors import ChainError

        refs = [OutputRef(tx_id, i) for i in range(self.max_outputs)]
        try:
            utxos = self._chain.utxos_by_refs(refs)
        except ChainError as exc:
            raise OgmiosUnreachableError(f"utxo query at {self.url} failed: {exc}") from exc
        return [(u.ref.index, u.address, {LOVELACE: u.lovelace, **u.assets})
                for u in sorted(utxos, key=lambda u: u.ref.index)]

    def ledger_outputs(self, tx_id: str) -> TxView | None:
        """The transaction's unspent outputs on the ledger, or None if none are there."""
        outs = tuple((address, assets) for _index, address, assets in self.unspent_outputs(tx_id))
        return TxView(tx_id, outs, "ledger") if outs else None

    def mempool_tx(self, tx_id: str) -> TxView | None:
        """The transaction from a fresh mempool snapshot, or None if it is not there.

        A transaction's content never changes under its id, so every transaction walked past
        in the mempool is kept (up to ``POOLED_KEPT``): the next lookup asks only whether its
        id is still in the mempool. Without that, each lookup walked the mempool from the
        start, and a mempool of a few hundred payments made every verification slow.
        """
        from wallets.errors import ChainError

        try:
            with self._pooled_lock:
                kept = self._pooled.get(tx_id)
            if kept is not None:
                return kept if self._chain.in_mempool(tx_id) else None
            tx = self._chain.mempool_transaction(tx_id, seen=self._keep_pooled)
            return None if tx is None else _pooled_view(tx)
        except ChainError as exc:
            raise OgmiosUnreachableError(f"mempool query at {self.url} failed: {exc}") from exc

    def _keep_pooled(self, tx: dict[str, Any]) -> None:
        from wallets.errors import ChainProtocolError

        tx_id = tx.get("id")
        if not isinstance(tx_id, str):
            return
        try:
            view = _pooled_view(tx)
        except ChainProtocolError:
            return  # not kept; were it the one asked for, parsing it again raises there
        with self._pooled_lock:
            self._pooled[tx_id] = view
            while len(self._pooled) > POOLED_KEPT:
                self._pooled.pop(next(iter(self._pooled)))

    def submit(self, cbor: bytes) -> str:
        """Submit a signed transaction; return its id or raise ProofRefusedError with the node's reason."""
        from wallets.errors import ChainError, SubmitError

        try:
            return self._chain.submit(cbor)
        except SubmitError as exc:
            raise ProofRefusedError("payment_rejected_by_node",
                                    f"node refused the transaction ({exc.code}: {exc})") from None
        except ChainError as exc:
            raise OgmiosUnreachableError(f"submitting to Ogmios at {self.url} failed: {exc}") from exc


class Verifier:
    """Locates payment transactions through Ogmios and checks their outputs."""

    def __init__(self, reader: OgmiosReader, *, network_id: int = 0) -> None:
        self.reader = reader
        self.network_id = network_id

    def locate(self, tx_id: str) -> TxView | None:
        """Find ``tx_id`` on the ledger, else in the mempool (looking at the ledger again for a race)."""
        view = self.reader.ledger_outputs(tx_id)
        if view is not None:
            return view
        view = self.reader.mempool_tx(tx_id)
        return view if view is not None else self.reader.ledger_outputs(tx_id)

    def check(self, view: TxView, required: Sequence[Output]) -> None:
        """Refuse ``view`` unless it pays every output in ``required`` on this network."""
        check_outputs(view, required, network_id=self.network_id)

    def submit_proof(self, view: TxView, cbor: bytes, required: Sequence[Output]) -> TxView:
        """Check a decoded CBOR proof, submit it, and return where the transaction now is."""
        self.check(view, required)
        tx_id = self.reader.submit(cbor)
        log.info("submitted CBOR payment %s", tx_id)
        located = self.locate(tx_id)
        return located if located is not None else TxView(tx_id, view.outputs, "mempool", view.network_id)
