"""Paying the sandbox's x402 v2 server from a real agent home on the devnet."""

from __future__ import annotations

import time

import json
from typing import Any, Callable, Iterator

import httpx
import pytest

from agent import x402v2 as v2
from agent.errors import AgentError
from sandbox.devnet import DEVNET_TOKEN
from sandbox.x402_server import DEFAULT_PAY_TO, X402Server
from tests.fixtures.agent_home import BLOCKFROST_IN_FULL_TIER

TOKENS = f'allowed_assets = ["lovelace", "{DEVNET_TOKEN}"]\n'
ADA_ENTRY = {"scheme": "exact", "network": "cardano:devnet", "amount": "1000000", "asset": "lovelace",
             "payTo": DEFAULT_PAY_TO, "maxTimeoutSeconds": 600}


@pytest.fixture(params=BLOCKFROST_IN_FULL_TIER)
def chain_backend(request: pytest.FixtureRequest) -> str:
    """Every v2 payment here runs over Ogmios and over Blockfrost."""
    return request.param


@pytest.fixture
def v2_server(agent_home: Any) -> Iterator[X402Server]:
    """The v2 server on the agent's devnet (one block per transaction), releasing at depth 0."""
    from sandbox.x402_server import Routes

    with X402Server.start(agent_home.devnet, routes=Routes(confirmations=0)) as server:
        yield server


def rows(agent: Any) -> list[Any]:
    return agent.ledger.rows()


def tokens(home: Any, address: str) -> int:
    return home.devnet.ledger.balance(address).get(DEVNET_TOKEN, 0)


def test_pays_ada_once_and_records_the_settlement(agent_home: Any, v2_server: X402Server) -> None:
    """GET /premium: one transaction of 1 ADA + fee, the 200 with PAYMENT-RESPONSE, a settled ledger row."""
    before, pay_to_before = agent_home.balance(), agent_home.balance(DEFAULT_PAY_TO)
    sent: list[str] = []

    def record(request: httpx.Request) -> None:
        if "payment-signature" in request.headers:
            sent.append(request.headers["payment-signature"])

    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(), timeout=30,
                                                  event_hooks={"request": [record]}) as http:
        r = http.get(f"{v2_server.url}/premium")
        assert r.status_code == 200 and r.json()["content"] == "premium"
        answer = v2.parse_payment_response(r.headers)
        assert answer is not None and answer.success
        (row,) = rows(agent)
        assert row.state == "settled" and row.tx_id == answer.transaction
        from agent.x402v2_payer import stored

        kept = stored(agent.ledger.db, row.id)
        assert kept is not None and kept.settle_tx == row.tx_id and kept.settle_status == "confirmed"
    assert agent_home.balance(DEFAULT_PAY_TO) == pay_to_before + 1_000_000
    assert agent_home.balance() == before - 1_000_000 - row.fee_lovelace
    assert v2_server.facilitator.submissions == 1
    # The server offered the payment-identifier extension: it is echoed with an id the SDK accepts.
    from x402.extensions.payment_identifier import validate_payment_identifier

    (header,) = sent
    extension = v2.decode_b64_json(header, what="sent")["extensions"]["payment-identifier"]
    assert extension["info"]["id"].startswith("pay_") and validate_payment_identifier(extension).valid


def test_pays_in_tokens_with_min_ada(agent_home: Any, v2_server: X402Server) -> None:
    """GET /token: 5 DEVNET tokens plus the output's min-ADA, when the policy allows the token."""
    agent_home.devnet.fund(agent_home.address, 5_000_000, {DEVNET_TOKEN: 50})
    agent_home.configure(extra="", max_per_call_ada="10")
    (agent_home.home / "agent.toml").write_text((agent_home.home / "agent.toml").read_text() + TOKENS)
    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(), timeout=30) as http:
        r = http.get(f"{v2_server.url}/token")
        assert r.status_code == 200
        (row,) = rows(agent)
        assert row.state == "settled" and row.amounts == {DEVNET_TOKEN: 5}
    assert tokens(agent_home, DEFAULT_PAY_TO) == 5 and tokens(agent_home, agent_home.address) == 45


