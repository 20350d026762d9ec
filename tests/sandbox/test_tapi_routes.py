"""The twin's routes without payments: answers, api-key auth, request ids, bad input and faults."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest

from sandbox.billing import Faults, TwinConfig
from sandbox.tapi_content import make_png

ADMIN = {"api-key": "twin-admin-key"}


def test_health_and_api_are_free(unit_twin) -> None:
    """GET /health and /api answer without a key and describe the billing."""
    assert unit_twin.client.get("/health").json()["status"] == "ok"
    api = unit_twin.client.get("/api").json()
    assert api["chain"] == "cardano-devnet" and api["prices"]["chat"] == 2_000_000
    assert api["partners"]["globex"] == {"splitMode": "inclusive", "batchTarget": 5, "outputs": 1}


def test_docs_page_is_served(unit_twin) -> None:
    """/docs and /openapi.json work, listing the public routes."""
    assert unit_twin.client.get("/docs").status_code == 200
    paths = unit_twin.client.get("/openapi.json").json()["paths"]
    assert {"/chat", "/token-analysis", "/images/generate", "/payments/status/{invoice_id}"} <= set(paths)


def test_request_id_is_echoed_or_made_fresh(unit_twin) -> None:
    """X-Request-Id comes back as X-Request-ID; without one each answer gets a fresh id."""
    assert unit_twin.client.get("/health", headers={"X-Request-Id": "req-42"}).headers["x-request-id"] == "req-42"
    a = unit_twin.client.get("/health").headers["x-request-id"]
    b = unit_twin.client.post("/chat", json={"message": "hi"}).headers["x-request-id"]
    assert a and b and a != b


def test_chat_remembers_the_session_and_is_deterministic(unit_twin_factory) -> None:
    """Replies depend only on the session's turns, so two twins answer the same conversation identically."""
    answers = []
    for _ in range(2):
        client = unit_twin_factory().client
        first = client.post("/chat", json={"message": "What is Cardano?", "session_id": "s1"}, headers=ADMIN).json()
        second = client.post("/chat", json={"message": "And Ouroboros?", "session_id": "s1"}, headers=ADMIN).json()
        other = client.post("/chat", json={"message": "hi", "session_id": "s2"}, headers=ADMIN).json()
        answers.append((first, second, other))
    assert answers[0] == answers[1]
    first, second, other = answers[0]
    assert "turn 1" in first["reply"] and "turn 2" in second["reply"] and "What is Cardano?" in second["reply"]
    assert "turn 1" in other["reply"]


def test_chat_structured_output_by_query_or_body(unit_twin) -> None:
    """output=structured (query) or output_mode=structured (body) adds reply_json; plain chat does not."""
    c = unit_twin.client
    assert "reply_json" not in c.post("/chat", json={"message": "a b"}, headers=ADMIN).json()
    by_query = c.post("/chat?output=structured", json={"message": "a b", "session_id": "q"}, headers=ADMIN).json()
    by_body = c.post("/chat", json={"message": "a b", "session_id": "b", "output_mode": "structured"},
                     headers=ADMIN).json()
    assert by_query["reply_json"]["summary"] == by_body["reply_json"]["summary"] == "a b"


def test_chat_streams_sse_frames_ending_done(unit_twin) -> None:
    """stream: true answers text/event-stream content frames whose texts join to the reply, then [DONE]."""
    r = unit_twin.client.post("/chat", json={"message": "stream this", "session_id": "sse", "stream": True},
                              headers=ADMIN)
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    texts = [json.loads(f) for f in frames[:-1]]
    assert all(t["type"] == "content" for t in texts)
    assert "".join(t["text"] for t in texts) == "T twin, session sse, turn 1: you said 'stream this'."


def test_chat_describes_an_image(unit_twin) -> None:
    """image_data as a data URI is decoded and described in the reply."""
    uri = "data:image/png;base64," + base64.b64encode(make_png("x", side=4)).decode()
    reply = unit_twin.client.post("/chat", json={"message": "what is it", "image_data": uri}, headers=ADMIN).json()
    assert "a png 4x4" in reply["reply"]


def _decode_png(b64: str) -> tuple[int, int, bytes]:
    data = base64.b64decode(b64)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat_len = struct.unpack(">I", data[33:37])[0]
    return width, height, zlib.decompress(data[41:41 + idat_len])


def test_images_generate_real_pngs(unit_twin) -> None:
    """images/generate returns n decodable PNGs that depend on the prompt."""
    r = unit_twin.client.post("/images/generate", json={"prompt": "a node in space", "n": 2}, headers=ADMIN).json()
    assert r["success"] and len(r["images"]) == 2 and r["images"][0] != r["images"][1]
    width, height, raw = _decode_png(r["images"][0])
    assert (width, height) == (16, 16) and len(raw) == 16 * (1 + 16 * 3)
    again = unit_twin.client.post("/images/generate", json={"prompt": "a node in space", "n": 2}, headers=ADMIN)
    assert again.json()["images"] == r["images"]


