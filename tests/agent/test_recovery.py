"""Recovery after a crash, step by step on the sandbox: resubmit the same bytes, release the expired."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from agent.payer import JobContext, job_context
from sandbox.billing import DEFAULT_PAY_TO
from tests.fixtures.agent_home import BLOCKFROST_IN_FULL_TIER
from wallets.types import OutputRef, RequiredOutput, Utxo


@pytest.fixture(params=BLOCKFROST_IN_FULL_TIER)
def chain_backend(request: pytest.FixtureRequest) -> str:
    """Every recovery here runs over Ogmios and over Blockfrost."""
    return request.param


def _signed_row(agent, *, ttl_offset=300, invoice="inv-crash", job_id=None, expires_at=None):
    """Reserve and sign a 2 ADA payment without submitting it: the state a crash after signing leaves."""
    payer = agent.payer()
    row = agent.ledger.reserve(invoice_id=invoice, host="twin", route="/chat", job_id=job_id,
                               outputs=[RequiredOutput(DEFAULT_PAY_TO, 2_000_000)],
                               amounts={"lovelace": 2_000_000}, fee_estimate_lovelace=200_000,
                               owner=payer.owner, expires_at=expires_at)
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
        row, payment = _signed_row(agent, ttl_offset=-200)  # its TTL passed minutes ago
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



def _fetch_402(home, message="question"):
    """A real 402 from the twin: (request, body) as the x402 auth hands them to the payer."""
    response = httpx.post(f"{home.twin.url}/chat", json={"message": message}, timeout=30)
    assert response.status_code == 402, response.text
    return response.request, response.content


def _on_chain(home, tx_id):
    """True if a block of the devnet holds ``tx_id``."""
    node = home.devnet.node
    return any(tx_id in node.block_at(i)[0].tx_ids for i in range(node.block_count()))


def _cli(home, *args, crash=None, timeout=300):
    import os
    import subprocess
    import sys

    from tests.fixtures.agent_home import PASSPHRASE

    env = {**os.environ, "CARDANO_AGENT_PASSPHRASE": PASSPHRASE}
    env.pop("CARDANO_AGENT_CRASH_POINTS", None)
    if crash:
        env["CARDANO_AGENT_CRASH_POINTS"] = f"{crash}:1"
    return subprocess.run([sys.executable, "-m", "agent.cli", *args, "--home", str(home.home)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_a_second_run_on_the_home_never_touches_a_payment_in_flight(agent_home_factory):
    """Finding 2: `run` started while another process is between signing and a slow submit leaves it alone.

    Seen before the fix: the second `run` resubmitted the other's signed transaction at its
    start; the owner's own submit then failed with 3117, released a row already marked
    submitted, and its job paid a new invoice: one job, two payments.
    """
    home = agent_home_factory(real_kdf=True)
    request, body = _fetch_402(home)
    entered, go = threading.Event(), threading.Event()
    outcome: dict = {}
    with home.open() as agent:
        payer = agent.payer()
        real_submit = agent.chain.submit

        def slow_submit(cbor):
            entered.set()
            assert go.wait(120), "the test never let the submit go"
            return real_submit(cbor)

        agent.chain.submit = slow_submit

        def pay():
            try:
                outcome["proof"] = payer.pay(request, body)
            except Exception as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc

        worker = threading.Thread(target=pay)
        worker.start()
        try:
            assert entered.wait(120), "the payment never reached its submit"
            [row] = agent.ledger.unfinished()
            assert row.state == "signed" and row.owner == payer.owner
            second = _cli(home, "run", "--until-idle")  # a second process on the same home
            assert second.returncode == 0, second.stderr[-2000:]
            assert "recovered" not in second.stderr
            assert agent.ledger.get(row.id).state == "signed" and agent.ledger.get(row.id).owner == payer.owner
            assert not _on_chain(home, row.tx_id) and not agent.chain.in_mempool(row.tx_id)
        finally:
            go.set()
            worker.join(120)
        assert "error" not in outcome, outcome.get("error")
        after = agent.ledger.get(row.id)
        assert after.state == "submitted" and outcome["proof"].payment == row.tx_id
        paid = [r for r in agent.ledger.rows() if r.paid]
    assert [r.id for r in paid] == [row.id] and _on_chain(home, row.tx_id)


@pytest.mark.slow
@pytest.mark.parametrize("crash", ["after_sign", "after_submit"])
def test_a_killed_call_is_recovered_by_the_next_call(agent_home_factory, crash):
    """Finding 10: a `call` killed mid-payment is resolved by the next `call`, which pays its own invoice.

    Seen before the fix: every later `call` waited 30 s for the dead call's reserved inputs
    and failed with "have 0" while the wallet held the funds.
    """
    home = agent_home_factory(real_kdf=True)
    before = home.balance()
    killed = _cli(home, "call", "chat", "--message", "first", crash=crash)
    assert killed.returncode == -9, killed.stderr[-2000:]
    with home.open() as agent:
        [left] = agent.ledger.unfinished()
        assert left.state == "signed"
    again = _cli(home, "call", "chat", "--message", "second", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "have 0" not in again.stderr
    with home.open() as agent:
        rows = agent.ledger.rows()
        first = agent.ledger.get(left.id)
    paid = [r for r in rows if r.paid]
    assert first.state == "submitted" and _on_chain(home, first.tx_id)  # the same bytes, never a new tx
    assert len(paid) == 2 and len({r.invoice_id for r in paid}) == 2
    assert all(_on_chain(home, r.tx_id) for r in paid)
    assert before - home.balance() == sum(r.cost_lovelace for r in paid)


def test_a_reissued_invoice_is_never_answered_with_an_unsent_proof(agent_home):
    """Finding 10: paying an invoice whose payment was signed but never sent submits it first.

    Seen before the fix: the proof of a transaction never submitted was presented, and the
    server's refusal then recorded it as paid.
    """
    request, body = _fetch_402(agent_home)
    with agent_home.open() as agent:
        payer = agent.payer()

        def die(cbor):
            raise KeyboardInterrupt("the process dies before submitting")

        agent.chain.submit = die
        with pytest.raises(KeyboardInterrupt):
            payer.pay(request, body)
        [row] = agent.ledger.unfinished()
        assert row.state == "signed"
    with agent_home.open() as agent:  # the same invoice comes again (re-issued), in a new process
        proof = agent.payer().pay(request, body)
        after = agent.ledger.get(row.id)
        assert proof.payment == row.tx_id and after.state == "submitted"
    assert _on_chain(agent_home, row.tx_id)


def test_a_refused_proof_of_an_unsent_payment_is_not_recorded_as_paid(agent_home):
    """A server refusing the proof of a signed transaction that is nowhere does not make it a payment."""
    from agent.auth import Proof

    with agent_home.open() as agent:
        row, payment = _signed_row(agent, invoice="inv-unsent")
        refusal = httpx.Response(402, json={"detail": "payment_not_found"})
        agent.payer().refused(Proof(invoice_id="inv-unsent", payment=payment.tx_id, headers={},
                                    expires_at=None, payment_id=str(row.id)), refusal)
        assert agent.ledger.get(row.id).state == "signed"
        assert agent.ledger.total_paid() == 0


def test_a_job_whose_payment_fate_is_unknown_waits_instead_of_paying_anew(agent_home):
    """Resuming a job whose signed payment can be neither sent nor judged raises PaymentInFlightError (retryable)."""
    from agent.errors import PaymentInFlightError
    from agent.runner import is_transient
    from wallets.errors import ChainUnavailableError

    with agent_home.open() as agent:
        job = agent.jobs.enqueue("chat", {"message": "x"}, now=time.time())
        row, payment = _signed_row(agent, invoice="inv-unknown", job_id=job.id)
    with agent_home.open() as agent:
        def unreachable(cbor):
            raise ChainUnavailableError("the node is down")

        agent.chain.submit = unreachable
        with pytest.raises(PaymentInFlightError) as info:
            agent.payer().resume_proof(job.id)
        assert is_transient(info.value)
        assert agent.ledger.get(row.id).state == "signed"
        agent.chain.submit = type(agent.chain).submit.__get__(agent.chain)
        proof = agent.payer().resume_proof(job.id)  # the node is back: the same bytes go out
        assert proof is not None and proof.payment == payment.tx_id
    assert _on_chain(agent_home, payment.tx_id)


def test_a_resumed_proof_carries_the_invoices_expiry(agent_home):
    """A job resumed after its payment went out gets a proof that expires when the invoice does, not later."""
    from datetime import datetime, timezone

    expires = time.time() + 42.5
    with agent_home.open() as agent:
        job = agent.jobs.enqueue("chat", {"message": "x"}, now=time.time())
        row, payment = _signed_row(agent, invoice="inv-resumed", job_id=job.id, expires_at=expires)
        agent.chain.submit(payment.cbor)
        agent.ledger.mark_submitted(row.id)
    with agent_home.open() as agent:
        proof = agent.payer().resume_proof(job.id)
    assert proof is not None and proof.payment == payment.tx_id
    assert proof.expires_at == datetime.fromtimestamp(expires, tz=timezone.utc)


def test_a_resumed_proof_of_a_row_without_a_stored_expiry_still_expires(agent_home):
    """Rows written before the ledger kept the invoice's expiry resume with a short, finite window."""
    with agent_home.open() as agent:
        job = agent.jobs.enqueue("chat", {"message": "x"}, now=time.time())
        row, payment = _signed_row(agent, invoice="inv-old-row", job_id=job.id)
        agent.chain.submit(payment.cbor)
        agent.ledger.mark_submitted(row.id)
        assert agent.ledger.get(row.id).expires_at is None
    before = time.time()
    with agent_home.open() as agent:
        proof = agent.payer().resume_proof(job.id)
    assert proof is not None and proof.payment == payment.tx_id
    assert before < proof.expires_at.timestamp() <= time.time() + 300