def test_chooses_the_cheapest_acceptable_entry(agent_home: Any, v2_server: X402Server) -> None:
    """/choice offers 3 ADA, 2 ADA or tokens (not allowed): the agent pays 2 ADA."""
    pay_to_before = agent_home.balance(DEFAULT_PAY_TO)
    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(), timeout=30) as http:
        assert http.get(f"{v2_server.url}/choice").status_code == 200
    assert agent_home.balance(DEFAULT_PAY_TO) == pay_to_before + 2_000_000


def test_budget_pushes_choice_to_the_next_entry_or_refuses(agent_home: Any, v2_server: X402Server) -> None:
    """Over the per-call cap every entry is rejected, each named in one line; a refused row, nothing paid."""
    agent_home.configure(max_per_call_ada="1")
    before = agent_home.balance()
    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(), timeout=30) as http:
        with pytest.raises(v2.NoAcceptableOptionError) as err:
            http.get(f"{v2_server.url}/choice")
        line = str(err.value)
        assert "\n" not in line and "[0]" in line and "[1]" in line and "[2]" in line
        assert "per-call maximum" in line and "not an allowed asset" in line
        (row,) = rows(agent)
        assert row.state == "refused" and "per-call" in (row.reason or "")
    assert agent_home.balance() == before


def _serve_402(payment_required: dict | str) -> httpx.MockTransport:
    value = payment_required if isinstance(payment_required, str) else v2.encode_b64_json(payment_required)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, headers={"PAYMENT-REQUIRED": value}, json={})

    return httpx.MockTransport(handler)


def _required(**over: Any) -> dict:
    entry = {**ADA_ENTRY, "extra": {"assetTransferMethod": "default"}}
    entry.update(over)
    return {"x402Version": 2, "resource": {"url": "http://127.0.0.1/x"}, "accepts": [entry]}


@pytest.mark.parametrize("payment_required, words", [
    (_required(extra={"assetTransferMethod": "masumi"}), "masumi"),
    (_required(extra={"assetTransferMethod": "script"}), "script"),
    (_required(scheme="upto"), "scheme 'upto'"),
    (_required(network="cardano:preprod"), "cardano:preprod"),
    (_required(amount="1.5"), "canonical"),
    (_required(amount=1000000), "canonical"),
    (_required(maxTimeoutSeconds=5), "too short"),
    ("not-base64-json!", "base64"),
    ({"x402Version": 2, "accepts": _required(extra={"assetTransferMethod": "masumi"})["accepts"] * 100},
     "[1-15] repeats entry [0]"),
])
def test_each_refusal_pays_nothing(agent_home: Any, payment_required: Any, words: str) -> None:
    """Every part-3 refusal: one clear error line, a ledger row `refused` with the reason, the balance unchanged."""
    before = agent_home.balance()
    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(),
                                                  transport=_serve_402(payment_required)) as http:
        with pytest.raises(AgentError) as err:
            http.get("http://127.0.0.1:9/paid")
        assert words in str(err.value) and "\n" not in str(err.value)
        (row,) = rows(agent)
        assert row.state == "refused" and row.reason
    assert agent_home.balance() == before


FACILITATOR_REASONS = [
    "invalid_exact_cardano_payload_nonce_not_on_chain", "invalid_exact_cardano_payload_input_not_available",
    "invalid_exact_cardano_payload_amount_insufficient", "invalid_exact_cardano_payload_recipient_mismatch",
    "invalid_exact_cardano_payload_value_not_conserved", "invalid_exact_cardano_payload_fee_below_minimum",
    "invalid_exact_cardano_payload_ttl_expired", "invalid_exact_cardano_payload_ttl_too_far",
    "invalid_exact_cardano_payload_phase1_invalid", "network_mismatch",
]


