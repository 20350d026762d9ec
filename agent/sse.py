"""Server-Sent Events: an incremental ``text/event-stream`` parser, and the chat stream built on it.

Lines go in (``httpx.Response.iter_lines`` already splits on CR, LF and CRLF), events come
out. A blank line dispatches the event; ``data`` lines are joined with newlines; comments
(``:``) are ignored. At the end of the stream a pending event is still dispatched, because
servers often close right after their last ``data:`` line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, AsyncIterable, AsyncIterator, Generator, Iterable, Iterator

import httpx

from agent.errors import ApiError, TransientApiError

_CUT_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

DONE = "[DONE]"
"""The data of the frame that ends an OpenAI-style stream."""


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event: its type, its data, and the last event id seen."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry_ms: int | None = None

    @property
    def is_done(self) -> bool:
        """True for the ``data: [DONE]`` frame."""
        return self.data.strip() == DONE


class SSEDecoder:
    """Feed it lines one at a time; it returns an event whenever a blank line completes one."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry_ms: int | None = None
        self._started = False

    def feed(self, line: str) -> SSEEvent | None:
        """Take one line (without its line ending); return the event it completes, if any."""
        if not self._started:
            self._started = True
            line = line.removeprefix("\ufeff")
        line = line.rstrip("\r\n")
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry":
            if value.isdigit():
                self._retry_ms = int(value)
        return None

    def flush(self) -> SSEEvent | None:
        """End of stream: dispatch what is pending (if it has data)."""
        return self._dispatch()

    def _dispatch(self) -> SSEEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEEvent(
            event=event or "message",
            data="\n".join(data),
            id=self._last_id,
            retry_ms=self._retry_ms,
        )


def iter_sse(lines: Iterable[str]) -> Iterator[SSEEvent]:
    """Parse an iterable of lines into events, dispatching a trailing one at the end."""
    decoder = SSEDecoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
    tail = decoder.flush()
    if tail is not None:
        yield tail


async def aiter_sse(lines: AsyncIterable[str]) -> AsyncIterator[SSEEvent]:
    """The async twin of :func:`iter_sse`."""
    decoder = SSEDecoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
    tail = decoder.flush()
    if tail is not None:
        yield tail


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
        raise ApiError(f"chat stream error: {short_detail(payload.get('error') or payload)}", status=200, detail=payload)
    text = payload.get("text", payload.get("content", payload.get("delta", "")))
    return ChatEvent(type=kind, text=text if isinstance(text, str) else "", raw=payload)


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
            for sse in iter_sse(self._response.iter_lines()):
                if sse.is_done:
                    return
                yield chat_event(sse.data, sse.event)
        except _CUT_EXCEPTIONS as exc:
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


class AsyncChatStream:
    """The async twin of :class:`ChatStream`."""

    def __init__(self, response: httpx.Response, request_id: str) -> None:
        self.request_id = request_id
        self._response = response
        self._events = self._generate()

    async def _generate(self) -> AsyncGenerator[ChatEvent, None]:
        try:
            async for sse in aiter_sse(self._response.aiter_lines()):
                if sse.is_done:
                    return
                yield chat_event(sse.data, sse.event)
        except _CUT_EXCEPTIONS as exc:
            raise _stream_cut(self._response, self.request_id, exc) from exc
        finally:
            await self._response.aclose()
        raise _stream_cut(self._response, self.request_id)

    def __aiter__(self) -> AsyncChatStream:
        return self

    async def __anext__(self) -> ChatEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()
        await self._response.aclose()

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def short_detail(detail: Any, limit: int = 200) -> str:
    """An error detail as one short line (JSON for structures)."""
    text = detail if isinstance(detail, str) else json.dumps(detail, separators=(",", ":"), default=str)
    from agent.output import terminal_safe

    text = " ".join(terminal_safe(str(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
