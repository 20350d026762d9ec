"""The x402 step as an ``httpx.Auth``: on a 402, pay through an injected handler and retry once with the proof.

Shaped like ``httpx.DigestAuth``: yield the request, look at the answer, yield at most one
paid retry. The paying itself (parse, policy, budget, build, sign, record, submit) lives
behind :class:`PaymentHandler`; this module only speaks HTTP. The rules it keeps:

* a call is paid at most once: the proof is remembered under the request's
  ``X-Request-Id``, so a transport-level resend of the same call (after a 5xx or a
  timeout) presents the same proof instead of paying again;
* a 402 answering a paid retry with ``detail.status`` ``pending``/``submitted`` is waited
  out with backoff, re-sending the same proof until the invoice expires;
* any other refusal after paying is final: ``handler.refused`` then
  :class:`PaymentRejectedError`, never a second payment.

One flow is written once (:meth:`X402Auth._flow`) as a generator of small operations; the
sync and async drivers only execute them.
"""

from __future__ import annotations

import inspect
import json
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import (
    Any, AsyncGenerator, Awaitable, Callable, Generator, Iterator, Mapping, Protocol, TypedDict, Union, Unpack,
)

import httpx

from agent.errors import AgentError, PaymentRefusedError
from agent.retry import RetryPolicy, is_transient_status, utc_now
from agent.x402 import proof_headers  # re-exported: the one definition lives with the protocol

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
PENDING_STATUSES = frozenset({"pending", "submitted"})
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
"""Answers longer than this are refused unread (``[api] max_body_mb``)."""
NETWORK_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
"""httpx's failures of the connection itself (timed out, refused, cut): worth a retry or a resend."""
DEFAULT_PENDING_BACKOFF = RetryPolicy(max_attempts=1_000_000, base_delay_s=1.0, multiplier=1.5, max_delay_s=15.0)


@dataclass(frozen=True)
class Proof:
    """What the retry presents: the invoice paid, the payment, and the headers carrying them."""

    invoice_id: str
    payment: str
    headers: Mapping[str, str]
    expires_at: datetime
    payment_id: str | None = None
    dialect: str = "t"
    """``t`` (X-Invoice-Id/X-Payment) or ``x402v2`` (PAYMENT-SIGNATURE; see ``agent.x402v2_payer``)."""

    def __repr__(self) -> str:
        shown = self.payment if len(self.payment) <= 64 else f"{self.payment[:16]}…({len(self.payment)} hex)"
        return f"Proof(invoice_id={self.invoice_id!r}, payment={shown!r}, expires_at={self.expires_at.isoformat()})"


class PaymentHandler(Protocol):
    """The paying machinery the auth calls; it never sees HTTP beyond the request and the 402 body."""

    def pay(self, request: httpx.Request, response_body: bytes) -> Proof:
        """Parse, check, reserve, build, sign, record and submit; raise an AgentError to refuse (nothing paid)."""

    def settled(self, proof: Proof, response: httpx.Response) -> None:
        """The paid retry succeeded (2xx)."""

    def refused(self, proof: Proof, response: httpx.Response) -> None:
        """The server finally refused a payment already made: mark it unsettled, never pay again."""


class AsyncPaymentHandler(Protocol):
    """:class:`PaymentHandler` with coroutine methods (usable with the async flow only)."""

    async def pay(self, request: httpx.Request, response_body: bytes) -> Proof:
        """As :meth:`PaymentHandler.pay`."""

    async def settled(self, proof: Proof, response: httpx.Response) -> None:
        """As :meth:`PaymentHandler.settled`."""

    async def refused(self, proof: Proof, response: httpx.Response) -> None:
        """As :meth:`PaymentHandler.refused`."""


AnyPaymentHandler = Union[PaymentHandler, AsyncPaymentHandler]


