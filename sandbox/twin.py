"""Serve the T API twin with uvicorn in a background thread: ``ApiTwin.start(config, ogmios_url)``."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from sandbox.billing import TwinConfig
from sandbox.errors import SandboxError
from sandbox.tapi_gate import Clock

log = logging.getLogger(__name__)


class ApiTwin:
    """A running twin. ``url`` is ``http://host:port``; ``stop()`` (or leaving ``with``) shuts it down."""

    def __init__(self, server: Any, thread: threading.Thread, sock: socket.socket, app: Any,
                 config: TwinConfig) -> None:
        self._server = server
        self._thread = thread
        self._sock = sock
        self.app = app
        self.config = config
        host, port = sock.getsockname()[:2]
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"

    @classmethod
    def start(cls, config: TwinConfig | None = None, ogmios_url: str = "ws://127.0.0.1:1337", *,
              host: str = "127.0.0.1", port: int = 0, clock: Clock | None = None,
              startup_timeout_s: float = 10.0) -> ApiTwin:
        """Bind ``host:port`` (0: any free port), serve the twin in a thread, return once it accepts calls."""
        import uvicorn

        from sandbox.tapi import create_app

        config = config or TwinConfig()
        app = create_app(config, ogmios_url=ogmios_url, clock=clock)
        try:
            sock = socket.create_server((host, port), reuse_port=False)
            # asyncio enables TCP_NODELAY only for sockets it knows are TCP; create_server's
            # proto is 0, so without this every answer waits ~40 ms on Nagle's algorithm.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise SandboxError(f"cannot listen on {host}:{port} for the T API twin: {exc.strerror}") from exc
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="t-api-twin", daemon=True)
        thread.start()
        started = threading.Event()

        def watch() -> None:
            while thread.is_alive() and not server.started:
                started.wait(0.01)
            started.set()

        threading.Thread(target=watch, daemon=True).start()
        if not started.wait(startup_timeout_s) or not server.started:
            server.should_exit = True
            sock.close()
            raise SandboxError(f"the T API twin did not start on {host}:{port}")
        twin = cls(server, thread, sock, app, config)
        log.info("T API twin serving at %s (Ogmios %s)", twin.url, ogmios_url)
        return twin

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for the server thread to end."""
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> ApiTwin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ApiTwin(url={self.url!r})"
