"""The payee spends what it receives: sweep outputs held by a key to another address.

The twin's ``pay_to`` (``DEFAULT_PAY_TO``) is the enterprise address of a key derived from a
public label (:func:`label_signing_key`), so the sandbox can play a payee that moves its
revenue on, as a merchant does. A swept payment has no unspent output left: whoever wants to
know whether it landed must read the chain's blocks, not the UTxO set.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Iterable, Mapping, Sequence

from sandbox.errors import SandboxError
from wallets.types import OutputRef

log = logging.getLogger(__name__)

PAYEE_LABEL = "twin-pay-to"
"""The label of the key behind ``sandbox.billing.DEFAULT_PAY_TO``."""
TREASURY_LABEL = "twin-treasury"
"""The label of the key whose address receives the payee's sweeps."""


def label_signing_key(label: str) -> Any:
    """The pycardano ``PaymentSigningKey`` derived from ``label`` (sha256 of it: public, test only)."""
    from pycardano import PaymentSigningKey

    return PaymentSigningKey(hashlib.sha256(label.encode()).digest())


def key_address(key: Any) -> str:
    """The devnet (testnet) enterprise address of ``key``."""
    from pycardano import Address, Network

    return Address(key.to_verification_key().hash(), network=Network.TESTNET).encode()


def build_sweep_tx(inputs: Sequence[tuple[OutputRef, int, Mapping[str, int]]], *, key: Any, to_address: str,
                   params: Any) -> bytes:
    """A signed transaction moving everything in ``inputs`` (held by ``key``) to ``to_address``, less the fee.

    Raises:
        SandboxError: nothing to sweep, or too little to pay the fee and the output's minimum.
    """
    from pycardano import (Address, Asset, AssetName, MultiAsset, ScriptHash, Transaction, TransactionBody,
                           TransactionId, TransactionInput, TransactionOutput, TransactionWitnessSet, Value,
                           VerificationKeyWitness)

    if not inputs:
        raise SandboxError("nothing to sweep")
    lovelace = sum(n for _, n, _ in inputs)
    assets: dict[str, int] = {}
    for _, _, held in inputs:
        for asset, qty in held.items():
            assets[asset] = assets.get(asset, 0) + qty
    multi = MultiAsset()
    for asset_id, qty in sorted(assets.items()):
        policy, _, name = asset_id.partition(".")
        multi.setdefault(ScriptHash(bytes.fromhex(policy)), Asset())[AssetName(bytes.fromhex(name))] = qty
    vkey = key.to_verification_key()
    fee = 200_000
    for _ in range(6):
        coin = lovelace - fee
        if coin < 1_000_000:
            raise SandboxError("too little to sweep after the fee")
        body = TransactionBody(
            inputs=[TransactionInput(TransactionId(bytes.fromhex(r.tx_id)), r.index) for r, _, _ in inputs],
            outputs=[TransactionOutput(Address.from_primitive(to_address), Value(coin, multi) if assets else coin)],
            fee=fee,
        )
        witness = VerificationKeyWitness(vkey, key.sign(body.hash()))
        cbor = Transaction(body, TransactionWitnessSet(vkey_witnesses=[witness])).to_cbor()
        needed = params.min_fee_coefficient * (len(cbor) - 1) + params.min_fee_constant
        if needed <= fee and fee - needed < 2_000:
            return cbor
        fee = needed + 200  # a few bytes of slack: a smaller fee never makes the transaction bigger
    raise SandboxError("could not settle the sweep transaction fee")


def sweep(node: Any, *, key: Any, to_address: str, refs: Iterable[OutputRef] | None = None) -> str | None:
    """Spend ``refs`` (default: every confirmed output at ``key``'s address) on the devnet ``node``.

    Returns the sweep's transaction id, or None when there is nothing to sweep.
    """
    address = key_address(key)
    pairs = node.utxos_by_refs(list(refs)) if refs is not None else node.utxos_at([address])
    inputs = [(ref, out.lovelace, dict(out.assets)) for ref, out in pairs if out.address == address]
    if not inputs:
        return None
    return str(node.submit(build_sweep_tx(inputs, key=key, to_address=to_address, params=node.params)))


class PayeeSweeper:
    """The twin's payee: spends each payment it accepted, over Ogmios, to the treasury.

    Args:
        reader: the twin's ``sandbox.verifier.OgmiosReader``.
        key: the payee's signing key (default: the key behind ``DEFAULT_PAY_TO``).
        to_address: where the sweeps go (default: the treasury label's address).
        params: fee parameters (default: the devnet ledger's).
    """

    def __init__(self, reader: Any, *, key: Any = None, to_address: str | None = None, params: Any = None) -> None:
        from sandbox.utxo_ledger import LedgerParams

        self.reader = reader
        self.key = key if key is not None else label_signing_key(PAYEE_LABEL)
        self.address = key_address(self.key)
        self.to_address = to_address or key_address(label_signing_key(TREASURY_LABEL))
        self.params = params if params is not None else LedgerParams()

    def sweep_payment(self, tx_id: str) -> str | None:
        """Spend ``tx_id``'s unspent outputs held by the payee; return the sweep's id (None: nothing to do).

        A failure is logged, never raised: the payment was accepted whatever becomes of its sweep.
        """
        try:
            held = [(OutputRef(tx_id, index), assets.get("lovelace", 0),
                     {a: q for a, q in assets.items() if a != "lovelace"})
                    for index, address, assets in self.reader.unspent_outputs(tx_id) if address == self.address]
            if not held:
                return None
            swept = self.reader.submit(build_sweep_tx(held, key=self.key, to_address=self.to_address,
                                                      params=self.params))
        except Exception as exc:  # noqa: BLE001 - the sweep is the payee's business, not the caller's
            log.warning("payee sweep of %s failed: %s", tx_id, exc)
            return None
        log.info("payee swept payment %s in %s", tx_id, swept)
        return str(swept)


__all__ = ["PAYEE_LABEL", "TREASURY_LABEL", "PayeeSweeper", "build_sweep_tx", "key_address", "label_signing_key",
           "sweep"]
