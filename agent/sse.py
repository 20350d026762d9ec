"""The T API chat stream: Server-Sent Events, read with ``httpx-sse``, of JSON frames until ``data: [DONE]``.

The event-stream format (fields, multi-line data, comments, CR/LF/CRLF line ends, and a
last event left incomplete by the end of the stream, which is dropped as the spec says) is
httpx-sse's; this module turns frames into :class:`ChatEvent` and tells a stream that
finished (``[DONE]``) from one that was cut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Generator

import httpx
from httpx_sse import EventSource, SSEError

from agent.auth import NETWORK_ERRORS, short_detail
from agent.errors import ApiError, TransientApiError

DONE = "[DONE]"
"""The data of the frame that ends an OpenAI-style stream."""


# --- the T API chat stream: SSE frames of JSON until data: [DONE] ---------------------------


@dataclass(frozen=True)
class ChatEvent:
    type: str
    text: str
    raw: Any = field(repr=False)


def chat_event(data: str, event: str = "message") -> ChatEvent:
    """Turn one SSE frame's data into a :class:`ChatEvent` (an ``error`` frame raises :class:`ApiError`)."""
    try:
        payload = json.loads(data)
    except ValueError:
        return ChatEvent(type=event, text=data, raw=data)
    if not isinstance(payload, dict):
        return ChatEvent(type=event, text=str(payload), raw=payload)
    kind = str(payload.get("type") or event)
    if kind == "error":
        raise ApiError(f"chat stream error: {short_detail(payload.get('error') or payload)}", status=200,
                       detail=payload)
    text = payload.get("text", payload.get("content", payload.get("delta", "")))
    return ChatEvent(type=kind, text=text if isinstance(text, str) else "", raw=payload)


def _not_a_stream(response: httpx.Response, request_id: str) -> ApiError:
    kind = response.headers.get("content-type", "").partition(";")[0].strip()
    came = f"Content-Type {kind}" if kind else "no Content-Type"
    return ApiError(f"POST /chat stream: answered with {came}, not text/event-stream (request_id {request_id})",
                    status=response.status_code, request_id=request_id)


def _stream_cut(response: httpx.Response, request_id: str, exc: Exception | None = None) -> TransientApiError:
    reason = type(exc).__name__ if exc is not None else "the stream ended before [DONE]"
    return TransientApiError(f"POST /chat stream cut: {reason} (request_id {request_id})",
                             status=response.status_code, request_id=request_id)


class ChatStream:
    """The events of a streamed chat answer; iterate it, close it (or use ``with``) when stopping early."""

    def __init__(self, response: httpx.Response, request_id: str) -> None:
        self.request_id = request_id
        self._response = response
        self._events = self._generate()

    def _generate(self) -> Generator[ChatEvent, None, None]:
        try:
            for sse in EventSource(self._response).iter_sse():
                if sse.data.strip() == DONE:
                    return
                if sse.data:  # httpx-sse also hands on events with no data (an id or event line alone)
                    yield chat_event(sse.data, sse.event)
        except SSEError as exc:
            raise _not_a_stream(self._response, self.request_id) from exc
        except NETWORK_ERRORS as exc:
            raise _stream_cut(self._response, self.request_id, exc) from exc
        finally:
            self._response.close()
        raise _stream_cut(self._response, self.request_id)

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> ChatEvent:
        return next(self._events)

    def close(self) -> None:
        self._events.close()
        self._response.close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
