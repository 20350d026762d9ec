"""The T API client: every route of the guide with typed results, in api-key or x402 mode.

Each route is a request plan (:class:`_Call`) and the parser of its answer; one
send-and-retry loop runs them all. Every call carries an ``X-Request-Id`` (fresh uuid4
hex, or the caller's) that is reused across retries, so a resend after a 5xx or a timeout
presents the proof of a call already paid instead of paying again (see :mod:`agent.auth`).
api-key mode never pays; ``images/variations`` and the free routes never carry the x402 auth.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar, Union
from urllib.parse import quote

import httpx

from agent.auth import (
    DEFAULT_MAX_BODY_BYTES, NETWORK_ERRORS, cap_stream, read_capped, response_detail, short_detail,
)
from agent.errors import AgentError, ApiError, TransientApiError
from agent.retry import RetryPolicy, is_transient_status, parse_retry_after, utc_now
from agent.sse import ChatEvent, ChatStream  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 25 * 1024 * 1024
"""Each image the API accepts is at most 25 MB: of base64 text in JSON bodies, of bytes in uploads."""
MAX_MESSAGE_CHARS = 32_000
REQUEST_ID_HEADER = "X-Request-Id"

T = TypeVar("T")
ImageInput = Union[bytes, str, Path]
UploadFile = Union[bytes, Path, tuple[str, bytes], tuple[str, bytes, str]]


class InvalidRequestError(AgentError):
    """A call refused before anything was sent (bad argument, missing key)."""

    exit_code = 2


class ImageTooLargeError(InvalidRequestError):
    """An image is over the API's size limit; nothing was uploaded."""

    def __init__(self, index: int, size_bytes: int, limit_bytes: int = MAX_IMAGE_BYTES, *, what: str = "bytes") -> None:
        super().__init__(f"image {index} is {size_bytes} {what}, over the {limit_bytes} limit; nothing was sent")
        self.index = index
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class ApiKeyRequiredError(InvalidRequestError):
    """The route is api-key only (never paid) and this client has no key."""


@dataclass(frozen=True)
class ChatReply:
    reply: str
    reply_json: Any
    session_id: str | None
    request_id: str
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class TokenReport:
    data: Mapping[str, Any]
    cached: bool
    request_id: str


@dataclass(frozen=True)
class ImageResult:
    images: list[bytes] = field(repr=False)
    request_id: str
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class PaymentStatus:
    invoice_id: str
    status: str
    tx_hash: str | None
    amount_units: int | None
    expires_at: datetime | None
    settled_at: datetime | None
    error: str | None
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class PrepaidBalance:
    partner: str
    wallet: str
    remaining: int
    total: int
    expires_at: datetime | None
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class _Call:
    """One logical API call: what to send; the client adds the headers of its mode."""

    method: str
    path: str
    paid: bool = False
    key_only: bool = False
    json: Any = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, str] | None = None
    files: Sequence[tuple[str, tuple[str, bytes, str]]] | None = None
    request_id: str | None = None


