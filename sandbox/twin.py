"""Serve the T API twin with uvicorn in a background thread: ``ApiTwin.start(config, ogmios_url)``."""

from __future__ import annotations

import logging
from typing import Any

from sandbox.billing import TwinConfig
from sandbox.serving import ServedApp
from sandbox.tapi_gate import Clock

log = logging.getLogger(__name__)


class ApiTwin(ServedApp):
    """A running twin. ``url`` is ``http://host:port``; ``stop()`` (or leaving ``with``) shuts it down."""

    def __init__(self, app: Any, config: TwinConfig) -> None:
        self.app = app
        self.config = config

    @classmethod
    def start(cls, config: TwinConfig | None = None, ogmios_url: str = "ws://127.0.0.1:1337", *,
              host: str = "127.0.0.1", port: int = 0, clock: Clock | None = None,
              startup_timeout_s: float = 10.0) -> ApiTwin:
        """Bind ``host:port`` (0: any free port), serve the twin in a thread, return once it accepts calls."""
        from sandbox.tapi import create_app

        config = config or TwinConfig()
        twin = cls(create_app(config, ogmios_url=ogmios_url, clock=clock), config)
        twin._serve(twin.app, host=host, port=port, what="the T API twin", name="t-api-twin",
                    startup_timeout_s=startup_timeout_s)
        log.info("T API twin serving at %s (Ogmios %s)", twin.url, ogmios_url)
        return twin
