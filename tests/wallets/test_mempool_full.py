"""A payment that meets a full mempool waits for the next block instead of failing, and is never signed twice.

The devnet is started with a small block (1,500 bytes, so a mempool of 3,000: about ten simple
payments) and a block time no test waits for; blocks are made by hand.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import pytest

from tests.fixtures.devnet import DevnetKey, new_key
from tests.wallets.test_payment_devnet import DevnetSigner
from wallets.errors import ChainUnavailableError, MempoolFullError
from wallets.ogmios import OgmiosChain
from wallets.sender import PaymentSender
from wallets.types import RequiredOutput

BLOCK_BODY = 1_500
TTL = 10**9


class CountingSigner(DevnetSigner):
    """Counts signatures: a payment is signed once, whatever the mempool does."""

    def __init__(self, key: DevnetKey) -> None:
        super().__init__(key)
        self.signatures = 0

    def sign(self, tx_body_hash: bytes) -> tuple[bytes, bytes]:
        self.signatures += 1
        return super().sign(tx_body_hash)


class HeldLog(logging.Handler):
    """Sets ``held`` when the Ogmios client logs that a submission is held for a full mempool."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.held = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "mempool is full" in record.getMessage():
            self.held.set()


@pytest.fixture
def held_log() -> Any:
    handler = HeldLog()
    logger = logging.getLogger("wallets.ogmios")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def _fill(devnet: Any, sender: PaymentSender, payee: str) -> list[Any]:
    """Pay until the next payment of the same size would not fit in the mempool."""
    paid: list[Any] = []
    while not paid or devnet.node.mempool_has_room(len(paid[-1].cbor) + 8):
        paid.append(sender.pay([RequiredOutput(payee, 2_000_000)], ttl_slot=TTL, owner=f"fill{len(paid)}"))
    assert len(paid) >= 5 and devnet.ledger.tip is not None
    return paid


def _small_devnet(devnet_factory: Callable[..., Any], wallet: DevnetKey) -> Any:
    return devnet_factory(block_time_s=3600, fund={wallet.address: 1_000_000_000}, max_block_body_size=BLOCK_BODY)


def test_a_payment_meeting_a_full_mempool_waits_for_the_next_block(devnet_factory, held_log):
    """The submit is held (not failed) while the mempool is full, queries go on meanwhile, and after
    the next block the same signed transaction is accepted: one signature per payment."""
    wallet = new_key()
    devnet = _small_devnet(devnet_factory, wallet)
    assert devnet.ledger.params.mempool_capacity_bytes == 2 * BLOCK_BODY
    chain = OgmiosChain(devnet.ogmios_url, timeout_s=0.2, submit_timeout_s=120)
    signer = CountingSigner(wallet)
    sender = PaymentSender(chain, signer)
    payee = new_key().address
    paid = _fill(devnet, sender, payee)
    height = devnet.ledger.height
    outcome: list[Any] = []

    def pay_one() -> None:
        try:
            outcome.append(sender.pay([RequiredOutput(payee, 2_000_000)], ttl_slot=TTL, owner="waiting"))
        except BaseException as exc:  # noqa: BLE001 - asserted below
            outcome.append(exc)

    worker = threading.Thread(target=pay_one)
    worker.start()
    try:
        assert held_log.held.wait(60), "the submit was never held"
        assert outcome == [] and worker.is_alive()
        assert chain.tip().slot >= 0  # the held submission does not block the client's queries
        assert len(devnet.ledger.mempool()) == len(paid)
    finally:
        block = devnet.produce_block()
        worker.join(60)
    assert block is not None and devnet.ledger.height == height + 1
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), outcome
    waiting = outcome[0]
    assert devnet.ledger.in_mempool(waiting.tx_id)
    assert signer.signatures == len(paid) + 1  # nothing signed twice
    while devnet.ledger.mempool():
        devnet.produce_block()
    got = sum(out.lovelace for _, out in devnet.node.utxos_at([payee]))
    assert got == 2_000_000 * (len(paid) + 1)
    chain.close()


