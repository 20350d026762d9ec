"""A devnet, its T API twin and its Blockfrost API served from a child process, so their CPU time is not the agent's.

Figure 2 runs the agent's workers in this process; with the sandbox in the same process
every ledger validation and every twin request would take the GIL from the workers, and the
figure would measure the sandbox. The child starts the same fixtures (``Devnet.start``,
``ApiTwin.start``) and answers a few questions about the ledger over a pipe.
"""

from __future__ import annotations

import multiprocessing
from typing import Any, Mapping

from benchmarks.errors import BenchError

START_TIMEOUT_S = 60.0


def _serve(conn: Any, fund: Mapping[str, int], block_time_s: float = 0.0) -> None:
    """Child: start the devnet and the twin, send their URLs, then answer requests until ``stop``."""
    from sandbox.billing import TwinConfig
    from sandbox.blockfrost_api import BlockfrostServer
    from sandbox.devnet import Devnet
    from sandbox.twin import ApiTwin
    from wallets.types import OutputRef

    from sandbox.x402_server import Routes, X402Server

    devnet = Devnet.start(block_time_s=block_time_s, fund=dict(fund))
    twin = ApiTwin.start(TwinConfig(), devnet.ogmios_url, port=0)
    v2_server = X402Server.start(devnet, routes=Routes(confirmations=0), confirmation_timeout_s=5.0)
    blockfrost = BlockfrostServer.start(devnet.node)
    conn.send((devnet.ogmios_url, twin.url, v2_server.url, blockfrost.url))
    try:
        while True:
            command, arg = conn.recv()
            if command == "stop":
                break
            try:
                if command == "fund":
                    answer: Any = devnet.fund(*arg)
                elif command == "balance":
                    answer = devnet.ledger.balance(arg).get("lovelace", 0)
                elif command == "confirmed":
                    answer = [bool(devnet.ledger.utxos_by_refs([OutputRef(tx, 0)])) for tx in arg]
                else:
                    answer = BenchError(f"unknown sandbox command {command!r}")
            except Exception as exc:  # noqa: BLE001 - sent back and raised in the parent
                answer = BenchError(f"{command}: {type(exc).__name__}: {exc}")
            conn.send(answer)
    finally:
        blockfrost.stop()
        v2_server.stop()
        twin.stop()
        devnet.stop()


class SandboxProcess:
    """The child process: ``env`` for agent homes, and ``fund``/``balance``/``confirmed`` over the pipe."""

    def __init__(self, fund: Mapping[str, int] | None = None, *, block_time_s: float = 0.0) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that has threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, dict(fund or {}), block_time_s), name="bench-sandbox", daemon=True)
        self._proc.start()
        if not self._conn.poll(START_TIMEOUT_S):
            self.close()
            raise BenchError(f"the sandbox process did not start (exit code {self._proc.exitcode})")
        self.ogmios_url, self.api_url, self.x402_url, self.blockfrost_url = self._conn.recv()

    @property
    def env(self) -> dict[str, str]:
        """Environment overrides that point an agent home at this devnet and twin."""
        return {"CARDANO_AGENT_API_URL": self.api_url, "CARDANO_AGENT_OGMIOS_URL": self.ogmios_url}

    def _ask(self, command: str, arg: Any) -> Any:
        self._conn.send((command, arg))
        answer = self._conn.recv()
        if isinstance(answer, BenchError):
            raise answer
        return answer

    def fund(self, address: str, lovelace: int) -> str:
        """A faucet payment to ``address`` (a real transaction); returns its id."""
        return str(self._ask("fund", (address, lovelace)))

    def balance(self, address: str) -> int:
        """Confirmed lovelace at ``address`` on the devnet ledger."""
        return int(self._ask("balance", address))

    def confirmed(self, tx_ids: list[str]) -> list[bool]:
        """For each tx id: is its first output on the devnet ledger?"""
        return list(self._ask("confirmed", tx_ids))

    def close(self) -> None:
        """Stop the sandbox and wait for the child."""
        if self._proc.is_alive():
            try:
                self._conn.send(("stop", None))
            except OSError:
                pass
            self._proc.join(15)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        self._conn.close()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
