"""TClient end to end through httpx.MockTransport: every route, both modes, retries, never paying twice."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, Callable

import httpx
import pytest

from agent.auth import PaymentRejectedError, Proof, X402Auth, proof_headers
from agent.errors import ApiError, PolicyError, TransientApiError
from agent.retry import RetryPolicy
from agent.tapi import (
    MAX_IMAGE_BYTES,
    ApiKeyRequiredError,
    ImageTooLargeError,
    InvalidRequestError,
    TClient,
)

BASE = "https://api.test"
NOW = datetime(2026, 11, 29, 15, 0, tzinfo=timezone.utc)
TX = "cd" * 32
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
INVOICE = {"detail": {"invoiceId": "inv_9", "chain": "cardano-devnet", "asset": "ADA", "amountUnits": "2000000",
                      "payTo": "addr_test1xyz", "timeout": 300}}
RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.5, jitter=0.0)


class Handler:
    """A payment handler that records pay/settled/refused and pays with one fixed proof."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.paid: list[bytes] = []
        self.settled_calls: list[Proof] = []
        self.refused_calls: list[Proof] = []

    def pay(self, request: httpx.Request, response_body: bytes) -> Proof:
        self.paid.append(response_body)
        if self.error:
            raise self.error
        return Proof("inv_9", TX, proof_headers("inv_9", TX), NOW + timedelta(seconds=300))

    def settled(self, proof: Proof, response: httpx.Response) -> None:
        self.settled_calls.append(proof)

    def refused(self, proof: Proof, response: httpx.Response) -> None:
        self.refused_calls.append(proof)


