"""The twin's listening socket: answers are not held back by Nagle's algorithm."""

from __future__ import annotations

import socket

from sandbox.billing import TwinConfig
from sandbox.twin import ApiTwin


def test_twin_socket_has_tcp_nodelay():
    """TCP_NODELAY is set on the listening socket (accepted connections inherit it on Linux)."""
    twin = ApiTwin.start(TwinConfig(), "ws://127.0.0.1:9")
    try:
        assert twin._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        twin.stop()
