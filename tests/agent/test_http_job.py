"""The `http` job kind: any x402 API (T or v2) through `call` and the queue."""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.errors import JobError
from agent.http_job import INLINE_BODY_BYTES, check_request
from sandbox.x402_server import DEFAULT_PAY_TO, Routes, X402Server
from tests.fixtures.agent_home import PASSPHRASE


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", PASSPHRASE)
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cardano_agent", False):
            root.removeHandler(handler)
            handler.close()


@pytest.fixture
def v2_server(agent_home: Any) -> Iterator[X402Server]:
    with X402Server.start(agent_home.devnet, routes=Routes(confirmations=0)) as server:
        yield server


def cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("request_, needle", [
    ({}, "missing field 'url'"),
    ({"url": "ftp://x/y"}, "http(s) URL"),
    ({"url": "http://x/y", "method": "TRACE"}, "method"),
    ({"url": "http://x/y", "headers": {"PAYMENT-SIGNATURE": "x"}}, "set by the agent"),
    ({"url": "http://x/y", "headers": {"A": "b\nc"}}, "one-line"),
    ({"url": "http://x/y", "json": {"a": 1}, "body": "x"}, "not both"),
])
def test_bad_http_requests_are_refused_at_add(request_: dict, needle: str) -> None:
    """A request that could never run is refused when the job is added, with one clear line."""
    with pytest.raises(JobError) as err:
        check_request(request_)
    assert needle in str(err.value)


def test_call_http_pays_a_v2_server(agent_home: Any, v2_server: X402Server, capsys: Any) -> None:
    """`call http URL` pays the v2 402 and prints status, headers and body as JSON."""
    before = agent_home.balance(DEFAULT_PAY_TO)
    code, out, err = cli(capsys, "call", "http", f"{v2_server.url}/premium", "--method", "POST",
                         "--json-body", '{"q": 1}', "--home", str(agent_home.home), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["status"] == 200 and data["body"]["content"] == "premium"
    assert "payment-response" in {k.lower() for k in data["headers"]}
    assert agent_home.balance(DEFAULT_PAY_TO) == before + 1_000_000


def test_call_http_pays_a_t_402_too(agent_home: Any, capsys: Any) -> None:
    """The same `call http` pays the T dialect's 402 (the twin's /chat)."""
    code, out, err = cli(capsys, "call", "http", "--url", f"{agent_home.twin.url}/chat", "--method", "POST",
                         "--json-body", '{"message": "hi"}', "--home", str(agent_home.home), "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == 200


def test_bad_json_body_is_one_line(agent_home: Any, capsys: Any) -> None:
    """`--json-body` that is not JSON: one error line, non-zero exit, nothing queued."""
    code, _, err = cli(capsys, "job", "add", "http", "http://127.0.0.1:9/x", "--json-body", "{nope",
                       "--home", str(agent_home.home))
    assert code != 0 and err.startswith("error: ") and "--json-body" in err and len(err.strip().splitlines()) == 1


def test_http_job_runs_through_the_queue_with_budgets(agent_home: Any, v2_server: X402Server, capsys: Any) -> None:
    """`job add http` queues the call; `run` pays it; the result keeps status, headers and body; tags reach budgets."""
    home = str(agent_home.home)
    code, out, err = cli(capsys, "job", "add", "http", "--url", f"{v2_server.url}/premium", "--tag", "research",
                         "--home", home, "--json")
    assert code == 0, err
    job = json.loads(out)
    code, out, err = cli(capsys, "run", "--until-idle", "--home", home)
    assert code == 0 and "1 done, 0 failed" in out, out + err
    code, out, _ = cli(capsys, "job", "show", str(job["id"]), "--home", home, "--json")
    shown = json.loads(out)
    assert shown["state"] == "done" and shown["payments"][0]["state"] == "settled"
    result = json.loads(open(shown["result_path"]).read())
    assert result["status"] == 200 and result["body"]["content"] == "premium"


def test_large_body_goes_to_a_file(agent_home: Any) -> None:
    """A body over the inline limit is written under results/ and the result names it."""
    import httpx

    from agent.http_job import http_call

    big = b"x" * (INLINE_BODY_BYTES + 1)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=big))
    with agent_home.open() as agent:
        result = http_call(agent, {"url": "http://127.0.0.1:9/big", "method": "GET"}, "req-1", transport=transport)
    assert result["body_bytes"] == len(big) and "body" not in result
    assert open(result["body_file"], "rb").read() == big


def _lazy_body(chunk_bytes: int, chunks: int, produced: list[int]) -> Any:
    """A response stream made a chunk at a time; ``produced`` counts what was handed out."""
    import httpx

    class Lazy(httpx.SyncByteStream):
        def __iter__(self) -> Any:
            for _ in range(chunks):
                produced[0] += chunk_bytes
                yield b"y" * chunk_bytes

    return Lazy()


def test_huge_body_is_cut_off_at_the_cap_and_leaves_no_file(agent_home: Any) -> None:
    """A 300 MB answer to an http job stops at [api] max_body_mb (plus one chunk); nothing is kept."""
    import dataclasses

    import httpx

    from agent.auth import ResponseTooLargeError
    from agent.http_job import http_call

    produced = [0]
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=_lazy_body(1 << 20, 300, produced)))
    with agent_home.open() as agent:
        agent.config = dataclasses.replace(agent.config, api=dataclasses.replace(agent.config.api,
                                                                                  max_body_bytes=8 << 20))
        with pytest.raises(ResponseTooLargeError, match="max_body_mb"):
            http_call(agent, {"url": "http://127.0.0.1:9/huge", "method": "GET"}, "req-2", transport=transport)
        assert produced[0] <= (8 << 20) + (1 << 20)
        results = Path(agent.home) / "results"
        assert not results.exists() or not any(results.iterdir())


def test_large_body_is_streamed_to_its_file_a_chunk_at_a_time(agent_home: Any) -> None:
    """A 6 MB answer under the cap lands whole in its file, written as it arrives."""
    import httpx

    from agent.http_job import http_call

    produced = [0]
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=_lazy_body(1 << 20, 6, produced)))
    with agent_home.open() as agent:
        result = http_call(agent, {"url": "http://127.0.0.1:9/six", "method": "GET"}, "req-3", transport=transport)
    assert result["body_bytes"] == 6 << 20 and produced[0] == 6 << 20
    assert Path(result["body_file"]).stat().st_size == 6 << 20
