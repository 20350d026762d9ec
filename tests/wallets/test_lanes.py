"""Lanes on the devnet: a deep queue splits one UTxO into lanes (up to the limit), idle merges dust,
reserved inputs are never touched, and nothing ever leaves the wallet but fees."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.fixtures.devnet import new_key
from tests.wallets.test_payment_devnet import DevnetSigner
from wallets.lanes import LaneKeeper
from wallets.ogmios import OgmiosChain
from wallets.payment import min_fee
from wallets.sender import PaymentSender
from wallets.types import RequiredOutput

ADA = 1_000_000


@pytest.fixture
def wallet() -> Any:
    return new_key()


@pytest.fixture
def chain(devnet_factory, wallet) -> Any:
    devnet = devnet_factory(fund={wallet.address: 1_000 * ADA})
    c = OgmiosChain(devnet.ogmios_url, timeout_s=5)
    c.devnet = devnet  # type: ignore[attr-defined]
    yield c
    c.close()


def balance(devnet: Any, address: str) -> int:
    return sum(out.lovelace for _, out in devnet.node.utxos_at([address]))


def addresses_paid(devnet: Any, tx_id: str) -> set[str]:
    return {out.address for ref, out in devnet.node.all_utxos() if ref.tx_id == tx_id}


def test_a_deep_queue_splits_one_utxo_into_the_configured_lanes(chain, wallet, caplog):
    """One UTxO, 50 payments queued, lanes = 8: one split makes 8 lanes, all the wallet's own; again: nothing."""
    devnet = chain.devnet
    sender = PaymentSender(chain, DevnetSigner(wallet))
    keeper = LaneKeeper(sender, chain, lanes=8)
    assert len(keeper.lanes_now()) == 1
    with caplog.at_level(logging.INFO, logger="wallets.lanes"):
        split = keeper.tend(50)
    assert split is not None and len(split.inputs) == 1
    assert any("split" in r.getMessage() and split.tx_id in r.getMessage() for r in caplog.records)
    assert addresses_paid(devnet, split.tx_id) == {wallet.address}  # never pays anyone else
    assert balance(devnet, wallet.address) == 1_000 * ADA - split.fee_lovelace
    lanes = keeper.lanes_now()
    assert len(lanes) == 8 and all(u.lovelace >= keeper.min_lane_lovelace for u in lanes)
    assert keeper.tend(50) is None  # the limit is respected
    sender.refresh()
    assert sender.in_flight() == {} and sender.reservations.reserved_refs() == set()


def test_lanes_are_usable_at_once_while_the_split_waits_in_the_mempool(devnet_factory, wallet):
    """On a chain without blocks, the split's outputs are pending change: payments start from them at once."""
    devnet = devnet_factory(block_time_s=3600, fund={wallet.address: 1_000 * ADA})
    with OgmiosChain(devnet.ogmios_url, timeout_s=5) as chain:
        sender = PaymentSender(chain, DevnetSigner(wallet))
        keeper = LaneKeeper(sender, chain, lanes=4)
        split = keeper.tend(10)
        assert split is not None and len(keeper.lanes_now()) == 4
        payee = new_key().address
        paid = [sender.build([RequiredOutput(payee, 2 * ADA)], ttl_slot=10**9, owner=f"p{i}") for i in range(4)]
        assert {p.inputs[0].tx_id for p in paid} == {split.tx_id} and len({p.inputs for p in paid}) == 4
        for i, p in enumerate(paid):
            sender.submit(p, owner=f"p{i}")
        devnet.produce_block()
        assert balance(devnet, payee) == 8 * ADA


