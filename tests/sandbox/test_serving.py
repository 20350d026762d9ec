"""The sandbox's one way to serve an ASGI app in a thread: it answers, stops, and a busy port is one clear error."""

from __future__ import annotations

import socket

import httpx
import pytest

from sandbox.errors import SandboxError
from sandbox.serving import serve_in_thread, stop_serving


async def _app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"up"})


def test_serves_until_stopped() -> None:
    """The app answers on the bound port once started; after stop the thread is gone and the port closed."""
    server, thread, sock = serve_in_thread(_app, host="127.0.0.1", port=0, what="the test app", name="t",
                                           startup_timeout_s=10)
    port = sock.getsockname()[1]
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "up"
    stop_serving(server, thread, sock)
    assert not thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_a_busy_port_is_one_clear_error() -> None:
    """Binding a port in use raises SandboxError naming the server, not an OSError traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SandboxError, match=f"cannot listen on 127.0.0.1:{port} for the test app"):
            serve_in_thread(_app, host="127.0.0.1", port=port, what="the test app", name="t", startup_timeout_s=10)
