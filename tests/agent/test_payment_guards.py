"""Issue 10's guards on the money path, on the devnet: approvals bound to their terms, the
first-contact pinning race, redirects, and expiry judged against the chain's clock.

"Nothing was paid" is read from the devnet ledger (the wallet's balance did not move) and
from the spend ledger (no paid row).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from agent.errors import ApprovalRequiredError, InvoiceError, PolicyError
from agent.payer import JobContext, job_context
from agent.tapi import TClient
from sandbox.billing import ACME_ADDRESS, DEFAULT_PAY_TO, GLOBEX_ADDRESS
from tests.fixtures.agent_home import BLOCKFROST_IN_FULL_TIER


@pytest.fixture(params=BLOCKFROST_IN_FULL_TIER)
def chain_backend(request: pytest.FixtureRequest) -> str:
    """Every guard here holds over Ogmios and over Blockfrost."""
    return request.param


def paid_rows(agent):
    return [r for r in agent.ledger.rows() if r.paid]


def invoice(invoice_id: str, pay_to: str, ada: int, **over):
    body = {"version": "0.1", "invoiceId": invoice_id, "chain": "cardano-devnet", "asset": "ADA",
            "amountUnits": str(ada * 1_000_000), "decimals": 6, "payTo": pay_to, "timeout": 300,
            "extra": {"lovelace": True, "babel": False}}
    body.update(over)
    return {"detail": body}


class Shop:
    """A mock API: answers 402 with ``self.body`` and 200 to any paid retry; records what it saw."""

    def __init__(self, body=None):
        self.body = body
        self.seen: list[tuple[str, bool]] = []
        """(host, carried a proof) of each request, as it was when received."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.host, "X-Payment" in request.headers))
        if "X-Payment" in request.headers:
            return httpx.Response(200, json={"reply": "paid"})
        body = self.body(request) if callable(self.body) else self.body
        return httpx.Response(402, json=body)


# -- finding 3: an approval is bound to the terms it approved --------------------------------------


def test_approved_invoice_swapped_for_another_payee_and_amount_asks_again(agent_home_factory):
    """2 ADA to payee 1 approved; then 9 ADA to payee 2 under the same id asks again, nothing paid."""
    home = agent_home_factory(extra="approve_above_ada = 1\n")
    shop = Shop(invoice("inv-swap", DEFAULT_PAY_TO, 2))
    before = home.balance()
    with home.open() as agent:
        with TClient("http://shop.test", auth=agent.x402_auth(), transport=httpx.MockTransport(shop)) as t:
            with pytest.raises(ApprovalRequiredError) as first:
                t.chat("ask")
            agent.approvals.approve(int(first.value.approval_id), now=time.time())
            shop.body = invoice("inv-swap", ACME_ADDRESS, 9)
            with pytest.raises(ApprovalRequiredError) as second:
                t.chat("swapped")
            assert second.value.approval_id != first.value.approval_id
            assert not paid_rows(agent)
            parked = agent.approvals.get(int(second.value.approval_id))
            assert parked.state == "pending" and parked.terms["outputs"] == [[ACME_ADDRESS, "lovelace", 9_000_000]]
    assert home.balance() == before