class PaymentRejectedError(PaymentRefusedError):
    """The server refused the call after it was paid; ``status`` and ``detail`` are its answer."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        detail: Any,
        invoice_id: str,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.invoice_id = invoice_id
        self.request_id = request_id


class PaymentUnconfirmedError(PaymentRejectedError):
    """The server kept answering ``pending`` until the invoice expired."""


class ProofRedirectError(PaymentRejectedError):
    """The paid retry was answered from another host (a redirect): no verdict on the payment."""


class ResponseTooLargeError(AgentError):
    """An answer longer than the configured cap: refused before it fills the memory."""

    def __init__(self, message: str, *, limit_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes


def _read_so_far(response: httpx.Response, limit: int) -> bytes | None:
    """The body when already read (checked against ``limit``), else None; refuse a declared oversize."""
    try:
        content = response.content
    except httpx.ResponseNotRead:
        content = None
    if content is not None:
        if len(content) > limit:
            raise _too_large(response, limit)
        return content
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(response, limit)
    return None


def _too_large(response: httpx.Response, limit: int) -> ResponseTooLargeError:
    host = _sent(response, httpx.Request("GET", "http://unknown")).url.host
    return ResponseTooLargeError(f"the answer from {host} (HTTP {response.status_code}) is over "
                                 f"{limit // (1024 * 1024) or limit} {'MB' if limit >= 1024 * 1024 else 'bytes'}: "
                                 "refused unread ([api] max_body_mb)", limit_bytes=limit)


def read_capped(response: httpx.Response, limit: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
    """Read ``response``'s body, at most ``limit`` bytes (decoded); past that, close it and raise.

    Raises:
        ResponseTooLargeError: the body (or its declared length) is over ``limit``.
    """
    content = _read_so_far(response, limit)
    if content is not None:
        return content
    body = _Body(response, limit)
    try:
        for chunk in response.iter_bytes():
            body.add(chunk)
    finally:
        response.close()
    return body.done()


async def aread_capped(response: httpx.Response, limit: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
    """:func:`read_capped` for an async response."""
    content = _read_so_far(response, limit)
    if content is not None:
        return content
    body = _Body(response, limit)
    try:
        async for chunk in response.aiter_bytes():
            body.add(chunk)
    finally:
        await response.aclose()
    return body.done()


class _Body:
    """A body read chunk by chunk, refused once past ``limit`` bytes."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self._response, self._limit = response, limit
        self._chunks: list[bytes] = []
        self._total = 0

    def add(self, chunk: bytes) -> None:
        self._total += len(chunk)
        if self._total > self._limit:
            raise _too_large(self._response, self._limit)
        self._chunks.append(chunk)

    def done(self) -> bytes:
        body = b"".join(self._chunks)
        self._response._content = body  # what Response.read() sets: httpx's own later read() sees the body
        return body


