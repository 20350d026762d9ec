"""The devnet's Ogmios v6 JSON-RPC 2.0 server over WebSocket (queries, submission, mempool monitor, chain sync).

One :class:`OgmiosServer` serves one chain node (see :class:`ChainNode`; the devnet's
``DevnetNode`` is the real one). Requests on a connection are answered in order; connections
are independent. Bad input never takes the server down: garbage frames get -32700, unknown
methods -32601, bad params or undecodable CBOR -32602, frames past ``max_frame_bytes`` close
that connection with 1009, and the ledger is untouched by any of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Protocol

from sandbox import ogmios_json as oj
from sandbox.errors import LedgerRejection

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 * 1024 * 1024
MEMPOOL_CAPACITY_BYTES = 2 * 90112  # two blocks' worth, as a node sizes its mempool
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
    def all_utxos(self) -> list[tuple[Any, Any]]: ...
    def submit(self, cbor: bytes) -> str: ...
    def evaluate(self, cbor: bytes) -> list[Any]: ...
    def mempool(self) -> list[tuple[str, bytes]]: ...
    def mempool_version(self) -> int: ...  # changes whenever the mempool does
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
        self._changed: asyncio.Event | None = None
        self._closing = False
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

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 picks a free one, readable from :attr:`port`)."""
        from websockets.asyncio.server import serve

        self._changed = asyncio.Event()
        self._server = await serve(self._serve, self.host, self.port, max_size=self.max_frame_bytes,
                                   compression=None, ping_interval=None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, wake waiting monitors and close every connection."""
        self._closing = True
        self.notify_mempool_changed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def notify_mempool_changed(self) -> None:
        """Wake ``acquireMempool`` requests waiting for a new snapshot (call on the server loop)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    # --- transport ---------------------------------------------------------------------------

    async def _serve(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        session = _Session()
        try:
            async for frame in ws:
                await ws.send(await self.handle_frame(frame, session))
        except ConnectionClosed:
            pass
        except _Closing:
            await ws.close(1001, "server stopping")

    async def handle_frame(self, frame: str | bytes, session: _Session | None = None) -> str:
        """Answer one JSON-RPC frame; always returns the JSON text of a response."""
        session = session if session is not None else _Session()
        try:
            request = json.loads(frame)
        except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting is bad JSON too
            return _dump({"jsonrpc": "2.0", "error": oj.rpc_error(-32700, "Invalid JSON: not a JSON-RPC request."),
                          "id": None})
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            reply = {"jsonrpc": "2.0", "error": oj.rpc_error(
                -32600, "Invalid request: expected an object with a 'method' string."), "id": None}
            if isinstance(request, dict) and "id" in request:
                reply["id"] = request["id"]
            return _dump(reply)
        method = request["method"]
        reply = {"jsonrpc": "2.0", "method": method}
        handler = self._methods.get(method)
        params = request.get("params")
        try:
            if handler is None:
                raise RpcFailure(oj.rpc_error(-32601, f"Invalid request: unknown method {method[:100]!r}."))
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
        return _dump(reply)

    # --- queries -----------------------------------------------------------------------------

    async def _tip(self, params: dict[str, Any], session: _Session) -> Any:
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
        return self.node.genesis.epoch_of(self._ledger_slot())

    async def _era_start(self, params: dict[str, Any], session: _Session) -> Any:
        return oj.era_start_json(self.node.genesis)

    async def _era_summaries(self, params: dict[str, Any], session: _Session) -> Any:
        return oj.era_summaries_json(self.node.genesis, tip_slot=self.node.current_slot())

    async def _protocol_parameters(self, params: dict[str, Any], session: _Session) -> Any:
        return oj.protocol_parameters_json(self.node.params)

    async def _utxo(self, params: dict[str, Any], session: _Session) -> Any:
        if "addresses" in params:
            pairs = self.node.utxos_at(_addresses(params["addresses"]))
        elif "outputReferences" in params:
            pairs = self.node.utxos_by_refs(_output_refs(params["outputReferences"]))
        elif not params:
            pairs = self.node.all_utxos()
        else:
            raise _bad_params("expected 'addresses' or 'outputReferences'.")
        return [oj.utxo_json(ref, out) for ref, out in pairs]

    def _ledger_slot(self) -> int:
        tip = self.node.tip()
        return tip.slot if tip is not None else self.node.current_slot()

    # --- submission --------------------------------------------------------------------------

    async def _submit(self, params: dict[str, Any], session: _Session) -> Any:
        return {"transaction": {"id": self.node.submit(_transaction_cbor(params))}}

    async def _evaluate(self, params: dict[str, Any], session: _Session) -> Any:
        return self.node.evaluate(_transaction_cbor(params))

    # --- mempool monitor ---------------------------------------------------------------------

    async def _acquire_mempool(self, params: dict[str, Any], session: _Session) -> Any:
        if session.snapshot is not None:  # a second acquire waits until the mempool has changed
            while not self._closing and self.node.mempool_version() == session.version:
                assert self._changed is not None
                await self._changed.wait()
            if self._closing:
                raise _Closing()
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
            "maxCapacity": {"bytes": MEMPOOL_CAPACITY_BYTES},
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
        raise RpcFailure({"code": 4000, "message": "You must acquire a mempool snapshot first (acquireMempool)."})
    return session.snapshot


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