def _sniff_mime(blob: bytes) -> str:
    if blob.startswith(b"\x89PNG"):
        return "image/png"
    if blob.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if blob[:4] == b"RIFF" and blob[8:12] == b"WEBP":
        return "image/webp"
    if blob[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"


def _b64_payload(text: str) -> str:
    return text.split(",", 1)[1] if text.startswith("data:") and "," in text else text


def _check_size(index: int, size_bytes: int, what: str) -> None:
    if size_bytes > MAX_IMAGE_BYTES:
        raise ImageTooLargeError(index, size_bytes, what=what)


def _image_data_uri(index: int, image: ImageInput) -> str:
    """Base64 (data URI) text for a JSON image field; the limit applies to the base64 text, as the API checks it."""
    if isinstance(image, Path):
        image = image.read_bytes()
    if isinstance(image, bytes):
        _check_size(index, 4 * ((len(image) + 2) // 3), "bytes of base64")
        return f"data:{_sniff_mime(image)};base64,{base64.b64encode(image).decode('ascii')}"
    _check_size(index, len(_b64_payload(image)), "bytes of base64")
    return image


def _upload(index: int, item: UploadFile) -> tuple[str, bytes, str]:
    if isinstance(item, Path):
        name, blob = item.name, item.read_bytes()
    elif isinstance(item, bytes):
        name, blob = f"image{index}", item
    else:
        name, blob = item[0], item[1]
    _check_size(index, len(blob), "bytes")
    mime = item[2] if isinstance(item, tuple) and len(item) == 3 else _sniff_mime(blob)
    return name, blob, mime


def _decode_image(index: int, item: Any) -> bytes:
    if not isinstance(item, str):
        raise ApiError(f"image {index} in the answer is not base64 text", status=200, detail=item)
    try:
        return base64.b64decode(_b64_payload(item), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(f"image {index} in the answer is not valid base64", status=200) from exc


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ApiError(
            f"{response.request.method} {response.request.url.path}: answer is not JSON",
            status=response.status_code, request_id=response.headers.get("x-request-id"),
        ) from exc


def new_request_id() -> str:
    """A fresh ``X-Request-Id``: uuid4 as 32 hex digits."""
    return uuid.uuid4().hex


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing: the T API is stateless (an api key or a payment per call)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """A ``Set-Cookie`` is ignored: a server-set cookie would tie later jobs' calls together."""


_NO_COOKIES = _NoCookies()


class CookielessClient(httpx.Client):
    """``httpx.Client`` that never stores nor sends back cookies a server sets.

    Calls of different jobs share one client per worker thread; a cookie set on one answer
    must not ride along with the next job's call. Reading every answer's ``Set-Cookie``
    through ``http.cookiejar`` was also a measurable share of a paid call's CPU time.
    """

    @property  # type: ignore[override, misc]
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES


_URLS_KEPT = 64
"""Routes a TClient keeps joined to its base URL (payment-status paths carry invoice ids)."""


@functools.cache
def tls_context() -> Any:
    """The verifying TLS context every ``TClient`` shares (httpx's default: certifi, or
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``). Building one reads the whole CA bundle, tens of ms:
    once per process, not once per worker thread's client."""
    return httpx.create_ssl_context(verify=True, trust_env=True)


class TClient:
    """The T API over ``httpx.Client``.

    Args:
        source: the base URL, or an Agent-like object (``.config.api.base_url/api_key/partner``,
            ``.x402_auth()``, ``.wallet_address``) to take them from.
        api_key: api-key mode: sent as ``api-key``; this client then never pays.
        auth: x402 mode: an :class:`agent.auth.X402Auth` attached to the payable routes only.
        partner, wallet_address: partner billing headers on payable calls (x402 mode).
        transport: an httpx transport (``httpx.MockTransport`` in tests).
        timeout_s: per-request timeout.
        retry: backoff for 5xx, 408/425/429, timeouts and connection errors.
        sleep, clock, rng, request_ids: injected for tests.
    """

    def __init__(
        self,
        source: str | httpx.URL | Any,
        *,
        api_key: str | None = None,
        auth: httpx.Auth | None = None,
        partner: str | None = None,
        wallet_address: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        request_ids: Callable[[], str] = new_request_id,
        max_body_bytes: int | None = None,
    ) -> None:
        if isinstance(source, (str, httpx.URL)):
            base_url: Any = source
        else:  # an Agent-like object: .config.api.{base_url, api_key, partner}, .x402_auth(), .wallet_address
            api = source.config.api
            base_url = api.base_url
            api_key = api_key or getattr(api, "api_key", None)
            partner = partner or getattr(api, "partner", None)
            wallet_address = wallet_address or getattr(source, "wallet_address", None)
            if auth is None and not api_key and callable(getattr(source, "x402_auth", None)):
                auth = source.x402_auth()
            max_body_bytes = max_body_bytes or getattr(api, "max_body_bytes", None)
        self.base_url = httpx.URL(str(base_url))
        self._api_key = api_key or None
        self._auth = None if self._api_key else auth
        self._partner = partner
        self._wallet_address = wallet_address
        self._retry = retry
        self._clock = clock
        self._rng = rng
        self._new_request_id = request_ids
        self._max_body_bytes = max_body_bytes or DEFAULT_MAX_BODY_BYTES
        self._sleep = sleep
        self._urls: dict[str, httpx.URL] = {}
        self._http = CookielessClient(base_url=self.base_url, transport=transport, timeout=timeout_s,
                                      verify=tls_context() if transport is None else True)

    @property
    def mode(self) -> str:
        """``api-key``, ``x402`` or ``free`` (neither: only the free routes work)."""
        return "api-key" if self._api_key else "x402" if self._auth is not None else "free"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.base_url)!r}, mode={self.mode!r})"

    # --- building ------------------------------------------------------------------------

    def _request(self, call: _Call, request_id: str) -> httpx.Request:
        if call.key_only and not self._api_key:
            raise ApiKeyRequiredError(f"{call.path} is api-key only (never paid): configure an api key")
        headers = {REQUEST_ID_HEADER: request_id, **call.headers}
        if self._api_key:
            headers["api-key"] = self._api_key
        elif call.paid and self._partner:
            headers["X-Partner"] = self._partner
            if self._wallet_address:
                headers["X-Wallet-Address"] = self._wallet_address
        return self._http.build_request(
            call.method, self._url(call.path), json=call.json, params=call.params, headers=headers,
            data=call.data, files=call.files,
        )

    def _url(self, path: str) -> httpx.URL:
        """``path`` on the base URL, as httpx joins them; kept per route, so a paid call's requests
        skip parsing and joining the same URL again (two URL parses per request otherwise)."""
        url = self._urls.get(path)
        if url is None:
            url = self._http.build_request("GET", path).url
            if len(self._urls) < _URLS_KEPT:
                self._urls[path] = url
        return url

    def _auth_for(self, call: _Call) -> httpx.Auth | None:
        return self._auth if call.paid and not call.key_only and not self._api_key else None

    def _outcome(self, call: _Call, request_id: str, attempt: int,
                 response: httpx.Response | None, exc: Exception | None) -> float | None:
        """Log the attempt; return the delay before a retry, None when done, or raise the final error."""
        where = f"{call.method} {call.path}"
        if exc is not None:
            logger.warning("%s request_id=%s attempt=%d failed: %s", where, request_id, attempt, type(exc).__name__)
            delay = self._retry.delay_s(attempt, rng=self._rng)
            if delay is None:
                raise TransientApiError(
                    f"{where}: cannot reach the API at {self.base_url} ({_network_problem(exc)}) after "
                    f"{attempt} attempts (request_id {request_id})",
                    status=0, detail=str(exc), request_id=request_id,
                ) from exc
            return delay
        assert response is not None
        status = response.status_code
        logger.info("%s request_id=%s attempt=%d -> %d", where, request_id, attempt, status)
        if status < 400:
            return None
        detail = response_detail(response)
        server_id = response.headers.get("x-request-id") or request_id
        if is_transient_status(status):
            wait = parse_retry_after(response.headers.get("retry-after"), now=self._clock())
            delay = self._retry.delay_s(attempt, retry_after_s=wait, rng=self._rng)
            if delay is not None:
                return delay
            raise TransientApiError(
                f"{where}: HTTP {status} after {attempt} attempts: {short_detail(detail)} (request_id {server_id})",
                status=status, detail=detail, request_id=server_id,
            )
        hint = " (this client does not pay: api-key mode or no wallet)" if status == 402 else ""
        raise ApiError(
            f"{where}: HTTP {status}{hint}: {short_detail(detail)} (request_id {server_id})",
            status=status, detail=detail, request_id=server_id,
        )

    # --- routes: each is a call plus the parser of its answer ------------------------------

    def _plan_chat(self, message: str, session_id: str | None, image_data: ImageInput | None,
                   structured: bool, stream: bool, request_id: str | None) -> _Call:
        if not 1 <= len(message) <= MAX_MESSAGE_CHARS:
            raise InvalidRequestError(f"chat message must be 1 to {MAX_MESSAGE_CHARS} characters, got {len(message)}")
        body: dict[str, Any] = {"message": message}
        if session_id is not None:
            body["session_id"] = session_id
        if image_data is not None:
            body["image_data"] = _image_data_uri(0, image_data)
        if structured:
            body["output_mode"] = "structured"
        if stream:
            body["stream"] = True
        params = {"output": "structured"} if structured else None
        headers = {"Accept": "text/event-stream"} if stream else {}
        return _Call("POST", "/chat", paid=True, json=body, params=params, headers=headers, request_id=request_id)

    @staticmethod
    def _plan_token(token: str, policy_id: str | None, asset_name_hex: str | None, network: str,
                    bypass_cache: bool, request_id: str | None) -> _Call:
        body: dict[str, Any] = {"token": token, "network": network}
        if policy_id is not None:
            body["policyId"] = policy_id
        if asset_name_hex is not None:
            body["assetNameHex"] = asset_name_hex
        headers = {"x-bypass-cache": "1"} if bypass_cache else {}
        return _Call("POST", "/token-analysis", paid=True, json=body, headers=headers, request_id=request_id)

    @staticmethod
    def _plan_generate(prompt: str, size: str, n: int, request_id: str | None) -> _Call:
        body = {"prompt": prompt, "size": size, "n": n}
        return _Call("POST", "/images/generate", paid=True, json=body, request_id=request_id)

    @staticmethod
    def _plan_edit(prompt: str, images: Sequence[ImageInput], size: str, n: int, request_id: str | None) -> _Call:
        encoded = [_image_data_uri(i, image) for i, image in enumerate(images)]
        body = {"prompt": prompt, "input_images": encoded, "size": size, "n": n}
        return _Call("POST", "/images/edit", paid=True, json=body, request_id=request_id)

    @staticmethod
    def _plan_upload(prompt: str, files: Sequence[UploadFile], size: str, n: int, request_id: str | None) -> _Call:
        uploads = [("image", _upload(i, item)) for i, item in enumerate(files)]
        data = {"prompt": prompt, "n": str(n), "size": size}
        return _Call("POST", "/images/upload-and-edit", paid=True, data=data, files=uploads, request_id=request_id)

    @staticmethod
    def _plan_variations(image: ImageInput, size: str, n: int, request_id: str | None) -> _Call:
        body = {"image": _image_data_uri(0, image), "n": n, "size": size}
        return _Call("POST", "/images/variations", key_only=True, json=body, request_id=request_id)

    @staticmethod
    def _plan_status(invoice_id: str, request_id: str | None) -> _Call:
        return _Call("GET", f"/payments/status/{quote(invoice_id, safe='')}", request_id=request_id)

    @staticmethod
    def _plan_balance(partner: str, wallet: str, request_id: str | None) -> _Call:
        params = {"partner": partner, "wallet": wallet}
        return _Call("GET", "/payments/balance", params=params, request_id=request_id)

    @staticmethod
    def _parse_json(response: httpx.Response, request_id: str) -> Any:
        return _json_body(response)

    @staticmethod
    def _parse_chat(response: httpx.Response, request_id: str, session_id: str | None) -> ChatReply:
        body = _json_body(response)
        body = body if isinstance(body, dict) else {"reply": body}
        reply = body.get("reply", body.get("response", ""))
        return ChatReply(
            reply=reply if isinstance(reply, str) else json.dumps(reply),
            reply_json=body.get("reply_json"),
            session_id=body.get("session_id", session_id),
            request_id=response.headers.get("x-request-id") or request_id,
            raw=body,
        )

    @staticmethod
    def _parse_token(response: httpx.Response, request_id: str) -> TokenReport:
        body = _json_body(response)
        body = body if isinstance(body, dict) else {"data": body}
        cached = body.get("cached")
        if not isinstance(cached, bool):
            cached = response.headers.get("x-cache", "").lower() == "hit"
        return TokenReport(data=body, cached=cached, request_id=response.headers.get("x-request-id") or request_id)

    @staticmethod
    def _parse_images(response: httpx.Response, request_id: str) -> ImageResult:
        body = _json_body(response)
        if not isinstance(body, dict) or body.get("success") is False:
            raise ApiError(f"{response.request.url.path}: the API reported a failure: {short_detail(body)}",
                           status=response.status_code, detail=body, request_id=request_id)
        images = [_decode_image(i, item) for i, item in enumerate(body.get("images") or [])]
        return ImageResult(images=images, request_id=response.headers.get("x-request-id") or request_id, raw=body)

    @staticmethod
    def _parse_status(response: httpx.Response, request_id: str) -> PaymentStatus:
        body = _json_body(response)
        return PaymentStatus(
            invoice_id=str(body.get("invoiceId", "")),
            status=str(body.get("status", "")),
            tx_hash=body.get("txHash"),
            amount_units=_int(body.get("amountUnits")),
            expires_at=_time(body.get("expiresAt")),
            settled_at=_time(body.get("settledAt")),
            error=body.get("error"),
            raw=body,
        )

    @staticmethod
    def _parse_balance(response: httpx.Response, request_id: str) -> PrepaidBalance:
        body = _json_body(response)
        return PrepaidBalance(
            partner=str(body.get("partner", "")),
            wallet=str(body.get("wallet", "")),
            remaining=_int(body.get("remaining")) or 0,
            total=_int(body.get("total")) or 0,
            expires_at=_time(body.get("expiresAt")),
            raw=body,
        )


    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, call: _Call, *, stream: bool = False) -> tuple[httpx.Response, str]:
        request_id = call.request_id or self._new_request_id()
        attempt = 0
        while True:
            attempt += 1
            request = self._request(call, request_id)
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                # Always streamed, then read with a cap: a hostile answer cannot fill the memory.
                response = self._http.send(request, auth=self._auth_for(call), stream=True)
                if not stream or response.status_code >= 400:
                    read_capped(response, self._max_body_bytes)
                else:
                    cap_stream(response, self._max_body_bytes)
            except NETWORK_ERRORS as exc:
                error = exc
            try:
                delay = self._outcome(call, request_id, attempt, response, error)
            finally:
                if response is not None and (not stream or response.status_code >= 400):
                    response.close()
            if delay is None:
                assert response is not None
                return response, request_id
            self._sleep(delay)

    def _run(self, call: _Call, parse: Callable[[httpx.Response, str], T]) -> T:
        response, request_id = self._send(call)
        return parse(response, request_id)

    def health(self, *, request_id: str | None = None) -> Any:
        """``GET /health`` (free)."""
        return self._run(_Call("GET", "/health", request_id=request_id), self._parse_json)

    def api_info(self, *, request_id: str | None = None) -> Any:
        """``GET /api`` (free)."""
        return self._run(_Call("GET", "/api", request_id=request_id), self._parse_json)

    def chat(self, message: str, *, session_id: str | None = None, image_data: ImageInput | None = None,
             structured: bool = False, request_id: str | None = None) -> ChatReply:
        """``POST /chat``; ``structured`` asks for ``reply_json``; ``image_data`` is bytes, a path or a data URI."""
        call = self._plan_chat(message, session_id, image_data, structured, False, request_id)
        return self._run(call, lambda response, rid: self._parse_chat(response, rid, session_id))

    def chat_stream(self, message: str, *, session_id: str | None = None, image_data: ImageInput | None = None,
                    request_id: str | None = None) -> ChatStream:
        """``POST /chat`` streamed: sends now, then iterates :class:`ChatEvent` until ``[DONE]``."""
        call = self._plan_chat(message, session_id, image_data, False, True, request_id)
        response, rid = self._send(call, stream=True)
        return ChatStream(response, response.headers.get("x-request-id") or rid)

    def token_analysis(self, token: str, *, policy_id: str | None = None, asset_name_hex: str | None = None,
                       network: str = "cardano", bypass_cache: bool = False,
                       request_id: str | None = None) -> TokenReport:
        """``POST /token-analysis``; ``bypass_cache`` sends ``x-bypass-cache: 1``."""
        call = self._plan_token(token, policy_id, asset_name_hex, network, bypass_cache, request_id)
        return self._run(call, self._parse_token)

    def images_generate(self, prompt: str, *, size: str = "1024x1024", n: int = 1,
                        request_id: str | None = None) -> ImageResult:
        """``POST /images/generate``: the images come back as decoded PNG bytes."""
        return self._run(self._plan_generate(prompt, size, n, request_id), self._parse_images)

    def images_edit(self, prompt: str, input_images: Sequence[ImageInput], *, size: str = "1024x1024",
                    n: int = 1, request_id: str | None = None) -> ImageResult:
        """``POST /images/edit`` with base64 images, each checked against 25 MB before anything is sent."""
        return self._run(self._plan_edit(prompt, input_images, size, n, request_id), self._parse_images)

    def images_upload_and_edit(self, prompt: str, files: Sequence[UploadFile], *, size: str = "1024x1024",
                               n: int = 1, request_id: str | None = None) -> ImageResult:
        """``POST /images/upload-and-edit`` as multipart, each file checked against 25 MB first."""
        call = self._plan_upload(prompt, files, size, n, request_id)
        return self._run(call, self._parse_images)

    def images_variations(self, image: ImageInput, *, size: str = "1024x1024", n: int = 1,
                          request_id: str | None = None) -> ImageResult:
        """``POST /images/variations``: api-key only and never paid; without a key it raises, sending nothing."""
        call = self._plan_variations(image, size, n, request_id)
        return self._run(call, self._parse_images)

    def payment_status(self, invoice_id: str, *, request_id: str | None = None) -> PaymentStatus:
        """``GET /payments/status/{invoice_id}`` (free; an unknown invoice is an :class:`ApiError` 404)."""
        return self._run(self._plan_status(invoice_id, request_id), self._parse_status)

    def payment_balance(self, partner: str, wallet: str, *, request_id: str | None = None) -> PrepaidBalance:
        """``GET /payments/balance``: prepaid calls left for (partner, wallet)."""
        return self._run(self._plan_balance(partner, wallet, request_id), self._parse_balance)


__all__ = [
    "ApiKeyRequiredError", "ChatEvent", "ChatReply", "ChatStream",
    "ImageResult", "ImageTooLargeError", "InvalidRequestError", "MAX_IMAGE_BYTES", "PaymentStatus",
    "PrepaidBalance", "TClient", "TokenReport", "new_request_id",
]


def _network_problem(exc: Exception) -> str:
    """A network failure in words (no class names): what a person can act on."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    return "connection lost"
