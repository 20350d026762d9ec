"""X402Auth driven by hand: pay once on 402, wait out pending, never pay twice for one call."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from agent.auth import (
    AsyncAuthOnlyError,
    AsyncX402Auth,
    PaymentRejectedError,
    PaymentUnconfirmedError,
    Proof,
    ResponseTooLargeError,
    X402Auth,
    proof_headers,
)
from agent.errors import PaymentRefusedError, PolicyError
from agent.retry import RetryPolicy

START = datetime(2026, 11, 29, 15, 0, tzinfo=timezone.utc)
TX = "ab" * 32
INVOICE = {"detail": {"version": "0.1", "invoiceId": "inv_1", "chain": "cardano-devnet", "asset": "ADA",
                      "amountUnits": "2000000", "payTo": "addr_test1xyz", "timeout": 300}}
PENDING = {"detail": {"status": "pending", "invoiceId": "inv_1"}}
BACKOFF = RetryPolicy(base_delay_s=1.0, multiplier=2.0, max_delay_s=4.0, jitter=0.0)


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


class FakeHandler:
    """Records every call; pays with a fixed proof or refuses with a given error."""

    def __init__(self, *, error: Exception | None = None, expires_in_s: float = 300, partner: str | None = None,
                 wallet_address: str | None = None) -> None:
        self.error = error
        self.partner = partner
        self.wallet_address = wallet_address
        self.proof = Proof(invoice_id="inv_1", payment=TX, headers=proof_headers("inv_1", TX, partner=partner,
                           wallet_address=wallet_address), expires_at=START + timedelta(seconds=expires_in_s),
                           payment_id="pay-1")
        self.paid: list[tuple[httpx.Request, bytes]] = []
        self.settled_calls: list[tuple[Proof, int]] = []
        self.refused_calls: list[tuple[Proof, int]] = []

    def pay(self, request: httpx.Request, response_body: bytes) -> Proof:
        self.paid.append((request, response_body))
        if self.error is not None:
            raise self.error
        return self.proof

    def settled(self, proof: Proof, response: httpx.Response) -> None:
        self.settled_calls.append((proof, response.status_code))

    def refused(self, proof: Proof, response: httpx.Response) -> None:
        self.refused_calls.append((proof, response.status_code))


class AsyncFakeHandler(FakeHandler):
    """The same handler with coroutine methods."""

    async def pay(self, request: httpx.Request, response_body: bytes) -> Proof:  # type: ignore[override]
        return FakeHandler.pay(self, request, response_body)

    async def settled(self, proof: Proof, response: httpx.Response) -> None:  # type: ignore[override]
        FakeHandler.settled(self, proof, response)

    async def refused(self, proof: Proof, response: httpx.Response) -> None:  # type: ignore[override]
        FakeHandler.refused(self, proof, response)


def _request(request_id: str | None = "rid-1") -> httpx.Request:
    headers = {"X-Request-Id": request_id} if request_id else {}
    return httpx.Request("POST", "https://api.test/chat", json={"message": "hi"}, headers=headers)


def _make(handler: FakeHandler, time: FakeTime, **kwargs: Any) -> X402Auth:
    return X402Auth(handler, pending_backoff=BACKOFF, sleep=time.sleep, clock=time.clock, **kwargs)


def _finish(flow: Any, response: httpx.Response) -> None:
    with pytest.raises(StopIteration):
        flow.send(response)


def test_non_402_passes_through_without_paying() -> None:
    """A 200 on the first request ends the flow; nothing is paid."""
    handler, time = FakeHandler(), FakeTime()
    flow = _make(handler, time).sync_auth_flow(_request())
    first = next(flow)
    assert "X-Payment" not in first.headers
    _finish(flow, httpx.Response(200, json={"reply": "ok"}))
    assert handler.paid == [] and handler.settled_calls == []


def test_request_id_is_added_when_missing() -> None:
    """A request without X-Request-Id gets one, so a paid call can be recognised on a resend."""
    flow = _make(FakeHandler(), FakeTime()).sync_auth_flow(_request(None))
    assert len(next(flow).headers["X-Request-Id"]) == 32


def test_402_pays_once_and_retries_with_proof_then_settles() -> None:
    """On 402 the handler pays; the retry carries the proof with the same method, path and body."""
    handler, time = FakeHandler(), FakeTime()
    flow = _make(handler, time).sync_auth_flow(_request())
    next(flow)
    retry = flow.send(httpx.Response(402, json=INVOICE))
    assert retry.method == "POST" and retry.url.path == "/chat"
    assert json.loads(retry.content) == {"message": "hi"}
    assert retry.headers["X-Invoice-Id"] == "inv_1" and retry.headers["X-Payment"] == TX
    _finish(flow, httpx.Response(200, json={"reply": "paid"}))
    assert len(handler.paid) == 1 and json.loads(handler.paid[0][1]) == INVOICE
    assert handler.settled_calls == [(handler.proof, 200)] and handler.refused_calls == []


def test_pending_is_waited_out_with_backoff_and_the_same_proof() -> None:
    """402 pending answers are retried after injected sleeps with the same proof; pay is called once."""
    handler, time = FakeHandler(), FakeTime()
    flow = _make(handler, time).sync_auth_flow(_request())
    next(flow)
    retry = flow.send(httpx.Response(402, json=INVOICE))
    sent = [dict(retry.headers)]
    for _ in range(3):
        retry = flow.send(httpx.Response(402, json=PENDING))
        sent.append(dict(retry.headers))
    _finish(flow, httpx.Response(200, json={"reply": "late"}))
    assert time.sleeps == [1.0, 2.0, 4.0]
    assert all(h["x-payment"] == TX and h["x-invoice-id"] == "inv_1" for h in sent)
    assert len(handler.paid) == 1 and len(handler.settled_calls) == 1


def test_submitted_status_at_top_level_counts_as_pending() -> None:
    """A 402 whose body says status submitted (no detail wrapper) is also waited out."""
    handler, time = FakeHandler(), FakeTime()
    flow = _make(handler, time).sync_auth_flow(_request())
    next(flow)
    flow.send(httpx.Response(402, json=INVOICE))
    flow.send(httpx.Response(402, json={"status": "submitted"}))
    _finish(flow, httpx.Response(200))
    assert time.sleeps == [1.0] and len(handler.paid) == 1


def test_pending_until_the_invoice_expires_is_refused() -> None:
    """Pending past the invoice's expiry stops with PaymentUnconfirmedError, refused once, paid once."""
    handler, time = FakeHandler(expires_in_s=10), FakeTime()
    flow = _make(handler, time).sync_auth_flow(_request())
    next(flow)
    flow.send(httpx.Response(402, json=INVOICE))
    with pytest.raises(PaymentUnconfirmedError) as caught:
        for _ in range(100):
            flow.send(httpx.Response(402, json=PENDING))
    assert time.sleeps == [1.0, 2.0, 4.0, 3.0]  # the last wait is cut at the expiry
    assert caught.value.status == 402 and caught.value.invoice_id == "inv_1"
    assert len(handler.paid) == 1 and len(handler.refused_calls) == 1 and handler.settled_calls == []