@pytest.mark.parametrize("reason", FACILITATOR_REASONS)
def test_facilitator_refusal_is_recorded_and_nothing_is_paid(agent_home: Any, v2_server: X402Server,
                                                             reason: str) -> None:
    """A facilitator verdict (forced) reaches the client as one line naming it; balance unchanged.

    The row stays signed with the verdict recorded: the server holds the signed bytes until their
    TTL, so only the chain can say they were never paid (see the two tests after the next).
    """
    from agent.x402v2_payer import stored

    v2_server.faults.verify_reason = reason
    before = agent_home.balance()
    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(), timeout=30) as http:
        with pytest.raises(AgentError) as err:
            http.get(f"{v2_server.url}/premium")
        assert reason in str(err.value)
        (row,) = rows(agent)
        assert row.state == "signed" and not row.paid
        assert reason in (stored(agent.ledger.db, row.id).error_reason or "")
    assert agent_home.balance() == before
    assert v2_server.facilitator.submissions == 0


def test_settlement_pending_then_success_with_one_transaction(agent_home: Any) -> None:
    """Depth 1 asked: the first answer is settlement_pending; the same payload, resent after a block, succeeds."""
    from sandbox.x402_server import Routes

    sleeps: list[float] = []
    with X402Server.start(agent_home.devnet, routes=Routes(confirmations=1)) as server:
        def produce_block(seconds: float) -> None:
            sleeps.append(seconds)
            agent_home.devnet.node.produce_block(force=True)

        with agent_home.open() as agent:
            auth = agent.x402_auth()
            auth._sleep = produce_block
            with httpx.Client(auth=auth, timeout=30) as http:
                r = http.get(f"{server.url}/premium")
            assert r.status_code == 200 and len(sleeps) == 1
            (row,) = rows(agent)
            assert row.state == "settled"
        assert server.facilitator.submissions == 1


def test_error_after_settle_resend_presents_the_same_payload(agent_home: Any, v2_server: X402Server) -> None:
    """A 500 after settling: the call's resend presents the same PAYMENT-SIGNATURE, never a new one."""
    v2_server.faults.error_after_settle = 1
    seen: list[str] = []

    def record(request: httpx.Request) -> None:
        if "payment-signature" in request.headers:
            seen.append(request.headers["payment-signature"])

    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(), timeout=30,
                                                  event_hooks={"request": [record]}) as http:
        first = http.get(f"{v2_server.url}/premium", headers={"X-Request-Id": "call-1"})
        assert first.status_code == 500
        second = http.get(f"{v2_server.url}/premium", headers={"X-Request-Id": "call-1"})
        assert second.status_code == 200
        (row,) = rows(agent)
        assert row.state == "settled"
    assert len(seen) == 2 and seen[0] == seen[1]
    assert v2_server.facilitator.submissions == 1


def test_official_sdk_pays_through_our_scheme(agent_home: Any, v2_server: X402Server) -> None:
    """The SDK's x402Client with agent.x402_scheme() pays the sandbox's server end to end; the ledger has the row."""
    import asyncio

    from x402 import x402Client
    from x402.http.clients.httpx import x402HttpxClient

    pay_to_before = agent_home.balance(DEFAULT_PAY_TO)
    with agent_home.open() as agent:
        scheme = agent.x402_scheme()
        client = x402Client()
        client.register("cardano:*", scheme)
        client.set_spend_controls(False)  # the SDK's own caps know no Cardano asset; our policy caps

        async def call() -> httpx.Response:
            async with x402HttpxClient(client, timeout=30) as http:
                return await http.get(f"{v2_server.url}/premium")

        r = asyncio.run(call())
        assert r.status_code == 200 and r.json()["content"] == "premium"
        (row,) = rows(agent)
        assert row.state == "signed" and row.host == "x402-sdk"
        assert scheme.reconcile() == {"paid": 1, "released": 0, "waiting": 0}
        assert agent.ledger.get(row.id).state == "submitted"
    assert agent_home.balance(DEFAULT_PAY_TO) == pay_to_before + 1_000_000
    assert v2_server.facilitator.submissions == 1