class _CappedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response stream that raises ResponseTooLargeError once more than ``limit`` raw bytes came."""

    def __init__(self, inner: Any, limit: int, where: str) -> None:
        self._inner, self._limit, self._where, self._seen = inner, limit, where, 0

    def _count(self, chunk: bytes) -> bytes:
        self._seen += len(chunk)
        if self._seen > self._limit:
            raise ResponseTooLargeError(f"the streamed answer from {self._where} went past {self._limit} bytes: "
                                        "cut off ([api] max_body_mb)", limit_bytes=self._limit)
        return chunk

    def __iter__(self) -> Any:
        for chunk in self._inner:
            yield self._count(chunk)

    async def __aiter__(self) -> Any:
        async for chunk in self._inner:
            yield self._count(chunk)

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        await self._inner.aclose()


def cap_stream(response: httpx.Response, limit: int = DEFAULT_MAX_BODY_BYTES) -> httpx.Response:
    """Make a streamed ``response`` raise ResponseTooLargeError past ``limit`` bytes, however it is read."""
    host = _sent(response, httpx.Request("GET", "http://unknown")).url.host
    response.stream = _CappedStream(response.stream, limit, host)
    return response


class AsyncAuthOnlyError(AgentError):
    """An async-only auth (or an async handler) was used with a sync ``httpx.Client``."""


# --- the operations the flow asks its driver to perform -------------------------------------


@dataclass
class _Send:
    request: httpx.Request
    proof_of: str | None = None
    """Invoice whose proof the request carries: the driver makes sure it reaches no other origin."""


@dataclass
class _Read:
    response: httpx.Response


@dataclass
class _Pay:
    request: httpx.Request
    body: bytes
    response: httpx.Response | None = None


@dataclass
class _Sleep:
    seconds: float
    invoice_id: str = ""
    request_id: str = ""


class SettlementPendingError(AgentError):
    """Raised instead of waiting when the server says a paid call's payment is still pending.

    Only inside :func:`parking` (the job runner): the proof stays remembered under the call's
    request id (and durable in the ledger), so the call resumes later presenting the same
    proof, never paying again, while the thread goes on with other work.
    """

    def __init__(self, message: str, *, invoice_id: str, request_id: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.invoice_id = invoice_id
        self.request_id = request_id
        self.retry_after_s = retry_after_s


_parking = threading.local()


@contextmanager
def parking() -> Iterator[None]:
    """In this thread, inside the block, a paid call whose payment is pending raises
    :class:`SettlementPendingError` instead of sleeping until it settles."""
    previous = getattr(_parking, "on", False)
    _parking.on = True
    try:
        yield
    finally:
        _parking.on = previous


@dataclass
class _Notify:
    verdict: str  # "settled" | "refused"
    proof: Proof
    response: httpx.Response


_Op = Union[_Send, _Read, _Pay, _Sleep, _Notify]
_Flow = Generator[_Op, Any, None]


def response_detail(response: httpx.Response) -> Any:
    """The ``detail`` of a JSON error body (or the whole body, or the text when it is not JSON)."""
    try:
        body = json.loads(response.content or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return response.text[:500] if response.content else None
    if isinstance(body, dict) and "detail" in body:
        return body["detail"]
    return body


def _payment_status(detail: Any) -> str | None:
    status = detail.get("status") if isinstance(detail, dict) else None
    return status.lower() if isinstance(status, str) else None


_GUARD_MARK = "_x402_proof_guard"


def _guard_origin(request: httpx.Request, invoice_id: str, *, asynchronous: bool) -> None:
    """Make ``request`` (and any redirect of it: httpx hands its extensions on) refuse to send
    its headers, which carry the proof, anywhere but ``request``'s own origin.

    Uses httpcore's ``trace`` request extension, called before each request's headers are
    written: a redirect to another origin raises :class:`ProofRedirectError` before a byte of
    it leaves. (Transports that ignore extensions, such as ``httpx.MockTransport``, are left
    to the after-the-fact check in the flow.) A ``trace`` callback already set is still called.
    """
    previous = request.extensions.get("trace")
    if getattr(previous, _GUARD_MARK, None) is not None:
        return
    origin = _origin(request.url)

    def check(event: str, info: Mapping[str, Any]) -> None:
        if not event.endswith("send_request_headers.started"):
            return
        target = info.get("request")
        url = getattr(target, "url", None)
        if url is None:
            return
        scheme = url.scheme.decode() if isinstance(url.scheme, bytes) else str(url.scheme)
        host = url.host.decode() if isinstance(url.host, bytes) else str(url.host)
        there = _origin_of(scheme, host, url.port)
        if there != origin:
            raise ProofRedirectError(
                f"invoice {invoice_id}: the paid call to {origin} was redirected to {there}; "
                "the proof was not sent there", status=0, detail=None, invoice_id=invoice_id)

    guard: Any
    if asynchronous:
        async def guard(event: str, info: Mapping[str, Any]) -> None:
            check(event, info)
            if previous is not None:
                await previous(event, info)
    else:
        def guard(event: str, info: Mapping[str, Any]) -> None:
            check(event, info)
            if previous is not None:
                previous(event, info)
    setattr(guard, _GUARD_MARK, origin)
    request.extensions["trace"] = guard


def _sent(response: httpx.Response, default: httpx.Request) -> httpx.Request:
    """The request ``response`` answers (after any redirect), or ``default`` when it has none set."""
    try:
        return response.request
    except RuntimeError:
        return default


def _origin(url: httpx.URL) -> str:
    """``scheme://host:port`` of ``url``, lower-case, with the default port made explicit."""
    return _origin_of(url.scheme, url.host, url.port)