def test_the_limit_caps_the_split_and_small_wallets_split_less(chain, wallet):
    """lanes = 3 gives 3 lanes whatever the queue; a lane is never made below the minimum; 0 and 1 disable."""
    sender = PaymentSender(chain, DevnetSigner(wallet))
    assert LaneKeeper(sender, chain, lanes=0).tend(100) is None
    assert LaneKeeper(sender, chain, lanes=1).tend(100) is None
    assert LaneKeeper(sender, chain, lanes=3).tend(100) is not None
    assert len(LaneKeeper(sender, chain, lanes=3).lanes_now()) == 3
    held = sender.build([RequiredOutput(new_key().address, 2 * ADA)], ttl_slot=10**9, owner="job-1")
    assert LaneKeeper(sender, chain, lanes=3).tend(100) is None  # a lane held by a payment being built counts
    sender.release("job-1")
    assert held.inputs[0] in {u.ref for u in sender.free_utxos()}
    assert LaneKeeper(sender, chain, lanes=8, min_lane_lovelace=200 * ADA).tend(100) is None  # ~333 ADA each
    big = LaneKeeper(sender, chain, lanes=8, min_lane_lovelace=150 * ADA)
    split = big.tend(100)  # 8 lanes wanted; the largest lane (~333 ADA) makes two of at least 150 ADA
    assert split is not None and len(split.inputs) == 1 and len(big.lanes_now()) == 4
    with pytest.raises(ValueError):
        LaneKeeper(sender, chain, lanes=101)


def test_a_split_never_uses_an_input_a_payment_has_reserved(devnet_factory, wallet):
    """The largest UTxO is reserved by a payment being built: the split takes the next one, and the
    payment then goes through with its own input."""
    devnet = devnet_factory(block_time_s=3600, fund={wallet.address: 1_000 * ADA})
    devnet.fund(wallet.address, 500 * ADA)
    devnet.produce_block()
    with OgmiosChain(devnet.ogmios_url, timeout_s=5) as chain:
        sender = PaymentSender(chain, DevnetSigner(wallet))
        payee = new_key().address
        payment = sender.build([RequiredOutput(payee, 600 * ADA)], ttl_slot=10**9, owner="job-1")
        held = set(payment.inputs)
        assert held <= sender.reservations.reserved_refs()
        split = LaneKeeper(sender, chain, lanes=8).tend(20)
        assert split is not None and not (set(split.inputs) & held)
        sender.submit(payment, owner="job-1")
        devnet.produce_block()
        assert balance(devnet, payee) == 600 * ADA
        assert addresses_paid(devnet, split.tx_id) == {wallet.address}


def test_an_idle_wallet_merges_its_dust_at_the_least_fee(devnet_factory, wallet, caplog):
    """Twelve small UTxOs and one lane, queue empty: one merge spends all the dust into one output,
    at exactly the ledger's minimum fee; with payments queued or in flight nothing is merged."""
    devnet = devnet_factory(fund={wallet.address: 100 * ADA})
    for i in range(12):
        devnet.fund(wallet.address, 1_500_000 + i * 100_000)
    with OgmiosChain(devnet.ogmios_url, timeout_s=5) as chain:
        sender = PaymentSender(chain, DevnetSigner(wallet))
        keeper = LaneKeeper(sender, chain, lanes=8)
        before = balance(devnet, wallet.address)
        assert len(devnet.node.utxos_at([wallet.address])) == 13
        assert keeper.tend(1) is None  # a payment queued: not idle (and its one lane is enough)
        with caplog.at_level(logging.INFO, logger="wallets.lanes"):
            merge = keeper.tend(0)
        assert merge is not None and len(merge.inputs) == 12
        assert any("merged 12 dust" in r.getMessage() for r in caplog.records)
        assert merge.fee_lovelace == min_fee(merge.size_bytes, chain.protocol_params())
        assert addresses_paid(devnet, merge.tx_id) == {wallet.address}
        assert balance(devnet, wallet.address) == before - merge.fee_lovelace
        assert len(devnet.node.utxos_at([wallet.address])) == 2
        assert keeper.tend(0) is None  # nothing left to merge


def test_no_merge_while_a_payment_is_in_flight(devnet_factory, wallet):
    """Dust is left alone while a payment of the wallet awaits its block."""
    devnet = devnet_factory(block_time_s=3600, fund={wallet.address: 100 * ADA})
    for _ in range(3):
        devnet.fund(wallet.address, 2 * ADA)
    devnet.produce_block()
    with OgmiosChain(devnet.ogmios_url, timeout_s=5) as chain:
        sender = PaymentSender(chain, DevnetSigner(wallet))
        sender.pay([RequiredOutput(new_key().address, 10 * ADA)], ttl_slot=10**9, owner="job-1")
        keeper = LaneKeeper(sender, chain, lanes=8)
        assert keeper.tend(0) is None
        devnet.produce_block()
        merge = keeper.tend(0)
        assert merge is not None and len(merge.inputs) == 3
