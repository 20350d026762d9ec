"""The ``Chain`` contract: the same tests over the in-memory chain, OgmiosChain and BlockfrostChain.

``memory`` is ``sandbox.memchain.MemoryChain`` (the sandbox's ledger in memory, for unit
tests); ``ogmios`` and ``blockfrost`` are the agent's clients against one devnet per module
(its block timer effectively off: blocks are made by the tests) and the sandbox's Blockfrost
API over it. Whatever one backend answers differently from another is a bug in one of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import cbor2
import pytest

from sandbox.devnet import DEVNET_TOKEN
from sandbox.memchain import MemoryChain
from tests.wallets.test_payment import KeySigner, fresh_address
from wallets.chain import MAINNET_PARAMS, Chain, IntersectionNotFoundError
from wallets.errors import (
    FeeTooSmallError,
    InputsSpentError,
    MissingSignaturesError,
    OutsideValidityError,
    OutputTooSmallError,
    SubmitError,
)
from wallets.payment import SignedPayment, build_payment
from wallets.types import OutputRef, ProtocolParams, RequiredOutput, Utxo

BACKENDS = ("memory", "ogmios", "blockfrost")


@dataclass
class Backend:
    """A chain under test and the test controls its backend has: fund an address, make a block."""

    name: str
    chain: Any
    fund: Callable[[str, int, dict[str, int] | None], None]
    make_block: Callable[[], None]

    def funded(self, lovelace: int = 20_000_000, assets: dict[str, int] | None = None) -> tuple[KeySigner, Utxo]:
        """A new key holding one confirmed output of ``lovelace`` (and ``assets``)."""
        signer = KeySigner()
        self.fund(signer.address, lovelace, assets)
        self.make_block()
        [held] = self.chain.utxos_at(signer.address)
        return signer, held

    def pay(self, signer: KeySigner, utxos: list[Utxo], outputs: list[RequiredOutput], *,
            params: ProtocolParams = MAINNET_PARAMS, ttl_slot: int | None = None) -> SignedPayment:
        """A signed payment from ``utxos`` valid for a while from the chain's clock."""
        if ttl_slot is None:
            ttl_slot = self.chain.current_slot() + 1000
        return build_payment(outputs, utxos=utxos, change_address=signer.address, signer=signer, params=params,
                             ttl_slot=ttl_slot)


@pytest.fixture(scope="module")
def shared_devnet() -> Iterator[Any]:
    """One devnet for the module; blocks come only when a test makes one (the timer is an hour)."""
    from sandbox.devnet import Devnet

    with Devnet.start(block_time_s=3600) as devnet:
        yield devnet


