"""Recovery after a crash, step by step on the sandbox: resubmit the same bytes, release the expired."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from agent.payer import JobContext, job_context
from sandbox.billing import DEFAULT_PAY_TO
from wallets.types import OutputRef, RequiredOutput, Utxo


def _signed_row(agent, *, ttl_offset=300, invoice="inv-crash", job_id=None):
    """Reserve and sign a 2 ADA payment without submitting it: the state a crash after signing leaves."""
    payer = agent.payer()
    row = agent.ledger.reserve(invoice_id=invoice, host="twin", route="/chat", job_id=job_id,
                               outputs=[RequiredOutput(DEFAULT_PAY_TO, 2_000_000)],
                               amounts={"lovelace": 2_000_000}, fee_estimate_lovelace=200_000,
                               owner=payer.owner)
    tip = agent.chain.tip()
    ttl = payer._slot_now(time.time()) + ttl_offset
    payment = payer.sender.build([RequiredOutput(DEFAULT_PAY_TO, 2_000_000)], ttl_slot=ttl,
                                 metadata={674: {"msg": ["x402", invoice]}}, owner=str(row.id))
    agent.ledger.mark_signed(row.id, tx_id=payment.tx_id, cbor=payment.cbor, fee_lovelace=payment.fee_lovelace,
                             inputs=payment.inputs, ttl_slot=payment.ttl_slot, cost_lovelace=payment.cost_lovelace,
                             sync_point=(tip.slot, tip.id))
    return row, payment


def counts(**kw):
    """A recover() result: every count zero but those given."""
    return {"kept": 0, "resubmitted": 0, "released": 0, "unresolved": 0, "busy": 0, **kw}


def test_signed_but_unsent_payment_is_resubmitted_byte_for_byte(agent_home):
    """After a crash between signing and submitting, recovery submits the same transaction (same id)."""
    with agent_home.open() as agent:
        row, payment = _signed_row(agent)
    payee_before = agent_home.balance(DEFAULT_PAY_TO)
    with agent_home.open() as agent:  # a new process, as after the crash
        assert agent.recover() == counts(resubmitted=1)
        after = agent.ledger.get(row.id)
        assert agent.recover() == counts(kept=1)
    assert after.state == "submitted" and after.tx_id == payment.tx_id
    assert agent_home.devnet.ledger.utxos_by_refs([OutputRef(payment.tx_id, 0)])
    assert agent_home.balance(DEFAULT_PAY_TO) - payee_before == 2_000_000


def test_payment_that_expired_unsent_is_released_and_its_inputs_freed(agent_home):
    """A signed payment whose TTL passed without reaching the chain is released; nothing is paid."""
    with agent_home.open() as agent:
        row, payment = _signed_row(agent, ttl_offset=-1)
    before = agent_home.balance()
    with agent_home.open() as agent:
        assert agent.recover() == counts(released=1)
        assert agent.ledger.get(row.id).state == "released"
        assert not agent.payer().sender.reservations.reserved_refs()
    assert agent_home.balance() == before


def test_stale_pending_change_of_finished_payments_is_forgotten(agent_home):
    """Pending change recorded by a payment that already finished is not offered again after a restart."""
    with agent_home.open() as agent:
        reservations = agent.payer().sender.reservations
        ghost = Utxo(OutputRef("ab" * 32, 1), agent_home.address, 5_000_000)
        reservations.reserve("9999", [OutputRef("cd" * 32, 0)])
        reservations.record_pending("9999", "ab" * 32, [ghost])
        assert reservations.pending_change() == [ghost]
    with agent_home.open() as agent:
        agent.payer().recover()
        assert agent.payer().sender.reservations.pending_change() == []
        assert agent.payer().sender.reservations.reserved_refs() == set()


def test_current_slot_follows_the_ledger_clock_not_the_last_block(agent_home):
    """current_slot advances with time even when no block is made; the TTL base never lags the tip."""
    from wallets.ogmios import OgmiosChain

    with OgmiosChain(agent_home.devnet.ogmios_url) as chain:
        now = time.time()
        slot = chain.current_slot(now)
        assert chain.current_slot(now + 100) == slot + 100
        assert chain.current_slot(now + 3600) > chain.tip().slot
    with agent_home.open() as agent:
        payer = agent.payer()
        assert payer._slot_now(now + 3600) == slot + 3600
        assert payer._slot_now(now) >= agent.chain.tip().slot


def test_wallet_send_reserves_in_the_agents_store_and_the_agent_clears_it(agent_home, monkeypatch, capsys):
    """`wallet send` holds its inputs where a running agent sees them; the agent's next start forgets them."""
    from agent.cli import main
    from tests.fixtures.agent_home import PASSPHRASE

    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", PASSPHRASE)
    code = main(["wallet", "send", "main", DEFAULT_PAY_TO, "1", "--yes", "--home", str(agent_home.home)])
    assert code == 0, capsys.readouterr().err
    with agent_home.open() as agent:
        reservations = agent.payer().sender.reservations
        assert reservations.reserved_refs() and reservations.pending_change() == []
        agent.recover()
        assert reservations.reserved_refs() == set()


def _sent_row(agent, invoice, *, job_id=None):
    """A signed payment, submitted and recorded as submitted (what a worker leaves while awaiting settlement)."""
    row, payment = _signed_row(agent, invoice=invoice, job_id=job_id)
    agent.payer().sender.submit(payment, owner=str(row.id))
    agent.ledger.mark_submitted(row.id)
    return row, payment


def test_payment_swept_by_the_payee_with_chained_change_is_kept_never_paid_again(agent_home):
    """Finding 1: the payee swept its output and a second payment spent the change; recovery keeps both.

    Seen before the fix: no unspent output of the first transaction was left, so recovery
    resubmitted it (3117), judged it "never landed", released it and its invoice was paid again.
    """
    from agent.ledger import DuplicatePaymentError
    from sandbox.sweep import PAYEE_LABEL, TREASURY_LABEL, key_address, label_signing_key, sweep

    with agent_home.open() as agent:
        first, pay_a = _sent_row(agent, "inv-sweep-a", job_id=None)
        second, pay_b = _sent_row(agent, "inv-sweep-b", job_id=None)
    assert pay_b.inputs == (pay_a.change[0].ref,) or set(pay_b.inputs) & {u.ref for u in pay_a.change}
    payee = label_signing_key(PAYEE_LABEL)
    swept = sweep(agent_home.devnet.node, key=payee, to_address=key_address(label_signing_key(TREASURY_LABEL)),
                  refs=[OutputRef(pay_a.tx_id, 0), OutputRef(pay_b.tx_id, 0)])
    assert swept and not agent_home.devnet.ledger.utxos_by_refs([OutputRef(pay_a.tx_id, i) for i in range(2)])
    spent_before = _spent(agent_home)
    with agent_home.open() as agent:  # the restart
        assert agent.recover() == counts(kept=2)
        rows = [agent.ledger.get(first.id), agent.ledger.get(second.id)]
        assert [r.state for r in rows] == ["submitted", "submitted"]
        with pytest.raises(DuplicatePaymentError):
            agent.ledger.reserve(invoice_id="inv-sweep-a", host="twin", route="/chat", job_id=None,
                                 outputs=[RequiredOutput(DEFAULT_PAY_TO, 2_000_000)],
                                 amounts={"lovelace": 2_000_000}, fee_estimate_lovelace=200_000)
    assert _spent(agent_home) == spent_before  # budgets still count both payments


def _spent(home):
    with home.open() as agent:
        return agent.ledger.total_paid()