def _origin_of(scheme: str, host: str, port: int | None) -> str:
    port = port or {"http": 80, "https": 443}.get(scheme.lower(), 0)
    return f"{scheme.lower()}://{host.lower()}:{port}"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


@dataclass
class _ProofMemory:
    """Proofs of paid calls by request id; bounded, oldest forgotten first."""

    capacity: int
    entries: OrderedDict[str, Proof] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: str) -> Proof | None:
        with self.lock:
            return self.entries.get(key)

    def put(self, key: str, proof: Proof) -> None:
        with self.lock:
            self.entries[key] = proof
            self.entries.move_to_end(key)
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)

    def drop(self, key: str) -> None:
        with self.lock:
            self.entries.pop(key, None)


CONFIRMS_FIRST_AFTER = 2
"""Retries right after payment answered "pending" in a row before a server is taken to want blocks."""
CONFIRMS_FIRST_RELEARN = 16
"""Of the calls parked before their retry at such a server, one in this many retries at once instead."""


@dataclass
class _FirstRetries:
    pending_in_a_row: int = 0
    deferred: int = 0


class X402Options(TypedDict, total=False):
    """The options :class:`X402Auth` and :class:`AsyncX402Auth` share (their meanings: :class:`X402Auth`)."""

    pending_backoff: RetryPolicy
    clock: Callable[[], datetime]
    rng: random.Random | None
    partner: str | None
    wallet_address: str | None
    max_pending_polls: int
    remember: int
    max_body_bytes: int