def _signed_on(agent, invoice, utxo, *, payee_lovelace=2_000_000):
    """A payment row signed (not submitted) that spends exactly ``utxo``: what a payer builds on pending change."""
    from wallets.payment import plan_payment, sign_payment

    payer = agent.payer()
    outputs = [RequiredOutput(DEFAULT_PAY_TO, payee_lovelace)]
    row = agent.ledger.reserve(invoice_id=invoice, host="twin", route="/chat", job_id=None, outputs=outputs,
                               amounts={"lovelace": payee_lovelace}, fee_estimate_lovelace=200_000,
                               owner=payer.owner)
    tip = agent.chain.tip()
    plan = plan_payment(outputs, utxos=[utxo], change_address=payer.sender.address,
                        params=agent.chain.protocol_params(), ttl_slot=payer._slot_now(time.time()) + 3000, metadata={674: {"msg": ["x402", invoice]}})
    payment = sign_payment(plan, payer.sender._signer)
    assert payment.inputs == (utxo.ref,)
    agent.ledger.mark_signed(row.id, tx_id=payment.tx_id, cbor=payment.cbor, fee_lovelace=payment.fee_lovelace,
                             inputs=payment.inputs, ttl_slot=payment.ttl_slot, cost_lovelace=payment.cost_lovelace,
                             sync_point=(tip.slot, tip.id))
    return row, payment


