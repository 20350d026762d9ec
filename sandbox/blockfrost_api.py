"""A Blockfrost-compatible HTTP API (v0) over the devnet's ledger, with Blockfrost's limits and faults.

Serves what the agent's ``BlockfrostChain``, ``blockfrost-python`` and pycardano's
``BlockFrostChainContext`` call, under ``/api/v0``: blocks, epochs and their parameters,
genesis, address UTxOs (paged), transactions and their UTxOs, the mempool of transactions
submitted here, assets, and ``POST /tx/submit``. Every request must carry the project id in a
``project_id`` header (403 otherwise). Requests are rate limited as Blockfrost does (a bucket of
500 refilled at 10 per second; 429 when empty) and a daily quota answers 402 once spent.
:class:`Faults` injects 429 bursts, 418 bans, 5xx answers, garbage bodies, slow answers and a
stale tip, for tests of the clients' patience.

Started with :meth:`BlockfrostServer.start` over a running devnet's ``node``; stopped with
:meth:`BlockfrostServer.stop`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from sandbox import blockfrost_json as bj
from sandbox.errors import LedgerRejection, MempoolFullError, SandboxError
from sandbox.serving import ServedApp
from wallets.blockfrost import SANDBOX_PROJECT_ID
from wallets.types import OutputRef

log = logging.getLogger(__name__)

DEFAULT_PROJECT_ID = SANDBOX_PROJECT_ID
"""The project id the sandbox accepts unless told another (a devnet project, like ``preprod…`` ids)."""
RATE_PER_S = 10.0
BURST = 500
API_PREFIX = "/api/v0"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UNIT = re.compile(r"[0-9a-f]{56}(?:[0-9a-f]{2}){0,32}")


class Faults:
    """Faults the next requests meet (thread-safe; tests and the control endpoint set them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statuses: list[tuple[int, str, bool]] = []
        self._garbage = 0
        self._slow: list[float] = []
        self._stale_tip = 0
        self.release = threading.Event()
        """Set to let every request held by :meth:`hang_next` go on."""
        self._hang = 0

    def fail_next(self, status: int, count: int = 1, *, path: str = "", after: bool = False) -> None:
        """Answer the next ``count`` requests (whose path contains ``path``) with ``status`` (429, 500 …).

        ``after``: the request is carried out first and only its answer is replaced (a submission
        the node accepted whose answer is lost: the hardest case for a client).
        """
        with self._lock:
            self._statuses.extend([(status, path, after)] * count)

    def garbage_next(self, count: int = 1) -> None:
        """Answer the next ``count`` requests 200 with a body that is not JSON."""
        with self._lock:
            self._garbage += count

    def slow_next(self, seconds: float, count: int = 1) -> None:
        """Delay the next ``count`` answers by ``seconds``."""
        with self._lock:
            self._slow.extend([seconds] * count)

    def hang_next(self, count: int = 1) -> None:
        """Hold the next ``count`` requests until :attr:`release` is set (a client's timeout ends them)."""
        with self._lock:
            self.release.clear()
            self._hang += count

    def stale_tip_next(self, count: int = 1) -> None:
        """Report the first block as the latest for the next ``count`` ``/blocks/latest`` calls."""
        with self._lock:
            self._stale_tip += count

    def clear(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            self._statuses.clear()
            self._slow.clear()
            self._garbage = self._hang = self._stale_tip = 0
            self.release.set()

    def take(self, path: str) -> tuple[int | None, bool, bool, float, bool]:
        """The faults of the next request to ``path``: (status, after, garbage, delay, hang)."""
        with self._lock:
            status, after = None, False
            for i, (code, where, late) in enumerate(self._statuses):
                if where in path:
                    status, after = code, late
                    del self._statuses[i]
                    break
            garbage = status is None and self._garbage > 0
            if garbage:
                self._garbage -= 1
            delay = self._slow.pop(0) if self._slow else 0.0
            hang = self._hang > 0
            if hang:
                self._hang -= 1
            return status, after, garbage, delay, hang

    def take_stale_tip(self) -> bool:
        """Whether this ``/blocks/latest`` reports a stale tip."""
        with self._lock:
            if self._stale_tip:
                self._stale_tip -= 1
                return True
            return False


@dataclass
class Limits:
    """Blockfrost's request limits: a bucket of ``burst`` refilled at ``rate_per_s``; a daily quota."""

    rate_per_s: float = RATE_PER_S
    burst: int = BURST
    daily_quota: int | None = None


class _Bucket:
    def __init__(self, limits: Limits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._tokens = float(limits.burst)
        self._at = clock()
        self._day_count = 0
        self._lock = threading.Lock()

    def admit(self) -> int | None:
        """None if the request may go on, else the status that refuses it (429 or 402)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.limits.burst), self._tokens + (now - self._at) * self.limits.rate_per_s)
            self._at = now
            if self.limits.daily_quota is not None and self._day_count >= self.limits.daily_quota:
                return 402
            if self._tokens < 1:
                return 429
            self._tokens -= 1
            self._day_count += 1
            return None


class _TxIndex:
    """Confirmed transactions by id, outputs by reference and who spent them, built from block history."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._lock = threading.Lock()
        self._next_block = 0
        self.txs: dict[str, tuple[Any, int, Any]] = {}  # tx id -> (block, index in block, decoded tx)
        self.outputs: dict[OutputRef, Any] = {}
        self.spent_by: dict[OutputRef, str] = {}
        self.addresses: set[str] = set()
        self.block_of_tx: dict[str, str] = {}
        for ref, out in node.all_utxos():  # genesis outputs (no transaction of their own)
            self.outputs[ref] = out
            self.addresses.add(out.address)

    def catch_up(self) -> None:
        """Index blocks made since the last call."""
        from sandbox.txcbor import decode_transaction

        with self._lock:
            count = self._node.block_count()
            while self._next_block < count:
                block, raws = self._node.block_at(self._next_block)
                for i, raw in enumerate(raws):
                    tx = decode_transaction(raw)
                    self.txs[tx.tx_id] = (block, i, tx)
                    for tx_id, index in tx.inputs:
                        self.spent_by[OutputRef(tx_id, index)] = tx.tx_id
                    for j, out in enumerate(tx.outputs):
                        self.outputs[OutputRef(tx.tx_id, j)] = out
                        self.addresses.add(out.address)
                self._next_block += 1


class BlockfrostServer(ServedApp):
    """The Blockfrost API over one devnet node, served by uvicorn in a background thread."""

    def __init__(self, node: Any, *, project_id: str = DEFAULT_PROJECT_ID, limits: Limits | None = None,
                 faults: Faults | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.project_id = project_id
        self.limits = limits or Limits()
        self.faults = faults or Faults()
        self.requests = 0
        self._bucket = _Bucket(self.limits, clock)
        self._index = _TxIndex(node)
        self.app = self._create_app()

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def start(cls, node: Any, *, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 10.0,
              **options: Any) -> BlockfrostServer:
        """Listen on ``host:port`` (0: any free port) and serve; return once it accepts requests.

        Raises:
            SandboxError: the port cannot be bound or the server did not start.
        """
        server = cls(node, **options)
        server._serve(server.app, host=host, port=port, what="the Blockfrost API", name="blockfrost-api",
                      startup_timeout_s=startup_timeout_s, path=API_PREFIX)
        log.info("Blockfrost API serving at %s", server.url)
        return server

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving (held requests are released) and wait for the thread."""
        self.faults.release.set()
        super().stop(timeout_s)

    # --- the app -----------------------------------------------------------------------------

    def _create_app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route

        routes = [
            ("/", self._root), ("/health", self._health), ("/health/clock", self._clock),
            ("/blocks/latest", self._block_latest), ("/blocks/{hash_or_number}", self._block),
            ("/epochs/latest", self._epoch_latest), ("/epochs/latest/parameters", self._parameters),
            ("/genesis", self._genesis), ("/addresses/{address}", self._address),
            ("/addresses/{address}/utxos", self._address_utxos), ("/txs/{hash}", self._tx),
            ("/txs/{hash}/utxos", self._tx_utxos), ("/txs/{hash}/cbor", self._tx_cbor),
            ("/mempool", self._mempool), ("/mempool/{hash}", self._mempool_tx), ("/assets/{asset}", self._asset),
        ]
        table = [Route(API_PREFIX + path, self._wrap(handler), methods=["GET"]) for path, handler in routes]
        table.append(Route(API_PREFIX + "/tx/submit", self._wrap(self._submit), methods=["POST"]))
        return Starlette(routes=table)

    def _wrap(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        from starlette.responses import Response

        async def endpoint(request: Any) -> Any:
            self.requests += 1
            status, after, garbage, delay, hang = self.faults.take(request.url.path)
            if hang:
                await asyncio.get_running_loop().run_in_executor(None, self.faults.release.wait, 60)
            if delay:
                await asyncio.sleep(delay)
            if request.headers.get("project_id") is None:
                return _error(403, "Missing project token. Please include project_id in your request.")
            if request.headers.get("project_id") != self.project_id:
                return _error(403, "Invalid project token.")
            if status is not None and not after:
                return _error(status)
            refused = self._bucket.admit()
            if refused is not None:
                return _error(refused)
            if garbage:
                return Response(b"<html><body>502 Bad Gateway</body></html>", status_code=200,
                                media_type="application/json")
            try:
                result = await handler(request)
            except _HttpError as exc:
                return _error(exc.status, exc.message)
            except Exception:  # a bug must not take the server down; the client gets Blockfrost's 500
                log.exception("internal error answering %s", request.url.path)
                return _error(500)
            if status is not None:
                return _error(status)  # carried out, answer lost
            return result if isinstance(result, Response) else _json(result)

        return endpoint

    # --- handlers ----------------------------------------------------------------------------

    async def _root(self, request: Any) -> Any:
        return {"url": "https://blockfrost.io/", "version": "0.1.86"}

    async def _health(self, request: Any) -> Any:
        return {"is_healthy": True}

    async def _clock(self, request: Any) -> Any:
        return {"server_time": int(time.time() * 1000)}

    def _block_json(self, position: int) -> dict[str, Any]:
        self._index.catch_up()
        block, raws = self.node.block_at(position)
        count = self.node.block_count()
        previous = self.node.block_at(position - 1)[0].id if position > 0 else None
        following = self.node.block_at(position + 1)[0].id if position + 1 < count else None
        txs = [self._index.txs[tx_id][2] for tx_id in block.tx_ids if tx_id in self._index.txs]
        return bj.block_json(block, genesis=self.node.genesis, txs=txs, previous=previous, next_block=following,
                             tip_height=self.node.height())

    async def _block_latest(self, request: Any) -> Any:
        count = self.node.block_count()
        if count == 0:
            raise _HttpError(404)
        return self._block_json(0 if self.faults.take_stale_tip() else count - 1)

    async def _block(self, request: Any) -> Any:
        key = request.path_params["hash_or_number"]
        if key.isdigit():
            first = self.node.block_at(0)[0].height if self.node.block_count() else 1
            position: int | None = int(key) - first
            if not 0 <= position < self.node.block_count():  # type: ignore[operator]
                position = None
        elif _HEX64.fullmatch(key):
            position = self.node.block_position(key)
        else:
            raise _HttpError(400, "Invalid or malformed block hash or number.")
        if position is None:
            raise _HttpError(404)
        return self._block_json(position)

    def _current_slot(self) -> int:
        return int(self.node.current_slot())

    async def _epoch_latest(self, request: Any) -> Any:
        first = self.node.block_at(0)[0].slot if self.node.block_count() else None
        return bj.epoch_json(self.node.genesis, slot=self._current_slot(), tip=self.node.tip(),
                             first_block_slot=first)

    async def _parameters(self, request: Any) -> Any:
        return bj.parameters_json(self.node.params, epoch=self.node.genesis.epoch_of(self._current_slot()))

    async def _genesis(self, request: Any) -> Any:
        return bj.genesis_json(self.node.genesis)

    def _check_address(self, address: str) -> None:
        from sandbox.txcbor import DecodeError, address_from_str

        try:
            address_from_str(address)
        except DecodeError:
            raise _HttpError(400, "Invalid address for this network or malformed address format.") from None

    def _utxo_block(self, ref: OutputRef) -> str | None:
        entry = self._index.txs.get(ref.tx_id)
        if entry is not None:
            return str(entry[0].id)
        return self.node.block_at(0)[0].id if self.node.block_count() else None  # genesis outputs

    async def _address(self, request: Any) -> Any:
        address = request.path_params["address"]
        self._check_address(address)
        self._index.catch_up()
        utxos = self.node.utxos_at([address])
        if not utxos and address not in self._index.addresses:
            raise _HttpError(404)
        lovelace, assets = 0, {}  # type: ignore[var-annotated]
        for _ref, out in utxos:
            lovelace += out.lovelace
            for asset, qty in out.assets.items():
                assets[asset] = assets.get(asset, 0) + qty
        return {"address": address, "amount": bj.amount_json(lovelace, assets), "stake_address": None,
                "type": "shelley", "script": False}

    async def _address_utxos(self, request: Any) -> Any:
        address = request.path_params["address"]
        self._check_address(address)
        count, page, order = _paging(request)
        self._index.catch_up()
        utxos = self.node.utxos_at([address])
        if not utxos and address not in self._index.addresses:
            raise _HttpError(404)
        utxos.sort(key=lambda pair: self._utxo_order(pair[0]), reverse=order == "desc")
        chosen = utxos[(page - 1) * count: page * count]
        return [bj.utxo_json(ref, out, block_id=self._utxo_block(ref)) for ref, out in chosen]

    def _utxo_order(self, ref: OutputRef) -> tuple[int, int, int]:
        entry = self._index.txs.get(ref.tx_id)
        if entry is None:
            return (0, 0, ref.index)
        return (entry[0].height, entry[1], ref.index)

    def _confirmed(self, request: Any) -> tuple[Any, int, Any]:
        tx_id = request.path_params["hash"]
        if not _HEX64.fullmatch(tx_id):
            raise _HttpError(400, "Invalid or malformed transaction hash.")
        self._index.catch_up()
        entry = self._index.txs.get(tx_id)
        if entry is None:
            raise _HttpError(404)
        return entry

    async def _tx(self, request: Any) -> Any:
        block, index, tx = self._confirmed(request)
        return bj.tx_json(tx, block=block, index=index, genesis=self.node.genesis)

    async def _tx_utxos(self, request: Any) -> Any:
        _block, _index, tx = self._confirmed(request)
        outputs = self._index.outputs
        return {
            "hash": tx.tx_id,
            "inputs": [bj.input_json(t, i, outputs.get(OutputRef(t, i))) for t, i in tx.inputs],
            "outputs": [bj.output_json(tx.tx_id, j, out, consumed_by=self._index.spent_by.get(OutputRef(tx.tx_id, j)))
                        for j, out in enumerate(tx.outputs)],
        }

    async def _tx_cbor(self, request: Any) -> Any:
        _block, _index, tx = self._confirmed(request)
        return {"cbor": tx.raw.hex()}

    def _waiting(self) -> dict[str, bytes]:
        return dict(self.node.mempool())

    async def _mempool(self, request: Any) -> Any:
        count, page, order = _paging(request)
        ids = list(self._waiting())
        if order == "desc":
            ids.reverse()
        return [{"tx_hash": tx_id} for tx_id in ids[(page - 1) * count: page * count]]

    async def _mempool_tx(self, request: Any) -> Any:
        from sandbox.txcbor import decode_transaction

        tx_id = request.path_params["hash"]
        if not _HEX64.fullmatch(tx_id):
            raise _HttpError(400, "Invalid or malformed transaction hash.")
        raw = self._waiting().get(tx_id)
        if raw is None:
            raise _HttpError(404)
        self._index.catch_up()
        waiting = {OutputRef(t, j): out for t, cbor in self._waiting().items()
                   for j, out in enumerate(decode_transaction(cbor).outputs)}
        return bj.mempool_tx_json(decode_transaction(raw),
                                  resolve=lambda ref: self._index.outputs.get(ref) or waiting.get(ref))

    async def _asset(self, request: Any) -> Any:
        from sandbox.devnet import DEVNET_TOKEN

        unit = request.path_params["asset"]
        if not _UNIT.fullmatch(unit):
            raise _HttpError(400, "Invalid or malformed asset format.")
        asset_id = bj.unit_to_asset(unit)
        quantity = sum(out.assets.get(asset_id, 0) for _ref, out in self.node.all_utxos())
        if quantity == 0:
            raise _HttpError(404)
        policy, name = unit[:56], unit[56:]
        metadata = None
        if asset_id == DEVNET_TOKEN:
            metadata = {"name": "Devnet token", "description": "The sandbox faucet's test token.",
                        "ticker": "DEVNET", "url": None, "logo": None, "decimals": 0}
        return {"asset": unit, "policy_id": policy, "asset_name": name or None,
                "fingerprint": bj.fingerprint(policy, name), "quantity": str(quantity),
                "initial_mint_tx_hash": None, "mint_or_burn_count": 1, "onchain_metadata": None,
                "onchain_metadata_standard": None, "onchain_metadata_extra": None, "metadata": metadata}

    async def _submit(self, request: Any) -> Any:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/cbor":
            raise _HttpError(400, "Invalid Content-Type header, expected application/cbor.")
        body = await request.body()
        if not body:
            raise _HttpError(400, bj.submit_failure_message(-32602, "empty transaction", None))
        try:
            tx_id = self.node.submit(body)
        except LedgerRejection as exc:
            raise _HttpError(400, bj.submit_failure_message(exc.code, exc.message, exc.data)) from None
        except MempoolFullError:
            raise _HttpError(425) from None  # as Blockfrost: not taken; send it again after a block
        return tx_id


class _HttpError(Exception):
    def __init__(self, status: int, message: str | None = None) -> None:
        super().__init__(message or "")
        self.status = status
        self.message = message


def _json(value: Any, status: int = 200) -> Any:
    from starlette.responses import Response

    return Response(json.dumps(value, separators=(",", ":")).encode(), status_code=status,
                    media_type="application/json")


def _error(status: int, message: str | None = None) -> Any:
    return _json(bj.error_json(status, message), status)


def _paging(request: Any) -> tuple[int, int, str]:
    """``count`` (1–100, default 100), ``page`` (from 1) and ``order`` (asc/desc) of a list request."""
    query = request.query_params
    try:
        count = int(query.get("count", 100))
        page = int(query.get("page", 1))
    except ValueError:
        raise _HttpError(400, "querystring/count and querystring/page must be integers") from None
    order = query.get("order", "asc")
    if not 1 <= count <= 100:
        raise _HttpError(400, "querystring/count must be <= 100 and >= 1")
    if not 1 <= page <= 21474836:
        raise _HttpError(400, "querystring/page must be >= 1")
    if order not in ("asc", "desc"):
        raise _HttpError(400, 'querystring/order must be equal to one of the allowed values: "asc", "desc"')
    return count, page, order


__all__ = ["DEFAULT_PROJECT_ID", "BlockfrostServer", "Faults", "Limits"]
