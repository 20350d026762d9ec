"""The devnet's Ogmios v6 JSON-RPC 2.0 server (queries, submission, mempool monitor, chain sync).

It speaks over WebSocket, HTTP ``POST /`` and ``GET /health``.

One :class:`OgmiosServer` serves one chain node (see :class:`ChainNode`; the devnet's
``DevnetNode`` is the real one) as an ASGI app run by uvicorn on the devnet's event loop.
Requests on a WebSocket are answered in order; connections are independent; each HTTP
``POST`` is one request on a fresh session, as Ogmios's own HTTP bridge does (200 for a
result, 400 for an error). Bad input never takes the server down: garbage frames get -32700,
unknown methods -32601, bad params or undecodable CBOR -32602, frames past ``max_frame_bytes``
close that connection with 1009, and the ledger is untouched by any of them. A submission
that finds the mempool full waits for a block to make room, as a node's local submission does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Protocol

from sandbox import ogmios_json as oj
from sandbox.errors import LedgerRejection, SandboxError
from sandbox.utxo_ledger import MempoolFullError, PointNotFoundError
from sandbox.ogmios_messages import MESSAGES

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_HTTP_BODY_BYTES = MAX_FRAME_BYTES
OGMIOS_VERSION = "v6.14.0"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ChainNode(Protocol):
    """What the server needs from the chain it serves (thread-safe; cheap calls only)."""

    genesis: oj.Genesis
    params: Any

    def tip(self) -> Any: ...  # Block | None
    def height(self) -> int: ...
    def current_slot(self) -> int: ...
    def utxos_at(self, addresses: Iterable[str]) -> list[tuple[Any, Any]]: ...
    def utxos_by_refs(self, refs: Iterable[Any]) -> list[tuple[Any, Any]]: ...
    def all_utxos(self, point: tuple[int, str] | None = None) -> list[tuple[Any, Any]]: ...
    def utxos_at_point(self, point: tuple[int, str], addresses: Iterable[str]) -> list[tuple[Any, Any]]: ...
    def utxos_by_refs_at_point(self, point: tuple[int, str], refs: Iterable[Any]) -> list[tuple[Any, Any]]: ...
    def check_point(self, point: tuple[int, str]) -> None: ...  # raises PointNotFoundError
    def submit(self, cbor: bytes) -> str: ...  # raises MempoolFullError when there is no room
    def evaluate(self, cbor: bytes) -> list[Any]: ...
    def mempool(self) -> list[tuple[str, bytes]]: ...
    def mempool_version(self) -> int: ...  # changes whenever the mempool or the tip does
    def mempool_bytes(self) -> int: ...
    def block_count(self) -> int: ...
    def block_position(self, block_id: str) -> int | None: ...
    def block_at(self, index: int) -> tuple[Any, tuple[bytes, ...]]: ...


class RpcFailure(Exception):
    """A request-level JSON-RPC error (bad params, protocol misuse) with its error object."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.error = error


def _bad_params(message: str) -> RpcFailure:
    return RpcFailure(oj.rpc_error(-32602, f"Invalid params: {message}"))


@dataclass
class _Session:
    """Per-connection state: the acquired mempool snapshot and the read cursor in it; the chain-sync cursor."""

    snapshot: list[tuple[str, bytes]] | None = None
    version: int = -1
    cursor: int = 0
    ids: set[str] = field(default_factory=set)
    next_block: int = 0  # index in the node's history of the block the next ``nextBlock`` rolls forward to
    rollback: Any = "origin"  # the point the next ``nextBlock`` rolls backward to (then None)
    point: tuple[int, str] | None = None  # the acquired ledger state (acquireLedgerState), if any


Handler = Callable[[dict[str, Any], _Session], Awaitable[Any]]


