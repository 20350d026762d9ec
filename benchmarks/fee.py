"""Figure 3: fee paid ÷ the ledger's minimum fee for the same transaction (1, 3 and 10 outputs).

The agent's wallet (``PaymentSender`` as ``Agent.payer()`` wires it) pays each payment on the
devnet; the minimum is the sandbox ledger's rule (``sandbox.rules.min_fee``) over the size the
ledger measures for that exact CBOR. A plain pycardano ``TransactionBuilder`` pays the same
outputs beside it, for comparison. Every transaction is accepted by the devnet.
"""

from __future__ import annotations

import hashlib
from contextlib import ExitStack
from typing import Any

from benchmarks._setup import make_home, naive_builder, naive_submit, open_agent, start_sandbox, temp_root
from benchmarks.payment import naive_address, naive_key

OUTPUT_COUNTS = (1, 3, 10)
WALLET_LOVELACE = 1_000_000_000_000
OUTPUT_LOVELACE = 1_500_000


def payee(i: int) -> str:
    """A deterministic devnet enterprise address (nobody needs its key)."""
    from pycardano import Address, Network, PaymentSigningKey

    key = PaymentSigningKey(hashlib.sha256(f"cardano-bench:payee:{i}".encode()).digest())
    return Address(key.to_verification_key().hash(), network=Network.TESTNET).encode()


def ledger_min_fee(cbor: bytes, devnet: Any) -> int:
    """The minimum fee the sandbox ledger asks of this transaction."""
    from sandbox.rules import min_fee
    from sandbox.txcbor import decode_transaction

    return min_fee(decode_transaction(cbor).size, devnet.ledger.params.rule_params())


def naive_cbor(key: Any, address: str, ogmios_url: str, outputs: list[tuple[str, int]]) -> bytes:
    """Build, sign and submit with plain pycardano; return the CBOR."""
    context, builder = naive_builder(address, ogmios_url, outputs)
    tx = naive_submit(context, builder, key, address)
    return tx.to_cbor()


def measure(quick: bool) -> dict[str, Any]:
    """Pay 1, 3 and 10 outputs from the agent's wallet and from pycardano; return fee ratios."""
    from wallets.types import RequiredOutput

    key = naive_key()
    plain = naive_address(key)
    agent_ratio: dict[str, float] = {}
    naive_ratio: dict[str, float] = {}
    agent_excess: dict[str, int] = {}
    with ExitStack() as stack:
        root = temp_root(stack)
        home, address = make_home(root, "fees")
        assert address is not None
        sandbox = start_sandbox(stack, fund={address: WALLET_LOVELACE, plain: WALLET_LOVELACE})
        agent = open_agent(home, sandbox.env)
        stack.callback(agent.close)
        sender = agent.payer().sender
        for n in OUTPUT_COUNTS:
            targets = [(payee(i), OUTPUT_LOVELACE) for i in range(n)]
            outputs = [RequiredOutput(to, amount) for to, amount in targets]
            ttl = agent.chain.tip().slot + 600
            payment = sender.pay(outputs, ttl_slot=ttl, metadata={674: {"msg": ["x402", f"bench-fee-{n}"]}},
                                 owner=f"bench-fee-{n}")
            minimum = ledger_min_fee(payment.cbor, sandbox.devnet)
            agent_ratio[f"{n}_out"] = round(payment.fee_lovelace / minimum, 6)
            agent_excess[f"{n}_out"] = payment.fee_lovelace - minimum
            cbor = naive_cbor(key, plain, sandbox.devnet.ogmios_url, targets)
            naive_ratio[f"{n}_out"] = round(_fee_of(cbor) / ledger_min_fee(cbor, sandbox.devnet), 6)
    return {
        "agent_ratio": agent_ratio,
        "agent_excess_lovelace": agent_excess,
        "naive_ratio": naive_ratio,
        "max_ratio": max(agent_ratio.values()),
    }


def _fee_of(cbor: bytes) -> int:
    from sandbox.txcbor import decode_transaction

    return decode_transaction(cbor).fee
