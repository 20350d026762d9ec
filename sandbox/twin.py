"""Serve the T API twin with uvicorn in a background thread: ``ApiTwin.start(config, ogmios_url)``."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from sandbox.billing import TwinConfig
from sandbox.serving import serve_in_thread, stop_serving
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
        from sandbox.tapi import create_app

        config = config or TwinConfig()
        app = create_app(config, ogmios_url=ogmios_url, clock=clock)
        server, thread, sock = serve_in_thread(app, host=host, port=port, what="the T API twin", name="t-api-twin",
                                               startup_timeout_s=startup_timeout_s)
        twin = cls(server, thread, sock, app, config)
        log.info("T API twin serving at %s (Ogmios %s)", twin.url, ogmios_url)
        return twin

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for the server thread to end."""
        stop_serving(self._server, self._thread, self._sock, timeout_s)

    def __enter__(self) -> ApiTwin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ApiTwin(url={self.url!r})"