@pytest.mark.parametrize("expiry", ["timeout", "expiresAt"])
def test_approved_invoice_is_paid_on_exactly_its_terms(agent_home_factory, expiry):
    """The approved terms, presented again (a relative timeout too), are paid once: 2 ADA to payee 1."""
    home = agent_home_factory(extra="approve_above_ada = 1\n")
    if expiry == "timeout":
        shop = Shop(invoice("inv-ok", DEFAULT_PAY_TO, 2, timeout=300))
    else:
        shop = Shop(invoice("inv-ok", DEFAULT_PAY_TO, 2, timeout=None,
                            expiresAt=(datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat()))
    payee_before = home.balance(DEFAULT_PAY_TO)
    with home.open() as agent:
        with TClient("http://shop.test", auth=agent.x402_auth(), transport=httpx.MockTransport(shop)) as t:
            with pytest.raises(ApprovalRequiredError) as first:
                t.chat("ask")
            agent.approvals.approve(int(first.value.approval_id), now=time.time())
            assert t.chat("approved").reply == "paid"
            [row] = paid_rows(agent)
    home.devnet.produce_block()
    assert home.balance(DEFAULT_PAY_TO) - payee_before == 2_000_000 and row.invoice_id == "inv-ok"


def test_job_approval_does_not_cover_another_payee(agent_home_factory):
    """A job's approval of 9 ADA to payee 1 does not pay a cheaper invoice to payee 2 for that job."""
    home = agent_home_factory(extra="approve_above_ada = 1\n")
    shop = Shop(invoice("inv-job-1", DEFAULT_PAY_TO, 9))
    before = home.balance()
    with home.open() as agent:
        with TClient("http://shop.test", auth=agent.x402_auth(), transport=httpx.MockTransport(shop)) as t:
            with job_context(JobContext(job_id=7)):
                with pytest.raises(ApprovalRequiredError) as first:
                    t.chat("ask")
                agent.approvals.approve(int(first.value.approval_id), now=time.time())
                shop.body = invoice("inv-job-2", GLOBEX_ADDRESS, 2)
                with pytest.raises(ApprovalRequiredError):
                    t.chat("other payee, lower price")
            assert not paid_rows(agent)
    assert home.balance() == before


def test_job_approval_covers_a_reissued_invoice_with_the_same_outputs(agent_home_factory):
    """The job retried gets a new invoice id for the same payment: the job's approval pays it."""
    home = agent_home_factory(extra="approve_above_ada = 1\n")
    shop = Shop(invoice("inv-job-a", DEFAULT_PAY_TO, 2))
    with home.open() as agent:
        with TClient("http://shop.test", auth=agent.x402_auth(), transport=httpx.MockTransport(shop)) as t:
            with job_context(JobContext(job_id=8)):
                with pytest.raises(ApprovalRequiredError) as first:
                    t.chat("ask")
                agent.approvals.approve(int(first.value.approval_id), now=time.time())
                shop.body = invoice("inv-job-b", DEFAULT_PAY_TO, 2)
                assert t.chat("retried").reply == "paid"
            assert [r.invoice_id for r in paid_rows(agent)] == ["inv-job-b"]


# -- finding 4: first contact with a host is serialized ---------------------------------------------


def test_two_concurrent_first_contacts_with_different_payees_pay_once(agent_home):
    """Two first calls to an unpinned host race with different payees: one pays and pins, the other is parked."""
    payee_for = {"a": DEFAULT_PAY_TO, "b": ACME_ADDRESS}

    def body(request: httpx.Request):
        who = "a" if b'"first a"' in request.content else "b"
        return invoice(f"inv-race-{who}", payee_for[who], 2)

    shop = Shop(body)
    before = home_balance = agent_home.balance()
    outcomes: dict[str, object] = {}
    with agent_home.open() as agent:
        agent.payer()  # unlock once before the threads start
        # Both threads read the (empty) pins before either goes on: the race, made certain.
        barrier = threading.Barrier(2, timeout=30)
        read_pins = agent.pins.pinned

        def pinned(host: str):
            found = read_pins(host)
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            return found

        agent.pins.pinned = pinned

        def call(who: str) -> None:
            with TClient("http://race.test", auth=agent.x402_auth(), transport=httpx.MockTransport(shop)) as t:
                try:
                    outcomes[who] = t.chat(f"first {who}").reply
                except PolicyError as exc:
                    outcomes[who] = exc

        threads = [threading.Thread(target=call, args=(who,)) for who in "ab"]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rows = paid_rows(agent)
        pins = agent.pins.hosts()["race.test"]
        parked = agent.approvals.pending()
    agent_home.devnet.produce_block()
    assert sorted(str(type(o).__name__) for o in outcomes.values()) == ["PayeeChangedError", "str"]
    [row] = rows
    winner = "a" if row.invoice_id == "inv-race-a" else "b"
    loser = "b" if winner == "a" else "a"
    assert pins == frozenset({payee_for[winner]})
    assert [p.invoice_id for p in parked] == [f"inv-race-{loser}"]
    assert home_balance - agent_home.balance() == 2_000_000 + row.fee_lovelace
    assert before - agent_home.balance() == row.cost_lovelace


def test_claim_first_pins_once_across_two_database_handles(tmp_path):
    """Two handles on one agent.db (as two processes): the first claim pins, the second gets it back."""
    from agent.approvals import PayeePins
    from agent.store import Database

    one, two = Database.in_home(tmp_path), Database.in_home(tmp_path)
    assert PayeePins(one).claim_first("Host.test", {"addr_a"}, 1.0) == frozenset({"addr_a"})
    assert PayeePins(two).claim_first("host.test", {"addr_b"}, 2.0) == frozenset({"addr_a"})
    assert PayeePins(two).pinned("host.test") == frozenset({"addr_a"})


# -- finding 5: redirects -----------------------------------------------------------------------------


def _redirecting(good: Shop, evil: Shop, *, redirect_paid: bool = False):
    """good.test redirects unpaid calls (or, with ``redirect_paid``, paid ones) to evil.test."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "good.test":
            if redirect_paid == ("X-Payment" in request.headers):
                good.seen.append((request.url.host, "X-Payment" in request.headers))
                return httpx.Response(307, headers={"Location": "http://evil.test/chat"})
            return good(request)
        return evil(request)

    return httpx.MockTransport(handle)


def test_invoice_from_a_redirect_is_judged_against_the_host_that_issued_it(agent_home_factory):
    """good.test redirects to evil.test, whose invoice pays a payee outside evil.test's allowlist: refused, nothing paid."""
    home = agent_home_factory(extra=f"""
        [policy.payees]
        "evil.test" = ["{DEFAULT_PAY_TO}"]
        """)
    good, evil = Shop(invoice("inv-good", DEFAULT_PAY_TO, 2)), Shop(invoice("inv-evil", ACME_ADDRESS, 2))
    before = home.balance()
    with home.open() as agent:
        with httpx.Client(auth=agent.x402_auth(), transport=_redirecting(good, evil), follow_redirects=True) as c:
            with pytest.raises(PolicyError) as err:
                c.post("http://good.test/chat", json={"message": "hi"})
        assert not paid_rows(agent)
        [refused] = agent.ledger.rows()
    assert err.value.reason == "payee_not_allowed"
    assert refused.host == "evil.test"
    assert not [host for host, paid in evil.seen if paid]
    assert home.balance() == before


def test_paid_retry_goes_to_the_host_that_issued_the_invoice(agent_home):
    """A redirect to evil.test that issues a payable invoice: the proof goes to evil.test, never to good.test."""
    good, evil = Shop(invoice("inv-good", DEFAULT_PAY_TO, 2)), Shop(invoice("inv-evil", DEFAULT_PAY_TO, 2))
    with agent_home.open() as agent:
        with httpx.Client(auth=agent.x402_auth(), transport=_redirecting(good, evil), follow_redirects=True) as c:
            assert c.post("http://good.test/chat", json={"message": "hi"}).json() == {"reply": "paid"}
        [row] = paid_rows(agent)
    assert row.host == "evil.test" and row.state == "settled"
    assert [host for host, paid in good.seen + evil.seen if paid] == ["evil.test"]


# -- finding 7: expiry judged against the chain's clock too -------------------------------------------

SLOW_S = 3600


def test_slow_local_clock_does_not_pay_an_invoice_the_chain_says_expired(agent_home):
    """Local clock an hour slow, invoice expired two minutes ago by the chain: refused, nothing paid."""
    expired = datetime.now(timezone.utc) - timedelta(minutes=2)
    shop = Shop(invoice("inv-late", DEFAULT_PAY_TO, 2, timeout=None, expiresAt=expired.isoformat()))
    before = agent_home.balance()
    with agent_home.open(clock=lambda: time.time() - SLOW_S) as agent:
        with TClient("http://shop.test", auth=agent.x402_auth(), transport=httpx.MockTransport(shop)) as t:
            with pytest.raises(InvoiceError, match="expired"):
                t.chat("late")
        assert not paid_rows(agent)
    assert agent_home.balance() == before


def test_slow_local_clock_does_not_stretch_the_ttl(agent_home):
    """Local clock an hour slow, invoice valid five more minutes: the TTL is at most five minutes past the tip."""
    expires = datetime.now(timezone.utc) + timedelta(minutes=5)
    shop = Shop(invoice("inv-ttl", DEFAULT_PAY_TO, 2, timeout=None, expiresAt=expires.isoformat()))
    with agent_home.open(clock=lambda: time.time() - SLOW_S) as agent:
        tip_before = agent.chain.tip().slot
        with TClient("http://shop.test", auth=agent.x402_auth(), transport=httpx.MockTransport(shop)) as t:
            assert t.chat("in time").reply == "paid"
        [row] = paid_rows(agent)
    assert row.ttl_slot is not None and row.ttl_slot - tip_before <= 5 * 60


def test_expires_at_more_than_a_week_away_is_refused():
    """expiresAt gets the same 7-day cap as timeout."""
    from agent.x402 import parse_402

    now = datetime.now(timezone.utc)
    body = invoice("inv-forever", DEFAULT_PAY_TO, 2, timeout=None, expiresAt=(now + timedelta(days=8)).isoformat())
    with pytest.raises(InvoiceError, match="more than"):
        parse_402(body, now=now)
    ok = invoice("inv-week", DEFAULT_PAY_TO, 2, timeout=None, expiresAt=(now + timedelta(days=6)).isoformat())
    assert parse_402(ok, now=now).invoice_id == "inv-week"


@pytest.fixture
def cli_logging():
    """Remove the log handlers the CLI installs, after the test."""
    import logging

    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cardano_agent", False):
            root.removeHandler(handler)
            handler.close()


def test_status_reports_a_local_clock_behind_the_chain(agent_home_factory, devnet_factory, capsys, monkeypatch,
                                                       cli_logging):
    """`status` warns when the local clock is more than a minute behind the chain's tip, and not otherwise."""
    import json

    from agent.cli import main

    monkeypatch.delenv("CARDANO_AGENT_PASSPHRASE", raising=False)
    ahead = devnet_factory(clock=lambda: time.time() + SLOW_S)
    skewed = agent_home_factory(on=ahead, name="skewed")
    fine = agent_home_factory(name="fine")
    for home in (skewed, fine):
        home.devnet.fund(home.address, 5_000_000)  # a block at the chain's current slot
    assert main(["status", "--home", str(skewed.home), "--json"]) == 0
    clock = json.loads(capsys.readouterr().out)["clock"]
    assert clock["behind_chain_s"] >= SLOW_S - 60 and "behind the chain" in clock["warning"]
    assert main(["status", "--home", str(fine.home)]) == 0
    out = capsys.readouterr().out
    assert "clock" not in out


# -- finding 6: response bodies are capped -------------------------------------------------------------

CHUNK = 64 * 1024


class Hose:
    """A lazily produced body of ``total`` bytes; ``produced`` counts what was actually pulled."""

    def __init__(self, total: int, byte: bytes = b" ") -> None:
        self.total, self.byte, self.produced = total, byte, 0

    def __iter__(self):
        while self.produced < self.total:
            self.produced += CHUNK
            yield self.byte * CHUNK


def _cap_home(home, mb: int) -> None:
    toml = home.home / "agent.toml"
    toml.write_text(toml.read_text().replace('proof = "hash"', f'proof = "hash"\nmax_body_mb = {mb}', 1))


def test_a_300_mb_answer_is_refused_after_reading_at_most_the_cap(agent_home):
    """A 300 MB 200 answer: the client pulls no more than max_body_mb (+ one chunk) and raises one clear error."""
    from agent.auth import ResponseTooLargeError

    _cap_home(agent_home, 1)
    hose = Hose(300 * 1024 * 1024)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=iter(hose)))
    with agent_home.open() as agent:
        with TClient(agent, api_key="k", transport=transport) as t:
            with pytest.raises(ResponseTooLargeError, match="max_body_mb"):
                t.chat("flood me")
    assert hose.produced <= 1024 * 1024 + CHUNK