def test_second_402_after_paying_is_refused_and_never_paid_again() -> None:
    """A fresh invoice answering the paid retry is a final refusal: refused once, pay called once."""
    handler, time = FakeHandler(), FakeTime()
    flow = _make(handler, time).sync_auth_flow(_request())
    next(flow)
    flow.send(httpx.Response(402, json=INVOICE))
    fresh = {"detail": {**INVOICE["detail"], "invoiceId": "inv_2"}}
    with pytest.raises(PaymentRejectedError) as caught:
        flow.send(httpx.Response(402, json=fresh))
    assert isinstance(caught.value, PaymentRefusedError)
    assert caught.value.status == 402 and caught.value.detail["invoiceId"] == "inv_2"
    assert len(handler.paid) == 1 and handler.refused_calls == [(handler.proof, 402)]


def test_client_error_after_paying_is_a_final_refusal() -> None:
    """A 4xx (say 409 replayed) after paying calls refused and raises, with the server's detail."""
    handler, time = FakeHandler(), FakeTime()
    flow = _make(handler, time).sync_auth_flow(_request())
    next(flow)
    flow.send(httpx.Response(402, json=INVOICE))
    with pytest.raises(PaymentRejectedError, match="409.*tx_replayed"):
        flow.send(httpx.Response(409, json={"detail": "tx_replayed"}))
    assert len(handler.refused_calls) == 1 and len(handler.paid) == 1


def test_handler_refusal_propagates_and_sends_no_retry() -> None:
    """When the handler refuses (policy), the error propagates and no retry request is yielded."""
    handler, time = FakeHandler(error=PolicyError("payee changed", reason="payee_changed")), FakeTime()
    flow = _make(handler, time).sync_auth_flow(_request())
    next(flow)
    with pytest.raises(PolicyError):
        flow.send(httpx.Response(402, json=INVOICE))
    assert len(handler.paid) == 1 and handler.settled_calls == [] and handler.refused_calls == []


