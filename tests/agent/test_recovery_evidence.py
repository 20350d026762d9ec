"""agent.recovery: owners and the verdict on a signed transaction, from the chain only (MemoryChain)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from agent import recovery
from sandbox.memchain import MemoryChain
from tests.wallets.test_payment import KeySigner, fresh_address
from wallets.errors import ChainUnavailableError
from wallets.sender import PaymentSender
from wallets.types import OutputRef, RequiredOutput


def _row(payment, tip, *, ttl_slot=None):
    return SimpleNamespace(tx_id=payment.tx_id, inputs=payment.inputs, outputs=({"address": "x"},),
                           ttl_slot=payment.ttl_slot if ttl_slot is None else ttl_slot,
                           sync_slot=tip.slot, sync_id=tip.id)


@pytest.fixture
def paid():
    """(chain, tip before, payment A, payment B chained on A's change), both in blocks, every output spent."""
    chain = MemoryChain(auto_confirm=False)
    signer = KeySigner()
    chain.fund(signer.address, 50_000_000)
    tip = chain.tip()
    sender = PaymentSender(chain, signer, poll_s=0.01)
    payee = fresh_address()
    a = sender.pay([RequiredOutput(payee, 2_000_000)], ttl_slot=100, owner="a")
    b = sender.pay([RequiredOutput(payee, 2_000_000)], ttl_slot=100, owner="b")
    chain.produce_block()
    return chain, tip, a, b


def test_a_landed_transaction_with_no_output_left_is_landed(paid):
    """Outputs spent (change chained on, payee output gone): the blocks still say it landed."""
    chain, tip, a, b = paid
    chain.confirm_elsewhere("ee" * 32, [OutputRef(a.tx_id, 0)])  # the payee sweeps
    assert not chain.utxos_by_refs([OutputRef(a.tx_id, i) for i in range(2)])
    verdict = recovery.judge(chain, _row(a, tip), slot_now=chain.tip().slot)
    assert verdict.verdict == recovery.LANDED and verdict.out_there


def test_mempool_is_pending_and_unsent_within_ttl_is_absent():
    """In the mempool: pending. Nowhere with its TTL open: absent (may be resubmitted, never released)."""
    chain = MemoryChain(auto_confirm=False)
    signer = KeySigner()
    chain.fund(signer.address, 50_000_000)
    tip = chain.tip()
    sender = PaymentSender(chain, signer)
    sent = sender.pay([RequiredOutput(fresh_address(), 2_000_000)], ttl_slot=100, owner="a")
    assert recovery.judge(chain, _row(sent, tip), slot_now=5).verdict == recovery.PENDING
    chain.drop_mempool()
    assert recovery.judge(chain, _row(sent, tip), slot_now=5).verdict == recovery.ABSENT


def test_never_only_past_the_ttl_with_the_chain_read_past_it_or_the_grace_gone():
    """Just past its TTL by the clock while no block is past it: not yet never (a late block may hold it)."""
    chain = MemoryChain(auto_confirm=False)
    signer = KeySigner()
    chain.fund(signer.address, 50_000_000)
    tip = chain.tip()
    unsent = PaymentSender(chain, signer).build([RequiredOutput(fresh_address(), 2_000_000)], ttl_slot=50, owner="a")
    row = _row(unsent, tip)
    assert recovery.judge(chain, row, slot_now=51).verdict == recovery.ABSENT
    assert recovery.judge(chain, row, slot_now=50 + recovery.EXPIRY_GRACE_SLOTS).verdict == recovery.NEVER
    chain.advance(60)
    chain.produce_block()  # a block at a slot past the TTL that does not hold it
    assert recovery.judge(chain, row, slot_now=61).verdict == recovery.NEVER


def test_inputs_spent_by_another_transaction_is_never(paid):
    """An input consumed on chain by another transaction: this one can never land, whatever its TTL."""
    chain, tip, a, _b = paid
    never = SimpleNamespace(tx_id="12" * 32, inputs=a.inputs, outputs=(), ttl_slot=10_000,
                            sync_slot=tip.slot, sync_id=tip.id)
    verdict = recovery.judge(chain, never, slot_now=1)
    assert verdict.verdict == recovery.NEVER and a.tx_id in verdict.detail


def test_no_history_or_no_chain_is_unknown(paid):
    """No signing point and spent inputs, a point the chain lacks, or the chain unreachable: no conclusion."""
    chain, tip, a, _b = paid
    fresh = SimpleNamespace(tx_id="34" * 32, inputs=a.inputs, outputs=(), ttl_slot=1,
                            sync_slot=None, sync_id=None)
    assert recovery.judge(chain, fresh, slot_now=10_000).verdict == recovery.UNKNOWN
    lost = SimpleNamespace(**{**vars(fresh), "sync_slot": 1, "sync_id": "ab" * 32})
    assert recovery.judge(chain, lost, slot_now=10_000).verdict == recovery.UNKNOWN
    chain.fail_next("in_mempool", ChainUnavailableError("down"))
    assert recovery.judge(chain, _row(a, tip), slot_now=1).verdict == recovery.UNKNOWN


def test_owners_live_while_their_payer_or_process_lives(tmp_path):
    """An owner is gone when its payer closed (this process) or its process exited (this host)."""
    owner = recovery.new_owner()
    assert not recovery.owner_is_gone(owner, updated_at=0, now=1)
    recovery.forget_owner(owner)
    assert recovery.owner_is_gone(owner, updated_at=0, now=1)
    assert recovery.owner_is_gone(None, updated_at=0, now=1)
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    other = owner.rsplit(":", 2)[0] + f":{child.pid}:1"
    try:
        assert not recovery.owner_is_gone(other, updated_at=0, now=1)
    finally:
        child.communicate(b"")
    assert recovery.owner_is_gone(other, updated_at=0, now=1)
    foreign = f"elsewhere.example:{os.getpid()}:1"
    assert not recovery.owner_is_gone(foreign, updated_at=0, now=60)
    assert recovery.owner_is_gone(foreign, updated_at=0, now=recovery.FOREIGN_OWNER_STALE_S + 1)


def test_without_a_signing_point_an_unspent_input_proves_it_never_landed():
    """Rows from before signing points: an input still unspent means in no block; past the TTL, never."""
    chain = MemoryChain(auto_confirm=False)
    signer = KeySigner()
    chain.fund(signer.address, 50_000_000)
    unsent = PaymentSender(chain, signer).build([RequiredOutput(fresh_address(), 2_000_000)], ttl_slot=50, owner="a")
    row = SimpleNamespace(tx_id=unsent.tx_id, inputs=unsent.inputs, outputs=(), ttl_slot=50,
                          sync_slot=None, sync_id=None)
    assert recovery.judge(chain, row, slot_now=10).verdict == recovery.ABSENT
    assert recovery.judge(chain, row, slot_now=51).verdict == recovery.ABSENT  # within the grace
    chain.advance(60)
    assert recovery.judge(chain, row, slot_now=61).verdict == recovery.NEVER
