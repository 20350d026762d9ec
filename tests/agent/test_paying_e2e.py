"""The paying client end to end on the sandbox: every x402 route, splits, batches, refusals, budgets.

Money assertions read the devnet ledger, not the agent's own records, so "nothing was paid"
means the wallet's balance on the chain did not move.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from agent.auth import PaymentRejectedError, X402Auth
from agent.errors import ApprovalRequiredError, BudgetExceededError, InvoiceError, PolicyError
from agent.tapi import TClient
from sandbox.billing import ACME_ADDRESS, DEFAULT_PAY_TO, GLOBEX_ADDRESS, TwinConfig
from tests.fixtures.agent_home import BLOCKFROST_IN_FULL_TIER
from wallets.types import OutputRef

PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


@pytest.fixture(params=BLOCKFROST_IN_FULL_TIER)
def chain_backend(request: pytest.FixtureRequest) -> str:
    """Every payment and refusal here runs over Ogmios and over Blockfrost."""
    return request.param


def paid_rows(agent):
    return [r for r in agent.ledger.rows() if r.paid]


def test_every_payable_route_is_paid_and_answered(agent_home):
    """chat, streamed chat, token analysis and the three image routes each pay their price once."""
    before = agent_home.balance()
    with agent_home.open() as agent, TClient(agent) as t:
        assert t.chat("hello", session_id="a").reply
        text = "".join(e.text or "" for e in t.chat_stream("Summarize Cardano.", session_id="b") if e.type == "content")
        assert text
        report = t.token_analysis("SNEK", policy_id="279c909f348e533da5808898f87f9a14bb2c3dfbbacccd631d927a3f")
        assert report.data
        assert t.images_generate("a node", n=1).images[0].startswith(b"\x89PNG")
        assert t.images_edit("warmer", [PNG_1PX]).images
        assert t.images_upload_and_edit("cooler", [("a.png", PNG_1PX)]).images
        rows = paid_rows(agent)
    assert [r.route for r in rows] == ["/chat", "/chat", "/token-analysis", "/images/generate",
                                       "/images/edit", "/images/upload-and-edit"]
    assert all(r.state == "settled" for r in rows)
    prices = 2 + 2 + 3 + 4 + 4 + 4
    fees = sum(r.fee_lovelace for r in rows)
    assert before - agent_home.balance() == prices * 1_000_000 + fees


def test_additional_split_pays_partner_on_top(agent_home):
    """acme's invoice (additional split, 50%) pays payTo the full price and acme half again, in one tx."""
    pay_to_before, acme_before = agent_home.balance(DEFAULT_PAY_TO), agent_home.balance(ACME_ADDRESS)
    with agent_home.open() as agent, TClient(agent, partner="acme") as t:
        t.chat("partner call")
        [row] = paid_rows(agent)
    assert agent_home.balance(DEFAULT_PAY_TO) - pay_to_before == 2_000_000
    assert agent_home.balance(ACME_ADDRESS) - acme_before == 1_000_000
    assert row.cost_lovelace == 3_000_000 + row.fee_lovelace


def test_inclusive_split_and_prepaid_batch(agent_home_factory):
    """globex (inclusive 40%, batches of 5): one 10 ADA payment carved 60/40 buys five calls."""
    agent_home = agent_home_factory(max_per_call_ada="11")
    pay_to_before, globex_before = agent_home.balance(DEFAULT_PAY_TO), agent_home.balance(GLOBEX_ADDRESS)
    with agent_home.open() as agent, TClient(agent, partner="globex") as t:
        for n in range(5):
            assert t.chat(f"batch call {n}").reply
        assert len(paid_rows(agent)) == 1
        t.chat("sixth call starts a new batch")
        assert len(paid_rows(agent)) == 2
    assert agent_home.balance(GLOBEX_ADDRESS) - globex_before == 2 * 4_000_000
    assert agent_home.balance(DEFAULT_PAY_TO) - pay_to_before == 2 * 6_000_000


