"""The MCP server through the SDK's own client, against the sandbox: paid tools say what they cost."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

pytest.importorskip("mcp", reason="the MCP SDK comes with the [mcp] and test extras")

from mcp import Client, StdioServerParameters  # noqa: E402

from agent.mcp_server import build_server  # noqa: E402
from tests.fixtures.agent_home import PASSPHRASE  # noqa: E402

TOOLS = {"chat", "token_analysis", "generate_image", "fetch_x402", "queue_job", "job_result", "budgets", "spend",
         "pending_approvals"}


def _data(result):
    """A tool answer as a dict (structured content, else the JSON text)."""
    if getattr(result, "structured_content", None):
        data = result.structured_content
        return data.get("result", data) if set(data) == {"result"} else data
    return json.loads(result.content[0].text)


def _text(result):
    return " ".join(getattr(c, "text", "") for c in result.content)


def _call(server, calls):
    async def go():
        out = []
        async with Client(server) as client:
            for name, args in calls:
                out.append(await client.call_tool(name, args) if name != "list" else await client.list_tools())
        return out

    return anyio.run(go)


def test_paid_tool_answers_with_its_cost_and_a_budget_breaking_call_is_refused(agent_home_factory):
    """chat pays once and says what it cost (equal to the ledger and the wallet's loss); the next chat
    would break the 3 ADA budget: refused, nothing paid."""
    home = agent_home_factory(extra='[[budgets]]\nname = "mcp"\nlimit_ada = 3\n')
    before = home.balance()
    with home.open() as agent:
        listed, paid, refused = _call(build_server(agent), [("list", None), ("chat", {"message": "What is ADA?"}),
                                                            ("chat", {"message": "And again?"})])
        rows = agent.ledger.rows()
    assert TOOLS <= {t.name for t in listed.tools}
    assert not paid.is_error, _text(paid)
    data = _data(paid)
    assert data["result"]["reply"]
    (row,) = [r for r in rows if r.paid]
    assert data["paid"]["lovelace"] == row.cost_lovelace == before - home.balance()
    assert data["paid"]["payments"][0]["tx_id"] == row.tx_id
    assert refused.is_error and "budget" in _text(refused) and "nothing was paid" in _text(refused)
    assert home.balance() == before - row.cost_lovelace


def test_fetch_x402_pays_any_url_and_says_what_it_cost(agent_home):
    """fetch_x402 POSTs to the twin's /chat URL directly: 200, the reply, and a cost equal to the wallet's loss."""
    before = agent_home.balance()
    with agent_home.open() as agent:
        (result,) = _call(build_server(agent), [("fetch_x402", {"url": agent_home.twin.url + "/chat",
                                                                "method": "POST",
                                                                "json_body": {"message": "direct"}})])
        (row,) = [r for r in agent.ledger.rows() if r.paid]
    assert not result.is_error, _text(result)
    data = _data(result)
    assert data["result"]["status"] == 200 and data["result"]["body"]
    assert data["paid"]["lovelace"] == row.cost_lovelace == before - agent_home.balance()


def test_malformed_arguments_are_refused_and_pay_nothing(agent_home):
    """A missing argument, a wrong type, an unknown job kind or field: a tool error, nothing paid."""
    before = agent_home.balance()
    with agent_home.open() as agent:
        results = _call(build_server(agent), [
            ("chat", {}),
            ("job_result", {"job_id": "seven"}),
            ("queue_job", {"kind": "mine-bitcoin", "request": {}}),
            ("queue_job", {"kind": "chat", "request": {"message": 5}}),
            ("generate_image", {"prompt": "a cat", "n": 9}),
            ("fetch_x402", {"url": "file:///etc/passwd"}),
            ("spend", {"days": 0}),
        ])
        paid = agent.ledger.rows()
        jobs = agent.jobs.list()
    for r in results:
        assert r.is_error, _text(r)
    assert paid == [] and jobs == [] and agent_home.balance() == before


def test_more_than_the_policy_allows_is_refused(agent_home_factory):
    """An image above max_per_call_ada (4 ADA > 1 ADA) is refused by the policy: nothing paid."""
    home = agent_home_factory(max_per_call_ada="1")
    before = home.balance()
    with home.open() as agent:
        (result,) = _call(build_server(agent), [("generate_image", {"prompt": "a cat"})])
        paid = [r for r in agent.ledger.rows() if r.paid]
    assert result.is_error and "nothing was paid" in _text(result)
    assert paid == [] and home.balance() == before


def test_queue_a_job_and_read_budgets_and_approvals(agent_home):
    """queue_job queues (pays nothing yet); job_result, budgets and pending_approvals read the home."""
    with agent_home.open() as agent:
        queued, result, budgets, approvals = _call(build_server(agent), [
            ("queue_job", {"kind": "chat", "request": {"message": "later"}, "tags": ["mcp"]}),
            ("job_result", {"job_id": 1}),
            ("budgets", {}),
            ("pending_approvals", {}),
        ])
    assert _data(queued)["result"]["state"] == "queued" and _data(queued)["paid"]["lovelace"] == 0
    assert _data(result)["result"]["id"] == 1 and _data(result)["paid"]["lovelace"] == 0
    assert _data(budgets)["result"] == []
    assert _data(approvals)["result"]["pending"] == []


@pytest.mark.slow
def test_stdio_server_pays_a_call(agent_home_factory):
    """`cardano-agent mcp` on stdio, driven by the SDK's stdio client: list tools, pay one chat."""
    home = agent_home_factory(real_kdf=True)
    before = home.balance()
    exe = Path(sys.executable).with_name("cardano-agent")
    env = {**os.environ, "CARDANO_AGENT_PASSPHRASE": PASSPHRASE}
    params = StdioServerParameters(command=str(exe), args=["mcp", "--home", str(home.home)], env=env)

    async def go():
        async with Client(params) as client:
            tools = await client.list_tools()
            return tools, await client.call_tool("chat", {"message": "over stdio"})

    tools, result = anyio.run(go)
    assert TOOLS <= {t.name for t in tools.tools}
    assert not result.is_error, _text(result)
    cost = _data(result)["paid"]["lovelace"]
    assert cost > 0 and before - home.balance() == cost


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_http_server_needs_its_token(agent_home_factory):
    """`cardano-agent mcp --http PORT`: no or a wrong bearer token gets 401; the right one lists the tools."""
    import subprocess
    import time

    import httpx
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    home = agent_home_factory(funds=0)
    token = "mcp-test-token-0123456789abcdef"
    port = _free_port()
    exe = Path(sys.executable).with_name("cardano-agent")
    env = {**os.environ, "CARDANO_AGENT_CONSOLE_TOKEN": token}
    proc = subprocess.Popen([str(exe), "mcp", "--http", str(port), "--home", str(home.home)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for the listener, not for time: each try is a real connection attempt
            try:
                first = httpx.post(url, json={}, timeout=5)
                break
            except httpx.ConnectError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "mcp --http did not start listening"
                time.sleep(0.1)
        assert first.status_code == 401
        wrong = httpx.post(url, json={}, headers={"Authorization": "Bearer not-the-token-at-all"}, timeout=5)
        assert wrong.status_code == 401

        async def go():
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
                async with Client(streamable_http_client(url, http_client=http)) as client:
                    return await client.list_tools()

        tools = anyio.run(go)
        assert TOOLS <= {t.name for t in tools.tools}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_http_without_a_token_is_refused(tmp_path, capsys, monkeypatch):
    """mcp --http with no token set: one line, non-zero exit, nothing served."""
    from agent.cli import main

    (tmp_path / "agent.toml").write_text('[chain]\nnetwork = "devnet"\n')
    monkeypatch.delenv("CARDANO_AGENT_CONSOLE_TOKEN", raising=False)
    assert main(["mcp", "--http", "9", "--home", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "needs a bearer token" in err and "Traceback" not in err


def test_mcp_without_the_sdk_says_which_extra(tmp_path, capsys, monkeypatch):
    """Without the mcp package, `cardano-agent mcp` says to install the [mcp] extra: one line, non-zero exit."""
    from agent.cli import main

    (tmp_path / "agent.toml").write_text('[chain]\nnetwork = "devnet"\n')
    monkeypatch.setitem(sys.modules, "mcp", None)
    assert main(["mcp", "--home", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "cardano-pay-agent[mcp]" in err and "Traceback" not in err