def test_a_300_mb_402_is_refused_unread_and_nothing_paid(agent_home):
    """A 300 MB 402 body: refused after at most the cap, no payment recorded, the wallet unchanged."""
    from agent.auth import ResponseTooLargeError

    _cap_home(agent_home, 1)
    hose = Hose(300 * 1024 * 1024)
    transport = httpx.MockTransport(lambda request: httpx.Response(402, content=iter(hose)))
    before = agent_home.balance()
    with agent_home.open() as agent:
        with TClient(agent, transport=transport) as t:
            with pytest.raises(ResponseTooLargeError):
                t.chat("invoice me")
        assert agent.ledger.rows() == []
    assert hose.produced <= 1024 * 1024 + CHUNK
    assert agent_home.balance() == before


def test_an_endless_event_stream_line_is_cut_at_the_cap(agent_home):
    """A streamed chat answer that is one 300 MB line: iterating it raises after at most the cap."""
    from agent.auth import ResponseTooLargeError

    _cap_home(agent_home, 1)
    hose = Hose(300 * 1024 * 1024, byte=b"x")
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=iter(hose)))
    with agent_home.open() as agent:
        with TClient(agent, api_key="k", transport=transport) as t:
            stream = t.chat_stream("flood me")
            with pytest.raises(ResponseTooLargeError):
                list(stream)
    assert hose.produced <= 1024 * 1024 + CHUNK


