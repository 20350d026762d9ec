"""The T API twin: a FastAPI app that answers like the T API and bills by x402 on the devnet.

``create_app(config, ogmios_url=...)`` builds the app; ``sandbox.twin.ApiTwin`` serves it.
Routes are in ``sandbox.tapi_routes``, billing in ``sandbox.tapi_gate``, the chain reads in
``sandbox.verifier``. Around the routes, one ASGI middleware echoes ``X-Request-Id`` as
``X-Request-ID`` (fresh when absent), refuses bodies over ``max_body_bytes`` with 413, and
injects the configured faults (503s and delays) into API calls.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sandbox.billing import TwinConfig, validate
from sandbox.tapi_gate import Clock, Gate
from sandbox.tapi_routes import TwinState, router
from sandbox.verifier import OgmiosReader, Verifier

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

API_PREFIXES = ("/chat", "/token-analysis", "/images/")


def utc_now() -> datetime:
    """The default clock: now, in UTC."""
    return datetime.now(timezone.utc)


def _one_line(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid_request: the request is not valid"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "invalid_request: the body is not valid JSON"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid_request: {where}: {first.get('msg', 'invalid')}{more}"


class EdgeMiddleware:
    """Request ids, the body size limit and fault injection, as plain ASGI (bodies are not buffered twice)."""

    def __init__(self, app: Any, *, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        request_id = (headers.get("x-request-id") or uuid.uuid4().hex)[:200]

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        limit = self.gate.config.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._answer(send_with_id, 413, f"payload_too_large: the body exceeds {limit} bytes")
            return
        if scope["method"] == "POST":
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await self._answer(send_with_id, 413, f"payload_too_large: the body exceeds {limit} bytes")
                    return
                chunks.append(chunk)
                more = message.get("more_body", False)
            receive = self._replay(b"".join(chunks), receive)
        if scope["path"].startswith(API_PREFIXES):
            faults = self.gate.config.faults
            if faults.delay_ms:
                await asyncio.sleep(faults.delay_ms / 1000)
            if self.gate.roll(faults.error_rate):
                await self._answer(send_with_id, 503, "injected_fault: the twin is configured to fail this call",
                                   retry_after=True)
                return
        await self.app(scope, receive, send_with_id)

    @staticmethod
    def _replay(body: bytes, upstream: Receive) -> Receive:
        replayed = False

        async def receive() -> dict:
            nonlocal replayed
            if replayed:
                return await upstream()  # later reads wait for the client's disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return receive

    @staticmethod
    async def _answer(send: Send, status: int, detail: str, *, retry_after: bool = False) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if retry_after:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def create_app(config: TwinConfig, *, ogmios_url: str, clock: Clock | None = None,
               verifier: Verifier | None = None) -> FastAPI:
    """Build the twin for ``config``, reading and submitting payments through Ogmios at ``ogmios_url``.

    Args:
        config: billing config (``TwinConfig()`` for the defaults).
        ogmios_url: ``ws://host:port`` of the devnet's Ogmios server.
        clock: returns the current UTC time; inject one in tests to expire invoices without waiting.
        verifier: replaces the Ogmios-backed verifier (unit tests of the HTTP layer only).
    """
    config = validate(config)
    verifier = verifier or Verifier(OgmiosReader(ogmios_url))
    sweeper = None
    if config.sweep:
        from sandbox.sweep import PayeeSweeper

        sweeper = PayeeSweeper(verifier.reader)
    gate = Gate(config, verifier, clock=clock or utc_now, sweeper=sweeper)
    app = FastAPI(title="T API twin", version="0.1",
                  description="A local twin of the T API that bills by x402 on the Cardano devnet.")
    app.state.twin = TwinState(gate)
    app.include_router(router)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    app.add_middleware(EdgeMiddleware, gate=gate)
    return app