def test_server_error_after_paying_keeps_the_proof_for_a_resend() -> None:
    """A 503 after paying ends the flow without a verdict; resending the call presents the same proof."""
    handler, time = FakeHandler(), FakeTime()
    auth = _make(handler, time)
    flow = auth.sync_auth_flow(_request())
    next(flow)
    flow.send(httpx.Response(402, json=INVOICE))
    _finish(flow, httpx.Response(503))
    assert auth.proof_for("rid-1") == handler.proof and handler.refused_calls == []
    again = auth.sync_auth_flow(_request())
    resent = next(again)
    assert resent.headers["X-Payment"] == TX
    _finish(again, httpx.Response(200))
    assert len(handler.paid) == 1 and len(handler.settled_calls) == 1
    assert auth.proof_for("rid-1") is None


def test_resent_call_meeting_a_new_invoice_is_refused_not_paid() -> None:
    """A resend with a remembered proof that meets a fresh 402 is refused; pay is not called again."""
    handler, time = FakeHandler(), FakeTime()
    auth = _make(handler, time)
    flow = auth.sync_auth_flow(_request())
    next(flow)
    flow.send(httpx.Response(402, json=INVOICE))
    _finish(flow, httpx.Response(502))
    again = auth.sync_auth_flow(_request())
    next(again)
    with pytest.raises(PaymentRejectedError):
        again.send(httpx.Response(402, json=INVOICE))
    assert len(handler.paid) == 1 and len(handler.refused_calls) == 1


def test_partner_headers_go_on_the_first_request() -> None:
    """With a partner and wallet, X-Partner and X-Wallet-Address are sent before any 402 (prepaid credits)."""
    handler = FakeHandler(partner="acme", wallet_address="addr_test1me")
    flow = _make(handler, FakeTime()).sync_auth_flow(_request())
    first = next(flow)
    assert first.headers["X-Partner"] == "acme" and first.headers["X-Wallet-Address"] == "addr_test1me"
    _finish(flow, httpx.Response(200))
    assert handler.paid == []


def test_proof_repr_shortens_cbor() -> None:
    """A CBOR payment is shortened in the proof's repr."""
    proof = Proof(invoice_id="i", payment="84" * 400, headers={}, expires_at=START)
    assert len(repr(proof)) < 200


def test_through_an_httpx_client_with_a_mock_server() -> None:
    """Through httpx.Client: the first call meets 402, the paid retry gets 200, the client sees 200."""
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(httpx.Request(request.method, request.url, headers=request.headers.copy(),
                                  content=request.read()))
        if request.headers.get("X-Payment") == TX:
            return httpx.Response(200, json={"reply": "paid"})
        return httpx.Response(402, json=INVOICE)

    handler, time = FakeHandler(), FakeTime()
    with httpx.Client(transport=httpx.MockTransport(server), auth=_make(handler, time)) as client:
        response = client.post("https://api.test/chat", json={"message": "hi"})
    assert response.status_code == 200 and response.json() == {"reply": "paid"}
    assert len(seen) == 2 and seen[0].content == seen[1].content
    assert "x-payment" not in seen[0].headers and seen[1].headers["x-payment"] == TX
    assert len(handler.paid) == 1 and len(handler.settled_calls) == 1


def test_streamed_success_is_not_read_by_the_auth() -> None:
    """The auth reads 402 bodies but leaves a 2xx stream unread for the caller."""

    def server(request: httpx.Request) -> httpx.Response:
        if request.headers.get("X-Payment"):
            return httpx.Response(200, content=iter([b"data: a\n\n", b"data: [DONE]\n\n"]))
        return httpx.Response(402, json=INVOICE)

    handler, time = FakeHandler(), FakeTime()
    with httpx.Client(transport=httpx.MockTransport(server), auth=_make(handler, time)) as client:
        with client.stream("POST", "https://api.test/chat", json={"message": "hi"}) as response:
            assert not response.is_stream_consumed
            assert list(response.iter_lines()) == ["data: a", "", "data: [DONE]", ""]


def test_async_flow_pays_in_a_thread_and_waits_out_pending() -> None:
    """The async flow runs a sync handler's pay in a worker thread and sleeps with the async sleep."""
    handler, time = FakeHandler(), FakeTime()
    auth = X402Auth(handler, pending_backoff=BACKOFF, async_sleep=time.async_sleep, clock=time.clock)

    async def drive() -> None:
        flow = auth.async_auth_flow(_request())
        await flow.__anext__()
        retry = await flow.asend(httpx.Response(402, json=INVOICE))
        assert retry.headers["X-Payment"] == TX
        await flow.asend(httpx.Response(402, json=PENDING))
        with pytest.raises(StopAsyncIteration):
            await flow.asend(httpx.Response(200))

    asyncio.run(drive())
    assert time.sleeps == [1.0] and len(handler.paid) == 1 and len(handler.settled_calls) == 1