def test_pending_then_settled_on_slow_chain(slow_agent_home):
    """The paid retry is `pending` until a block; re-sending the same proof then succeeds, paid once."""
    home = slow_agent_home
    with home.open() as agent:
        payer = agent.payer()
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            home.devnet.produce_block()

        auth = X402Auth(payer, sleep=sleep)
        with TClient(home.twin.url, auth=auth) as t:
            assert t.chat("wait for me").reply
        [row] = paid_rows(agent)
    assert sleeps, "the agent never saw a pending answer"
    assert row.state == "settled"


@pytest.mark.parametrize("max_ada,reason", [("1", "over_max_per_call")])
def test_invoice_over_the_per_call_maximum_is_refused_and_nothing_paid(agent_home_factory, max_ada, reason):
    """A 2 ADA chat with a 1 ADA per-call maximum raises PolicyError; the wallet's balance is unchanged."""
    home = agent_home_factory(max_per_call_ada=max_ada)
    before = home.balance()
    with home.open() as agent, TClient(agent) as t:
        with pytest.raises(PolicyError) as err:
            t.chat("too dear")
        rows = agent.ledger.rows()
    assert err.value.reason == reason
    assert home.balance() == before
    assert [r.state for r in rows] == ["refused"]


def test_budget_exceeded_is_refused_and_nothing_paid(agent_home_factory):
    """A 3 ADA daily budget allows one 2 ADA chat (plus fee); the second raises BudgetExceededError."""
    home = agent_home_factory(extra="""
        [[budgets]]
        name = "daily"
        limit_ada = 3
        window = "1d"
        """)
    with home.open() as agent, TClient(agent) as t:
        t.chat("first")
        after_first = home.balance()
        with pytest.raises(BudgetExceededError) as err:
            t.chat("second")
        states = [r.state for r in agent.ledger.rows()]
    assert err.value.budget == "daily"
    assert home.balance() == after_first
    assert states == ["settled", "refused"]


def test_payee_change_is_refused_until_approved(agent_home_factory, twin_factory):
    """After paying one payTo for a host, an invoice to another address is refused (parked), nothing paid."""
    home = agent_home_factory()
    with home.open() as agent, TClient(agent) as t:
        t.chat("pins the payee")
    # Same host and port, new payee: restart the twin config with another pay_to on a new twin, then
    # point the agent at it under the old host name by pinning that host first.
    other = twin_factory(replace(TwinConfig(), pay_to=GLOBEX_ADDRESS), on=home.devnet)
    home.configure()
    with home.open() as agent:
        agent.pins.pin(httpx.URL(other.url).netloc.decode(), [DEFAULT_PAY_TO], 0)
        before = home.balance()
        with TClient(other.url, auth=agent.x402_auth()) as t:
            with pytest.raises(PolicyError) as err:
                t.chat("new payee")
        parked = agent.approvals.pending()
    assert err.value.reason == "payee_changed"
    assert home.balance() == before
    assert len(parked) == 1 and GLOBEX_ADDRESS in parked[0].summary["new_payees"]


def test_approval_threshold_parks_the_payment(agent_home_factory):
    """Above approve_above_ada the payment is parked for a human: ApprovalRequiredError, nothing paid."""
    home = agent_home_factory(extra="approve_above_ada = 1\n")
    before = home.balance()
    with home.open() as agent, TClient(agent) as t:
        with pytest.raises(ApprovalRequiredError):
            t.chat("needs a human")
        assert len(agent.approvals.pending()) == 1
    assert home.balance() == before


def _hostile(detail_for):
    """A server that answers every call with the 402 body ``detail_for(request)``, and 200 to a paid retry."""

    def handle(request: httpx.Request) -> httpx.Response:
        if "X-Payment" in request.headers:
            return httpx.Response(402, json={"detail": {"invoiceId": "again", "error": "no"}})
        return httpx.Response(402, json=detail_for(request))

    return httpx.MockTransport(handle)


def _invoice(**over):
    body = {"version": "0.1", "invoiceId": "inv-hostile", "chain": "cardano-devnet", "asset": "ADA",
            "amountUnits": "2000000", "decimals": 6, "payTo": DEFAULT_PAY_TO, "timeout": 300,
            "extra": {"lovelace": True, "babel": False}}
    body.update(over)
    return {"detail": body}


