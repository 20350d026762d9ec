"""Payment benchmarks: build+sign time of a 3-output payment, its fee against the ledger minimum,
and the sender's per-payment overhead (select + reserve + build + sign + submit + record).

    python scripts/bench_payment.py [n]          # prints JSON

``bench_build(n)`` and ``bench_sender(n)`` return plain dicts for ``scripts/bench`` to collect.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.memchain import MemoryChain  # noqa: E402
from wallets.chain import MAINNET_PARAMS  # noqa: E402
from wallets.payment import build_payment, min_fee  # noqa: E402
from wallets.sender import PaymentSender  # noqa: E402
from wallets.types import OutputRef, RequiredOutput, Utxo  # noqa: E402

TOKEN = "aa" * 28 + ".62656e6368"


class _Signer:
    """A throwaway pycardano key (benchmarks only)."""

    def __init__(self) -> None:
        from pycardano import Address, Network, PaymentSigningKey

        self._sk = PaymentSigningKey.generate()
        self._vk = self._sk.to_verification_key()
        self.address = Address(self._vk.hash(), network=Network.TESTNET).encode()

    def sign(self, tx_body_hash: bytes) -> tuple[bytes, bytes]:
        return self._vk.payload, self._sk.sign(tx_body_hash)


def _summary_ms(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 4),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 4),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 4),
        "max_ms": round(ordered[-1] * 1000, 4),
    }


def bench_build(n: int = 1000) -> dict[str, Any]:
    """Time ``build_payment`` (selection, exact fee, signing) of a 3-output payment with CIP-20 metadata.

    Outputs: payTo in ADA, a partner split in ADA, and a native-token output (with its min ADA),
    from a wallet of 8 UTxOs. Returns timings and ``fee_lovelace / min_fee(final size)``.
    """
    signer = _Signer()
    payees = [_Signer().address for _ in range(3)]
    utxos = [Utxo(OutputRef(hashlib.blake2b(b"%d" % i, digest_size=32).hexdigest(), i), signer.address,
                  5_000_000 * (i + 1), {TOKEN: 1_000} if i == 3 else {}) for i in range(8)]
    outputs = [RequiredOutput(payees[0], 2_500_000, role="payTo"), RequiredOutput(payees[1], 1_000_000),
               RequiredOutput(payees[2], 10, TOKEN)]
    metadata = {674: {"msg": ["x402", "inv-0123456789abcdef"]}}
    kwargs = dict(utxos=utxos, change_address=signer.address, signer=signer, params=MAINNET_PARAMS,
                  ttl_slot=100_000, metadata=metadata)
    payment = build_payment(outputs, **kwargs)  # warm caches (address decoding)
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        payment = build_payment(outputs, **kwargs)
        samples.append(time.perf_counter() - start)
    minimum = min_fee(len(payment.cbor) - 1, MAINNET_PARAMS)
    return {
        "name": "payment build+sign (3 outputs, 1 token)",
        "n": n,
        **_summary_ms(samples),
        "size_bytes": len(payment.cbor) - 1,
        "fee_lovelace": payment.fee_lovelace,
        "min_fee_lovelace": minimum,
        "fee_ratio": payment.fee_lovelace / minimum,
        "cost_lovelace": payment.cost_lovelace,
    }


def bench_sender(n: int = 200) -> dict[str, Any]:
    """Time ``PaymentSender.pay`` over an in-memory chain: n back-to-back payments chained from one UTxO.

    Includes the UTxO query, confirmation bookkeeping, reservation, build, sign, submit (the sandbox
    ledger checks the signature and every phase-1 rule) and recording the pending change.
    """
    signer = _Signer()
    payee = _Signer().address
    chain = MemoryChain(auto_confirm=False)
    chain.fund(signer.address, 10_000_000_000)
    sender = PaymentSender(chain, signer)
    samples = []
    for i in range(n):
        start = time.perf_counter()
        sender.pay([RequiredOutput(payee, 1_000_000)], ttl_slot=100_000, owner=f"bench-{i}")
        samples.append(time.perf_counter() - start)
        if i % 50 == 49:
            chain.produce_block()  # keep the mempool chain realistic in length
    return {"name": "sender pay (reserve+select+build+sign+submit+record, in-memory chain)", "n": n,
            **_summary_ms(samples)}


def bench_sender_devnet(n: int = 100) -> dict[str, Any]:
    """Time ``PaymentSender.pay`` against a local devnet over Ogmios (loopback WebSocket, block per tx)."""
    from sandbox.devnet import Devnet
    from wallets.ogmios import OgmiosChain

    signer = _Signer()
    payee = _Signer().address
    with Devnet.start(block_time_s=0, fund={signer.address: 10_000_000_000}) as devnet:
        with OgmiosChain(devnet.ogmios_url) as chain:
            sender = PaymentSender(chain, signer)
            ttl = chain.tip().slot + 3600
            samples = []
            for i in range(n):
                start = time.perf_counter()
                payment = sender.pay([RequiredOutput(payee, 1_000_000)], ttl_slot=ttl, owner=f"bench-{i}")
                samples.append(time.perf_counter() - start)
            ledger_minimum = min_fee(len(payment.cbor) - 1, chain.protocol_params())
    return {"name": "sender pay over Ogmios (devnet, block per tx)", "n": n, **_summary_ms(samples),
            "fee_ratio": payment.fee_lovelace / ledger_minimum}


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    results = [bench_build(count), bench_sender(max(50, count // 5))]
    try:
        results.append(bench_sender_devnet(max(20, count // 10)))
    except ImportError as exc:  # the sandbox is optional for this script
        results.append({"name": "sender pay over Ogmios", "skipped": str(exc)})
    print(json.dumps(results, indent=2))