class Server:
    """A scripted API: answers from a queue per path (else a default), recording every request."""

    def __init__(self, **defaults: Callable[[httpx.Request], httpx.Response]) -> None:
        self.seen: list[httpx.Request] = []
        self.queued: dict[str, list[Any]] = {}
        self.defaults = defaults

    def queue(self, path: str, *answers: Any) -> None:
        self.queued.setdefault(path, []).extend(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        # a snapshot: the auth reuses and mutates the request object for its retry
        self.seen.append(httpx.Request(request.method, request.url, headers=request.headers.copy(),
                                       content=request.content))
        queue = self.queued.get(request.url.path)
        if queue:
            answer = queue.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer(request) if callable(answer) else answer
        rid = request.headers.get("x-request-id", "")
        return httpx.Response(200, json={"reply": "ok", "session_id": "s"}, headers={"X-Request-ID": rid})


def paid_only(body: Any) -> Callable[[httpx.Request], httpx.Response]:
    """A route that answers 402 until the request carries the proof."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers.get("x-payment") == TX:
            return httpx.Response(200, json=body)
        return httpx.Response(402, json=INVOICE)

    return answer


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(server: Server, sleeps: Sleeps | None = None, **kwargs: Any) -> TClient:
    return TClient(BASE, transport=httpx.MockTransport(server), retry=RETRY,
                   sleep=sleeps if sleeps is not None else Sleeps(), clock=lambda: NOW, **kwargs)


def x402(handler: Handler) -> X402Auth:
    return X402Auth(handler, sleep=lambda s: None, clock=lambda: NOW)


def test_free_routes_send_a_request_id_and_never_carry_the_auth() -> None:
    """health and api_info are free: a uuid4-hex X-Request-Id, no partner headers, the auth not involved."""
    server = Server()
    server.queue("/health", httpx.Response(402, json=INVOICE))
    handler = Handler()
    with client(server, auth=x402(handler), partner="acme", wallet_address="addr_test1me") as t:
        with pytest.raises(ApiError) as caught:
            t.health()
        assert caught.value.status == 402
        assert t.api_info() == {"reply": "ok", "session_id": "s"}
    assert handler.paid == []
    for request in server.seen:
        assert re.fullmatch(r"[0-9a-f]{32}", request.headers["x-request-id"])
        assert "x-partner" not in request.headers


def test_chat_in_api_key_mode_sends_the_key_and_parses_the_reply() -> None:
    """api-key mode sends `api-key`, keeps the caller's request id, and returns a typed ChatReply."""
    server = Server()
    server.queue("/chat", lambda r: httpx.Response(200, json={"reply": "Cardano is…", "session_id": "s1"},
                                                   headers={"X-Request-ID": r.headers["x-request-id"]}))
    with client(server, api_key="k-123") as t:
        reply = t.chat("What is Cardano?", session_id="s1", request_id="req-42")
    assert (reply.reply, reply.session_id, reply.request_id, reply.reply_json) == (
        "Cardano is…", "s1", "req-42", None)
    sent = server.seen[0]
    assert sent.headers["api-key"] == "k-123" and sent.headers["x-request-id"] == "req-42"
    assert json.loads(sent.content) == {"message": "What is Cardano?", "session_id": "s1"}
    assert "k-123" not in repr(t)


def test_structured_chat_asks_both_ways_and_returns_reply_json() -> None:
    """structured=True sets output=structured and output_mode, and returns reply_json."""
    server = Server()
    server.queue("/chat", httpx.Response(200, json={"reply": "{}", "reply_json": {"summary": "x"}}))
    with client(server, api_key="k") as t:
        reply = t.chat("Return JSON", structured=True)
    sent = server.seen[0]
    assert sent.url.params["output"] == "structured"
    assert json.loads(sent.content)["output_mode"] == "structured"
    assert reply.reply_json == {"summary": "x"}


def test_chat_image_bytes_become_a_data_uri_and_bad_messages_are_refused() -> None:
    """image_data bytes are sent as a PNG data URI; an empty or over-long message is refused unsent."""
    server = Server()
    with client(server, api_key="k") as t:
        t.chat("What is this?", image_data=PNG)
        with pytest.raises(InvalidRequestError):
            t.chat("")
        with pytest.raises(InvalidRequestError):
            t.chat("x" * 32_001)
    assert json.loads(server.seen[0].content)["image_data"].startswith("data:image/png;base64,")
    assert len(server.seen) == 1


SSE_TYPE = {"content-type": "text/event-stream"}


def _sse(*texts: str, done: bool = True) -> bytes:
    frames = [f"data: {json.dumps({'type': 'content', 'text': t})}\n\n" for t in texts]
    return ("".join(frames) + ("data: [DONE]\n\n" if done else "")).encode()


def test_chat_stream_yields_events_until_done() -> None:
    """chat_stream sends stream=true and iterates content events until [DONE]."""
    server = Server()
    server.queue("/chat", httpx.Response(200, content=_sse("Cardano ", "is ", "a chain."),
                                         headers={"content-type": "text/event-stream"}))
    with client(server, api_key="k") as t:
        with t.chat_stream("Summarize", session_id="s2") as stream:
            events = list(stream)
    assert "".join(e.text for e in events) == "Cardano is a chain."
    assert {e.type for e in events} == {"content"}
    assert json.loads(server.seen[0].content)["stream"] is True


def test_chat_stream_pays_then_streams_in_x402_mode() -> None:
    """A streamed chat meeting 402 is paid once and the paid answer is streamed."""
    server = Server()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers.get("x-payment") == TX:
            return httpx.Response(200, content=iter([_sse("paid ", "words")]), headers=SSE_TYPE)
        return httpx.Response(402, json=INVOICE)

    server.queue("/chat", answer, answer)
    handler = Handler()
    with client(server, auth=x402(handler)) as t:
        assert [e.text for e in t.chat_stream("hi")] == ["paid ", "words"]
    assert len(handler.paid) == 1 and len(handler.settled_calls) == 1


def test_token_analysis_sends_the_guide_fields_and_reads_cached() -> None:
    """token_analysis sends token/policyId/assetNameHex/network and x-bypass-cache; cached comes back."""
    server = Server()
    server.queue("/token-analysis", httpx.Response(200, json={"token": "SNEK", "score": 7, "cached": True}))
    with client(server, api_key="k") as t:
        report = t.token_analysis("SNEK", policy_id="27" * 28, asset_name_hex="534e454b", bypass_cache=True)
    sent = server.seen[0]
    assert json.loads(sent.content) == {"token": "SNEK", "network": "cardano", "policyId": "27" * 28,
                                        "assetNameHex": "534e454b"}
    assert sent.headers["x-bypass-cache"] == "1"
    assert report.cached is True and report.data["score"] == 7


def test_images_generate_decodes_pngs() -> None:
    """images_generate returns the decoded PNG bytes."""
    server = Server()
    encoded = base64.b64encode(PNG).decode()
    server.queue("/images/generate", httpx.Response(200, json={"success": True, "images": [encoded, encoded]}))
    with client(server, api_key="k") as t:
        result = t.images_generate("a node in space", n=2)
    assert result.images == [PNG, PNG]
    assert json.loads(server.seen[0].content) == {"prompt": "a node in space", "size": "1024x1024", "n": 2}


def test_images_reporting_failure_raise() -> None:
    """A 200 with success false is an ApiError, not an empty result."""
    server = Server()
    server.queue("/images/generate", httpx.Response(200, json={"success": False, "error": "nsfw"}))
    with client(server, api_key="k") as t, pytest.raises(ApiError, match="nsfw"):
        t.images_generate("x")


def test_images_edit_checks_the_size_before_sending() -> None:
    """An input image over 25 MB of base64 raises ImageTooLargeError and nothing is sent."""
    server = Server()
    server.queue("/images/edit", httpx.Response(200, json={"success": True, "images": []}))
    with client(server, api_key="k") as t:
        t.images_edit("warm light", [PNG, "data:image/png;base64," + base64.b64encode(PNG).decode()])
        with pytest.raises(ImageTooLargeError) as caught:
            t.images_edit("warm light", [PNG, "A" * (MAX_IMAGE_BYTES + 4)])
    assert caught.value.index == 1
    assert len(server.seen) == 1
    body = json.loads(server.seen[0].content)
    assert all(i.startswith("data:image/png;base64,") for i in body["input_images"])


def test_upload_and_edit_is_multipart_and_size_checked() -> None:
    """upload-and-edit sends prompt, n, size and image files as multipart; an oversize file is never sent."""
    server = Server()
    server.queue("/images/upload-and-edit", httpx.Response(200, json={"success": True, "images": []}))
    with client(server, api_key="k") as t:
        t.images_upload_and_edit("plants", [PNG, ("b.jpg", b"\xff\xd8jpeg", "image/jpeg")])
        with pytest.raises(ImageTooLargeError):
            t.images_upload_and_edit("plants", [b"\x00" * (MAX_IMAGE_BYTES + 1)])
    sent = server.seen[0]
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert b'name="prompt"' in sent.content and sent.content.count(b'name="image"') == 2
    assert b"image/jpeg" in sent.content and len(server.seen) == 1


def test_variations_need_a_key_and_are_never_paid() -> None:
    """Without a key images_variations raises before sending; with a key it goes without the x402 auth."""
    server = Server()
    handler = Handler()
    with client(server, auth=x402(handler)) as t, pytest.raises(ApiKeyRequiredError):
        t.images_variations(PNG)
    assert server.seen == []
    server.queue("/images/variations", httpx.Response(200, json={"success": True, "images": []}))
    with client(server, api_key="k", auth=x402(handler)) as t:
        t.images_variations(PNG, n=2)
    assert server.seen[0].headers["api-key"] == "k"
    assert json.loads(server.seen[0].content)["n"] == 2 and handler.paid == []


def test_payment_status_and_balance_are_typed() -> None:
    """payment_status and payment_balance parse the x402-cardano shapes."""
    server = Server()
    server.queue("/payments/status/inv_9", httpx.Response(200, json={
        "invoiceId": "inv_9", "status": "confirmed", "txHash": TX, "amountUnits": "2000000",
        "expiresAt": "2026-11-29T15:05:00Z", "settledAt": None, "error": None}))
    server.queue("/payments/balance", httpx.Response(200, json={
        "partner": "globex", "wallet": "addr_test1me", "remaining": 4, "total": 5, "expiresAt": None}))
    with client(server) as t:
        status = t.payment_status("inv_9")
        balance = t.payment_balance("globex", "addr_test1me")
    assert (status.status, status.tx_hash, status.amount_units) == ("confirmed", TX, 2_000_000)
    assert status.expires_at == NOW + timedelta(minutes=5)
    assert (balance.remaining, balance.total) == (4, 5)
    assert server.seen[1].url.params["partner"] == "globex"


def test_server_errors_are_retried_honouring_retry_after_with_one_request_id() -> None:
    """503 with Retry-After waits that long (injected sleep), then succeeds; every attempt has the same id."""
    server = Server()
    server.queue("/chat", httpx.Response(503, headers={"Retry-After": "3"}), httpx.Response(502))
    sleeps = Sleeps()
    with client(server, sleeps, api_key="k") as t:
        assert t.chat("hi").reply == "ok"
    assert sleeps == [3.0, 1.0]
    assert len({r.headers["x-request-id"] for r in server.seen}) == 1 and len(server.seen) == 3


def test_retries_give_up_with_transient_api_error() -> None:
    """After max_attempts 5xx answers the call raises TransientApiError with the status and detail."""
    server = Server()
    server.queue("/chat", *[httpx.Response(503, json={"detail": "upstream busy"})] * 3)
    with client(server, api_key="k") as t, pytest.raises(TransientApiError) as caught:
        t.chat("hi")
    assert caught.value.status == 503 and caught.value.detail == "upstream busy"
    assert len(server.seen) == 3 and "\n" not in str(caught.value)


def test_timeouts_and_connection_errors_are_retried() -> None:
    """A read timeout then a connect error are retried; when they persist, TransientApiError (status 0)."""
    server = Server()
    server.queue("/chat", httpx.ReadTimeout("slow"), httpx.ConnectError("refused"))
    with client(server, api_key="k") as t:
        assert t.chat("hi").reply == "ok"
    server.queue("/chat", *[httpx.ReadTimeout("slow")] * 3)
    with client(server, api_key="k") as t, pytest.raises(TransientApiError) as caught:
        t.chat("hi")
    assert caught.value.status == 0


@pytest.mark.parametrize("status", [401, 403, 413, 422])
def test_client_errors_are_final_api_errors(status: int) -> None:
    """401/403/413/422 raise ApiError at once with status, detail and the server's request id."""
    server = Server()
    server.queue("/chat", httpx.Response(status, json={"detail": [{"loc": ["body"], "msg": "bad\nthing"}]},
                                         headers={"X-Request-ID": "srv-1"}))
    with client(server, api_key="k") as t, pytest.raises(ApiError) as caught:
        t.chat("hi")
    error = caught.value
    assert not isinstance(error, TransientApiError)
    assert (error.status, error.request_id) == (status, "srv-1") and error.detail[0]["msg"] == "bad\nthing"
    assert "\n" not in str(error) and len(server.seen) == 1


def test_api_key_mode_never_pays() -> None:
    """A 402 in api-key mode is an ApiError; the handler is never asked to pay."""
    server = Server()
    server.queue("/chat", httpx.Response(402, json=INVOICE))
    handler = Handler()
    with client(server, api_key="k", auth=x402(handler)) as t, pytest.raises(ApiError, match="does not pay"):
        t.chat("hi")
    assert handler.paid == [] and "x-payment" not in server.seen[0].headers


def test_x402_mode_pays_every_payable_route_with_partner_headers() -> None:
    """Each payable route meets 402, pays once, retries with the proof and partner headers."""
    server = Server()
    encoded = base64.b64encode(PNG).decode()
    images = {"success": True, "images": [encoded]}
    for path, body in [("/chat", {"reply": "paid"}), ("/token-analysis", {"token": "SNEK", "cached": False}),
                       ("/images/generate", images), ("/images/edit", images), ("/images/upload-and-edit", images)]:
        server.queue(path, paid_only(body), paid_only(body))
    handler = Handler()
    with client(server, auth=x402(handler), partner="acme", wallet_address="addr_test1me") as t:
        assert t.chat("hi").reply == "paid"
        assert t.token_analysis("SNEK").cached is False
        assert t.images_generate("p").images == [PNG]
        assert t.images_edit("p", [PNG]).images == [PNG]
        assert t.images_upload_and_edit("p", [PNG]).images == [PNG]
    assert len(handler.paid) == 5 and len(handler.settled_calls) == 5
    assert all(r.headers["x-partner"] == "acme" and r.headers["x-wallet-address"] == "addr_test1me"
               for r in server.seen)
    assert all(server.seen[i].content == server.seen[i + 1].content
               for i in range(0, 10, 2) if server.seen[i].url.path != "/images/upload-and-edit")


def test_server_error_after_paying_resends_the_same_proof() -> None:
    """A 503 answering the paid retry is retried with the same proof: pay is called exactly once."""
    server = Server()
    server.queue("/chat", httpx.Response(402, json=INVOICE), httpx.Response(503),
                 httpx.ReadTimeout("slow"), paid_only({"reply": "finally"}))
    handler = Handler()
    with client(server, auth=x402(handler)) as t:
        assert t.chat("hi").reply == "finally"
    assert len(handler.paid) == 1 and len(handler.settled_calls) == 1
    assert [r.headers.get("x-payment") for r in server.seen] == [None, TX, TX, TX]


def test_refusal_after_paying_is_not_retried_and_not_repaid() -> None:
    """A second 402 after paying raises PaymentRejectedError once; the client does not retry it."""
    server = Server()
    server.queue("/chat", *[httpx.Response(402, json=INVOICE)] * 4)
    handler = Handler()
    with client(server, auth=x402(handler)) as t, pytest.raises(PaymentRejectedError):
        t.chat("hi")
    assert len(handler.paid) == 1 and len(handler.refused_calls) == 1 and len(server.seen) == 2


def test_policy_refusal_surfaces_and_nothing_is_retried() -> None:
    """A handler refusal (PolicyError) reaches the caller; the call is not resent."""
    server = Server()
    server.queue("/chat", *[httpx.Response(402, json=INVOICE)] * 4)
    handler = Handler(error=PolicyError("too dear", reason="max_per_call"))
    with client(server, auth=x402(handler)) as t, pytest.raises(PolicyError):
        t.chat("hi")
    assert len(server.seen) == 1


def test_agent_like_source_supplies_url_partner_and_auth() -> None:
    """TClient(agent) reads config.api, x402_auth() and wallet_address from an Agent-like object."""
    server = Server()
    server.queue("/chat", paid_only({"reply": "paid"}), paid_only({"reply": "paid"}))
    handler = Handler()
    agent = SimpleNamespace(config=SimpleNamespace(api=SimpleNamespace(base_url=BASE, api_key=None, partner="acme")),
                            x402_auth=lambda: x402(handler), wallet_address="addr_test1me")
    with TClient(agent, transport=httpx.MockTransport(server), sleep=Sleeps(), clock=lambda: NOW) as t:
        assert t.mode == "x402"
        assert t.chat("hi").reply == "paid"
    assert server.seen[0].headers["x-partner"] == "acme" and len(handler.paid) == 1


def test_against_the_twin_free_and_api_key_routes(twin: Any) -> None:
    """Through the real T API twin: free routes, every api-key route, 403/402/404 as typed ApiErrors."""
    with TClient(twin.url, api_key="twin-admin-key", retry=RETRY, sleep=Sleeps()) as t:
        assert t.health()["status"] == "ok"
        assert "POST /chat" in t.api_info()["routes"]
        reply = t.chat("What is Cardano?", session_id="s1", request_id="twin-req-1")
        assert reply.reply and reply.session_id == "s1" and reply.request_id == "twin-req-1"
        assert t.chat("Return JSON", session_id="s1", structured=True).reply_json is not None
        assert "".join(e.text for e in t.chat_stream("Summarize Cardano", session_id="s2"))
        first = t.token_analysis("SNEK", policy_id="279c909f348e533da5808898f87f9a14bb2c3dfbbacccd631d927a3f")
        again = t.token_analysis("SNEK", policy_id="279c909f348e533da5808898f87f9a14bb2c3dfbbacccd631d927a3f")
        assert (first.cached, again.cached) == (False, True)
        generated = t.images_generate("a validator node in space", n=2)
        assert len(generated.images) == 2 and all(i.startswith(b"\x89PNG") for i in generated.images)
        png = generated.images[0]
        assert t.images_edit("warm light", [png]).images[0].startswith(b"\x89PNG")
        assert t.images_upload_and_edit("plants", [png]).images[0].startswith(b"\x89PNG")
        assert t.images_variations(png, n=1).images[0].startswith(b"\x89PNG")
        with pytest.raises(ApiError) as unknown:
            t.payment_status("inv_never_issued")
        assert unknown.value.status == 404
        assert t.payment_balance("globex", "addr_test1nobody").remaining == 0
    with TClient(twin.url, api_key="twin-chat-key", retry=RETRY, sleep=Sleeps()) as t:
        with pytest.raises(ApiError) as forbidden:
            t.images_generate("no privilege")
        assert forbidden.value.status == 403
    with TClient(twin.url, retry=RETRY, sleep=Sleeps()) as t:
        assert t.mode == "free"
        with pytest.raises(ApiError) as unpaid:
            t.chat("hi")
        assert unpaid.value.status == 402 and unpaid.value.detail["invoiceId"]


class PayerHandler:
    """A test payment handler paying through the twin fixture's pycardano Payer (not the agent's machinery)."""

    def __init__(self, payer: Any) -> None:
        self.payer = payer
        self.paid: list[str] = []
        self.settled_calls: list[Proof] = []
        self.refused_calls: list[Proof] = []

    def pay(self, request: httpx.Request, response_body: bytes) -> Proof:
        detail = json.loads(response_body)["detail"]
        tx_id = str(self.payer.pay(detail).id)
        self.paid.append(tx_id)
        expires = datetime.now(timezone.utc) + timedelta(seconds=int(detail["timeout"]))
        return Proof(detail["invoiceId"], tx_id, proof_headers(detail["invoiceId"], tx_id), expires)

    def settled(self, proof: Proof, response: httpx.Response) -> None:
        self.settled_calls.append(proof)

    def refused(self, proof: Proof, response: httpx.Response) -> None:
        self.refused_calls.append(proof)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_against_the_twin_x402_chat_is_paid_once_and_settled(twin: Any) -> None:
    """Through the twin and devnet: a paid chat pays one invoice on chain, retries with the proof, settles."""
    handler = PayerHandler(twin.payer("tclient-x402"))
    pay_to = twin.config.pay_to
    before = twin.devnet.ledger.balance(pay_to)["lovelace"]
    with TClient(twin.url, auth=X402Auth(handler), retry=RETRY, sleep=Sleeps()) as t:
        reply = t.chat("What is Cardano?", session_id="paid-1")
        assert reply.reply
        assert len(handler.paid) == 1 and len(handler.settled_calls) == 1 and handler.refused_calls == []
        status = t.payment_status(handler.settled_calls[0].invoice_id)
        assert status.tx_hash == handler.paid[0] and status.status in ("consumed", "confirmed")
    assert twin.devnet.ledger.balance(pay_to)["lovelace"] - before == twin.config.price("chat")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_against_the_twin_prepaid_batch_pays_once_for_five_calls(twin: Any) -> None:
    """Partner globex (batch of 5): the first call pays, the next four pass on credits with the partner headers."""
    payer = twin.payer("tclient-batch")
    handler = PayerHandler(payer)
    wallet = str(payer.address)
    with TClient(twin.url, auth=X402Auth(handler), partner="globex", wallet_address=wallet,
                 retry=RETRY, sleep=Sleeps()) as t:
        for i in range(5):
            assert t.chat(f"call {i}", session_id="batch").reply
        assert len(handler.paid) == 1 and len(handler.settled_calls) == 1
        assert t.payment_balance("globex", wallet).remaining == 0


def test_cookies_a_server_sets_are_never_sent_back() -> None:
    """One client serves many jobs' calls: a Set-Cookie on one answer never rides along with the next call."""
    server = Server()
    server.queue("/health", httpx.Response(200, json={"status": "ok"},
                                           headers={"Set-Cookie": "session=abc123; Path=/"}))
    with client(server) as t:
        t.health()
        t.api_info()
        assert len(t._http.cookies) == 0
    assert [r.url.path for r in server.seen] == ["/health", "/api"]
    assert all("cookie" not in r.headers for r in server.seen)


def test_clients_share_one_tls_context(monkeypatch) -> None:
    """Each worker thread has its own client; the CA bundle is read once per process, not per client."""
    import ssl

    from agent import tapi

    made: list[Any] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(args or kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    tapi.tls_context.cache_clear()
    try:
        clients = [TClient(BASE) for _ in range(3)]
        assert len(made) == 1
        for c in clients:
            c.close()
    finally:
        tapi.tls_context.cache_clear()


@pytest.mark.parametrize("base", ["https://api.test", "https://api.test/v1/", "http://127.0.0.1:8080/t/api"])
def test_requests_go_to_the_url_httpx_would_join(base: str) -> None:
    """Routes are joined to the base URL once and kept; the URLs are the ones httpx joins itself."""
    seen: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"reply": "ok", "session_id": "s"})

    with TClient(base, transport=httpx.MockTransport(server), api_key="k") as t, \
            httpx.Client(base_url=base) as plain:
        for _ in range(2):
            t.chat("hi", session_id="s")
            t.health()
        t.payment_status("inv_1")
        expected = [str(plain.build_request("POST", "/chat").url), str(plain.build_request("GET", "/health").url)] * 2
        expected.append(str(plain.build_request("GET", "/payments/status/inv_1").url))
    assert seen == expected