class OgmiosServer:
    """An Ogmios v6.6-compatible WebSocket server for one :class:`ChainNode`.

    Call :meth:`start` and :meth:`stop` on the event loop that runs it, and
    :meth:`notify_mempool_changed` (on that loop) whenever the mempool changes, so that
    ``acquireMempool`` calls waiting for a new snapshot wake up.
    """

    def __init__(self, node: ChainNode, *, host: str = "127.0.0.1", port: int = 0,
                 max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.max_frame_bytes = max_frame_bytes
        self._server: Any = None
        self._serving: asyncio.Task[Any] | None = None
        self._changed: asyncio.Event | None = None
        self._closing = False
        self._started_at = time.time()
        self._connections = 0
        self._total_connections = 0
        self._messages = 0
        self._methods: dict[str, Handler] = {
            "queryNetwork/tip": self._tip,
            "queryNetwork/blockHeight": self._block_height,
            "queryNetwork/genesisConfiguration": self._genesis,
            "queryNetwork/startTime": self._start_time,
            "queryLedgerState/epoch": self._epoch,
            "queryLedgerState/eraStart": self._era_start,
            "queryLedgerState/eraSummaries": self._era_summaries,
            "queryLedgerState/protocolParameters": self._protocol_parameters,
            "queryLedgerState/tip": self._tip,
            "queryLedgerState/utxo": self._utxo,
            "queryLedgerState/constitution": self._constitution,
            "queryLedgerState/constitutionalCommittee": self._constitutional_committee,
            "queryLedgerState/delegateRepresentatives": self._delegate_representatives,
            "queryLedgerState/dump": self._ledger_dump,
            "queryLedgerState/governanceProposals": self._governance_proposals,
            "queryLedgerState/liveStakeDistribution": self._live_stake_distribution,
            "queryLedgerState/nonces": self._nonces,
            "queryLedgerState/operationalCertificates": self._operational_certificates,
            "queryLedgerState/projectedRewards": self._projected_rewards,
            "queryLedgerState/proposedProtocolParameters": self._proposed_protocol_parameters,
            "queryLedgerState/rewardAccountSummaries": self._reward_account_summaries,
            "queryLedgerState/rewardsProvenance": self._rewards_provenance,
            "queryLedgerState/stakePools": self._stake_pools,
            "queryLedgerState/stakePoolsPerformances": self._stake_pools_performances,
            "queryLedgerState/treasuryAndReserves": self._treasury_and_reserves,
            "acquireLedgerState": self._acquire_ledger_state,
            "releaseLedgerState": self._release_ledger_state,
            "submitTransaction": self._submit,
            "evaluateTransaction": self._evaluate,
            "acquireMempool": self._acquire_mempool,
            "nextTransaction": self._next_transaction,
            "hasTransaction": self._has_transaction,
            "sizeOfMempool": self._size_of_mempool,
            "releaseMempool": self._release_mempool,
            "findIntersection": self._find_intersection,
            "nextBlock": self._next_block,
        }

    @property
    def url(self) -> str:
        """``ws://host:port`` of the listening socket."""
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        """``http://host:port``: the same server for HTTP JSON-RPC and ``/health``."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 picks a free one, readable from :attr:`port`).

        Raises:
            OSError: the address cannot be bound (e.g. the port is taken).
            SandboxError: the server did not come up.
        """
        import uvicorn

        self._changed = asyncio.Event()
        sock = socket.create_server((self.host, self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see sandbox/twin.py: no Nagle delays
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.asgi, interface="asgi3", proxy_headers=False, ws="websockets-sansio", ws_max_size=self.max_frame_bytes,
                                ws_ping_interval=None, ws_per_message_deflate=False, lifespan="off",
                                log_config=None, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=5)
        from sandbox.serving import quick_stop_server_class

        self._server = quick_stop_server_class()(config)
        self._serving = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._serving.done():
                sock.close()
                error = self._serving.exception()
                raise SandboxError(f"the Ogmios server did not start: {error}")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Stop listening, wake waiting monitors and submitters, and close every connection."""
        self._closing = True
        self.notify_mempool_changed()
        if self._server is not None and self._serving is not None:
            self._server.request_exit()
            try:
                await asyncio.wait_for(self._serving, timeout=15)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - stopping must not fail
                log.warning("the Ogmios server did not stop cleanly", exc_info=True)
            self._server = None

    def notify_mempool_changed(self) -> None:
        """Wake requests waiting for the mempool or the tip to change (call on the server loop)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def _wait_for_change(self) -> None:
        if self._closing:
            raise _Closing()
        assert self._changed is not None
        await self._changed.wait()
        if self._closing:
            raise _Closing()

    # --- transport (ASGI) ------------------------------------------------------------------------

    async def asgi(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                   send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """The ASGI application: WebSocket JSON-RPC, HTTP ``POST /`` JSON-RPC and ``GET /health``."""
        if scope["type"] == "websocket":
            await self._serve_websocket(receive, send)
        elif scope["type"] == "http":
            await self._serve_http(scope, receive, send)

    async def _serve_websocket(self, receive: Callable[[], Awaitable[dict[str, Any]]],
                               send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        self._connections += 1
        self._total_connections += 1
        session = _Session()
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                frame = message.get("text")
                if frame is None:
                    frame = message.get("bytes") or b""
                try:
                    reply = await self.handle_frame(frame, session)
                except _Closing:
                    await send({"type": "websocket.close", "code": 1001, "reason": "server stopping"})
                    return
                await send({"type": "websocket.send", "text": reply})
        except OSError:  # the peer went away mid-send
            return
        finally:
            self._connections -= 1

    async def _serve_http(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                          send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        method, path = scope["method"], scope["path"]
        if method == "OPTIONS":
            await _respond(send, 200, b"")
            return
        if method == "GET" and path == "/health":
            health = oj.health_json(self.node, started_at=self._started_at, version=OGMIOS_VERSION,
                                    connections=(self._connections, self._total_connections, self._messages),
                                    now=time.time())
            status = 200 if health["networkSynchronization"] == 1 else 202
            await _respond(send, status, _dump(health).encode())
            return
        if method != "POST" or path != "/":
            await _respond(send, 404 if method in ("GET", "POST") else 405, b"")
            return
        body, too_large = bytearray(), False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_HTTP_BODY_BYTES:
                too_large = True
            if not message.get("more_body"):
                break
        if too_large:
            await _respond(send, 413, b"")
            return
        try:
            reply = await self.answer(bytes(body), _Session())
        except _Closing:
            await _respond(send, 503, b"")
            return
        await _respond(send, 400 if "error" in reply else 200, _dump(reply).encode())

    async def handle_frame(self, frame: str | bytes, session: _Session | None = None) -> str:
        """Answer one JSON-RPC frame; always returns the JSON text of a response."""
        return _dump(await self.answer(frame, session))

    async def answer(self, frame: str | bytes, session: _Session | None = None) -> dict[str, Any]:
        """Answer one JSON-RPC frame with a response object (``result`` or ``error``)."""
        session = session if session is not None else _Session()
        self._messages += 1
        try:
            request = json.loads(frame)
        except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting is bad JSON too
            return {"jsonrpc": "2.0", "error": oj.rpc_error(
                -32700, "Invalid request: must be a well-formed JSON object."), "id": None}
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            reason = ("field 'method' must be present and be a string" if isinstance(request, dict)
                      else "must be a well-formed JSON object")
            invalid: dict[str, Any] = {"jsonrpc": "2.0", "error": oj.rpc_error(-32600, f"Invalid request: {reason}."),
                                       "id": None}
            if isinstance(request, dict) and "id" in request:
                invalid["id"] = request["id"]
            return invalid
        method = request["method"]
        reply: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        handler = self._methods.get(method)
        params = request.get("params")
        try:
            if handler is None:
                raise RpcFailure(oj.rpc_error(
                    -32601, "Invalid request: unknown method in 'method' (beware names are case-sensitive)."))
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise _bad_params("'params' must be an object.")
            reply["result"] = await handler(params, session)
        except RpcFailure as failure:
            reply["error"] = failure.error
        except LedgerRejection as rejection:
            reply["error"] = _rejection_json(rejection)
        except _Closing:
            raise
        except Exception:  # a bug must not take the connection down; the client gets -32603
            log.exception("internal error answering %s", method)
            reply["error"] = oj.rpc_error(-32603, "Internal error while answering the request.")
        if "id" in request:
            reply["id"] = request["id"]
        return reply

    # --- queries -----------------------------------------------------------------------------

    async def _tip(self, params: dict[str, Any], session: _Session) -> Any:
        point = self._acquired_point(session)
        if point is not None:
            return {"slot": point[0], "id": point[1]}
        return oj.point_json(self.node.tip())

    async def _block_height(self, params: dict[str, Any], session: _Session) -> Any:
        return self.node.height() if self.node.tip() is not None else "origin"

    async def _genesis(self, params: dict[str, Any], session: _Session) -> Any:
        era = params.get("era")
        if era not in oj.GENESIS_ERAS:
            raise _bad_params(f"'era' must be one of {', '.join(oj.GENESIS_ERAS)}.")
        return oj.genesis_configuration_json(era, self.node.genesis, self.node.params)

    async def _start_time(self, params: dict[str, Any], session: _Session) -> Any:
        return oj.start_time_text(self.node.genesis)

    async def _epoch(self, params: dict[str, Any], session: _Session) -> Any:
        point = self._acquired_point(session)
        return self.node.genesis.epoch_of(point[0] if point is not None else self._ledger_slot())

    async def _era_start(self, params: dict[str, Any], session: _Session) -> Any:
        return oj.era_start_json(self.node.genesis)

    async def _era_summaries(self, params: dict[str, Any], session: _Session) -> Any:
        return oj.era_summaries_json(self.node.genesis, tip_slot=self.node.current_slot())

    async def _protocol_parameters(self, params: dict[str, Any], session: _Session) -> Any:
        return oj.protocol_parameters_json(self.node.params)

    async def _utxo(self, params: dict[str, Any], session: _Session) -> Any:
        point = self._acquired_point(session)
        try:
            if "addresses" in params:
                addresses = _addresses(params["addresses"])
                pairs = (self.node.utxos_at(addresses) if point is None
                         else self.node.utxos_at_point(point, addresses))
            elif "outputReferences" in params:
                refs = _output_refs(params["outputReferences"])
                pairs = self.node.utxos_by_refs(refs) if point is None else self.node.utxos_by_refs_at_point(point, refs)
            elif not params:
                pairs = self.node.all_utxos(point)
            else:
                raise _bad_params("expected 'addresses' or 'outputReferences'.")
        except PointNotFoundError:
            raise _acquired_expired() from None
        return [oj.utxo_json(ref, out) for ref, out in pairs]

    def _acquired_point(self, session: _Session) -> tuple[int, str] | None:
        """The session's acquired point, or None; 2003 once it has left the kept history."""
        if session.point is None:
            return None
        try:
            self.node.check_point(session.point)
        except PointNotFoundError:
            raise _acquired_expired() from None
        return session.point

    # --- ledger state: acquisition and what the devnet has none of ---------------------------

    async def _acquire_ledger_state(self, params: dict[str, Any], session: _Session) -> Any:
        point = params.get("point")
        if point == "origin":
            raise RpcFailure(oj.rpc_error(2000, MESSAGES[2000], "Target point is too old."))
        if (not isinstance(point, dict) or set(point) != {"slot", "id"} or not isinstance(point["slot"], int)
                or isinstance(point["slot"], bool) or not isinstance(point["id"], str)
                or not _HEX64.match(point["id"])):
            raise _bad_params("'point' must be \"origin\" or {'slot': <n>, 'id': <64 hex>}.")
        wanted = (point["slot"], point["id"])
        try:
            self.node.check_point(wanted)
        except PointNotFoundError as missing:
            raise RpcFailure(oj.rpc_error(2000, MESSAGES[2000], missing.reason)) from None
        session.point = wanted
        return {"acquired": "ledgerState", "point": {"slot": wanted[0], "id": wanted[1]}}

    async def _release_ledger_state(self, params: dict[str, Any], session: _Session) -> Any:
        session.point = None
        return {"released": "ledgerState"}

    async def _constitution(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        return oj.constitution_json()

    async def _constitutional_committee(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        return {"members": [], "quorum": "2/3"}

    async def _delegate_representatives(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        _credential_lists(params, ("keys", "scripts"))
        return []  # no DRep is registered on the devnet

    async def _ledger_dump(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        return None

    async def _governance_proposals(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        proposals = params.get("proposals", [])
        if not isinstance(proposals, list):
            raise _bad_params("'proposals' must be a list of proposal references.")
        return []  # no governance action has been proposed on the devnet

    async def _live_stake_distribution(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        return {}

    async def _nonces(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        return {"epochNonce": "neutral", "candidateNonce": "neutral", "evolvingNonce": "neutral",
                "lastEpochLastAncestor": "neutral"}

    async def _operational_certificates(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        return {}

    async def _projected_rewards(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        keys = _credential_lists(params, ("keys", "scripts"))
        stake = params.get("stake", [])
        if not isinstance(stake, list) or not all(isinstance(v, dict) for v in stake):
            raise _bad_params("'stake' must be a list of {'ada': {'lovelace': <n>}}.")
        amounts = [str(v.get("ada", {}).get("lovelace", 0)) for v in stake]
        return {key: {} for key in amounts + keys}  # no stake pool to delegate to: nothing to earn

    async def _proposed_protocol_parameters(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        return []  # v6.6's query (the `ogmios` 1.4 client has it): no update is proposed on the devnet

    async def _reward_account_summaries(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        _credential_lists(params, ("keys", "scripts"))
        return {}  # v6.6 wire format (an object by credential; v6.14 made it an array): none is registered

    async def _rewards_provenance(self, params: dict[str, Any], session: _Session) -> Any:
        # v6.6 wire format: v6.6's rewardsProvenance is what v6.14 renamed stakePoolsPerformances
        return await self._stake_pools_performances(params, session)

    async def _stake_pools(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        pools = params.get("stakePools", [])
        if not isinstance(pools, list) or "includeStake" in params and not isinstance(params["includeStake"], bool):
            raise _bad_params("'stakePools' must be a list of {'id': <pool id>}; 'includeStake' a boolean.")
        return {}  # no stake pool is registered on the devnet

    async def _stake_pools_performances(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        zero = oj.lovelace_json(0)
        return {"desiredNumberOfStakePools": 500, "stakePoolPledgeInfluence": "3/10", "totalRewardsInEpoch": zero,
                "activeStakeInEpoch": zero, "totalStakeInEpoch": oj.lovelace_json(self._circulating()),
                "stakePools": {}}

    async def _treasury_and_reserves(self, params: dict[str, Any], session: _Session) -> Any:
        self._acquired_point(session)
        return {"treasury": oj.lovelace_json(0),
                "reserves": oj.lovelace_json(oj.MAX_LOVELACE_SUPPLY - self._circulating())}

    def _circulating(self) -> int:
        return sum(out.lovelace for _ref, out in self.node.all_utxos())

    def _ledger_slot(self) -> int:
        tip = self.node.tip()
        return tip.slot if tip is not None else self.node.current_slot()

    # --- submission --------------------------------------------------------------------------

    async def _submit(self, params: dict[str, Any], session: _Session) -> Any:
        cbor = _transaction_cbor(params)
        while True:  # a full mempool makes the submitter wait for a block, as a node's local submission does
            version = self.node.mempool_version()
            try:
                return {"transaction": {"id": self.node.submit(cbor)}}
            except MempoolFullError:
                while self.node.mempool_version() == version:
                    await self._wait_for_change()

    async def _evaluate(self, params: dict[str, Any], session: _Session) -> Any:
        return self.node.evaluate(_transaction_cbor(params))

    # --- mempool monitor ---------------------------------------------------------------------

    async def _acquire_mempool(self, params: dict[str, Any], session: _Session) -> Any:
        if session.snapshot is not None:  # a second acquire waits until the mempool has changed
            while self.node.mempool_version() == session.version:
                await self._wait_for_change()
        session.version = self.node.mempool_version()
        session.snapshot = list(self.node.mempool())
        session.ids = {tx_id for tx_id, _ in session.snapshot}
        session.cursor = 0
        return {"acquired": "mempool", "slot": self.node.current_slot()}

    async def _next_transaction(self, params: dict[str, Any], session: _Session) -> Any:
        snapshot = _acquired(session)
        fields = params.get("fields")
        if fields not in (None, "all"):
            raise _bad_params("'fields' must be \"all\" when given.")
        if session.cursor >= len(snapshot):
            return {"transaction": None}
        tx_id, cbor = snapshot[session.cursor]
        session.cursor += 1
        return {"transaction": oj.transaction_json(tx_id, cbor, full=fields == "all")}

    async def _has_transaction(self, params: dict[str, Any], session: _Session) -> Any:
        _acquired(session)
        tx_id = params.get("id")
        if not isinstance(tx_id, str) or not _HEX64.match(tx_id):
            raise _bad_params("'id' must be a transaction id (64 hex digits).")
        return tx_id in session.ids

    async def _size_of_mempool(self, params: dict[str, Any], session: _Session) -> Any:
        snapshot = _acquired(session)
        return {
            "maxCapacity": {"bytes": self.node.params.mempool_capacity_bytes},
            "currentSize": {"bytes": sum(len(cbor) for _, cbor in snapshot)},
            "transactions": {"count": len(snapshot)},
        }

    async def _release_mempool(self, params: dict[str, Any], session: _Session) -> Any:
        _acquired(session)
        session.snapshot, session.ids, session.cursor = None, set(), 0
        return {"released": "mempool"}


    # --- chain sync ------------------------------------------------------------------------------

    def _tip_json(self) -> Any:
        return oj.tip_json(self.node.tip())

    async def _find_intersection(self, params: dict[str, Any], session: _Session) -> Any:
        points = params.get("points", [])
        if not isinstance(points, list):
            raise _bad_params("'points' must be a list of points or \"origin\".")
        for point in points:
            if point == "origin":
                session.next_block, session.rollback = 0, "origin"
                return {"intersection": "origin", "tip": self._tip_json()}
            slot = point.get("slot") if isinstance(point, dict) else None
            block_id = point.get("id") if isinstance(point, dict) else None
            if (not isinstance(block_id, str) or not _HEX64.match(block_id) or not isinstance(slot, int)
                    or isinstance(slot, bool) or slot < 0):
                raise _bad_params("a point is \"origin\" or {'slot': <n>, 'id': <64 hex>}.")
            position = self.node.block_position(block_id)
            if position is not None and self.node.block_at(position)[0].slot == slot:
                session.next_block, session.rollback = position + 1, {"slot": slot, "id": block_id}
                return {"intersection": {"slot": slot, "id": block_id}, "tip": self._tip_json()}
        raise RpcFailure(oj.rpc_error(1000, "No intersection found with the requested points.",
                                      {"tip": self._tip_json()}))

    async def _next_block(self, params: dict[str, Any], session: _Session) -> Any:
        if session.rollback is not None:
            point, session.rollback = session.rollback, None
            return {"direction": "backward", "point": point, "tip": self._tip_json()}
        while not self._closing and self.node.block_count() <= session.next_block:
            assert self._changed is not None  # at the tip: wait for the next block, as a node does
            await self._changed.wait()
        if self._closing:
            raise _Closing()
        block, raws = self.node.block_at(session.next_block)
        ancestor = self.node.block_at(session.next_block - 1)[0].id if session.next_block > 0 else None
        session.next_block += 1
        return {"direction": "forward", "block": oj.block_json(block, raws, ancestor=ancestor),
                "tip": self._tip_json()}


class _Closing(Exception):
    """The server is stopping while a request waits (internal)."""


def _dump(reply: dict[str, Any]) -> str:
    return json.dumps(reply, separators=(",", ":"))


def _acquired(session: _Session) -> list[tuple[str, bytes]]:
    if session.snapshot is None:
        raise RpcFailure({"code": 4000, "message": MESSAGES[4000]})
    return session.snapshot


def _acquired_expired() -> RpcFailure:
    return RpcFailure(oj.rpc_error(2003, MESSAGES[2003], "Acquired point is now too old."))


def _credential_lists(params: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """The credentials (hex or bech32 text) given under ``names``; -32602 unless lists of strings."""
    found: list[str] = []
    for name in names:
        value = params.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad_params(f"'{name}' must be a list of credentials (hex digests or bech32).")
        found.extend(value)
    return found


async def _respond(send: Callable[[dict[str, Any]], Awaitable[None]], status: int, body: bytes) -> None:
    headers = [(b"access-control-allow-origin", b"*"), (b"access-control-allow-headers", b"*"),
               (b"access-control-allow-methods", b"GET, POST, OPTIONS"), (b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json; charset=utf-8"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _rejection_json(rejection: LedgerRejection) -> dict[str, Any]:
    if rejection.code == -32602:  # undecodable: Ogmios's DeserialisationFailure shape
        return oj.deserialisation_error(rejection.message)
    return oj.rpc_error(rejection.code, rejection.message, rejection.data)


def _transaction_cbor(params: dict[str, Any]) -> bytes:
    tx = params.get("transaction")
    text = tx.get("cbor") if isinstance(tx, dict) else None
    if not isinstance(text, str):
        raise _bad_params("expected {'transaction': {'cbor': <hex>}}.")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise RpcFailure(oj.deserialisation_error("the transaction is not base16 text")) from None
    if not raw:
        raise RpcFailure(oj.deserialisation_error("empty transaction"))
    return raw


def _addresses(value: Any) -> list[str]:
    from sandbox.txcbor import DecodeError, address_from_str

    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise _bad_params("'addresses' must be a list of bech32 addresses.")
    for address in value:
        try:
            address_from_str(address)
        except DecodeError:
            raise _bad_params(f"not a payment address: {address[:120]!r}.") from None
    return value


def _output_refs(value: Any) -> list[Any]:
    from wallets.types import OutputRef

    if not isinstance(value, list):
        raise _bad_params("'outputReferences' must be a list.")
    refs = []
    for item in value:
        tx = item.get("transaction") if isinstance(item, dict) else None
        tx_id = tx.get("id") if isinstance(tx, dict) else None
        index = item.get("index") if isinstance(item, dict) else None
        if (not isinstance(tx_id, str) or not _HEX64.match(tx_id) or not isinstance(index, int)
                or isinstance(index, bool) or index < 0):
            raise _bad_params("an output reference is {'transaction': {'id': <64 hex>}, 'index': <n>}.")
        refs.append(OutputRef(tx_id, index))
    return refs