@pytest.mark.parametrize("body,error,needle", [
    ({"detail": "Payment required"}, InvoiceError, ""),
    (_invoice(amountUnits="10000000000"), PolicyError, "over_max_per_call"),
    (_invoice(chain="cardano-preprod"), PolicyError, "wrong_network"),
    (_invoice(amountUnits="-5"), InvoiceError, ""),
    (_invoice(amountUnits="1.5"), InvoiceError, ""),
    (_invoice(extra={"babel": True}), PolicyError, "babel"),
    (_invoice(extra={"outputs": [{"address": ACME_ADDRESS, "amountUnits": "1000000"}] * 50}), InvoiceError, ""),
    (_invoice(timeout=None, expiresAt="2020-01-01T00:00:00Z"), Exception, ""),
    (_invoice(payTo="addr1qx2fxv2umyhttkxyxp8x0dlpdt3k6cwng5pxj3jhsydzer3n0d3vllmyqwsx5wktcd8cc3sq835lu7drv2xwl2wywfgse35a3x"),
     InvoiceError, ""),
])
def test_hostile_invoices_are_refused_and_nothing_paid(agent_home, body, error, needle):
    """Malformed, dear, wrong-network, babel, 50-way split, expired and mainnet-payee invoices: refused, no funds move."""
    before = agent_home.balance()
    with agent_home.open() as agent:
        with TClient("http://hostile.test", auth=agent.x402_auth(), transport=_hostile(lambda r: body)) as t:
            with pytest.raises(error) as err:
                t.chat("pay me")
        assert not paid_rows(agent)
    assert isinstance(err.value, (InvoiceError, PolicyError))
    if needle:
        assert needle in getattr(err.value, "reason", "")
    assert agent_home.balance() == before


def test_second_402_after_paying_is_refused_once_and_never_paid_again(agent_home):
    """A server that keeps asking after being paid: one payment, marked unsettled, then PaymentRejectedError."""
    body = _invoice(invoiceId="inv-greedy")
    before = agent_home.balance()
    with agent_home.open() as agent:
        with TClient("http://greedy.test", auth=agent.x402_auth(), transport=_hostile(lambda r: body)) as t:
            with pytest.raises(PaymentRejectedError):
                t.chat("pay me once")
        rows = paid_rows(agent)
    assert [r.state for r in rows] == ["unsettled"]
    agent_home.devnet.produce_block()
    assert before - agent_home.balance() == 2_000_000 + rows[0].fee_lovelace


def test_32_concurrent_calls_against_a_budget_for_10(agent_home_factory):
    """32 paid calls at once against a budget that fits exactly 10: 10 paid, 22 refused, ledger == chain."""
    home = agent_home_factory(funds=0, extra="""
        [[budgets]]
        name = "ten-calls"
        limit_ada = 22
        window = "none"
        """)
    for _ in range(8):
        home.devnet.fund(home.address, 40_000_000)
    before = home.balance()
    pay_to_before = home.balance(DEFAULT_PAY_TO)
    outcomes: list[str] = []
    lock = threading.Lock()
    with home.open() as agent:
        agent.payer()  # unlock once before the threads start

        def call(n: int) -> None:
            with TClient(agent) as t:
                try:
                    t.chat(f"call {n}")
                    result = "paid"
                except BudgetExceededError:
                    result = "budget"
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=call, args=(n,)) for n in range(32)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rows = paid_rows(agent)
        fees = sum(r.fee_lovelace for r in rows)
    assert outcomes.count("paid") == 10 and outcomes.count("budget") == 22
    assert len(rows) == 10 and all(r.state == "settled" for r in rows)
    assert home.balance(DEFAULT_PAY_TO) - pay_to_before == 10 * 2_000_000
    assert before - home.balance() == 10 * 2_000_000 + fees


def test_cbor_proof_lets_the_server_submit(agent_home_factory):
    """With proof = "cbor" the agent sends the signed transaction; the twin submits it and answers."""
    home = agent_home_factory(proof="cbor")
    before = home.balance()
    with home.open() as agent, TClient(agent) as t:
        assert t.chat("server submits").reply
        [row] = paid_rows(agent)
    home.devnet.produce_block()
    assert row.state == "settled"
    assert home.twin.status(row.invoice_id)["txHash"] == row.tx_id
    assert before - home.balance() == 2_000_000 + row.fee_lovelace