def test_async_auth_with_async_handler_refuses_a_second_invoice() -> None:
    """AsyncX402Auth awaits an async handler and refuses a second 402 after paying."""
    handler, time = AsyncFakeHandler(), FakeTime()
    auth = AsyncX402Auth(handler, pending_backoff=BACKOFF, sleep=time.async_sleep, clock=time.clock)

    async def drive() -> None:
        flow = auth.async_auth_flow(_request())
        await flow.__anext__()
        await flow.asend(httpx.Response(402, json=INVOICE))
        with pytest.raises(PaymentRejectedError):
            await flow.asend(httpx.Response(402, json=INVOICE))

    asyncio.run(drive())
    assert len(handler.paid) == 1 and len(handler.refused_calls) == 1


def test_async_client_pays_once_and_a_resend_presents_the_same_proof() -> None:
    """Through httpx.AsyncClient: a 402 is paid once; the paid retry's 503 keeps the proof, and the
    caller's resend of the same call presents it (no second payment) and settles."""
    seen: list[tuple[str | None, str]] = []
    answers = iter([httpx.Response(402, json=INVOICE), httpx.Response(503), httpx.Response(200, json={"ok": 1})])

    def server(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get("x-payment"), request.headers["x-request-id"]))
        return next(answers)

    handler, time = AsyncFakeHandler(), FakeTime()
    auth = AsyncX402Auth(handler, pending_backoff=BACKOFF, sleep=time.async_sleep, clock=time.clock)

    async def drive() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(server), auth=auth) as client:
            statuses = []
            for _ in range(2):
                response = await client.post("https://api.test/chat", json={"message": "hi"},
                                             headers={"X-Request-Id": "rid-9"})
                statuses.append(response.status_code)
            return statuses

    assert asyncio.run(drive()) == [503, 200]
    assert seen == [(None, "rid-9"), (TX, "rid-9"), (TX, "rid-9")]
    assert len(handler.paid) == 1 and len(handler.settled_calls) == 1 and auth.proof_for("rid-9") is None


def test_async_client_refuses_a_402_over_the_cap_unread_and_pays_nothing() -> None:
    """Through httpx.AsyncClient: a 402 streamed past max_body_bytes (no length declared) raises
    ResponseTooLargeError as soon as the cap is passed; nothing is paid."""
    sent: list[int] = []

    async def hose() -> Any:
        for _ in range(100):
            sent.append(1)
            yield b"x" * 100

    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, content=hose())

    handler, time = AsyncFakeHandler(), FakeTime()
    auth = AsyncX402Auth(handler, sleep=time.async_sleep, clock=time.clock, max_body_bytes=1000)

    async def drive() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(server), auth=auth) as client:
            await client.post("https://api.test/chat", json={"message": "hi"})

    with pytest.raises(ResponseTooLargeError):
        asyncio.run(drive())
    assert handler.paid == [] and len(sent) <= 11


def test_async_only_auth_refuses_the_sync_flow() -> None:
    """AsyncX402Auth (or an async handler) used from a sync client fails clearly before sending."""
    with pytest.raises(AsyncAuthOnlyError):
        next(AsyncX402Auth(FakeHandler()).sync_auth_flow(_request()))
    with pytest.raises(AsyncAuthOnlyError):
        next(X402Auth(AsyncFakeHandler()).sync_auth_flow(_request()))


def test_a_remembered_proof_is_presented_on_the_first_request_and_never_paid_again():
    """remember(request_id, proof) makes the call carry the proof at once; a 200 settles it, pay() is not called."""
    from datetime import datetime, timedelta, timezone

    import httpx

    from agent.auth import Proof, X402Auth, proof_headers

    class NoPay:
        settled_with: list = []

        def pay(self, request, body):  # pragma: no cover - must not be called
            raise AssertionError("must not pay")

        def settled(self, proof, response):
            self.settled_with.append(proof.invoice_id)

        def refused(self, proof, response):  # pragma: no cover
            raise AssertionError("not refused")

    handler = NoPay()
    auth = X402Auth(handler)
    proof = Proof("inv-1", "ab" * 32, proof_headers("inv-1", "ab" * 32),
                  datetime.now(timezone.utc) + timedelta(minutes=5))
    auth.remember("req-1", proof)
    request = httpx.Request("POST", "http://t/chat", headers={"X-Request-Id": "req-1"}, json={"message": "hi"})
    flow = auth.sync_auth_flow(request)
    sent = next(flow)
    assert sent.headers["X-Invoice-Id"] == "inv-1" and sent.headers["X-Payment"] == "ab" * 32
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200, json={"reply": "ok"}, request=sent))
    assert handler.settled_with == ["inv-1"]