@pytest.fixture(scope="module")
def shared_blockfrost(shared_devnet: Any) -> Iterator[Any]:
    """The sandbox's Blockfrost API over the shared devnet."""
    from sandbox.blockfrost_api import BlockfrostServer

    server = BlockfrostServer.start(shared_devnet.node)
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend in turn, with its test controls."""
    if request.param == "memory":
        memory = MemoryChain(auto_confirm=False, slot=1000)
        yield Backend("memory", memory, lambda a, n, assets: memory.fund(a, n, assets) and None,
                      lambda: memory.produce_block() and None)
        return
    devnet = request.getfixturevalue("shared_devnet")

    def fund(address: str, lovelace: int, assets: dict[str, int] | None) -> None:
        devnet.fund(address, lovelace, assets)

    def make_block() -> None:
        devnet.produce_block()

    chain: Any
    if request.param == "ogmios":
        from wallets.ogmios import OgmiosChain

        chain = OgmiosChain(devnet.ogmios_url)
    else:
        from wallets.blockfrost import SANDBOX_PROJECT_ID, BlockfrostChain

        server = request.getfixturevalue("shared_blockfrost")
        chain = BlockfrostChain(server.url, SANDBOX_PROJECT_ID, network="devnet", tip_ttl_s=0)
    try:
        yield Backend(request.param, chain, fund, make_block)
    finally:
        chain.close()


def _ada(address: str, lovelace: int) -> list[RequiredOutput]:
    return [RequiredOutput(address, lovelace)]


def test_is_a_chain_with_the_ledgers_parameters(backend: Backend) -> None:
    """Every backend satisfies the protocol and reports the parameters its ledger enforces."""
    assert isinstance(backend.chain, Chain)
    assert backend.chain.protocol_params() == MAINNET_PARAMS


def test_tip_is_the_last_block_and_moves_with_blocks(backend: Backend) -> None:
    """The tip is a block; a new block moves it on; the clock is never behind it."""
    chain = backend.chain
    before = chain.tip()
    assert len(before.id) == 64 and chain.current_slot() >= before.slot
    backend.fund(fresh_address(), 2_000_000, None)
    backend.make_block()
    after = chain.tip()
    assert after.slot > before.slot and after.id != before.id
    assert chain.current_slot() >= after.slot


def test_utxos_at_and_by_refs_show_confirmed_outputs_only(backend: Backend) -> None:
    """utxos_at and utxos_by_refs list confirmed unspent outputs, tokens included; unknown refs are left out."""
    chain = backend.chain
    signer, held = backend.funded(5_000_000, {DEVNET_TOKEN: 7})
    assert held.address == signer.address and held.lovelace == 5_000_000 and held.assets == {DEVNET_TOKEN: 7}
    unknown = OutputRef("ab" * 32, 3)
    assert chain.utxos_by_refs([held.ref, unknown]) == [held]
    assert chain.utxos_by_refs([held.ref, held.ref]) == [held]
    assert chain.utxos_by_refs([]) == []
    assert chain.utxos_at(fresh_address()) == []


def test_submit_waits_in_the_mempool_then_lands(backend: Backend) -> None:
    """An accepted payment: its id back, in the mempool, its outputs not yet on the ledger; a block confirms it."""
    chain = backend.chain
    signer, held = backend.funded()
    start = chain.tip()
    payee = fresh_address()
    p = backend.pay(signer, [held], _ada(payee, 2_000_000))
    assert chain.submit(p.cbor) == p.tx_id
    assert chain.in_mempool(p.tx_id) and chain.utxos_at(payee) == []
    assert chain.utxos_by_refs([held.ref]) == [held]  # spent by a transaction not in a block yet
    assert not chain.find_transaction(p.tx_id, since=(start.slot, start.id), inputs=p.inputs).landed
    assert not chain.in_mempool("00" * 32)
    backend.make_block()
    assert not chain.in_mempool(p.tx_id)
    assert [u.lovelace for u in chain.utxos_at(payee)] == [2_000_000] and chain.utxos_by_refs([held.ref]) == []
    tip = chain.tip()
    found = chain.find_transaction(p.tx_id, since=(start.slot, start.id), inputs=p.inputs)
    assert found.landed and found.block == (tip.slot, tip.id) and found.tip_slot == tip.slot
    assert dict(found.spent_by) == {}


def test_spent_inputs_are_refused_3117(backend: Backend) -> None:
    """Spending an input already spent (in the mempool or a block): InputsSpentError naming it; nothing more is paid."""
    chain = backend.chain
    signer, held = backend.funded()
    payee = fresh_address()
    p = backend.pay(signer, [held], _ada(payee, 2_000_000))
    chain.submit(p.cbor)
    again = backend.pay(signer, [held], _ada(payee, 3_000_000))
    for where in ("mempool", "block"):  # spent by a transaction still waiting, then by one in a block
        with pytest.raises(InputsSpentError) as exc:
            chain.submit(again.cbor)
        assert exc.value.code == 3117, where
        assert exc.value.data["unknownOutputReferences"] == [{"transaction": {"id": held.ref.tx_id}, "index": 0}]
        assert not chain.in_mempool(again.tx_id)
        backend.make_block()
    assert [u.lovelace for u in chain.utxos_at(payee)] == [2_000_000]


@pytest.mark.parametrize("refusal", ["missing_signature", "expired", "fee", "output_too_small"])
def test_ledger_refusals_are_typed_errors_and_pay_nothing(backend: Backend, refusal: str) -> None:
    """Each rule broken is refused with the same typed error on every backend, and nothing is paid."""
    chain = backend.chain
    signer, held = backend.funded()
    payee = fresh_address()
    if refusal == "missing_signature":
        p, error = backend.pay(KeySigner(), [held], _ada(payee, 2_000_000)), MissingSignaturesError
    elif refusal == "expired":
        p, error = backend.pay(signer, [held], _ada(payee, 2_000_000), ttl_slot=chain.tip().slot), OutsideValidityError
    elif refusal == "fee":  # built for a lower fee constant than the ledger's
        cheap = ProtocolParams(44, 100_000, 4310, 16384, 5000)
        p, error = backend.pay(signer, [held], _ada(payee, 2_000_000), params=cheap), FeeTooSmallError
    elif refusal == "output_too_small":  # built for a lower deposit per byte than the ledger's
        lax = ProtocolParams(44, 155381, 1, 16384, 5000)
        p, error = backend.pay(signer, [held], _ada(payee, 100_000), params=lax), OutputTooSmallError
    with pytest.raises(error):
        chain.submit(p.cbor)
    assert not chain.in_mempool(p.tx_id)
    backend.make_block()
    assert chain.utxos_at(payee) == [] and chain.utxos_by_refs([held.ref]) == [held]


def test_undecodable_bytes_are_refused(backend: Backend) -> None:
    """Bytes that are no transaction: SubmitError -32602, whatever the backend."""
    with pytest.raises(SubmitError) as exc:
        backend.chain.submit(b"\x84\x01\x02")
    assert exc.value.code == -32602


def test_the_id_is_the_hash_of_the_body_bytes_as_sent(backend: Backend) -> None:
    """A body with a non-minimal integer (the fee in 8 bytes) is accepted under the hash of those bytes.

    Re-encoding the body would give another id, which the signature does not cover.
    """
    chain = backend.chain
    signer, held = backend.funded()
    generous = ProtocolParams(44, 200_000, 4310, 16384, 5000)  # room for the 8 extra bytes
    p = backend.pay(signer, [held], _ada(fresh_address(), 2_000_000), params=generous)
    body, _witnesses, valid, aux = cbor2.loads(p.cbor)
    body_bytes = bytes([0xA0 + len(body)]) + b"".join(
        cbor2.dumps(k) + (b"\x1b" + v.to_bytes(8, "big") if k == 2 else cbor2.dumps(v)) for k, v in body.items())
    assert cbor2.loads(body_bytes) == body and body_bytes != cbor2.dumps(body)
    tx_id = hashlib.blake2b(body_bytes, digest_size=32).hexdigest()
    vkey, signature = signer.sign(bytes.fromhex(tx_id))
    raw = b"\x84" + body_bytes + cbor2.dumps({0: [[vkey, signature]]}) + cbor2.dumps(valid) + cbor2.dumps(aux)
    assert chain.submit(raw) == tx_id
    assert chain.in_mempool(tx_id)


def test_find_transaction_reads_only_after_the_point(backend: Backend) -> None:
    """Blocks after ``since`` are read (all of them from None); the block at ``since`` and before are not."""
    chain = backend.chain
    signer, held = backend.funded()
    start = chain.tip()
    p = backend.pay(signer, [held], _ada(fresh_address(), 2_000_000))
    chain.submit(p.cbor)
    backend.make_block()
    landed_in = chain.tip()
    assert chain.find_transaction(p.tx_id, since=(start.slot, start.id)).block == (landed_in.slot, landed_in.id)
    later = chain.find_transaction(p.tx_id, since=(landed_in.slot, landed_in.id))
    assert not later.landed and later.tip_slot == landed_in.slot
    assert not chain.find_transaction("00" * 32, since=(start.slot, start.id)).landed
    assert chain.find_transaction(p.tx_id, since=None).block == (landed_in.slot, landed_in.id)  # from the origin


def test_find_transaction_names_another_spender_of_the_inputs(backend: Backend) -> None:
    """Asked about a transaction that never landed, the lookup names who spent the inputs it needed."""
    chain = backend.chain
    signer, held = backend.funded()
    start = chain.tip()
    mine = backend.pay(signer, [held], _ada(fresh_address(), 2_000_000))
    other = backend.pay(signer, [held], _ada(fresh_address(), 3_000_000))
    chain.submit(other.cbor)
    backend.make_block()
    found = chain.find_transaction(mine.tx_id, since=(start.slot, start.id), inputs=mine.inputs)
    assert not found.landed and dict(found.spent_by) == {held.ref: other.tx_id}
    assert found.tip_slot == chain.tip().slot


def test_find_transaction_from_a_point_the_chain_lacks(backend: Backend) -> None:
    """A point not on the chain: IntersectionNotFoundError (no conclusion either way)."""
    tip = backend.chain.tip()
    with pytest.raises(IntersectionNotFoundError):
        backend.chain.find_transaction("00" * 32, since=(tip.slot, "ab" * 32))


def test_ogmios_clock_is_never_behind_a_block_it_has_seen(devnet_factory: Callable[..., Any]) -> None:
    """Blocks made faster than slots pass put the devnet's tip ahead of the wall clock: the ledger's slot follows.

    current_slot is the slot the ledger is in; it cannot be behind a block the ledger holds (the
    in-memory chain and BlockfrostChain answer so; OgmiosChain computed it from the clock alone).
    """
    from wallets.ogmios import OgmiosChain

    frozen = 1_800_000_000.0
    devnet = devnet_factory(block_time_s=3600, clock=lambda: frozen)
    with OgmiosChain(devnet.ogmios_url) as chain:
        before = chain.current_slot(frozen)
        for _ in range(3):
            devnet.fund(fresh_address(), 2_000_000)
            devnet.produce_block()
        tip = chain.tip()
        assert tip.slot > before
        assert chain.current_slot(frozen) >= tip.slot
