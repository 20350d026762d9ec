"""Serve an ASGI app with uvicorn in a background thread: the one start/stop the sandbox's HTTP servers share."""

from __future__ import annotations

import asyncio
import functools
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
    server = quick_stop_server_class()(uvicorn.Config(app, **config))
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
        server.request_exit()
    if thread is not None:
        thread.join(timeout_s)
    if sock is not None:
        sock.close()


class ServedApp:
    """A server run by :func:`serve_in_thread`: its ``url``, ``stop()``, and ``with`` to stop it."""

    url: str = ""
    host: str = ""
    port: int = 0
    _server: Any = None
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    def _serve(self, app: Any, *, host: str, port: int, what: str, name: str, startup_timeout_s: float,
               path: str = "", **options: Any) -> None:
        """Serve ``app`` (see :func:`serve_in_thread`); ``url`` becomes ``http://host:port`` + ``path``."""
        self._server, self._thread, self._sock = serve_in_thread(
            app, host=host, port=port, what=what, name=name, startup_timeout_s=startup_timeout_s, **options)
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}{path}"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for the server thread to end."""
        stop_serving(self._server, self._thread, self._sock, timeout_s)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"


@functools.cache
def quick_stop_server_class() -> Any:
    """uvicorn's ``Server``, stopping as soon as it is asked rather than at its next tick.

    uvicorn notices ``should_exit`` at a 0.1 s tick and then pauses another 0.1 s for open
    connections to close; a test suite that starts and stops hundreds of servers spends most
    of a minute in those pauses. Here the tick wakes at once when :meth:`request_exit` is
    called, and shutdown waits only as long as connections take to close (at most as long).
    """
    import uvicorn

    class QuickStopServer(uvicorn.Server):  # type: ignore[misc]
        _exit: asyncio.Event | None = None
        _loop: asyncio.AbstractEventLoop | None = None

        def request_exit(self) -> None:
            self.should_exit = True
            loop, event = self._loop, self._exit
            if loop is not None and event is not None:
                try:
                    loop.call_soon_threadsafe(event.set)
                except RuntimeError:  # the loop is already closed: the server has stopped
                    pass

        async def main_loop(self) -> None:
            self._exit = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 1) % 864000
                try:
                    await asyncio.wait_for(self._exit.wait(), 0.1)
                except asyncio.TimeoutError:
                    pass

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for sock_server in self.servers:
                sock_server.close()
            for sock in sockets or []:
                sock.close()
            for connection in list(self.server_state.connections):
                connection.shutdown()
            for _ in range(20):  # uvicorn pauses 0.1 s here; idle keep-alive connections close at once
                if not self.server_state.connections:
                    break
                await asyncio.sleep(0.005)
            try:
                await asyncio.wait_for(self._wait_tasks_to_complete(), timeout=self.config.timeout_graceful_shutdown)
            except asyncio.TimeoutError:
                for task in self.server_state.tasks:
                    task.cancel()
            if not self.force_exit:
                await self.lifespan.shutdown()

    return QuickStopServer
