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


__all__ = ["PAYEE_LABEL", "TREASURY_LABEL", "build_sweep_tx", "key_address", "label_signing_key", "sweep"]
