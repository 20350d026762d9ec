"""Recovery after a crash, step by step on the sandbox: resubmit the same bytes, release the expired."""

from __future__ import annotations

import time

import httpx

from agent.payer import JobContext, job_context
from sandbox.billing import DEFAULT_PAY_TO
from wallets.types import OutputRef, RequiredOutput, Utxo


def _signed_row(agent, *, ttl_offset=300, invoice="inv-crash"):
    """Reserve and sign a 2 ADA payment without submitting it: the state a crash after signing leaves."""
    payer = agent.payer()
    row = agent.ledger.reserve(invoice_id=invoice, host="twin", route="/chat", job_id=None,
                               outputs=[RequiredOutput(DEFAULT_PAY_TO, 2_000_000)],
                               amounts={"lovelace": 2_000_000}, fee_estimate_lovelace=200_000)
    ttl = payer._slot_now(time.time()) + ttl_offset
    payment = payer.sender.build([RequiredOutput(DEFAULT_PAY_TO, 2_000_000)], ttl_slot=ttl,
                                 metadata={674: {"msg": ["x402", invoice]}}, owner=str(row.id))
    agent.ledger.mark_signed(row.id, tx_id=payment.tx_id, cbor=payment.cbor, fee_lovelace=payment.fee_lovelace,
                             inputs=payment.inputs, ttl_slot=payment.ttl_slot, cost_lovelace=payment.cost_lovelace)
    return row, payment


def test_signed_but_unsent_payment_is_resubmitted_byte_for_byte(agent_home):
    """After a crash between signing and submitting, recovery submits the same transaction (same id)."""
    with agent_home.open() as agent:
        row, payment = _signed_row(agent)
    payee_before = agent_home.balance(DEFAULT_PAY_TO)
    with agent_home.open() as agent:  # a new process, as after the crash
        assert agent.recover() == {"kept": 0, "resubmitted": 1, "released": 0}
        after = agent.ledger.get(row.id)
        assert agent.recover() == {"kept": 1, "resubmitted": 0, "released": 0}
    assert after.state == "submitted" and after.tx_id == payment.tx_id
    assert agent_home.devnet.ledger.utxos_by_refs([OutputRef(payment.tx_id, 0)])
    assert agent_home.balance(DEFAULT_PAY_TO) - payee_before == 2_000_000


def test_payment_that_expired_unsent_is_released_and_its_inputs_freed(agent_home):
    """A signed payment whose TTL passed without reaching the chain is released; nothing is paid."""
    with agent_home.open() as agent:
        row, payment = _signed_row(agent, ttl_offset=-1)
    before = agent_home.balance()
    with agent_home.open() as agent:
        assert agent.recover() == {"kept": 0, "resubmitted": 0, "released": 1}
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