class BlockServer:
    """A T server that answers a paid retry "pending" until the payment's block lands (``landed``),
    or, with ``accepts_mempool``, serves it at once; it records what each call sent."""

    def __init__(self, *, accepts_mempool: bool = False) -> None:
        self.accepts_mempool = accepts_mempool
        self.landed = False
        self.seen: list[tuple[str, bool]] = []  # (request id, carried a proof)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        paid = request.headers.get("X-Payment") == TX
        self.seen.append((request.headers["X-Request-Id"], paid))
        if not paid:
            return httpx.Response(402, json=INVOICE)
        if self.accepts_mempool or self.landed:
            return httpx.Response(200, json={"reply": "paid"})
        return httpx.Response(402, json=PENDING)


def _paid_call(client: httpx.Client, request_id: str) -> httpx.Response:
    return client.post("https://api.test/chat", json={"message": "hi"}, headers={"X-Request-Id": request_id})


def test_parked_calls_to_a_server_that_wants_blocks_skip_the_retry_it_would_answer_pending() -> None:
    """In the runner (parking), once a server answered "pending" to the retries sent right after
    payment twice in a row, a just-paid call parks at once: the retry it would have sent only
    hears "pending" (a request, a read, a park of its own). Resumed after its block, the call
    presents the same proof first and is served; nothing is paid twice. One payment in
    CONFIRMS_FIRST_RELEARN still retries at once, so a server that changes its mind is noticed."""
    from agent.auth import CONFIRMS_FIRST_AFTER, CONFIRMS_FIRST_RELEARN, SettlementPendingError, parking

    server, handler, time = BlockServer(), FakeHandler(), FakeTime()
    auth = _make(handler, time)
    calls = CONFIRMS_FIRST_AFTER + CONFIRMS_FIRST_RELEARN
    with httpx.Client(transport=httpx.MockTransport(server), auth=auth) as client, parking():
        for n in range(calls):
            with pytest.raises(SettlementPendingError) as parked:
                _paid_call(client, f"call-{n}")
            assert parked.value.request_id == f"call-{n}" and auth.proof_for(f"call-{n}") == handler.proof
        sent = [[paid for rid, paid in server.seen if rid == f"call-{n}"] for n in range(calls)]
        assert sent[:CONFIRMS_FIRST_AFTER] == [[False, True]] * CONFIRMS_FIRST_AFTER  # retried: "pending"
        retried_at_once = [n for n, s in enumerate(sent) if s == [False, True]]
        assert retried_at_once == [0, 1, CONFIRMS_FIRST_AFTER + CONFIRMS_FIRST_RELEARN - 1]
        assert all(s == [False] for n, s in enumerate(sent) if n not in retried_at_once)
        server.landed = True  # the block came: each call resumes with its proof, served at once
        before = len(server.seen)
        for n in range(calls):
            assert _paid_call(client, f"call-{n}").json() == {"reply": "paid"}
        assert server.seen[before:] == [(f"call-{n}", True) for n in range(calls)]
    assert len(handler.paid) == calls and len(handler.settled_calls) == calls


@pytest.mark.parametrize("case", ["accepts-mempool", "not-parking"])
def test_the_retry_after_payment_is_sent_at_once_outside_parking_or_to_a_server_that_serves_it(case) -> None:
    """A server serving a fresh payment at once is never made to wait; outside the runner
    (no parking) a paid call always retries at once and waits out "pending" itself."""
    from agent.auth import parking

    server, handler, time = BlockServer(accepts_mempool=case == "accepts-mempool"), FakeHandler(), FakeTime()

    def land(seconds: float) -> None:  # outside parking the call itself waits: its block lands meanwhile
        server.landed = True

    auth = X402Auth(handler, pending_backoff=BACKOFF, sleep=land, clock=time.clock)
    with httpx.Client(transport=httpx.MockTransport(server), auth=auth) as client:
        for n in range(6):
            server.landed = False
            if case == "accepts-mempool":
                with parking():
                    assert _paid_call(client, f"call-{n}").status_code == 200
            else:
                assert _paid_call(client, f"call-{n}").status_code == 200
    for n in range(6):
        sent = [paid for rid, paid in server.seen if rid == f"call-{n}"]
        assert sent == ([False, True] if case == "accepts-mempool" else [False, True, True])
    assert len(handler.paid) == 6