def test_sdk_scheme_refusal_pays_nothing(agent_home: Any, v2_server: X402Server) -> None:
    """A requirement the policy refuses raises through the SDK; a refused row, nothing paid."""
    import asyncio

    from x402 import x402Client
    from x402.http.clients.httpx import x402HttpxClient

    agent_home.configure(max_per_call_ada="0.5")
    before = agent_home.balance()
    with agent_home.open() as agent:
        client = x402Client()
        client.register("cardano:*", agent.x402_scheme())
        client.set_spend_controls(False)

        async def call() -> None:
            async with x402HttpxClient(client, timeout=30) as http:
                await http.get(f"{v2_server.url}/premium")

        with pytest.raises(Exception, match="per-call maximum"):
            asyncio.run(call())
        (row,) = rows(agent)
        assert row.state == "refused"
    assert agent_home.balance() == before


class Crash(BaseException):
    """Stands for the process dying at a crash point (nothing after it runs)."""


def _paid_txs(home: Any) -> int:
    """Payments of 1 ADA that reached the payee on chain."""
    return sum(1 for _, out in home.devnet.node.utxos_at([DEFAULT_PAY_TO]) if out.lovelace == 1_000_000)


def test_crash_between_signing_and_sending(agent_home: Any, v2_server: X402Server,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Signed and stored, then the process dies before sending: after restart the job presents the SAME payload; one tx."""
    import agent.x402v2_payer as payer_mod
    from agent.payer import JobContext, job_context

    def die(name: str) -> None:
        if name == "after_sign":
            raise Crash()

    monkeypatch.setattr(payer_mod, "crash_point", die)
    before = agent_home.balance()
    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(), timeout=30) as http:
        with job_context(JobContext(job_id=7)), pytest.raises(Crash):
            http.get(f"{v2_server.url}/premium", headers={"X-Request-Id": "job7-a"})
        (row,) = rows(agent)
        assert row.state == "signed"
    assert v2_server.facilitator.submissions == 0 and agent_home.balance() == before
    monkeypatch.setattr(payer_mod, "crash_point", lambda name: None)
    with agent_home.open() as agent:
        assert agent.recover()["kept"] == 1
        with httpx.Client(auth=agent.x402_auth(), timeout=30) as http, job_context(JobContext(job_id=7)):
            r = http.get(f"{v2_server.url}/premium", headers={"X-Request-Id": "job7-b"})  # a new attempt
        assert r.status_code == 200
        (row,) = rows(agent)
        assert row.state == "settled"
        assert agent_home.balance() == before - 1_000_000 - row.fee_lovelace
    assert v2_server.facilitator.submissions == 1 and _paid_txs(agent_home) == 1


def test_crash_between_sending_and_the_answer(agent_home: Any, v2_server: X402Server) -> None:
    """The server settles but the process dies before reading the answer: recovery finds the tx on chain;
    the resumed job presents the same payload and is served; one transaction, the ledger matches the chain."""
    before = agent_home.balance()

    class DieAfterPaidSend(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            if "payment-signature" in request.headers:
                response.read()
                raise Crash()
            return response

    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(), timeout=30,
                                                  transport=DieAfterPaidSend()) as http:
        from agent.payer import JobContext, job_context

        with job_context(JobContext(job_id=8)), pytest.raises(Crash):
            http.get(f"{v2_server.url}/premium", headers={"X-Request-Id": "job8-a"})
    assert v2_server.facilitator.submissions == 1
    with agent_home.open() as agent:
        assert agent.recover()["kept"] == 1
        (row,) = rows(agent)
        assert row.state == "submitted"  # decided from the chain: it landed
        proof = agent.payer().resume_proof(8)
        assert proof is not None and proof.dialect == "x402v2"
        auth = agent.x402_auth()
        auth.remember("job8-b", proof)
        with httpx.Client(auth=auth, timeout=30) as http:
            r = http.get(f"{v2_server.url}/premium", headers={"X-Request-Id": "job8-b"})
        assert r.status_code == 200
        assert agent.ledger.get(row.id).state == "settled"
        assert agent_home.balance() == before - 1_000_000 - row.fee_lovelace
    assert v2_server.facilitator.submissions == 1 and _paid_txs(agent_home) == 1


def test_pending_until_ttl_is_a_clear_unconfirmed_error_never_a_second_signature(agent_home: Any) -> None:
    """A server that keeps answering settlement_pending gets the same payload until the TTL, then 'unconfirmed'."""
    from datetime import timedelta

    from agent.auth import PaymentUnconfirmedError
    from sandbox.facilitator import Faults
    from sandbox.x402_server import Routes

    with X402Server.start(agent_home.devnet, routes=Routes(confirmations=0),
                          faults=Faults(pending_forever=True)) as server:
        signatures: set[str] = set()

        def record(request: httpx.Request) -> None:
            if "payment-signature" in request.headers:
                signatures.add(request.headers["payment-signature"])

        with agent_home.open() as agent:
            auth = agent.x402_auth()
            clock = {"now": None}
            real_clock = auth._clock

            def fake_sleep(seconds: float) -> None:  # time passes only when the flow waits
                clock["now"] = (clock["now"] or real_clock()) + timedelta(seconds=200)

            auth._sleep = fake_sleep
            auth._clock = lambda: clock["now"] or real_clock()
            with httpx.Client(auth=auth, timeout=30, event_hooks={"request": [record]}) as http:
                with pytest.raises(PaymentUnconfirmedError, match="pending"):
                    http.get(f"{server.url}/premium")
            (row,) = rows(agent)
            assert row.state == "unsettled"  # on chain (decided from the chain), never confirmed by the server
        assert len(signatures) == 1 and server.facilitator.submissions == 1


def test_a_job_rerun_after_a_settled_call_presents_the_same_payload(agent_home: Any, v2_server: X402Server) -> None:
    """A crash after the paid call lost its answer: the re-run presents the settled payload and is served
    without a second payment; once a server refuses that, the next attempt would pay afresh."""
    from agent.payer import JobContext, job_context

    with agent_home.open() as agent:
        auth = agent.x402_auth()
        with httpx.Client(auth=auth, timeout=30) as http:
            with job_context(JobContext(job_id=9)):
                assert http.get(f"{v2_server.url}/premium", headers={"X-Request-Id": "job9-a"}).status_code == 200
            proof = agent.payer().resume_proof(9)
            assert proof is not None and proof.dialect == "x402v2"
            auth.remember("job9-b", proof)
            with job_context(JobContext(job_id=9)):
                assert http.get(f"{v2_server.url}/premium", headers={"X-Request-Id": "job9-b"}).status_code == 200
            assert v2_server.facilitator.submissions == 1 and len(rows(agent)) == 1

            v2_server.faults.verify_reason = "duplicate_settlement"
            auth.remember("job9-c", agent.payer().resume_proof(9))
            with job_context(JobContext(job_id=9)), pytest.raises(AgentError, match="duplicate_settlement"):
                http.get(f"{v2_server.url}/premium", headers={"X-Request-Id": "job9-c"})
        (row,) = rows(agent)
        assert row.state == "settled" and agent.payer().resume_proof(9) is None


def test_payee_outside_the_allowlist_is_refused(agent_home: Any, v2_server: X402Server) -> None:
    """A payTo the host's allowlist does not name is rejected (named in the line); nothing paid."""
    from urllib.parse import urlsplit

    host = urlsplit(v2_server.url).netloc
    agent_home.configure(extra=f'\n[policy.payees]\n"{host}" = ["{agent_home.address}"]\n')
    before = agent_home.balance()
    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(), timeout=30) as http:
        with pytest.raises(v2.NoAcceptableOptionError, match="not an allowed payee"):
            http.get(f"{v2_server.url}/premium")
        (row,) = rows(agent)
        assert row.state == "refused"
    assert agent_home.balance() == before and v2_server.facilitator.submissions == 0


