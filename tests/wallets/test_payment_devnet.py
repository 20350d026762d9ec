"""Payments end to end against the running devnet over Ogmios: exact fees, tokens, concurrency, chaining."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.threads import run_threads

from tests.fixtures.devnet import DevnetKey, new_key
from wallets.errors import (
    ChainProtocolError,
    ChainUnavailableError,
    FeeTooSmallError,
    InputsSpentError,
    OutsideValidityError,
)
from wallets.ogmios import OgmiosChain
from wallets.payment import build_payment, min_fee
from wallets.sender import PaymentSender
from wallets.types import LOVELACE, RequiredOutput


class DevnetSigner:
    """A Signer over a devnet fixture key (the HD keystore is tested elsewhere)."""

    def __init__(self, key: DevnetKey) -> None:
        self._key = key
        self.address = key.address

    def sign(self, tx_body_hash: bytes) -> tuple[bytes, bytes]:
        return self._key.verification_key.payload, self._key.signing_key.sign(tx_body_hash)


@pytest.fixture
def chain(devnet: Any) -> Any:
    """An OgmiosChain on the devnet, closed after the test."""
    c = OgmiosChain(devnet.ogmios_url, timeout_s=5)
    yield c
    c.close()


def ledger_fee_minimum(devnet: Any, cbor: bytes) -> int:
    """The minimum fee the sandbox ledger computes for ``cbor`` (its own size measurement)."""
    from sandbox.txcbor import decode_transaction

    p = devnet.ledger.params
    return p.min_fee_coefficient * decode_transaction(cbor).size + p.min_fee_constant


@pytest.mark.parametrize("n_outputs", [1, 3, 10])
def test_payments_accepted_with_exact_minimum_fee(devnet: Any, devnet_key: DevnetKey, chain: OgmiosChain,
                                                  n_outputs: int) -> None:
    """1, 3 and 10 ADA outputs plus a token output: accepted, fee equals the ledger's own minimum."""
    from sandbox.devnet import DEVNET_TOKEN

    payees = [new_key().address for _ in range(n_outputs)]
    outputs = [RequiredOutput(a, 1_500_000 + i) for i, a in enumerate(payees)]
    outputs.append(RequiredOutput(payees[0], 42, DEVNET_TOKEN))
    devnet.fund(devnet_key.address, 2_000_000, {DEVNET_TOKEN: 1_000})
    sender = PaymentSender(chain, DevnetSigner(devnet_key))
    before = devnet.ledger.balance(devnet_key.address)
    p = sender.pay(outputs, ttl_slot=chain.tip().slot + 300, metadata={674: {"msg": ["x402", "inv-1"]}},
                   owner="job")
    assert p.fee_lovelace == ledger_fee_minimum(devnet, p.cbor) == min_fee(len(p.cbor) - 1, chain.protocol_params())
    assert devnet.ledger.tip.tx_ids == (p.tx_id,)
    for i, a in enumerate(payees[1:], start=1):
        assert devnet.ledger.balance(a) == {LOVELACE: 1_500_000 + i}
    assert devnet.ledger.balance(payees[0]) == {LOVELACE: 1_500_000 + p.output_lovelace[-1], DEVNET_TOKEN: 42}
    after = devnet.ledger.balance(devnet_key.address)
    assert after[LOVELACE] == before[LOVELACE] - p.cost_lovelace
    assert after[DEVNET_TOKEN] == before[DEVNET_TOKEN] - 42


def test_one_lovelace_less_fee_is_refused(devnet: Any, devnet_key: DevnetKey, chain: OgmiosChain) -> None:
    """The same payment with a fee one lovelace lower is refused (3122) naming our fee as the minimum."""
    params = chain.protocol_params()
    utxos = chain.utxos_at(devnet_key.address)
    signer = DevnetSigner(devnet_key)
    args = dict(utxos=utxos, change_address=signer.address, signer=signer, ttl_slot=chain.tip().slot + 300)
    outputs = [RequiredOutput(new_key().address, 2_000_000)]
    good = build_payment(outputs, params=params, **args)
    cheap = build_payment(outputs, params=replace(params, min_fee_constant=params.min_fee_constant - 1), **args)
    assert cheap.fee_lovelace == good.fee_lovelace - 1 and len(cheap.cbor) == len(good.cbor)
    with pytest.raises(FeeTooSmallError) as exc:
        chain.submit(cheap.cbor)
    assert exc.value.data["minimumRequiredFee"]["ada"]["lovelace"] == good.fee_lovelace
    assert chain.submit(good.cbor) == good.tx_id


