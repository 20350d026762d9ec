"""Serve an ASGI app with uvicorn in a background thread: the one start/stop the sandbox's HTTP servers share."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from sandbox.errors import SandboxError


def serve_in_thread(app: Any, *, host: str, port: int, what: str, name: str, startup_timeout_s: float,
                    **options: Any) -> tuple[Any, threading.Thread, socket.socket]:
    """Bind ``host:port`` (0: any free port), serve ``app`` in a thread; return once it accepts calls.

    ``what`` names the server in errors ("the Kupo API"); ``options`` go to ``uvicorn.Config``.
    Returns ``(uvicorn server, thread, bound socket)`` for :func:`stop_serving`.

    Raises:
        SandboxError: the port cannot be bound or the server did not start in time.
    """
    import uvicorn

    try:
        sock = socket.create_server((host, port))
        # asyncio enables TCP_NODELAY only for sockets it knows are TCP; create_server's
        # proto is 0, so without this every answer waits ~40 ms on Nagle's algorithm.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        raise SandboxError(f"cannot listen on {host}:{port} for {what}: {exc.strerror}") from exc
    config = {"log_level": "warning", "lifespan": "off", "access_log": False, **options}
    server = uvicorn.Server(uvicorn.Config(app, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    pause = threading.Event()
    while thread.is_alive() and not server.started and time.monotonic() < deadline:
        pause.wait(0.01)
    if not server.started:
        server.should_exit = True
        sock.close()
        raise SandboxError(f"{what} did not start on {host}:{port}")
    return server, thread, sock


def stop_serving(server: Any, thread: threading.Thread | None, sock: socket.socket | None,
                 timeout_s: float = 10.0) -> None:
    """Stop a server started by :func:`serve_in_thread` and wait for its thread."""
    if server is not None:
        server.should_exit = True
    if thread is not None:
        thread.join(timeout_s)
    if sock is not None:
        sock.close()