def test_v1_body_is_paid_with_x_payment(agent_home: Any) -> None:
    """A v1 402 (requirements in the body) is answered with X-PAYMENT carrying the signed transaction."""
    import base64

    seen: list[dict] = []
    body = {"x402Version": 1, "error": "", "accepts": [
        {"scheme": "exact", "network": "cardano-devnet", "maxAmountRequired": "1000000", "asset": "lovelace",
         "payTo": DEFAULT_PAY_TO, "maxTimeoutSeconds": 600, "resource": "http://127.0.0.1:9/v1"}]}

    def handler(request: httpx.Request) -> httpx.Response:
        if "x-payment" not in request.headers:
            return httpx.Response(402, json=body)
        seen.append(json.loads(base64.b64decode(request.headers["x-payment"])))
        return httpx.Response(200, json={"ok": True})

    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(),
                                                  transport=httpx.MockTransport(handler)) as http:
        assert http.get("http://127.0.0.1:9/v1").status_code == 200
        (row,) = rows(agent)
    (payload,) = seen
    assert payload["x402Version"] == 1 and payload["scheme"] == "exact" and payload["network"] == "cardano-devnet"
    assert payload["payload"]["nonce"].split("#")[0] in {r.tx_id for r in row.inputs}
    assert base64.b64decode(payload["payload"]["transaction"]) == row.cbor