def test_images_edit_upload_and_variations(unit_twin) -> None:
    """edit takes base64 images, upload-and-edit takes multipart files, variations needs a key."""
    png = make_png("in")
    c = unit_twin.client
    edit = c.post("/images/edit", json={"prompt": "warmer", "input_images": [base64.b64encode(png).decode()]},
                  headers=ADMIN)
    assert edit.status_code == 200 and edit.json()["success"]
    up = c.post("/images/upload-and-edit", data={"prompt": "warmer", "n": "1"},
                files={"image": ("in.png", png, "image/png")}, headers=ADMIN)
    assert up.status_code == 200 and len(up.json()["images"]) == 1
    body = {"image": base64.b64encode(png).decode(), "n": 1}
    assert c.post("/images/variations", json=body).status_code == 401
    assert c.post("/images/variations", json=body, headers={"api-key": "twin-chat-key"}).status_code == 403
    assert c.post("/images/variations", json=body, headers=ADMIN).status_code == 200


def test_token_analysis_is_cached_and_cache_can_be_bypassed(unit_twin) -> None:
    """A repeated analysis is served from cache for free; x-bypass-cache: 1 bills and recomputes."""
    c = unit_twin.client
    body = {"token": "SNEK", "policyId": "279c909f348e533da5808898f87f9a14bb2c3dfbbacccd631d927a3f"}
    first = c.post("/token-analysis", json=body, headers=ADMIN)
    assert first.json()["cached"] is False and first.headers["x-billing"] == "api-key"
    repeat = c.post("/token-analysis", json=body)  # no key, no payment: cached results are free
    assert repeat.status_code == 200 and repeat.json()["cached"] is True
    assert {k: v for k, v in repeat.json().items() if k != "cached"} == \
        {k: v for k, v in first.json().items() if k != "cached"}
    assert c.post("/token-analysis", json=body, headers={"x-bypass-cache": "1"}).status_code == 402
    assert c.post("/token-analysis", json=body, headers={"api-key": "wrong"}).status_code == 401


def test_api_keys_401_and_403(unit_twin) -> None:
    """A wrong key is 401; a key without the route's privilege is 403; the right key passes."""
    c = unit_twin.client
    assert c.post("/chat", json={"message": "x"}, headers={"api-key": "nope"}).json()["detail"].startswith(
        "invalid_api_key")
    assert c.post("/images/generate", json={"prompt": "x"}, headers={"api-key": "twin-chat-key"}).status_code == 403
    assert c.post("/chat", json={"message": "x"}, headers={"api-key": "twin-chat-key"}).status_code == 200


@pytest.mark.parametrize("body, where", [
    (b"{not json", "not valid JSON"),
    (json.dumps({"message": 5}).encode(), "message"),
    (json.dumps({"message": ""}).encode(), "message"),
    (json.dumps({"message": "x" * 32_001}).encode(), "message"),
    (json.dumps({"message": "hi", "stream": "yes"}).encode(), "stream"),
    (json.dumps(["message"]).encode(), "body"),
])
def test_bad_chat_bodies_are_422_with_one_line(unit_twin, body: bytes, where: str) -> None:
    """Malformed JSON or wrong types: 422 with a one-line detail naming the field; nothing issued."""
    r = unit_twin.client.post("/chat", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and where in detail


def test_fifty_megabyte_body_is_413(unit_twin) -> None:
    """A 50 MB body is refused with 413 before anything is parsed or billed."""
    r = unit_twin.client.post("/chat", content=b"x" * (50 * 1024 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"].startswith("payload_too_large")


def test_oversized_base64_image_is_413_and_bad_base64_422(unit_twin_factory) -> None:
    """A base64 image above the image limit is 413; text that is not base64 is 422."""
    client = unit_twin_factory(TwinConfig().with_(max_image_bytes=1000)).client
    big = base64.b64encode(b"\0" * 2000).decode()
    r = client.post("/images/edit", json={"prompt": "p", "input_images": [big]})
    assert r.status_code == 413 and r.json()["detail"].startswith("image_too_large")
    assert client.post("/chat", json={"message": "m", "image_data": "data:image/png;base64," + big}).status_code == 413
    assert client.post("/images/edit", json={"prompt": "p", "input_images": ["%%%"]}).status_code == 422


def test_injected_faults_answer_503_with_nothing_issued(unit_twin_factory) -> None:
    """error_rate 1 answers every API call 503 (free routes stay up)."""
    twin = unit_twin_factory(TwinConfig().with_(faults=Faults(error_rate=1.0)))
    r = twin.client.post("/chat", json={"message": "x"})
    assert r.status_code == 503 and r.json()["detail"].startswith("injected_fault") and r.headers["retry-after"]
    assert twin.client.get("/health").status_code == 200


def test_injected_delay_holds_the_answer(unit_twin_factory) -> None:
    """delay_ms makes API calls answer at least that much later (the server waits, not the test)."""
    import time

    twin = unit_twin_factory(TwinConfig().with_(faults=Faults(delay_ms=150)))
    started = time.monotonic()
    assert twin.client.post("/chat", json={"message": "x"}, headers=ADMIN).status_code == 200
    assert time.monotonic() - started >= 0.15


def test_uploaded_file_over_the_limit_is_413(unit_twin_factory) -> None:
    """upload-and-edit refuses a file above the image limit with 413, before billing."""
    client = unit_twin_factory(TwinConfig().with_(max_image_bytes=100)).client
    r = client.post("/images/upload-and-edit", data={"prompt": "p"}, files={"image": ("a.png", b"\0" * 101, "image/png")})
    assert r.status_code == 413 and r.json()["detail"].startswith("image_too_large")
