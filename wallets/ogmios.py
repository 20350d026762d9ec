"""Chain access over Ogmios v6 JSON-RPC: one persistent WebSocket, thread-safe, reconnecting, strict parsing.

Speaks JSON-RPC 2.0 directly over ``websockets.sync.client`` (the ``ogmios`` package validates
every message with pydantic and pycardano opens a WebSocket per query; both are too slow for a
per-payment path). Server strings are parsed, never evaluated: ratios go through
``fractions.Fraction`` after a strict pattern check.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from fractions import Fraction
from typing import Any, Callable, Sequence

from wallets.backoff import backoff_s
from wallets.errors import (
    ChainProtocolError,
    ChainUnavailableError,
    FeeTooSmallError,
    MempoolFullError,
    OutputTooSmallError,
    submit_error,
)
from wallets.chain import IntersectionNotFoundError, TxLookup
from wallets.types import OutputRef, ProtocolParams, Tip, Utxo

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_POLICY = re.compile(r"[0-9a-f]{56}")
_ASSET_NAME = re.compile(r"(?:[0-9a-f]{2}){0,32}")
_RATIO = re.compile(r"-?[0-9]{1,40}(?:/[0-9]{1,40})?")
_RATIO_FIELDS = ("stakePoolPledgeInfluence", "monetaryExpansion", "treasuryExpansion")


class _HeldTooLong(Exception):
    """No answer within the long wait a held submission is given."""


class _RpcFailure(Exception):
    def __init__(self, code: int, message: str, data: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.data = code, message, data


def parse_ratio(text: Any) -> Fraction:
    """Parse an Ogmios ratio such as ``"577/10000"`` without evaluating it; ChainProtocolError if malformed."""
    if not isinstance(text, str) or not _RATIO.fullmatch(text):
        raise ChainProtocolError(f"not a ratio: {str(text)[:40]!r}")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ChainProtocolError(f"not a ratio: {text[:40]!r}") from None


def _nat(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ChainProtocolError(f"{what}: expected a non-negative integer, got {str(value)[:40]!r}")
    return value


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            raise ChainProtocolError(f"missing {'.'.join(path)} in answer")
        obj = obj[key]
    return obj


def parse_value(value: Any) -> tuple[int, dict[str, int]]:
    """Parse an Ogmios ``value`` object into ``(lovelace, {"policy.name": quantity})``."""
    lovelace = _nat(_get(value, "ada", "lovelace"), "value.ada.lovelace")
    assets: dict[str, int] = {}
    for policy, names in value.items():
        if policy == "ada":
            continue
        if not isinstance(policy, str) or not _POLICY.fullmatch(policy) or not isinstance(names, dict):
            raise ChainProtocolError(f"bad policy in value: {str(policy)[:60]!r}")
        for name, qty in names.items():
            if not isinstance(name, str) or not _ASSET_NAME.fullmatch(name):
                raise ChainProtocolError(f"bad asset name in value: {str(name)[:70]!r}")
            assets[f"{policy}.{name}"] = _nat(qty, "asset quantity")
    return lovelace, assets


def parse_utxo(item: Any) -> Utxo:
    """Parse one item of a ``queryLedgerState/utxo`` answer."""
    tx_id = _get(item, "transaction", "id")
    if not isinstance(tx_id, str) or not _HEX64.fullmatch(tx_id):
        raise ChainProtocolError(f"bad transaction id: {str(tx_id)[:70]!r}")
    address = _get(item, "address")
    if not isinstance(address, str) or not address:
        raise ChainProtocolError("bad address in UTxO")
    lovelace, assets = parse_value(_get(item, "value"))
    return Utxo(OutputRef(tx_id, _nat(_get(item, "index"), "index")), address, lovelace, assets)


def parse_protocol_params(result: Any) -> ProtocolParams:
    """Parse ``queryLedgerState/protocolParameters`` into what the payment builder needs."""
    for name in _RATIO_FIELDS:  # validate (never eval) the ratios we do not use, so garbage is caught
        if isinstance(result, dict) and name in result:
            parse_ratio(result[name])
    return ProtocolParams(
        min_fee_coefficient=_nat(_get(result, "minFeeCoefficient"), "minFeeCoefficient"),
        min_fee_constant=_nat(_get(result, "minFeeConstant", "ada", "lovelace"), "minFeeConstant"),
        coins_per_utxo_byte=_nat(_get(result, "minUtxoDepositCoefficient"), "minUtxoDepositCoefficient"),
        max_tx_size=_nat(_get(result, "maxTransactionSize", "bytes"), "maxTransactionSize"),
        max_value_size=_nat(_get(result, "maxValueSize", "bytes"), "maxValueSize"),
    )


class OgmiosChain:
    """``Chain`` over an Ogmios v6 server (``ws://host:port``), sharing one connection between threads."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        attempts: int = 4,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        params_ttl_s: float = 60.0,
        submit_timeout_s: float = 180.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Args:
            url: the Ogmios WebSocket URL.
            timeout_s: connect and per-answer timeout.
            attempts: tries per query before ChainUnavailableError (the first retry is immediate,
                later ones back off exponentially from ``backoff_s`` up to ``max_backoff_s``).
            params_ttl_s: how long protocol parameters are reused before being asked again.
            submit_timeout_s: how long a submission waits for its answer. A node holds a submission
                while its mempool is full, until a block makes room (mainnet: a block every ~20 s);
                submissions go over a connection of their own, so queries never queue behind one.
            clock, sleep: injectable for tests.
        """
        self.url = url
        self._timeout_s = timeout_s
        self._attempts = max(1, attempts)
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._params_ttl_s = params_ttl_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.RLock()
        self._ws: Any = None
        self._next_id = 0
        self._params: ProtocolParams | None = None
        self._params_at = 0.0
        self._era: tuple[float, int, float] | None = None
        self._seen_slot = 0  # the highest tip slot seen: the ledger's slot is never behind it
        self._submit_timeout_s = max(timeout_s, submit_timeout_s)
        self._submitter: OgmiosChain | None = None
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"OgmiosChain({self.url!r})"

    def __enter__(self) -> OgmiosChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ---

    def _connect(self) -> Any:
        import inspect

        from websockets.sync.client import connect

        options: dict[str, Any] = {"open_timeout": self._timeout_s, "close_timeout": 1.0, "proxy": None,
                                   "compression": None, "max_size": 2**26, "ping_interval": None}
        if "legacy" in inspect.signature(connect).parameters:
            options["legacy"] = True  # websockets ≥ 17: a plain ClientConnection, as in earlier versions
        return connect(self.url, **options)

    def _open(self) -> Any:
        ws = self._connect()
        if self._ws is None and self._next_id:
            self.reconnects += 1
        self._ws = ws
        return ws

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - the connection is already gone; nothing to report
                pass

    def _rpc(self, method: str, params: dict[str, Any] | None = None, *, resend: bool = True,
             answer_timeout_s: float | None = None) -> Any:
        """Send one request and return its ``result``; raise _RpcFailure for an error answer.

        ``resend=False`` (submit): once the request may have reached the server, a lost answer is
        not retried, because the transaction may have been accepted. ``answer_timeout_s``: wait
        that long for the answer (a held submission) rather than ``timeout_s``.
        """
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

        with self._lock:
            failure: Exception | None = None
            for attempt in range(self._attempts):
                if attempt > 1:
                    self._sleep(backoff_s(attempt - 1, base_s=self._backoff_s, max_s=self._max_backoff_s))
                try:
                    ws = self._ws or self._open()
                except InvalidURI as exc:
                    raise ChainUnavailableError(f"bad Ogmios URL {self.url!r}") from exc
                except (OSError, TimeoutError, InvalidHandshake) as exc:
                    failure = exc
                    log.warning("cannot reach Ogmios at %s (attempt %d): %s", self.url, attempt + 1, exc)
                    continue
                self._next_id += 1
                request = {"jsonrpc": "2.0", "method": method, "id": self._next_id}
                if params is not None:
                    request["params"] = params
                try:
                    ws.send(json.dumps(request))
                except (ConnectionClosed, OSError) as exc:
                    failure = exc
                    self._drop()
                    log.warning("Ogmios connection lost; reconnecting: %s", exc)
                    continue
                try:
                    raw = self._receive(ws, method, answer_timeout_s)
                except _HeldTooLong:
                    self._drop()
                    raise MempoolFullError(
                        f"Ogmios at {self.url} held the {method} for {answer_timeout_s:.0f}s: the node's mempool "
                        "had no room and no block made some; its outcome is unknown (the node may still take it)",
                        accepted_unknown=True) from None
                except (ConnectionClosed, OSError, TimeoutError) as exc:
                    self._drop()
                    if not resend:
                        raise ChainUnavailableError(
                            f"connection to Ogmios lost while waiting for {method}; its outcome is unknown") from exc
                    failure = exc
                    log.warning("Ogmios connection lost; reconnecting: %s", exc)
                    continue
                return self._parse(raw, method, self._next_id)
            raise ChainUnavailableError(
                f"Ogmios at {self.url} unavailable after {self._attempts} attempts: {failure}") from failure

    def _receive(self, ws: Any, method: str, answer_timeout_s: float | None) -> Any:
        """The next message; past ``timeout_s`` a long wait is logged and continued up to ``answer_timeout_s``."""
        try:
            return ws.recv(timeout=self._timeout_s)
        except TimeoutError:
            if answer_timeout_s is None or answer_timeout_s <= self._timeout_s:
                raise
        log.info("no answer to %s after %.0fs: the node's mempool is full; waiting for a block to make room "
                 "(up to %.0fs)", method, self._timeout_s, answer_timeout_s)
        try:
            return ws.recv(timeout=answer_timeout_s - self._timeout_s)
        except TimeoutError:
            raise _HeldTooLong() from None

    def _parse(self, raw: Any, method: str, request_id: int) -> Any:
        try:
            msg = json.loads(raw)
        except (TypeError, ValueError):
            self._drop()
            raise ChainProtocolError(f"Ogmios answered {method} with something that is not JSON") from None
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            self._drop()
            raise ChainProtocolError(f"Ogmios answered {method} with a non JSON-RPC message")
        if msg.get("id") != request_id or msg.get("method") != method:
            self._drop()  # out of step with the server: start afresh
            raise ChainProtocolError(f"Ogmios answered another request than {method}")
        if "error" in msg:
            err = msg["error"]
            if not isinstance(err, dict) or type(err.get("code")) is not int:
                raise ChainProtocolError(f"Ogmios answered {method} with a malformed error")
            raise _RpcFailure(err["code"], str(err.get("message", "")), err.get("data"))
        if "result" not in msg:
            raise ChainProtocolError(f"Ogmios answered {method} without a result")
        return msg["result"]

    def _query(self, method: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return self._rpc(method, params)
        except _RpcFailure as exc:
            raise ChainProtocolError(f"Ogmios refused {method}: {exc.code} {exc.message}") from None

    # --- Chain ---

    def tip(self) -> Tip:
        """The network tip (``origin`` before the first block is slot 0)."""
        result = self._query("queryNetwork/tip")
        if result == "origin":
            return Tip(0, "origin")
        tip_id = _get(result, "id")
        if not isinstance(tip_id, str) or not _HEX64.fullmatch(tip_id):
            raise ChainProtocolError("bad tip id")
        tip = Tip(_nat(_get(result, "slot"), "tip.slot"), tip_id)
        with self._lock:
            self._seen_slot = max(self._seen_slot, tip.slot)
        return tip

    def current_slot(self, now: float | None = None) -> int:
        """The slot the ledger is in at ``now`` (epoch seconds), from the era summaries and start time.

        The tip is the slot of the last block, which lags the ledger's clock when blocks are
        rare; a TTL counted from it can already be in the past. Never behind a tip this client
        has seen (a devnet making blocks faster than slots pass runs ahead of the wall clock).
        """
        era_start, era_slot, slot_s = self._era_clock()
        now = time.time() if now is None else now
        with self._lock:
            return max(era_slot + max(0, int((now - era_start) // slot_s)), self._seen_slot)

    def slot_time(self, slot: int) -> float:
        """The instant (epoch seconds) ``slot`` starts at, in the current era's clock."""
        era_start, era_slot, slot_s = self._era_clock()
        return era_start + (slot - era_slot) * slot_s

    def _era_clock(self) -> tuple[float, int, float]:
        """(era start in epoch seconds, era start slot, slot length in seconds), asked once."""
        with self._lock:
            if self._era is None:
                start = _parse_time(self._query("queryNetwork/startTime"))
                summaries = self._query("queryLedgerState/eraSummaries")
                if not isinstance(summaries, list) or not summaries:
                    raise ChainProtocolError("empty era summaries")
                last = summaries[-1]
                era_start_s = float(_nat(_get(last, "start", "time", "seconds"), "era start time"))
                era_slot = _nat(_get(last, "start", "slot"), "era start slot")
                slot_ms = _nat(_get(last, "parameters", "slotLength", "milliseconds"), "slot length")
                if slot_ms <= 0:
                    raise ChainProtocolError("slot length must be positive")
                self._era = (start + era_start_s, era_slot, slot_ms / 1000)
            return self._era

    def protocol_params(self) -> ProtocolParams:
        """Protocol parameters, asked at most once per ``params_ttl_s`` (and again after a fee or min-UTxO refusal)."""
        with self._lock:
            if self._params is not None and self._clock() - self._params_at < self._params_ttl_s:
                return self._params
            params = parse_protocol_params(self._query("queryLedgerState/protocolParameters"))
            self._params, self._params_at = params, self._clock()
            return params

    def utxos_at(self, address: str) -> list[Utxo]:
        """Confirmed UTxOs at ``address``."""
        return self._utxos(self._query("queryLedgerState/utxo", {"addresses": [address]}))

    def utxos_by_refs(self, refs: Sequence[OutputRef]) -> list[Utxo]:
        """Confirmed UTxOs among ``refs``."""
        if not refs:
            return []
        wanted = [{"transaction": {"id": r.tx_id}, "index": r.index} for r in refs]
        return self._utxos(self._query("queryLedgerState/utxo", {"outputReferences": wanted}))

    @staticmethod
    def _utxos(result: Any) -> list[Utxo]:
        if not isinstance(result, list):
            raise ChainProtocolError("UTxO answer is not a list")
        return [parse_utxo(item) for item in result]

    def submit(self, cbor: bytes) -> str:
        """Submit a signed transaction; return its id or raise the typed ``SubmitError`` for Ogmios's code.

        While the node's mempool is full the node holds the submission until a block makes room:
        this waits up to ``submit_timeout_s``, on a connection of its own.

        Raises:
            MempoolFullError: still held after ``submit_timeout_s``; the outcome is unknown.
            ChainUnavailableError: the connection was lost; the outcome is unknown.
        """
        with self._lock:
            if self._submitter is None:
                self._submitter = OgmiosChain(
                    self.url, timeout_s=self._timeout_s, attempts=self._attempts, backoff_s=self._backoff_s,
                    max_backoff_s=self._max_backoff_s, clock=self._clock, sleep=self._sleep)
            submitter = self._submitter
        try:
            result = submitter._rpc("submitTransaction", {"transaction": {"cbor": cbor.hex()}}, resend=False,
                                    answer_timeout_s=self._submit_timeout_s)
        except _RpcFailure as exc:
            error = submit_error(exc.code, exc.message, exc.data)
            if isinstance(error, (FeeTooSmallError, OutputTooSmallError)):
                with self._lock:
                    self._params = None  # the parameters may have changed under us
            raise error from None
        tx_id = _get(result, "transaction", "id")
        if not isinstance(tx_id, str) or not _HEX64.fullmatch(tx_id):
            raise ChainProtocolError("bad transaction id in submit answer")
        return tx_id

    def in_mempool(self, tx_id: str) -> bool:
        """Whether ``tx_id`` is in the node's mempool (acquire a snapshot, ask, release)."""
        with self._lock:
            self._query("acquireMempool")
            try:
                found = self._query("hasTransaction", {"id": tx_id})
            finally:
                self._query("releaseMempool")
        if not isinstance(found, bool):
            raise ChainProtocolError("hasTransaction answer is not a boolean")
        return found

    def mempool_transaction(self, tx_id: str, *,
                            seen: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
        """``tx_id`` as Ogmios shows it (every field: outputs, network...) if it waits in the mempool, else None.

        Ogmios has no lookup by id: the snapshot is walked with ``nextTransaction`` until
        ``tx_id``. ``seen`` is called with each transaction walked past (the target included),
        so a caller can keep them and not walk the same mempool again for the next one.
        """
        with self._lock:
            self._query("acquireMempool")
            try:
                if self._query("hasTransaction", {"id": tx_id}) is not True:
                    return None
                while True:
                    tx = _get(self._query("nextTransaction", {"fields": "all"}), "transaction")
                    if tx is None:
                        return None  # left the snapshot's end: it cannot happen within one snapshot
                    if not isinstance(tx, dict):
                        raise ChainProtocolError("nextTransaction answer is not a transaction")
                    if seen is not None:
                        seen(tx)
                    if tx.get("id") == tx_id:
                        return tx
            finally:
                self._query("releaseMempool")

    def find_transaction(self, tx_id: str, *, since: tuple[int, str] | None,
                         inputs: Sequence[OutputRef] = ()) -> TxLookup:
        """Did ``tx_id`` land? Chain sync (``findIntersection`` at ``since``, ``nextBlock`` to the tip).

        Runs on a connection of its own, so the shared one never holds a chain-sync cursor, and
        stops at the tip it was told of (a ``nextBlock`` past the tip would wait for a new block).

        Raises:
            IntersectionNotFoundError: the chain does not hold ``since`` (no conclusion possible).
            ChainUnavailableError, ChainProtocolError: the chain could not be read.
        """
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

        point: Any = "origin" if since is None else {"slot": int(since[0]), "id": str(since[1])}
        wanted = set(inputs)
        try:
            ws = self._connect()
        except InvalidURI as exc:
            raise ChainUnavailableError(f"bad Ogmios URL {self.url!r}") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ChainUnavailableError(f"cannot reach Ogmios at {self.url}: {exc}") from exc
        counter = 0

        def ask(method: str, params: dict[str, Any] | None = None) -> Any:
            nonlocal counter
            counter += 1
            request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": counter}
            if params is not None:
                request["params"] = params
            try:
                ws.send(json.dumps(request))
                raw = ws.recv(timeout=self._timeout_s)
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                raise ChainUnavailableError(f"chain sync with Ogmios lost: {exc}") from exc
            try:
                msg = json.loads(raw)
            except (TypeError, ValueError):
                raise ChainProtocolError(f"Ogmios answered {method} with something that is not JSON") from None
            if not isinstance(msg, dict) or msg.get("id") != counter or msg.get("method") != method:
                raise ChainProtocolError(f"Ogmios answered another request than {method}")
            if "error" in msg:
                err = msg["error"] if isinstance(msg["error"], dict) else {}
                if err.get("code") == 1000:
                    raise IntersectionNotFoundError(f"the chain does not hold the point {point!r}")
                raise ChainProtocolError(f"Ogmios refused {method}: {err.get('code')} {err.get('message')}")
            if "result" not in msg:
                raise ChainProtocolError(f"Ogmios answered {method} without a result")
            return msg["result"]

        try:
            found = ask("findIntersection", {"points": [point]})
            tip = _get(found, "tip")
            if tip == "origin" or _sync_point(_get(found, "intersection")) == _sync_point(tip):
                return TxLookup(tx_id, None, _tip_slot(tip))  # nothing after the point
            spent_by: dict[OutputRef, str] = {}
            while True:
                step = ask("nextBlock")
                direction, tip = _get(step, "direction"), _get(step, "tip")
                if direction == "backward":
                    if _sync_point(_get(step, "point")) != _sync_point(point):
                        raise IntersectionNotFoundError("the chain rolled back past the point while being read")
                    if tip == "origin" or _sync_point(tip) == _sync_point(point):
                        return TxLookup(tx_id, None, _tip_slot(tip))
                    continue
                if direction != "forward":
                    raise ChainProtocolError(f"nextBlock: unknown direction {str(direction)[:20]!r}")
                block = _get(step, "block")
                block_id, slot = _get(block, "id"), _nat(_get(block, "slot"), "block.slot")
                for tx in block.get("transactions") or ():
                    other = _get(tx, "id")
                    if other == tx_id:
                        return TxLookup(tx_id, (slot, str(block_id)), _tip_slot(tip))
                    if wanted and tx.get("spends", "inputs") == "inputs":
                        for item in tx.get("inputs") or ():
                            ref = OutputRef(str(_get(item, "transaction", "id")), _nat(_get(item, "index"), "index"))
                            if ref in wanted:
                                spent_by[ref] = str(other)
                if block_id == _get(tip, "id"):
                    return TxLookup(tx_id, None, slot, spent_by)
        finally:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - the lookup is done; closing is best effort
                pass

    def close(self) -> None:
        """Close the connections (a later call opens new ones)."""
        with self._lock:
            self._drop()
            submitter, self._submitter = self._submitter, None
        if submitter is not None:
            submitter.close()


__all__ = ["OgmiosChain", "parse_protocol_params", "parse_ratio", "parse_utxo", "parse_value"]


def _sync_point(point: Any) -> Any:
    """A point or tip reduced to what identifies it: ``"origin"`` or the block id."""
    if point == "origin":
        return "origin"
    return _get(point, "id")


def _tip_slot(tip: Any) -> int:
    return 0 if tip == "origin" else _nat(_get(tip, "slot"), "tip.slot")


def _parse_time(value: Any) -> float:
    """Epoch seconds of an Ogmios UTC time string (``2026-11-29T10:00:00Z``, fractions allowed)."""
    from datetime import datetime

    if not isinstance(value, str):
        raise ChainProtocolError("start time is not a string")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ChainProtocolError(f"bad start time {value[:40]!r}") from None