def test_max_body_mb_must_be_a_sane_whole_number(agent_home):
    """A bad [api] max_body_mb is a config error naming the key."""
    from agent.errors import ConfigError

    _cap_home(agent_home, 0)
    with pytest.raises(ConfigError, match="max_body_mb"):
        agent_home.open()


# -- finding 11: the small items on the money path ----------------------------------------------------


def test_a_100k_deep_402_body_is_one_clear_refusal(agent_home):
    """A 402 whose JSON nests 100,000 deep: InvoiceError (no RecursionError), nothing paid."""
    deep = b"[" * 100_000 + b"]" * 100_000
    transport = httpx.MockTransport(lambda request: httpx.Response(402, content=deep))
    before = agent_home.balance()
    with agent_home.open() as agent:
        with TClient("http://deep.test", auth=agent.x402_auth(), transport=transport) as t:
            with pytest.raises(InvoiceError, match="too deeply"):
                t.chat("nest")
        assert not paid_rows(agent)
    assert agent_home.balance() == before


def test_a_100k_deep_error_body_is_shown_not_raised():
    """The detail of a deeply nested error answer falls back to its text."""
    from agent.auth import response_detail

    deep = b"{\"a\":" * 100_000 + b"1" + b"}" * 100_000
    assert response_detail(httpx.Response(500, content=deep)).startswith('{"a":')


