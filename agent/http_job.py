"""The ``http`` job kind: call any URL, paying whatever 402 comes (T dialect or x402 v2).

The request is checked when the job is added (``check_request``) and run through the agent's
x402 auth (``http_call``), so the queue, budgets, schedules and crash safety serve any x402
API, not only T. The result keeps the status, the headers and the body; a body over
``INLINE_BODY_BYTES`` is streamed to a file under ``results/`` (never held whole in memory)
and the result names it; past ``[api] max_body_mb`` the answer is cut off and refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from agent.errors import ApiError, JobError, TransientApiError

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
MAX_URL_CHARS = 2048
MAX_BODY_CHARS = 1_000_000
MAX_HEADERS = 32
INLINE_BODY_BYTES = 64 * 1024
_RESERVED_HEADERS = {"payment-signature", "x-payment", "x-invoice-id", "x-request-id", "host", "content-length"}


def check_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise an ``http`` job request: ``url``, ``method``, ``headers``, and ``json`` or ``body``.

    Raises:
        JobError: a missing or malformed field (one clear line).
    """
    url = request.get("url")
    if not isinstance(url, str) or not url.strip():
        raise JobError("missing field 'url'")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > MAX_URL_CHARS:
        raise JobError(f"field 'url' must be an http(s) URL of at most {MAX_URL_CHARS} characters")
    method = str(request.get("method") or "GET").upper()
    if method not in METHODS:
        raise JobError(f"field 'method' must be one of {', '.join(METHODS)}")
    headers_raw = request.get("headers") or {}
    if not isinstance(headers_raw, Mapping) or len(headers_raw) > MAX_HEADERS:
        raise JobError(f"field 'headers' must be a table of at most {MAX_HEADERS} name = value")
    headers: dict[str, str] = {}
    for name, value in headers_raw.items():
        if not isinstance(name, str) or not isinstance(value, str) or not name.isascii() or "\n" in value \
                or "\r" in value or not name.strip() or ":" in name:
            raise JobError(f"header {name!r} must be a name and a one-line value")
        if name.lower() in _RESERVED_HEADERS:
            raise JobError(f"header {name!r} is set by the agent itself")
        headers[name] = value
    out: dict[str, Any] = {"url": url, "method": method}
    if headers:
        out["headers"] = headers
    if "json" in request and request.get("body") is not None:
        raise JobError("give 'json' or 'body', not both")
    if "json" in request:
        try:
            text = json.dumps(request["json"])
        except (TypeError, ValueError):
            raise JobError("field 'json' is not JSON") from None
        if len(text) > MAX_BODY_CHARS:
            raise JobError(f"field 'json' is longer than {MAX_BODY_CHARS} characters")
        out["json"] = request["json"]
    elif request.get("body") is not None:
        body = request["body"]
        if not isinstance(body, str) or len(body) > MAX_BODY_CHARS:
            raise JobError(f"field 'body' must be text of at most {MAX_BODY_CHARS} characters")
        out["body"] = body
    return out


def parse_json_option(text: str) -> Any:
    """The value of ``--json`` (one clear line when it is not JSON)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobError(f"--json-body is not valid JSON: {exc.msg} at character {exc.pos}") from None


def parse_header_option(text: str) -> tuple[str, str]:
    """``"Name: value"`` from ``--header``."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise JobError(f"--header must look like 'Name: value', got {text[:80]!r}")
    return name.strip(), value.strip()


def http_call(agent: Any, request: Mapping[str, Any], request_id: str, *, transport: Any = None) -> dict[str, Any]:
    """Make the call (paying a 402 through ``agent.x402_auth()``); return status, headers and body.

    Raises:
        TransientApiError: 5xx, 408, 425, 429 or a transport error (the job is retried; a paid
            call's resend presents the same payment).
        ApiError: another 4xx.
    """
    import httpx

    from agent.auth import DEFAULT_MAX_BODY_BYTES
    from agent.retry import is_transient_status

    headers = {**dict(request.get("headers") or {}), "X-Request-Id": request_id}
    kwargs: dict[str, Any] = {}
    if "json" in request:
        kwargs["json"] = request["json"]
    elif request.get("body") is not None:
        kwargs["content"] = str(request["body"]).encode()
    api = getattr(agent.config, "api", None)
    timeout = getattr(api, "timeout_s", 30.0)
    limit = int(getattr(api, "max_body_bytes", DEFAULT_MAX_BODY_BYTES))
    client_kwargs: dict[str, Any] = {"auth": agent.x402_auth(partner=None), "timeout": timeout}
    if transport is not None:
        client_kwargs["transport"] = transport
    try:
        with httpx.Client(**client_kwargs) as http:
            with http.stream(str(request.get("method", "GET")), str(request["url"]), headers=headers,
                             **kwargs) as response:
                if response.status_code >= 400:
                    text = _head(response).decode("utf-8", "replace")[:300].replace("\n", " ")
                    error = TransientApiError if is_transient_status(response.status_code) else ApiError
                    raise error(f"{request.get('method', 'GET')} {request.get('url')} answered HTTP "
                                f"{response.status_code}: {text}", status=response.status_code, detail=text,
                                request_id=request_id)
                return _result(agent, response, request_id, limit)
    except httpx.TransportError as exc:
        raise TransientApiError(f"{request.get('url')}: {type(exc).__name__}: {exc}", status=0,
                                request_id=request_id) from exc


def _head(response: Any, size: int = 4096) -> bytes:
    """The first ``size`` bytes of an error answer (the rest is never read)."""
    got = b""
    for chunk in response.iter_bytes():
        got += chunk
        if len(got) >= size:
            break
    return got[:size]


def _result(agent: Any, response: Any, request_id: str, limit: int) -> dict[str, Any]:
    """Status, headers and body; a body over ``INLINE_BODY_BYTES`` is streamed to a file, never held whole.

    Raises:
        ResponseTooLargeError: the body went past ``limit`` (``[api] max_body_mb``); no file is left.
    """
    from agent.auth import ResponseTooLargeError

    data: dict[str, Any] = {"status": response.status_code, "headers": dict(response.headers),
                            "request_id": request_id}
    head, spill = bytearray(), None
    folder = Path(agent.home) / "results"
    path = folder / f"http-{_safe(request_id)}.body"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    total = 0
    try:
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > limit:
                raise ResponseTooLargeError(
                    f"the answer from {response.url.host} went past {limit // (1024 * 1024)} MB: "
                    "cut off ([api] max_body_mb)", limit_bytes=limit)
            if spill is None and len(head) + len(chunk) <= INLINE_BODY_BYTES:
                head += chunk
                continue
            if spill is None:
                folder.mkdir(parents=True, exist_ok=True)
                spill = open(tmp, "wb")
                spill.write(head)
                head = bytearray()
            spill.write(chunk)
        if spill is not None:
            spill.close()
            os.replace(tmp, path)
            data.update(body_file=str(path), body_bytes=total)
            return data
    except BaseException:
        if spill is not None:
            spill.close()
            tmp.unlink(missing_ok=True)
        raise
    content = bytes(head)
    kind = response.headers.get("content-type", "")
    if "json" in kind:
        try:
            data["body"] = json.loads(content or b"null")
            return data
        except ValueError:
            pass
    try:
        data["body"] = content.decode("utf-8")
    except UnicodeDecodeError:
        import base64

        data["body_base64"] = base64.b64encode(content).decode()
    return data


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)[:80]
