"""The console over HTTP (no browser): pages, JSON API, token, Host, CSRF and read-only refusals."""

from __future__ import annotations

import re

import httpx
import pytest

from agent.app import Agent
from agent.console.server import ConsoleServer, ConsoleSettings

T0 = 1_800_000_000.0
TOKEN = "s3cret-console-token-0123456789"


@pytest.fixture
def agent(tmp_path):
    (tmp_path / "agent.toml").write_text('[chain]\nnetwork = "devnet"\n[[budgets]]\nname = "daily"\n'
                                         'limit_ada = 10\nwindow = "1d"\n')
    with Agent.open(tmp_path, env={}, clock=lambda: T0) as a:
        yield a


@pytest.fixture
def console_factory(agent):
    started = []

    def start(**options):
        server = ConsoleServer(agent, ConsoleSettings(port=0, chain=False, **options)).start()
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


def _park(agent, invoice_id, **summary):
    return agent.approvals.park(invoice_id=invoice_id, host="api.example", route="/chat", job_id=None,
                                summary={"cost_lovelace": 5_000_000, "expires_at": T0 + 600, **summary}, now=T0)


def _csrf(client):
    return client.get("/api/csrf").json()["csrf"]


def test_pages_render(agent, console_factory):
    """Every page answers 200 with its title; an unknown page is a 404."""
    server = console_factory()
    agent.enqueue("chat", {"message": "hi"}, now=T0)
    with httpx.Client(base_url=server.url) as c:
        for path, title in (("/", "Overview"), ("/jobs", "Jobs"), ("/jobs/1", "Job 1"), ("/payments", "Payments"),
                            ("/approvals", "Approvals"), ("/schedules", "Schedules")):
            r = c.get(path)
            assert r.status_code == 200 and f"<h1>{title}</h1>" in r.text, path
        assert c.get("/nope").status_code == 404
        assert c.get("/jobs/99").status_code == 400


def test_approve_by_form_with_csrf(agent, console_factory):
    """A same-origin POST with the CSRF token approves; a second approve is refused and changes nothing."""
    server = console_factory()
    aid = _park(agent, "inv-1")
    with httpx.Client(base_url=server.url) as c:
        page = c.get("/approvals").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        r = c.post(f"/approvals/{aid}/approve", data={"csrf": csrf}, headers={"Origin": server.url})
        assert r.status_code == 303 and "approved" in r.headers["location"]
        assert agent.approvals.get(aid).state == "approved"
        decided = agent.approvals.get(aid).decided_at
        r = c.post(f"/approvals/{aid}/deny", data={"csrf": csrf}, headers={"Origin": server.url})
        assert "already+approved" in r.headers["location"]
        r = c.post(f"/api/approvals/{aid}/approve", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 409 and "already approved" in r.json()["error"]
    assert (agent.approvals.get(aid).state, agent.approvals.get(aid).decided_at) == ("approved", decided)


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "null"},
])
def test_cross_site_post_is_refused(agent, console_factory, headers):
    """A POST from another origin is refused with 403 even with the right CSRF token; nothing changes."""
    server = console_factory()
    aid = _park(agent, "inv-x")
    with httpx.Client(base_url=server.url) as c:
        r = c.post(f"/approvals/{aid}/approve", data={"csrf": _csrf(c)}, headers=headers)
    assert r.status_code == 403 and "cross-site" in r.text
    assert agent.approvals.get(aid).state == "pending"


def test_post_without_csrf_token_is_refused(agent, console_factory):
    """A POST without (or with a wrong) CSRF token is refused; nothing changes."""
    server = console_factory()
    aid = _park(agent, "inv-y")
    with httpx.Client(base_url=server.url) as c:
        assert c.post(f"/approvals/{aid}/deny").status_code == 403
        assert c.post(f"/approvals/{aid}/deny", data={"csrf": "guess"}).status_code == 403
    assert agent.approvals.get(aid).state == "pending"


def test_foreign_host_header_is_refused(agent, console_factory):
    """A request naming another Host (DNS rebinding) is refused before any page."""
    server = console_factory()
    with httpx.Client(base_url=server.url) as c:
        r = c.get("/api/status", headers={"Host": "evil.example:80"})
    assert r.status_code == 421


def test_read_only_shows_but_never_decides(agent, console_factory):
    """In read-only mode the approvals page has no buttons and a POST is refused."""
    server = console_factory(read_only=True)
    aid = _park(agent, "inv-ro")
    with httpx.Client(base_url=server.url) as c:
        page = c.get("/approvals").text
        assert f"approve-{aid}" not in page and "read-only" in page
        r = c.post(f"/api/approvals/{aid}/approve", headers={"X-CSRF-Token": _csrf(c)})
    assert r.status_code == 403 and "read-only" in r.json()["error"]
    assert agent.approvals.get(aid).state == "pending"