def test_twenty_concurrent_payments_from_four_utxos(devnet: Any, chain: OgmiosChain) -> None:
    """Twenty payments launched at once from a wallet with 4 UTxOs are all accepted, no input spent twice."""
    wallet, payee = new_key(), new_key().address
    for _ in range(4):
        devnet.fund(wallet.address, 100_000_000)
    assert len(chain.utxos_at(wallet.address)) == 4
    sender = PaymentSender(chain, DevnetSigner(wallet), poll_s=0.02)
    ttl = chain.tip().slot + 600
    done: list[Any] = []
    errors = run_threads(20, lambda i: done.append(
        sender.pay([RequiredOutput(payee, 2_000_000 + i)], ttl_slot=ttl, owner=f"job-{i}")))
    assert errors == [] and len(done) == 20
    assert Counter(ref for p in done for ref in p.inputs).most_common(1)[0][1] == 1
    assert devnet.ledger.balance(payee)[LOVELACE] == sum(2_000_000 + i for i in range(20))
    assert devnet.ledger.balance(wallet.address)[LOVELACE] == 400_000_000 - sum(p.cost_lovelace for p in done)
    assert all(p.fee_lovelace == ledger_fee_minimum(devnet, p.cbor) for p in done)


def test_ten_back_to_back_from_one_utxo_in_one_block(devnet_factory: Callable[..., Any]) -> None:
    """Ten payments from a single UTxO chain on mempool change and all land in the next block."""
    wallet, payee = new_key(), new_key().address
    devnet = devnet_factory(block_time_s=3600, fund={wallet.address: 100_000_000})
    with OgmiosChain(devnet.ogmios_url) as chain:
        sender = PaymentSender(chain, DevnetSigner(wallet))
        ttl = chain.tip().slot + 600
        payments = [sender.pay([RequiredOutput(payee, 3_000_000)], ttl_slot=ttl, owner=f"p{i}") for i in range(10)]
        assert [tx_id for tx_id, _ in devnet.ledger.mempool()] == [p.tx_id for p in payments]
        assert chain.in_mempool(payments[-1].tx_id)
        block = devnet.produce_block()
        assert block is not None and block.tx_ids == tuple(p.tx_id for p in payments)
        assert devnet.ledger.balance(payee) == {LOVELACE: 30_000_000}
        assert devnet.ledger.balance(wallet.address)[LOVELACE] == 100_000_000 - sum(p.cost_lovelace for p in payments)
        assert not chain.in_mempool(payments[-1].tx_id)
        sender.refresh()
        assert sender.in_flight() == {} and sender.reservations.reserved_refs() == set()


def test_ledger_refusals_are_typed(devnet: Any, devnet_key: DevnetKey, chain: OgmiosChain) -> None:
    """Resubmitting a confirmed tx is InputsSpentError; a TTL in the past is OutsideValidityError."""
    sender = PaymentSender(chain, DevnetSigner(devnet_key))
    tip = chain.tip().slot
    p = sender.pay([RequiredOutput(new_key().address, 2_000_000)], ttl_slot=tip + 100, owner="a")
    with pytest.raises(InputsSpentError) as exc:
        chain.submit(p.cbor)
    assert exc.value.code == 3117
    late = sender.build([RequiredOutput(new_key().address, 2_000_000)], ttl_slot=max(tip - 5, 0), owner="b")
    with pytest.raises(OutsideValidityError):
        sender.submit(late, owner="b")
    assert sender.reservations.reserved_refs() == set()
    with pytest.raises(ChainProtocolError):
        chain.utxos_at("not-an-address")


def test_reconnects_after_the_node_restarts(devnet_factory: Callable[..., Any], tmp_path: Path) -> None:
    """Ogmios going away gives ChainUnavailableError; once it is back on its port the same client works."""
    wallet = new_key()
    first = devnet_factory(block_time_s=0, fund={wallet.address: 50_000_000}, state_dir=tmp_path)
    port = int(first.ogmios_url.rsplit(":", 1)[1])
    chain = OgmiosChain(first.ogmios_url, timeout_s=2, attempts=3, sleep=lambda s: None)
    slot = chain.tip().slot
    first.stop()
    with pytest.raises(ChainUnavailableError):
        chain.tip()
    devnet_factory(block_time_s=0, ogmios_port=port, state_dir=tmp_path)
    assert chain.tip().slot >= slot
    assert sum(u.lovelace for u in chain.utxos_at(wallet.address)) == 50_000_000
    assert chain.reconnects >= 1
    chain.close()
