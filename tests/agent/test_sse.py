"""SSE parsing and the chat stream events built on it."""

from __future__ import annotations

import httpx
import pytest

from agent.errors import ApiError, TransientApiError
from agent.sse import ChatStream, chat_event


def test_frames_split_on_blank_lines_and_join_multiline_data() -> None:
    """A blank line dispatches; several data lines join with newlines; comments, id and retry are no text.

    Line ends may be LF, CRLF or CR; a non-JSON frame is text of its SSE event type.
    """
    body = (b": keep-alive\n\nevent: note\ndata: one\ndata: two\n\ndata:three\r\n\r\n"
            b"id: 7\rretry: 1500\rdata: four\r\rdata: [DONE]\n\n")
    assert [(e.type, e.text) for e in _stream(body)] == [("note", "one\ntwo"), ("message", "three"),
                                                         ("message", "four")]


def test_an_incomplete_last_event_is_dropped() -> None:
    """A stream ending without the blank line after its last frame: that frame is not dispatched (SSE spec).

    So a ``data: [DONE]`` cut before its blank line is not taken as the end: the stream was cut.
    """
    cut_done = _stream(b'data: {"type":"content","text":"a"}\n\ndata: [DONE]')
    assert next(cut_done).text == "a"
    with pytest.raises(TransientApiError, match="before \\[DONE\\]"):
        next(cut_done)
    cut_text = _stream(b'data: {"type":"content","text":"a"}\n\ndata: {"type":"content","text":"half"}\n')
    assert [next(cut_text).text] == ["a"]
    with pytest.raises(TransientApiError, match="before \\[DONE\\]"):
        next(cut_text)


def test_events_without_data_dispatch_nothing() -> None:
    """An event line or an id alone, ended by a blank line, yields no chat event."""
    body = b'event: ping\n\nid: 1\n\ndata: {"type":"content","text":"x"}\n\n\n\ndata: [DONE]\n\n'
    assert [e.text for e in _stream(body)] == ["x"]


def test_an_answer_that_is_not_an_event_stream_is_a_clear_api_error() -> None:
    """A 200 JSON answer to a streamed chat: ApiError naming what came (not a silent empty stream)."""
    stream = ChatStream(httpx.Response(200, json={"reply": "whole"}), "rid")
    with pytest.raises(ApiError, match="Content-Type application/json, not text/event-stream") as caught:
        next(stream)
    assert not isinstance(caught.value, TransientApiError) and caught.value.request_id == "rid"


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
