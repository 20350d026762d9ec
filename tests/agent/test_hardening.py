"""Issue 10's smaller holes off the money path: server text on a terminal, home permissions, the
passphrase in the environment of `run`, a home the log cannot be written to, an empty
keystore salt, and the sandbox's Ogmios on a deeply nested frame."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.cli import main
from tests.fixtures.agent_home import PASSPHRASE

ESC = "\x1b"
HOSTILE = f"{ESC}[2J{ESC}]0;pwned\x07gotcha{ESC}[31m\r\u202e"


@pytest.fixture(autouse=True)
def cli_logging():
    """Remove the log handlers the CLI installs, after each test."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cardano_agent", False):
            root.removeHandler(handler)
            handler.close()


def test_terminal_safe_strips_escapes_and_controls():
    """CSI and OSC sequences vanish, other controls and bidi overrides show as U+FFFD, text and newlines stay."""
    from agent.output import terminal_safe

    assert terminal_safe(f"a{ESC}[1;31mb{ESC}]0;title\x07c\r\x08\u202ed\ne\tf") == "ab" + "c\ufffd\ufffd\ufffdd\ne\tf"


class _Hostile(BaseHTTPRequestHandler):
    """An API whose chat answers 200 with escape sequences, and whose token analysis fails with them."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/chat":
            status, body = 200, {"reply": f"hello {HOSTILE} world", "session_id": "s"}
        else:
            status, body = 400, {"detail": f"bad {HOSTILE} request"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_server_text_never_reaches_the_terminal_raw(agent_home, hostile_api, capsys, monkeypatch):
    """A reply and an error detail full of escape sequences are printed without a single ESC or CR."""
    monkeypatch.setenv("CARDANO_AGENT_API_URL", hostile_api)
    monkeypatch.setenv("T_API_KEY", "test-key")
    home = str(agent_home.home)
    assert main(["call", "chat", "--message", "hi", "--home", home]) == 0
    out = capsys.readouterr().out
    assert "hello" in out and "world" in out and ESC not in out and "\r" not in out and "\u202e" not in out
    assert main(["call", "token-analysis", "--token", "SNEK", "--home", home]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bad" in err and ESC not in err and "\x07" not in err


def test_an_existing_home_is_made_owner_only(agent_home):
    """A 0755 home with 0644 agent.toml and agent.db is tightened to 0700/0600 when opened."""
    home = agent_home.home
    with agent_home.open():
        pass
    os.chmod(home, 0o755)
    for name in ("agent.toml", "agent.db"):
        os.chmod(home / name, 0o644)
    with agent_home.open():
        pass
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("agent.toml", "agent.db"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name


def test_run_takes_the_passphrase_out_of_its_environment(agent_home, monkeypatch, capsys):
    """After `run` reads CARDANO_AGENT_PASSPHRASE it is gone from os.environ, and the run still pays."""
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", PASSPHRASE)
    with agent_home.open() as agent:
        job = agent.jobs.enqueue("chat", {"message": "pay from memory"}, now=time.time())
    assert main(["run", "--until-idle", "--home", str(agent_home.home)]) == 0
    assert "CARDANO_AGENT_PASSPHRASE" not in os.environ
    with agent_home.open() as agent:
        assert agent.jobs.get(job.id).state == "done"


def test_run_on_a_home_whose_log_cannot_be_written_is_one_line(agent_home, capsys, monkeypatch):
    """A home where agent.log cannot be opened: `run` prints one error line and exits non-zero, no traceback."""
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", PASSPHRASE)
    (agent_home.home / "agent.log").mkdir()
    code = main(["run", "--until-idle", "--home", str(agent_home.home)])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: cannot write the log") and "Traceback" not in err and len(err.splitlines()) == 1


def test_a_keystore_with_an_empty_salt_is_refused(tmp_path, fast_keystore):
    """A wallet file whose scrypt salt is empty is not a keystore the agent opens."""
    from wallets.errors import KeystoreError
    from wallets.keystore import Keystore

    store = Keystore(tmp_path / "wallets")
    store.create("w", network="devnet", passphrase=PASSPHRASE)
    path = store.path("w")
    doc = json.loads(path.read_text())
    doc["kdf"]["salt"] = ""
    path.write_text(json.dumps(doc))
    with pytest.raises(KeystoreError):
        store.info("w")


def test_sandbox_ogmios_answers_a_deeply_nested_frame_with_parse_error(devnet):
    """A 100,000-deep JSON frame gets JSON-RPC -32700 and the connection keeps working."""
    from websockets.sync.client import connect

    with connect(devnet.ogmios_url, max_size=None) as ws:
        ws.send("[" * 100_000 + "]" * 100_000)
        assert json.loads(ws.recv(timeout=30))["error"]["code"] == -32700
        ws.send(json.dumps({"jsonrpc": "2.0", "method": "queryNetwork/tip"}))
        assert "result" in json.loads(ws.recv(timeout=30))