class X402Auth(httpx.Auth):
    """Pays 402 invoices through ``handler`` and retries the call with the proof.

    Works with ``httpx.Client`` and ``httpx.AsyncClient`` (the handler's blocking ``pay``
    then runs in a worker thread).

    Args:
        handler: the paying machinery (:class:`PaymentHandler`; an :class:`AsyncPaymentHandler`
            works with the async flow only).
        pending_backoff: delays between re-sends while the server says ``pending``.
        sleep: blocking sleep for the sync flow (inject a fake in tests).
        async_sleep: awaitable sleep for the async flow.
        clock: the current instant (aware UTC); compared with ``Proof.expires_at``.
        rng: random source for the backoff jitter.
        partner, wallet_address: partner billing; default to the handler's attributes of
            the same names. Sent on the first request too, so prepaid credits apply.
        max_pending_polls: a hard stop on re-sends while pending, whatever the clock says.
        remember: how many paid calls' proofs to keep for resends.
        max_body_bytes: a 402 (or a refusal) longer than this is refused unread.
    """

    requires_request_body = True
    requires_response_body = True

    def __init__(
        self,
        handler: AnyPaymentHandler,
        *,
        pending_backoff: RetryPolicy = DEFAULT_PENDING_BACKOFF,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        partner: str | None = None,
        wallet_address: str | None = None,
        max_pending_polls: int = 240,
        remember: int = 4096,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self._handler = handler
        self._max_body_bytes = max_body_bytes
        self._pending_backoff = pending_backoff
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._clock = clock
        self._rng = rng
        self._partner = partner if partner is not None else getattr(handler, "partner", None)
        self._wallet_address = (
            wallet_address if wallet_address is not None else getattr(handler, "wallet_address", None)
        )
        self._max_pending_polls = max_pending_polls
        self._proofs = _ProofMemory(capacity=remember)
        self._confirms_first: dict[str, _FirstRetries] = {}  # per origin: how its paid retries were answered
        self._first_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(partner={self._partner!r})"

    def proof_for(self, request_id: str) -> Proof | None:
        """The proof a paid call holds until it settles (kept after a refusal, so a resend never pays again)."""
        return self._proofs.get(request_id)

    def remember(self, request_id: str, proof: Proof) -> None:
        """Present ``proof`` on the call sent with ``X-Request-Id: request_id`` (resuming after a crash).

        The call's first request then carries the payment headers, and no new payment is made
        for it: whatever the server answers is judged like an answer to a paid retry.
        """
        self._proofs.put(request_id, proof)

    # --- the flow, written once ---------------------------------------------------------

    def _flow(self, request: httpx.Request) -> _Flow:
        key = request.headers.get(REQUEST_ID_HEADER)
        if not key:
            key = uuid.uuid4().hex
            request.headers[REQUEST_ID_HEADER] = key
        if self._partner and "X-Partner" not in request.headers:
            request.headers["X-Partner"] = self._partner
            if self._wallet_address and "X-Wallet-Address" not in request.headers:
                request.headers["X-Wallet-Address"] = self._wallet_address

        proof = self._proofs.get(key)
        if proof is not None:
            logger.info("re-sending paid call request_id=%s invoice=%s with its proof", key, proof.invoice_id)
            request.headers.update(proof.headers)
        response = yield _Send(request, proof.invoice_id if proof is not None else None)

        fresh = proof is None  # paid in this flow: its first retry's answer says how the server settles
        if proof is None:
            if response.status_code != 402:
                return
            yield _Read(response)
            # The invoice is judged against the host that issued it, which is not the host
            # asked when a client following redirects was sent elsewhere; the paid retry goes
            # to that same host, so the proof never reaches a host that did not ask for it.
            issuer = _sent(response, request)
            if _origin(issuer.url) != _origin(request.url):
                logger.warning("invoice from %s, reached by a redirect from %s", _origin(issuer.url),
                               _origin(request.url))
                request = issuer
            proof = yield _Pay(request, response.content, response)
            self._proofs.put(key, proof)
            logger.info("paid invoice=%s request_id=%s; retrying %s %s", proof.invoice_id, key,
                        request.method, request.url.path)
            request.headers.update(proof.headers)
            if self._defer_first_retry(_origin(request.url), proof):
                # This server answered "pending" to the paid retries it got right after payment:
                # it wants the payment on chain. Parked, the call re-sends the proof once its
                # block lands, instead of sending now only to hear "pending".
                logger.info("invoice=%s request_id=%s: the server waits for the block; parked before retrying",
                            proof.invoice_id, key)
                raise SettlementPendingError(
                    f"invoice {proof.invoice_id}: payment sent, waiting for its block (this server wants it on chain)",
                    invoice_id=proof.invoice_id, request_id=key,
                    retry_after_s=self._pending_backoff.backoff_s(1, rng=self._rng))
            response = yield _Send(request, proof.invoice_id)

        polls = 0
        while True:
            answered = _sent(response, request)
            if _origin(answered.url) != _origin(request.url):
                # The paid call was redirected to another host: its answer says nothing about
                # this payment. The proof is kept (the paid call may be resent to its host).
                raise ProofRedirectError(
                    f"invoice {proof.invoice_id}: the paid call to {_origin(request.url)} was redirected to "
                    f"{_origin(answered.url)}; its answer is not taken as the paid call's",
                    status=response.status_code, detail=None, invoice_id=proof.invoice_id, request_id=key,
                )
            status = response.status_code
            first, fresh = fresh, False
            if 200 <= status < 300:
                if first:
                    self._first_retry_answered(_origin(request.url), proof, pending=False)
                self._proofs.drop(key)
                yield _Notify("settled", proof, response)
                return
            if status < 400 or is_transient_status(status):
                # No verdict on the payment: the caller may resend this call; the proof is kept.
                logger.warning("paid call request_id=%s got HTTP %d; proof kept for a resend", key, status)
                return
            yield _Read(response)
            detail = response_detail(response)
            if proof.dialect != "t":  # x402 v2: the verdict rides in headers, the body is the server's
                detail = _v2_detail(response, detail)
            if status == 402 and (_payment_status(detail) in PENDING_STATUSES
                                  or (proof.dialect != "t" and _v2_pending(response))):
                if first:
                    self._first_retry_answered(_origin(request.url), proof, pending=True)
                remaining_s = (_aware(proof.expires_at) - _aware(self._clock())).total_seconds()
                if remaining_s <= 0 or polls >= self._max_pending_polls:
                    yield _Notify("refused", proof, response)
                    raise PaymentUnconfirmedError(
                        f"invoice {proof.invoice_id}: payment still {_payment_status(detail)} "
                        f"when the invoice expired (after {polls} re-sends)",
                        status=status, detail=detail, invoice_id=proof.invoice_id, request_id=key,
                    )
                polls += 1
                delay_s = min(self._pending_backoff.backoff_s(polls, rng=self._rng), remaining_s)
                logger.info("invoice=%s pending; re-sending proof in %.2fs", proof.invoice_id, delay_s)
                yield _Sleep(delay_s, proof.invoice_id, key)
                response = yield _Send(request, proof.invoice_id)
                continue
            yield _Notify("refused", proof, response)
            raise PaymentRejectedError(
                f"invoice {proof.invoice_id}: the server refused the paid call with HTTP {status}: "
                f"{short_detail(detail)}",
                status=status, detail=detail, invoice_id=proof.invoice_id, request_id=key,
            )

    def _defer_first_retry(self, origin: str, proof: Proof) -> bool:
        """Park a just-paid call before its retry? Only in :func:`parking`, for a T-dialect hash
        proof (the server needs nothing from us to see the payment), at an origin whose last
        :data:`CONFIRMS_FIRST_AFTER` retries right after payment were all answered "pending";
        one payment in :data:`CONFIRMS_FIRST_RELEARN` still retries at once, to notice a server
        that starts accepting unconfirmed payments."""
        if not getattr(_parking, "on", False) or proof.dialect != "t" or len(proof.payment) != 64:
            return False
        with self._first_lock:
            seen = self._confirms_first.get(origin)
            if seen is None or seen.pending_in_a_row < CONFIRMS_FIRST_AFTER:
                return False
            seen.deferred += 1
            return seen.deferred % CONFIRMS_FIRST_RELEARN != 0

    def _first_retry_answered(self, origin: str, proof: Proof, *, pending: bool) -> None:
        """Learn from the answer to a retry sent right after payment (see :meth:`_defer_first_retry`)."""
        if proof.dialect != "t":
            return
        with self._first_lock:
            seen = self._confirms_first.setdefault(origin, _FirstRetries())
            seen.pending_in_a_row = seen.pending_in_a_row + 1 if pending else 0

    # --- drivers: the flow's sends go to httpx; the rest is done here, blocking or awaited ---

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if inspect.iscoroutinefunction(getattr(self._handler, "pay", None)):
            raise AsyncAuthOnlyError("this payment handler is async: use it with httpx.AsyncClient")
        request.read()
        with _Steps(self._flow(request)) as steps:
            for op in steps:
                if isinstance(op, _Send):
                    steps.result = yield _sendable(op, asynchronous=False)
                else:
                    steps.result = self._do(op)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        with _Steps(self._flow(request)) as steps:
            for op in steps:
                if isinstance(op, _Send):
                    steps.result = yield _sendable(op, asynchronous=True)
                else:
                    steps.result = await self._ado(op)

    def _do(self, op: _Op) -> Any:
        if isinstance(op, _Read):
            return read_capped(op.response, self._max_body_bytes)
        if isinstance(op, _Sleep):
            if getattr(_parking, "on", False):
                raise SettlementPendingError(
                    f"invoice {op.invoice_id}: payment sent, waiting for it to settle",
                    invoice_id=op.invoice_id, request_id=op.request_id, retry_after_s=op.seconds)
            return self._sleep(op.seconds)
        name, args = _handler_call(self._handler, op)
        return getattr(self._handler, name)(*args)

    async def _ado(self, op: _Op) -> Any:
        if isinstance(op, _Read):
            return await aread_capped(op.response, self._max_body_bytes)
        if isinstance(op, _Sleep):
            if self._async_sleep is not None:
                return await self._async_sleep(op.seconds)
            import anyio

            return await anyio.sleep(op.seconds)
        name, args = _handler_call(self._handler, op)
        method = getattr(self._handler, name)
        if inspect.iscoroutinefunction(method):
            return await method(*args)
        import anyio.to_thread

        return await anyio.to_thread.run_sync(lambda: method(*args))


class _Steps:
    """Runs a flow for a driver: iterate it for the operations, set ``result`` to what each one gave."""

    def __init__(self, flow: _Flow) -> None:
        self._flow = flow
        self.result: Any = None

    def __iter__(self) -> Iterator[_Op]:
        try:
            op = next(self._flow)
            while True:
                yield op
                result, self.result = self.result, None
                op = self._flow.send(result)
        except StopIteration:
            return

    def __enter__(self) -> _Steps:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._flow.close()


def _sendable(op: _Send, *, asynchronous: bool) -> httpx.Request:
    """The request to hand httpx; one carrying a proof is kept from reaching any other origin."""
    if op.proof_of is not None:
        _guard_origin(op.request, op.proof_of, asynchronous=asynchronous)
    return op.request


def _handler_call(handler: Any, op: _Op) -> tuple[str, tuple[Any, ...]]:
    """The handler method an operation calls, and its arguments: pay (T or x402 v2), settled, refused."""
    if isinstance(op, _Pay):
        if _speaks_v2(handler, op):
            return "pay_v2", (op.request, op.response)
        return "pay", (op.request, op.body)
    assert isinstance(op, _Notify)
    return op.verdict, (op.proof, op.response)


class AsyncX402Auth(X402Auth):
    """:class:`X402Auth` for ``httpx.AsyncClient``: ``sleep`` is awaitable, the handler may be async.

    Its sync flow refuses to run, so an async-only setup is never half used from sync code.
    The other options are :class:`X402Auth`'s (:class:`X402Options`).
    """

    def __init__(self, handler: AnyPaymentHandler, *, sleep: Callable[[float], Awaitable[None]] | None = None,
                 **options: Unpack[X402Options]) -> None:
        super().__init__(handler, async_sleep=sleep, **options)

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise AsyncAuthOnlyError("AsyncX402Auth works with httpx.AsyncClient; use X402Auth with httpx.Client")
        yield request  # pragma: no cover - makes this a generator like the base method


def _speaks_v2(handler: Any, op: _Pay) -> bool:
    """The 402 is x402 v2 (PAYMENT-REQUIRED header) or v1 (body) and the handler can pay it."""
    if op.response is None or not hasattr(handler, "pay_v2"):
        return False
    from agent.x402v2 import detect

    return detect(op.response.headers, op.body) is not None


def _v2_pending(response: httpx.Response) -> bool:
    """A 402 to a v2 paid retry that says the payment may still land: resend the same payload."""
    from agent.x402v2 import parse_payment_response, retry_refusal_reason

    answer = parse_payment_response(response.headers)
    if answer is not None:
        return answer.may_still_land
    return retry_refusal_reason(response.headers) == "exact_cardano_facilitator_chain_lookup_failed"


def _v2_detail(response: httpx.Response, detail: Any) -> Any:
    from agent.x402v2_payer import refusal_reason

    if response.status_code != 402:
        return detail
    if _v2_pending(response):
        return {"status": "pending", "reason": refusal_reason(response)}
    return refusal_reason(response)


def short_detail(detail: Any, limit: int = 200) -> str:
    """An error detail as one short line (JSON for structures), safe to print."""
    text = detail if isinstance(detail, str) else json.dumps(detail, separators=(",", ":"), default=str)
    from agent.output import terminal_safe

    text = " ".join(terminal_safe(str(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
