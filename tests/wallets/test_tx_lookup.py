"""find_transaction: did a transaction land, and where, read by chain sync from a point (fake and Ogmios)."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.memchain import MemoryChain
from tests.wallets.test_payment import KeySigner, fresh_address
from wallets.chain import IntersectionNotFoundError
from wallets.sender import PaymentSender
from wallets.types import OutputRef, RequiredOutput


def _chained_pair(chain: Any, signer: KeySigner, ttl_slot: int) -> tuple[Any, Any]:
    """Two payments, the second spending the first's change."""
    sender = PaymentSender(chain, signer, poll_s=0.01)
    payee = fresh_address()
    first = sender.pay([RequiredOutput(payee, 2_000_000)], ttl_slot=ttl_slot, owner="a")
    second = sender.pay([RequiredOutput(payee, 2_000_000)], ttl_slot=ttl_slot, owner="b")
    assert second.inputs == (first.change[0].ref,)
    return first, second


def test_fake_chain_finds_a_landed_transaction_whatever_happened_to_its_outputs() -> None:
    """A transaction whose every output is spent is still found, in its block; absent ones are not."""
    chain = MemoryChain()
    signer = KeySigner()
    chain.fund(signer.address, 50_000_000)
    start = chain.tip()
    first, second = _chained_pair(chain, signer, 1000)
    assert not chain.utxos_by_refs([first.change[0].ref])  # spent by the second payment
    found = chain.find_transaction(first.tx_id, since=(start.slot, start.id))
    assert found.landed and found.block is not None and found.block[0] == start.slot + 1
    late = chain.tip()
    assert not chain.find_transaction(first.tx_id, since=(late.slot, late.id)).landed
    with pytest.raises(IntersectionNotFoundError):
        chain.find_transaction(first.tx_id, since=(1, "ab" * 32))


def test_fake_chain_names_another_spender_of_the_inputs() -> None:
    """spent_by names the other transaction that consumed an input the asked one needed."""
    chain = MemoryChain()
    start = chain.tip()
    ref = OutputRef("cd" * 32, 0)
    chain.confirm_elsewhere("ef" * 32, [ref])
    found = chain.find_transaction("12" * 32, since=(start.slot, start.id), inputs=[ref, OutputRef("cd" * 32, 1)])
    assert not found.landed and dict(found.spent_by) == {ref: "ef" * 32}


def test_ogmios_chain_sync_lookup_on_the_devnet(devnet) -> None:
    """Over Ogmios: a chained-on payment is found in its block; a later point or an unknown one is handled."""
    from wallets.ogmios import OgmiosChain

    signer = KeySigner()
    devnet.fund(signer.address, 50_000_000)
    with OgmiosChain(devnet.ogmios_url) as chain:
        start = chain.tip()
        first, second = _chained_pair(chain, signer, chain.current_slot() + 600)
        found = chain.find_transaction(first.tx_id, since=(start.slot, start.id), inputs=first.inputs)
        assert found.landed and found.block == (devnet.node.block_at(devnet.node.block_position(found.block[1]))[0].slot,
                                                 found.block[1])
        assert found.tip_slot == chain.tip().slot
        tip = chain.tip()
        nothing = chain.find_transaction(first.tx_id, since=(tip.slot, tip.id))
        assert not nothing.landed and nothing.tip_slot == tip.slot
        # The second payment spent the first's change: asked about that input, the lookup names it.
        other = chain.find_transaction("00" * 32, since=(start.slot, start.id), inputs=second.inputs)
        assert not other.landed and dict(other.spent_by) == {second.inputs[0]: second.tx_id}
        with pytest.raises(IntersectionNotFoundError):
            chain.find_transaction(first.tx_id, since=(tip.slot, "ab" * 32))

