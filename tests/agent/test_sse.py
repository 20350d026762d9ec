"""SSE parsing and the chat stream events built on it."""

from __future__ import annotations

import httpx
import pytest

from agent.errors import ApiError, TransientApiError
from agent.sse import ChatStream, SSEDecoder, SSEEvent, chat_event, iter_sse


def test_frames_split_on_blank_lines_and_join_multiline_data() -> None:
    """A blank line dispatches; several data lines join with newlines; comments are ignored."""
    lines = [": keep-alive", "event: note", "data: one", "data: two", "", "data:three", "", "id: 7", "retry: 1500",
             "data: four", ""]
    events = list(iter_sse(lines))
    assert events[0] == SSEEvent(event="note", data="one\ntwo")
    assert events[1] == SSEEvent(data="three")
    assert events[2] == SSEEvent(data="four", id="7", retry_ms=1500)


def test_trailing_event_without_blank_line_is_dispatched() -> None:
    """A stream that closes right after its last data line still yields that event."""
    events = list(iter_sse(["data: [DONE]"]))
    assert len(events) == 1 and events[0].is_done


def test_bom_and_events_without_data() -> None:
    """A leading BOM is dropped and an event with no data dispatches nothing."""
    decoder = SSEDecoder()
    assert decoder.feed("\ufeffevent: ping") is None
    assert decoder.feed("") is None
    assert decoder.feed("data: x") is None
    assert decoder.feed("") == SSEEvent(data="x")


def test_chat_event_reads_json_text_and_falls_back_to_raw_text() -> None:
    """JSON frames give type and text; non-JSON data is kept as text of the SSE event type."""
    event = chat_event('{"type": "content", "text": "Hel"}')
    assert (event.type, event.text) == ("content", "Hel")
    plain = chat_event("just words", "message")
    assert (plain.type, plain.text, plain.raw) == ("message", "just words", "just words")


def test_error_frame_raises_api_error() -> None:
    """An error frame in the stream raises ApiError instead of being mistaken for text."""
    with pytest.raises(ApiError, match="upstream down"):
        chat_event('{"type": "error", "error": "upstream down"}')


def _stream(body: bytes) -> ChatStream:
    response = httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    return ChatStream(response, "rid")


def test_chat_stream_stops_at_done() -> None:
    """ChatStream yields content events up to [DONE] and ignores anything after it."""
    body = b'data: {"type":"content","text":"a"}\n\ndata: {"type":"content","text":"b"}\n\ndata: [DONE]\n\ndata: x\n\n'
    assert [e.text for e in _stream(body)] == ["a", "b"]


def test_chat_stream_cut_before_done_raises_transient() -> None:
    """A stream that ends without [DONE] raises TransientApiError after the events it had."""
    stream = _stream(b'data: {"type":"content","text":"a"}\n\n')
    assert next(stream).text == "a"
    with pytest.raises(TransientApiError, match="before \\[DONE\\]"):
        next(stream)