def test_an_invoice_refused_for_budget_can_be_paid_once_the_budget_allows(agent_home_factory):
    """A refusal pays nothing and does not brand the invoice: after the limit is raised it is paid."""
    body = _invoice(invoiceId="inv-retry-later")
    home = agent_home_factory(extra="""
        [[budgets]]
        name = "tiny"
        limit_ada = 1
        window = "none"
        """)

    def serve(request: httpx.Request) -> httpx.Response:
        if "X-Payment" in request.headers:
            return httpx.Response(200, json={"reply": "paid"})
        return httpx.Response(402, json=body)

    with home.open() as agent:
        with TClient("http://shop.test", auth=agent.x402_auth(), transport=httpx.MockTransport(serve)) as t:
            with pytest.raises(BudgetExceededError):
                t.chat("first try")
    home.configure(extra="""
        [[budgets]]
        name = "tiny"
        limit_ada = 5
        window = "none"
        """)
    with home.open() as agent:
        with TClient("http://shop.test", auth=agent.x402_auth(), transport=httpx.MockTransport(serve)) as t:
            assert t.chat("second try").reply == "paid"
        states = [r.state for r in agent.ledger.rows()]
    assert states == ["refused", "settled"]


def test_a_200_that_never_comes_stops_with_one_payment(agent_home):
    """After paying, a server that times out: retries carry the same proof, then a clear error; paid once."""
    from agent.errors import TransientApiError
    from agent.retry import RetryPolicy

    body = _invoice(invoiceId="inv-silent")
    paid_retries: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        if "X-Payment" in request.headers:
            paid_retries.append(request.headers["X-Payment"])
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(402, json=body)

    before = agent_home.balance()
    with agent_home.open() as agent:
        with TClient("http://silent.test", auth=agent.x402_auth(), transport=httpx.MockTransport(serve),
                     retry=RetryPolicy(max_attempts=3, base_delay_s=0.0), sleep=lambda s: None) as t:
            with pytest.raises(TransientApiError):
                t.chat("answer me")
        [row] = agent.ledger.rows()
    agent_home.devnet.produce_block()
    assert row.state == "submitted"  # paid, not settled: a later attempt re-presents this proof
    assert len(set(paid_retries)) == 1 and len(paid_retries) >= 2
    assert before - agent_home.balance() == 2_000_000 + row.fee_lovelace


@pytest.mark.parametrize("reuse_s", [3600.0, 0.0])
def test_payments_close_together_share_one_tip_read(agent_home, monkeypatch, reuse_s):
    """A tip read moments ago is still a point before the next payment's transaction exists: payments
    within TIP_REUSE_S of it reuse it (one tip query, not one each) and record it as recovery's
    sync point; each is paid once and settled, and the chain shows every one."""
    from agent import payer as payer_module

    monkeypatch.setattr(payer_module, "TIP_REUSE_S", reuse_s)
    before = agent_home.balance()
    with agent_home.open() as agent:
        reads: list[object] = []
        real_tip = agent.chain.tip

        def counted_tip():
            tip = real_tip()
            reads.append(tip)
            return tip

        agent.payer()
        monkeypatch.setattr(agent.chain, "tip", counted_tip)
        with TClient(agent) as t:
            for n in range(3):
                assert t.chat(f"call {n}", session_id=f"s{n}").reply
        rows = paid_rows(agent)
        landed = [agent.chain.utxos_by_refs([OutputRef(r.tx_id, 0)]) for r in rows if r.tx_id]
    assert [r.state for r in rows] == ["settled"] * 3 and len(landed) == 3 and all(landed)
    sync_points = {(r.sync_slot, r.sync_id) for r in rows}
    if reuse_s:
        assert len(reads) == 1 and sync_points == {(reads[0].slot, reads[0].id)}
    else:
        assert len(reads) >= 3
    assert before - agent_home.balance() == 3 * 2_000_000 + sum(r.fee_lovelace for r in rows)