def test_no_block_in_time_leaves_the_payment_signed_and_reserved(devnet_factory, held_log):
    """When no block comes within the submit timeout: MempoolFullError (retryable, outcome unknown),
    the inputs stay reserved, nothing is signed again; the node may still take the same bytes."""
    wallet = new_key()
    devnet = _small_devnet(devnet_factory, wallet)
    chain = OgmiosChain(devnet.ogmios_url, timeout_s=0.2, submit_timeout_s=0.6)
    signer = CountingSigner(wallet)
    sender = PaymentSender(chain, signer)
    payee = new_key().address
    paid = _fill(devnet, sender, payee)
    payment = sender.build([RequiredOutput(payee, 2_000_000)], ttl_slot=TTL, owner="late")
    with pytest.raises(MempoolFullError) as held:
        sender.submit(payment, owner="late")
    assert isinstance(held.value, ChainUnavailableError) and held.value.accepted_unknown
    assert "mempool" in str(held.value) and held_log.held.is_set()
    assert set(payment.inputs) <= sender.reservations.reserved_refs()  # keeps its place
    assert signer.signatures == len(paid) + 1
    assert not devnet.ledger.in_mempool(payment.tx_id)
    # The node held the submission: after a block it takes those very bytes (outcome was unknown).
    devnet.produce_block()
    seen = threading.Event()
    for _ in range(200):
        if devnet.ledger.in_mempool(payment.tx_id):
            seen.set()
            break
        seen.wait(0.05)  # bounded wait for the server's loop to run the held submission
    assert seen.is_set()
    assert signer.signatures == len(paid) + 1
    chain.close()


def test_blockfrost_answers_425_and_the_client_sends_the_same_bytes_after_the_next_block(devnet_factory):
    """The sandbox Blockfrost API answers a full mempool with 425 (nothing taken); the client waits,
    and once a block has made room it sends the very same transaction again: accepted, signed once."""
    from sandbox.blockfrost_api import DEFAULT_PROJECT_ID, BlockfrostServer
    from wallets.blockfrost import BlockfrostChain

    wallet = new_key()
    devnet = _small_devnet(devnet_factory, wallet)
    blocks: list[Any] = []

    def sleep(seconds: float) -> None:  # the wait for a block: the block comes while the client waits
        blocks.append(devnet.produce_block())

    with BlockfrostServer.start(devnet.node) as server:
        chain = BlockfrostChain(server.url, DEFAULT_PROJECT_ID, network="devnet", timeout_s=5.0, sleep=sleep)
        signer = CountingSigner(wallet)
        sender = PaymentSender(chain, signer)
        payee = new_key().address
        paid = _fill(devnet, sender, payee)
        payment = sender.build([RequiredOutput(payee, 2_000_000)], ttl_slot=TTL, owner="waiting")
        import httpx

        refused = httpx.post(server.url + "/tx/submit", content=payment.cbor, timeout=10,
                             headers={"project_id": DEFAULT_PROJECT_ID, "Content-Type": "application/cbor"})
        assert refused.status_code == 425 and refused.json()["error"] == "Mempool Full"
        assert not devnet.ledger.in_mempool(payment.tx_id) and blocks == []
        assert sender.submit(payment, owner="waiting") == payment.tx_id
        assert len(blocks) == 1 and blocks[0] is not None
        assert devnet.ledger.in_mempool(payment.tx_id)
        assert signer.signatures == len(paid) + 1


def test_a_paid_job_meeting_a_full_mempool_waits_for_the_next_block_and_pays_once(
        devnet_factory, agent_home_factory, held_log):
    """End to end: the mempool is full of others' transactions when a paid job pays; its submission is
    held, not failed; the next block lets it in; the job goes on, one payment, one transaction."""
    from agent.executor import TApiExecutor
    from agent.runner import Runner

    devnet = _small_devnet(devnet_factory, new_key())
    home = agent_home_factory(on=devnet, name="tiny", funds=0)
    devnet.fund(home.address, 500_000_000)
    devnet.produce_block()
    chain = OgmiosChain(devnet.ogmios_url, timeout_s=0.2, submit_timeout_s=120)
    with home.open(chain=chain) as agent:
        job = agent.jobs.enqueue("chat", {"message": "full"}, now=time.time())
        while devnet.node.mempool_has_room(300):  # others' payments (281 bytes) fill the mempool
            devnet.fund(new_key().address, 2_000_000)
        assert not devnet.node.mempool_has_room(300)  # a paid call's payment is larger (about 350 bytes)
        executor = TApiExecutor(agent)
        runner = Runner(agent.jobs, executor, lease_s=60)
        worker = threading.Thread(target=runner.run_once)
        worker.start()
        try:
            assert held_log.held.wait(60), "the payment's submission was never held"
            assert worker.is_alive() and [r.state for r in agent.ledger.rows()] == ["signed"]
        finally:
            devnet.produce_block()
            worker.join(60)
            executor.close()
        assert not worker.is_alive()
        [row] = agent.ledger.rows()
        assert row.state in ("submitted", "settled") and agent.jobs.get(job.id).state != "failed"
        assert devnet.ledger.in_mempool(row.tx_id)  # let in by the block, the bytes signed once
        assert runner.stats.failed == 0
    chain.close()