def _refused_signed_row(agent: Any, http: httpx.Client, v2_server: X402Server) -> Any:
    """Pay /premium while the facilitator refuses it: the row, signed and refused by the server."""
    v2_server.faults.verify_reason = "invalid_exact_cardano_payload_amount_insufficient"
    with pytest.raises(AgentError) as err:
        http.get(f"{v2_server.url}/premium")
    assert "amount_insufficient" in str(err.value)
    (row,) = rows(agent)
    assert row.state == "signed", row.reason  # its fate is the chain's to tell, not the server's
    assert [r.id for r in agent.ledger.unfinished()] == [row.id]  # and its budget charge is kept
    v2_server.faults.verify_reason = None
    return row


def test_a_refusing_server_that_submits_the_bytes_later_is_caught_paid(agent_home: Any, v2_server: X402Server) -> None:
    """A hostile server refuses the paid call but keeps the signed bytes, and submits them later.

    Before, the row became ``refused`` at once and its budget charge was dropped although the
    bytes were out of our hands until their TTL: when they landed, money had gone and the
    ledger said nothing was paid. Now the row stays signed (and counted) until the chain
    tells: on chain, it is paid and unsettled (the server refused after it was paid).
    """
    before = agent_home.balance()
    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(), timeout=30) as http:
        row = _refused_signed_row(agent, http, v2_server)
        agent.chain.submit(row.cbor)  # the server submits the bytes it kept
        agent_home.devnet.produce_block()
        assert http.get(f"{v2_server.url}/premium").status_code == 200  # the next payment looks first
        first = agent.ledger.get(row.id)
        assert first.state == "unsettled" and first.paid and "amount_insufficient" in (first.reason or "")
        paid = [r for r in rows(agent) if r.paid]
    assert len(paid) == 2
    assert before - agent_home.balance() == sum(r.cost_lovelace or 0 for r in paid)


def test_a_refused_payment_that_can_no_longer_land_is_refused_and_nothing_paid(agent_home: Any,
                                                                               v2_server: X402Server) -> None:
    """Once the chain shows the refused bytes can never land (an input spent elsewhere), the row is refused."""
    from wallets.payment import plan_payment, sign_payment
    from wallets.types import RequiredOutput

    with agent_home.open() as agent, httpx.Client(auth=agent.x402_auth(), timeout=30) as http:
        row = _refused_signed_row(agent, http, v2_server)
        payer = agent.payer()
        [utxo] = agent.chain.utxos_by_refs([row.inputs[0]])
        plan = plan_payment([RequiredOutput(agent_home.address, 2_000_000)], utxos=[utxo],
                            change_address=agent_home.address, params=agent.chain.protocol_params(),
                            ttl_slot=payer._slot_now(time.time()) + 600)
        agent.chain.submit(sign_payment(plan, payer.sender._signer).cbor)  # the wallet spends that input itself
        agent_home.devnet.produce_block()
        balance = agent_home.balance()
        assert http.get(f"{v2_server.url}/premium").status_code == 200
        first = agent.ledger.get(row.id)
        assert first.state == "refused" and not first.paid and "spent by transaction" in (first.reason or "")
        [second] = [r for r in rows(agent) if r.paid]
    assert balance - agent_home.balance() == second.cost_lovelace
