"""The T API twin's routes (t-api-guide.md, x402-cardano.md section 6) as a FastAPI router."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from sandbox.tapi_content import (
    BadImageError,
    ChatSessions,
    ImagePayloadTooLargeError,
    decode_image,
    png_b64,
    sse_frames,
    token_report,
)
from sandbox.tapi_gate import Charge, Gate, refuse

router = APIRouter()

Size = Annotated[str, Field(pattern=r"^\d{2,4}x\d{2,4}$")]


class ChatRequest(BaseModel):
    """``POST /chat`` body."""

    model_config = ConfigDict(strict=True)
    message: str = Field(min_length=1, max_length=32_000)
    session_id: str = Field(default="default", min_length=1, max_length=200)
    image_data: str | None = None
    stream: bool = False
    output_mode: Literal["text", "structured"] | None = None


class TokenRequest(BaseModel):
    """``POST /token-analysis`` body."""

    model_config = ConfigDict(strict=True)
    token: str = Field(min_length=1, max_length=64)
    policyId: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{56}$")
    assetNameHex: str | None = Field(default=None, pattern=r"^([0-9a-fA-F]{2}){0,32}$")
    network: str = Field(default="cardano", min_length=1, max_length=32)


class GenerateRequest(BaseModel):
    """``POST /images/generate`` body."""

    model_config = ConfigDict(strict=True)
    prompt: str = Field(min_length=1, max_length=4_000)
    size: Size = "1024x1024"
    n: int = Field(default=1, ge=1, le=4)


class EditRequest(GenerateRequest):
    """``POST /images/edit`` body: base64 images (raw or data URI), each at most 25 MB."""

    input_images: list[str] = Field(min_length=1, max_length=4)


class VariationsRequest(BaseModel):
    """``POST /images/variations`` body (api-key only)."""

    model_config = ConfigDict(strict=True)
    image: str = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=4)
    size: Size = "1024x1024"


def _gate(request: Request) -> Gate:
    return request.app.state.twin.gate


def _fingerprint(route: str, payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(f"{route}\n{text}".encode()).hexdigest()


def _charge(request: Request, route: str, payload: Any) -> Charge:
    return _gate(request).charge(request.headers, route, fingerprint=_fingerprint(route, payload))


def _billed(response: Response, charge: Charge) -> None:
    response.headers["X-Billing"] = charge.kind
    if charge.invoice_id:
        response.headers["X-Invoice-Id"] = charge.invoice_id


def _image(text: str, request: Request) -> bytes:
    try:
        return decode_image(text, max_bytes=_gate(request).config.max_image_bytes)
    except ImagePayloadTooLargeError as exc:
        raise refuse(413, "image_too_large", str(exc)) from None
    except BadImageError as exc:
        raise refuse(422, "invalid_image", str(exc)) from None


@router.get("/health", tags=["public"])
def health(request: Request) -> dict:
    """Liveness; free."""
    return {"status": "ok", "service": "t-api-twin", "chain": _gate(request).config.chain}


@router.get("/api", tags=["public"])
def api_index(request: Request) -> dict:
    """What the twin serves and what each route costs; free."""
    config = _gate(request).config
    return {
        "service": "t-api-twin", "chain": config.chain, "asset": config.asset_label, "decimals": config.decimals,
        "payTo": config.pay_to, "prices": dict(config.prices), "invoiceTimeout": config.invoice_timeout_s,
        "acceptMempool": config.accept_mempool,
        "partners": {p.name: {"splitMode": p.split_mode, "batchTarget": p.batch_target,
                              "outputs": len(p.outputs)} for p in config.partners.values()},
        "routes": ["GET /health", "GET /api", "POST /chat", "POST /token-analysis", "POST /images/generate",
                   "POST /images/edit", "POST /images/upload-and-edit", "POST /images/variations",
                   "GET /payments/status/{invoiceId}", "GET /payments/balance", "GET /payments/credits"],
    }


@router.post("/chat", tags=["chat"])
def chat(body: ChatRequest, request: Request, response: Response,
         output: Literal["text", "structured"] | None = Query(default=None)) -> Any:
    """A deterministic reply that remembers the session; SSE when ``stream`` is true."""
    image = _image(body.image_data, request) if body.image_data is not None else None
    charge = _charge(request, "chat", body.model_dump())
    sessions: ChatSessions = request.app.state.twin.sessions
    text, structured = sessions.reply(body.session_id, body.message, image=image)
    if body.stream:
        headers = {"X-Billing": charge.kind, "Cache-Control": "no-cache"}
        return StreamingResponse(iter(sse_frames(text)), media_type="text/event-stream", headers=headers)
    _billed(response, charge)
    answer: dict[str, Any] = {"reply": text, "session_id": body.session_id}
    if "structured" in (output, body.output_mode):
        answer["reply_json"] = structured
    return answer


@router.post("/token-analysis", tags=["token-analysis"])
def token_analysis(body: TokenRequest, request: Request, response: Response) -> dict:
    """A deterministic token report; a cached repeat is free unless ``x-bypass-cache: 1``."""
    twin = request.app.state.twin
    key = (body.token.upper(), (body.policyId or "").lower(), (body.assetNameHex or "").lower(), body.network)
    bypass = request.headers.get("x-bypass-cache", "") in ("1", "true")
    with twin.cache_lock:
        cached = twin.token_cache.get(key)
    if cached is not None and not bypass:
        _gate(request).check_api_key(request.headers, "token-analysis")
        response.headers["X-Billing"] = "cached"
        return {**cached, "cached": True}
    charge = _charge(request, "token-analysis", body.model_dump())
    report = token_report(body.token, body.policyId, body.assetNameHex, body.network)
    with twin.cache_lock:
        twin.token_cache[key] = report
    _billed(response, charge)
    return {**report, "cached": False}


def _images(route: str, prompt: str, n: int, size: str, extra: str = "") -> dict:
    return {"success": True, "size": size, "n": n,
            "images": [png_b64(f"{route}|{prompt}|{size}|{extra}|{i}") for i in range(n)]}


@router.post("/images/generate", tags=["images"])
def images_generate(body: GenerateRequest, request: Request, response: Response) -> dict:
    """``n`` small PNGs derived from the prompt."""
    charge = _charge(request, "images/generate", body.model_dump())
    _billed(response, charge)
    return _images("generate", body.prompt, body.n, body.size)


@router.post("/images/edit", tags=["images"])
def images_edit(body: EditRequest, request: Request, response: Response) -> dict:
    """PNGs derived from the prompt and the input images (each ≤ 25 MB of base64, else 413)."""
    digests = ",".join(hashlib.sha256(_image(img, request)).hexdigest() for img in body.input_images)
    charge = _charge(request, "images/edit", {"prompt": body.prompt, "n": body.n, "size": body.size, "in": digests})
    _billed(response, charge)
    return _images("edit", body.prompt, body.n, body.size, digests)


@router.post("/images/upload-and-edit", tags=["images"])
async def images_upload_and_edit(request: Request, response: Response,
                                 prompt: Annotated[str, Form(min_length=1, max_length=4_000)],
                                 image: Annotated[list[UploadFile], File()],
                                 n: Annotated[int, Form(ge=1, le=4)] = 1,
                                 size: Annotated[str, Form(pattern=r"^\d{2,4}x\d{2,4}$")] = "1024x1024") -> dict:
    """Multipart upload: ``prompt``, one or more ``image`` files, ``n``, ``size``."""
    limit = _gate(request).config.max_image_bytes
    digests = []
    for upload in image:
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise refuse(413, "image_too_large", f"uploaded image exceeds {limit} bytes")
        if not data:
            raise refuse(422, "invalid_image", "uploaded image is empty")
        digests.append(hashlib.sha256(data).hexdigest())
    joined = ",".join(digests)
    from starlette.concurrency import run_in_threadpool

    charge = await run_in_threadpool(
        _charge, request, "images/upload-and-edit", {"prompt": prompt, "n": n, "size": size, "in": joined})
    _billed(response, charge)
    return _images("upload-and-edit", prompt, n, size, joined)


@router.post("/images/variations", tags=["images"])
def images_variations(body: VariationsRequest, request: Request, response: Response) -> dict:
    """Variations of one image; api-key only (401 without a key, never payable)."""
    data = _image(body.image, request)
    charge = _charge(request, "images/variations", {})
    _billed(response, charge)
    return _images("variations", hashlib.sha256(data).hexdigest(), body.n, body.size)


@router.get("/payments/status/{invoice_id}", tags=["payments"])
def payment_status(invoice_id: str, request: Request) -> dict:
    """Where an invoice's payment stands (checking the ledger for a submitted one); 404 if never issued."""
    invoice = _gate(request).refresh(invoice_id)
    if invoice is None:
        raise HTTPException(404, detail=f"unknown_invoice: no invoice {invoice_id[:80]!r}")
    return invoice.to_status()


def _balance(request: Request, partner: str, wallet: str) -> JSONResponse:
    gate = _gate(request)
    return JSONResponse(gate.credits.balance(partner, wallet, now=gate.clock()).to_json())


@router.get("/payments/balance", tags=["payments"])
def payment_balance(request: Request, partner: str = Query(min_length=1),
                    wallet: str = Query(min_length=1)) -> JSONResponse:
    """Prepaid calls left for (partner, wallet)."""
    return _balance(request, partner, wallet)


@router.get("/payments/credits", tags=["payments"])
def payment_credits(request: Request, partner: str = Query(min_length=1),
                    wallet: str = Query(min_length=1)) -> JSONResponse:
    """Alias of ``/payments/balance`` (seen on the live service)."""
    return _balance(request, partner, wallet)


class TwinState:
    """What the routes share: the gate, chat sessions and the token-analysis cache."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.sessions = ChatSessions()
        self.token_cache: dict[tuple[str, str, str, str], dict] = {}
        self.cache_lock = threading.Lock()