def test_a_payment_built_on_change_spent_before_it_was_signed_is_released(agent_home):
    """Seen in the crash soak: a live `run` chained on a dead process's stale pending change.

    That change had been spent (by the dead process's next payment, confirmed) before the new
    payment was signed, so its input is gone, no block after its signing point spends it, and
    its TTL is an hour away. Its parent is in a block, so the input was spent by another
    transaction: it can never land. Before the fix it was "resubmission refused ... kept as signed" at
    every start until its TTL, and its job waited that hour.
    """
    with agent_home.open() as agent:
        parent, pay_p = _sent_row(agent, "inv-parent")
        agent_home.devnet.produce_block()
        agent.ledger.mark_settled(parent.id)
        [change] = pay_p.change
        spender, _ = _signed_on(agent, "inv-spender", change, payee_lovelace=1_000_000)
        agent.chain.submit(agent.ledger.get(spender.id).cbor)
        agent.ledger.mark_submitted(spender.id)
        agent_home.devnet.produce_block()
        stale, pay_c = _signed_on(agent, "inv-stale", change)  # signed after its input was spent
    before = agent_home.balance()
    with agent_home.open() as agent:
        result = agent.recover()
        row = agent.ledger.get(stale.id)
        assert row.state == "released", (result, row.reason)
        assert result["released"] == 1 and result["unresolved"] == 0
        assert "spent" in row.reason and change.ref.tx_id[:16] in row.reason
    assert not _on_chain(agent_home, pay_c.tx_id)
    assert agent_home.balance() == before


def test_a_payment_built_on_change_of_a_released_payment_is_released(agent_home):
    """Chained on the change of a payment that provably never landed: its input will never exist."""
    with agent_home.open() as agent:
        parent, pay_p = _signed_row(agent, invoice="inv-dead-parent", ttl_offset=-200)  # expired, never sent
        [change] = pay_p.change
        child, pay_c = _signed_on(agent, "inv-orphan", change)
    before = agent_home.balance()
    with agent_home.open() as agent:
        result = agent.recover()
        assert agent.ledger.get(parent.id).state == "released"
        row = agent.ledger.get(child.id)
        assert row.state == "released", (result, row.reason)
        assert result == counts(released=2)
        assert f"payment {parent.id}" in row.reason
    assert not _on_chain(agent_home, pay_c.tx_id)
    assert agent_home.balance() == before