def test_token_required_when_set(agent, console_factory):
    """With a token, no token or a wrong one is refused (API 401, pages go to /login); the right one works."""
    server = console_factory(token=TOKEN)
    aid = _park(agent, "inv-t")
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/api/status").status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.get("/api/status", headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 401
        r = c.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert c.post(f"/api/approvals/{aid}/approve").status_code == 401
        r = c.post("/login", data={"token": "wrong"})
        assert r.status_code == 401 and "wrong token" in r.text
        r = c.post("/login", data={"token": TOKEN})
        assert r.status_code == 303 and TOKEN not in r.headers["set-cookie"]
        assert c.get("/").status_code == 200  # the cookie
    assert httpx.get(server.url + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert agent.approvals.get(aid).state == "pending"


def test_non_loopback_needs_a_token():
    """Binding another address without a token is refused at start."""
    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a token"):
        ConsoleSettings(host="0.0.0.0").check()
    ConsoleSettings(host="0.0.0.0", token=TOKEN).check()


def test_payee_change_page_shows_old_and_new(agent, console_factory):
    """The approvals page shows a payee change's pinned (old) and new addresses."""
    agent.pins.pin("api.example", ["addr_test1qold"], T0)
    _park(agent, "inv-p", new_payees=["addr_test1qnew"])
    server = console_factory()
    page = httpx.get(server.url + "/approvals").text
    assert '<code class="old">addr_test1qold</code>' in page and '<code class="new">addr_test1qnew</code>' in page


def test_approving_an_expired_invoice_in_the_console_changes_nothing(agent, console_factory):
    """The approve button on an expired invoice answers with the refusal; the approval stays pending."""
    server = console_factory()
    aid = _park(agent, "inv-old", expires_at=T0 - 5)
    with httpx.Client(base_url=server.url) as c:
        r = c.post(f"/approvals/{aid}/approve", data={"csrf": _csrf(c)}, headers={"Origin": server.url})
        assert r.status_code == 303 and "expired" in r.headers["location"]
        assert "expired" in c.get(r.headers["location"]).text
    assert agent.approvals.get(aid).state == "pending"


def test_no_page_shows_a_secret(tmp_path, console_factory, agent):
    """No page or API answer contains the wallet passphrase, its mnemonic or the console token."""
    import wallets.keystore as keystore
    from wallets.keystore import Keystore

    keystore._SCRYPT_N, saved = 2**12, keystore._SCRYPT_N
    passphrase = "never-shown passphrase 42"
    try:
        _info, words = Keystore(agent.home / "wallets").create("main", network="devnet", passphrase=passphrase)
    finally:
        keystore._SCRYPT_N = saved
    agent.enqueue("chat", {"message": "hi"}, now=T0)
    _park(agent, "inv-s")
    server = console_factory(token=TOKEN)
    secrets = [passphrase, TOKEN, " ".join(words) if isinstance(words, (list, tuple)) else str(words)]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=headers) as c:
        for path in ("/", "/jobs", "/jobs/1", "/payments", "/approvals", "/schedules", "/metrics", "/api/status",
                     "/api/approvals", "/api/jobs/1", "/login"):
            text = c.get(path).text
            for secret in secrets:
                assert secret not in text, path


def test_serve_refuses_bad_input_with_one_line(tmp_path, capsys, monkeypatch):
    """serve on a non-loopback address without a token, or on a bad port: one line, non-zero exit."""
    from agent.cli import main

    (tmp_path / "agent.toml").write_text('[chain]\nnetwork = "devnet"\n')
    monkeypatch.delenv("CARDANO_AGENT_CONSOLE_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--home", str(tmp_path)]) != 0
    assert "needs a token" in capsys.readouterr().err
    assert main(["serve", "--port", "70000", "--home", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "--port" in err and "Traceback" not in err


def test_serve_command_serves_until_sigterm(tmp_path):
    """`cardano-agent serve --port 0 --offline --json` prints its URL, serves the overview, exits 0 on SIGTERM."""
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "agent.toml").write_text('[chain]\nnetwork = "devnet"\n')
    exe = Path(sys.executable).with_name("cardano-agent")
    env = {k: v for k, v in os.environ.items() if k != "CARDANO_AGENT_CONSOLE_TOKEN"}
    proc = subprocess.Popen([str(exe), "serve", "--port", "0", "--offline", "--json", "--home", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        for line in proc.stdout:  # the JSON object ends with a closing brace on its own line
            lines.append(line)
            if line.startswith("}"):
                break
        url = json.loads("".join(lines))["url"]
        assert url.startswith("http://127.0.0.1:")
        r = httpx.get(url + "/")
        assert r.status_code == 200 and "<h1>Overview</h1>" in r.text
        assert httpx.get(url + "/api/status").json()["queue"]["queued"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, proc.stderr.read()
