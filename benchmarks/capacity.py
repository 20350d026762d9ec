"""Figure 6: transactions per second the devnet accepts with full ledger validation.

``N`` chained payments (each spends the previous one's change) are built and signed ahead of
time with ``wallets.payment.build_payment``; only submitting them over one persistent Ogmios
connection is timed. With ``block_time_s=0`` every accepted transaction is also made into its
own block, so the figure includes block production. Figure 2 should stay well below this, so
that it measures the agent and not the sandbox.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import ExitStack
from typing import Any

from benchmarks._setup import start_sandbox
from benchmarks.fee import payee

FULL_TXS = 1000
QUICK_TXS = 200
WALLET_LOVELACE = 10_000_000_000_000


class KeySigner:
    """A ``wallets.payment.Signer`` over a bare pycardano key (bench setup only)."""

    def __init__(self, key: Any, address: str) -> None:
        self._key = key
        self._vkey = key.to_verification_key().payload
        self.address = address

    def sign(self, tx_body_hash: bytes) -> tuple[bytes, bytes]:
        return self._vkey, self._key.sign(tx_body_hash)

    def __repr__(self) -> str:
        return f"KeySigner(address={self.address!r})"


def prebuild(n: int, *, signer: KeySigner, first: Any, params: Any, ttl_slot: int) -> list[bytes]:
    """``n`` signed transactions, each spending the change of the one before (``first`` funds the chain)."""
    from wallets.payment import build_payment
    from wallets.types import RequiredOutput

    to = payee(0)
    utxos = [first]
    out = []
    for _ in range(n):
        payment = build_payment([RequiredOutput(to, 1_000_000)], utxos=utxos, change_address=signer.address,
                                signer=signer, params=params, ttl_slot=ttl_slot)
        out.append(payment.cbor)
        utxos = list(payment.change)
    return out


def measure(quick: bool) -> dict[str, Any]:
    """Submit ``n`` pre-built chained transactions as fast as one client can; return the rate."""
    from pycardano import Address, Network, PaymentSigningKey

    from wallets.ogmios import OgmiosChain

    n = QUICK_TXS if quick else FULL_TXS
    key = PaymentSigningKey(hashlib.sha256(b"cardano-bench:capacity").digest())
    address = Address(key.to_verification_key().hash(), network=Network.TESTNET).encode()
    with ExitStack() as stack:
        sandbox = start_sandbox(stack, fund={address: WALLET_LOVELACE})
        chain = OgmiosChain(sandbox.devnet.ogmios_url)
        stack.callback(chain.close)
        (first,) = chain.utxos_at(address)
        txs = prebuild(n, signer=KeySigner(key, address), first=first, params=chain.protocol_params(),
                       ttl_slot=chain.tip().slot + 3600)
        height_before = sandbox.devnet.ledger.height
        start = time.perf_counter()
        for cbor in txs:
            chain.submit(cbor)
        elapsed = time.perf_counter() - start
        blocks = sandbox.devnet.ledger.height - height_before
    return {"transactions": n, "blocks": blocks, "seconds_submitting": round(elapsed, 3),
            "tx_per_s": round(n / elapsed, 1)}
