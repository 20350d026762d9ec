"""The async T API client: :class:`AsyncTClient`, the twin of :class:`agent.tapi.TClient` over ``httpx.AsyncClient``.

Requests, results and rules are shared with the sync client (:class:`agent.tapi._Routes`);
only the send-and-retry loop awaits.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any, Awaitable, Callable, Sequence

import httpx

from agent.auth import aread_capped, cap_stream
from agent.retry import RetryPolicy, utc_now
from agent.sse import AsyncChatStream
from agent.tapi import (
    _RETRYABLE_EXCEPTIONS,
    ChatReply,
    ImageInput,
    ImageResult,
    PaymentStatus,
    PrepaidBalance,
    T,
    TokenReport,
    UploadFile,
    _Call,
    _Routes,
    new_request_id,
)


class AsyncTClient(_Routes):
    """:class:`TClient` over ``httpx.AsyncClient``: same arguments and methods, awaited; ``sleep`` is async."""

    def __init__(
        self,
        source: str | httpx.URL | Any,
        *,
        api_key: str | None = None,
        auth: httpx.Auth | None = None,
        partner: str | None = None,
        wallet_address: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        request_ids: Callable[[], str] = new_request_id,
        max_body_bytes: int | None = None,
    ) -> None:
        super().__init__(source, api_key=api_key, auth=auth, partner=partner, wallet_address=wallet_address,
                         retry=retry, clock=clock, rng=rng, new_request_id=request_ids,
                         max_body_bytes=max_body_bytes)
        self._sleep = sleep
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=timeout_s)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _send(self, call: _Call, *, stream: bool = False) -> tuple[httpx.Response, str]:
        request_id = call.request_id or self._new_request_id()
        attempt = 0
        while True:
            attempt += 1
            request = self._request(self._http, call, request_id)
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = await self._http.send(request, auth=self._auth_for(call), stream=True)
                if not stream or response.status_code >= 400:
                    await aread_capped(response, self._max_body_bytes)
                else:
                    cap_stream(response, self._max_body_bytes)
            except _RETRYABLE_EXCEPTIONS as exc:
                error = exc
            try:
                delay = self._outcome(call, request_id, attempt, response, error)
            finally:
                if response is not None and (not stream or response.status_code >= 400):
                    await response.aclose()
            if delay is None:
                assert response is not None
                return response, request_id
            if self._sleep is None:
                import anyio

                await anyio.sleep(delay)
            else:
                await self._sleep(delay)

    async def _run(self, call: _Call, parse: Callable[[httpx.Response, str], T]) -> T:
        response, request_id = await self._send(call)
        return parse(response, request_id)

    async def health(self, *, request_id: str | None = None) -> Any:
        return await self._run(_Call("GET", "/health", request_id=request_id), self._parse_json)

    async def api_info(self, *, request_id: str | None = None) -> Any:
        return await self._run(_Call("GET", "/api", request_id=request_id), self._parse_json)

    async def chat(self, message: str, *, session_id: str | None = None, image_data: ImageInput | None = None,
                   structured: bool = False, request_id: str | None = None) -> ChatReply:
        call = self._plan_chat(message, session_id, image_data, structured, False, request_id)
        return await self._run(call, lambda response, rid: self._parse_chat(response, rid, session_id))

    async def chat_stream(self, message: str, *, session_id: str | None = None,
                          image_data: ImageInput | None = None, request_id: str | None = None) -> AsyncChatStream:
        call = self._plan_chat(message, session_id, image_data, False, True, request_id)
        response, rid = await self._send(call, stream=True)
        return AsyncChatStream(response, response.headers.get("x-request-id") or rid)

    async def token_analysis(self, token: str, *, policy_id: str | None = None, asset_name_hex: str | None = None,
                             network: str = "cardano", bypass_cache: bool = False,
                             request_id: str | None = None) -> TokenReport:
        call = self._plan_token(token, policy_id, asset_name_hex, network, bypass_cache, request_id)
        return await self._run(call, self._parse_token)

    async def images_generate(self, prompt: str, *, size: str = "1024x1024", n: int = 1,
                              request_id: str | None = None) -> ImageResult:
        return await self._run(self._plan_generate(prompt, size, n, request_id), self._parse_images)

    async def images_edit(self, prompt: str, input_images: Sequence[ImageInput], *, size: str = "1024x1024",
                          n: int = 1, request_id: str | None = None) -> ImageResult:
        return await self._run(self._plan_edit(prompt, input_images, size, n, request_id), self._parse_images)

    async def images_upload_and_edit(self, prompt: str, files: Sequence[UploadFile], *, size: str = "1024x1024",
                                     n: int = 1, request_id: str | None = None) -> ImageResult:
        call = self._plan_upload(prompt, files, size, n, request_id)
        return await self._run(call, self._parse_images)

    async def images_variations(self, image: ImageInput, *, size: str = "1024x1024", n: int = 1,
                                request_id: str | None = None) -> ImageResult:
        call = self._plan_variations(image, size, n, request_id)
        return await self._run(call, self._parse_images)

    async def payment_status(self, invoice_id: str, *, request_id: str | None = None) -> PaymentStatus:
        return await self._run(self._plan_status(invoice_id, request_id), self._parse_status)

    async def payment_balance(self, partner: str, wallet: str, *,
                              request_id: str | None = None) -> PrepaidBalance:
        return await self._run(self._plan_balance(partner, wallet, request_id), self._parse_balance)


__all__ = ["AsyncTClient"]