def _script_address() -> str:
    from pycardano import Address, Network, ScriptHash

    return Address(ScriptHash(b"\x01" * 28), network=Network.TESTNET).encode()


def _pointer_address() -> str:
    from pycardano import Address, Network, PointerAddress, VerificationKeyHash

    return Address(VerificationKeyHash(b"\x02" * 28), PointerAddress(1, 2, 3), network=Network.TESTNET).encode()


def _mixed_case(address: str) -> str:
    head, rest = address.split("1", 1)
    return head + "1" + rest[:10].upper() + rest[10:]


@pytest.mark.parametrize("over,needle", [
    ({"extra": {"batchTarget": 10**30}}, "batchTarget"),
    ({"payTo": "script"}, "script address"),
    ({"payTo": "pointer"}, "pointer address"),
    ({"payTo": "mixed"}, "mixes upper and lower case"),
    ({"extra": {"outputs": [{"address": "script", "amountUnits": "1000000"}]}}, "script address"),
])
def test_small_invoice_holes_are_refused_in_one_line_and_nothing_paid(agent_home, over, needle):
    """A 10^30 batchTarget, a script, pointer or mixed-case payee: InvoiceError naming it, nothing paid."""
    swap = {"script": _script_address(), "pointer": _pointer_address(), "mixed": _mixed_case(DEFAULT_PAY_TO)}

    def fill(value):
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return swap.get(value, value) if isinstance(value, str) else value

    body = invoice("inv-small", DEFAULT_PAY_TO, 2)
    body["detail"].update(fill(over))
    before = agent_home.balance()
    with agent_home.open() as agent:
        with TClient("http://small.test", auth=agent.x402_auth(), transport=httpx.MockTransport(Shop(body))) as t:
            with pytest.raises(InvoiceError, match=needle):
                t.chat("pay me")
        assert not paid_rows(agent)
    assert agent_home.balance() == before


class _Site:
    """A loopback HTTP server: ``answer(path, headers) -> (status, headers, json)``; records (path, proof?)."""

    def __init__(self, answer):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        site = self
        self.seen: list[tuple[str, bool]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", 0)))
                site.seen.append((self.path, "X-Payment" in self.headers))
                status, headers, body = answer(self.path, self.headers)
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {**headers, "content-type": "application/json", "content-length": str(len(data))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_paid_retry_redirected_elsewhere_never_carries_the_proof_there(agent_home):
    """The host that invoiced answers the paid retry with a redirect to another host: the proof is not sent there."""
    from agent.auth import ProofRedirectError

    evil = _Site(lambda path, headers: (200, {}, {"reply": "thanks for the proof"}))
    good = _Site(lambda path, headers: (307, {"Location": f"{evil.url}/steal"}, {}) if "X-Payment" in headers
                 else (402, {}, invoice("inv-leak", DEFAULT_PAY_TO, 2)))
    try:
        with agent_home.open() as agent:
            with httpx.Client(auth=agent.x402_auth(), follow_redirects=True) as c:
                with pytest.raises(ProofRedirectError):
                    c.post(f"{good.url}/chat", json={"message": "hi"})
            [row] = paid_rows(agent)
    finally:
        good.close()
        evil.close()
    assert evil.seen == []
    assert good.seen == [("/chat", False), ("/chat", True)]
    assert row.state == "submitted"  # paid once, never settled by another host's answer
