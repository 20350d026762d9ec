"""Chain access over Blockfrost's HTTP API (v0): one keep-alive connection, rate limited, strict parsing.

``BlockfrostChain`` is the ``Chain`` the payer uses when no node of one's own is at hand. It
speaks httpx directly (``blockfrost-python`` opens a new ``requests`` connection per call and
returns untyped namespaces): one ``httpx.Client`` keeps its connection alive between calls.

Blockfrost's limits are respected on the client side: a token bucket (``burst`` requests at
once, refilled at ``rate_per_s``; Blockfrost's are 500 and 10/s) paces every request, and 429,
425 and 5xx answers are retried with exponential backoff (honouring ``Retry-After``) a bounded
number of times, after which the caller gets a retryable ``ChainUnavailableError``. A 402 (the
project's daily quota is spent), a 418 (the IP is banned for flooding) and a 403 (a wrong
project id) end at once with one line naming the network and what to do.

The project id is a secret: it lives in one request header, never in a repr, an error or a log.

Blockfrost sees the chain through an index that follows the node: it has no view of other
people's mempool transactions, and ``/mempool/{hash}`` knows only transactions submitted
through it. Whether a transaction landed is asked with ``GET /txs/{hash}``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Sequence

from wallets.backoff import backoff_s
from wallets.errors import (
    ChainError,
    ChainProtocolError,
    ChainUnavailableError,
    FeeTooSmallError,
    MempoolFullError,
    OutputTooSmallError,
    SubmitError,
    submit_error,
)
from wallets.types import LOVELACE, OutputRef, ProtocolParams, Tip, Utxo

if TYPE_CHECKING:
    from wallets.chain import TxLookup

log = logging.getLogger(__name__)

PUBLIC_URLS = {
    "mainnet": "https://cardano-mainnet.blockfrost.io/api/v0",
    "preprod": "https://cardano-preprod.blockfrost.io/api/v0",
    "preview": "https://cardano-preview.blockfrost.io/api/v0",
}
"""Blockfrost's public endpoint per network (the devnet has the sandbox's, on loopback)."""
SANDBOX_URL = "http://127.0.0.1:3000/api/v0"
SANDBOX_PROJECT_ID = "devnet" + "0" * 32
"""The project id the sandbox's Blockfrost API accepts by default (public: it guards nothing)."""
PROJECT_ID_ENV = "BLOCKFROST_PROJECT_ID"
PAGE_SIZE = 100

_HEX64 = re.compile(r"[0-9a-f]{64}")
_UNIT = re.compile(r"[0-9a-f]{56}(?:[0-9a-f]{2}){0,32}")
_DIGITS = re.compile(r"[0-9]{1,40}")
_TX_IN = re.compile(r'TxIn \(TxId \{unTxId = SafeHash \\*"([0-9a-f]{64})\\*"\}\) \(TxIx \{unTxIx = ([0-9]+)\}\)')

# Ledger failure constructors (as cardano-submit-api prints them) and the Ogmios code of each.
_NODE_FAILURES = {
    "InvalidWitnessesUTXOW": 3100, "MissingVKeyWitnessesUTXOW": 3101, "MissingScriptWitnessesUTXOW": 3102,
    "ScriptWitnessNotValidatingUTXOW": 3103, "ExtraneousScriptWitnessesUTXOW": 3104,
    "MissingTxBodyMetadataHash": 3105, "MissingTxMetadata": 3106, "ConflictingMetadataHash": 3107,
    "InvalidMetadata": 3108, "ExtraRedeemers": 3110, "NotAllowedSupplementalDatums": 3112,
    "PPViewHashesDontMatch": 3113, "BadInputsUTxO": 3117, "OutsideValidityIntervalUTxO": 3118,
    "MaxTxSizeUTxO": 3119, "OutputTooBigUTxO": 3120, "InputSetEmptyUTxO": 3121, "FeeTooSmallUTxO": 3122,
    "ValueNotConservedUTxO": 3123, "WrongNetwork": 3124, "WrongNetworkWithdrawal": 3124,
    "BabbageOutputTooSmallUTxO": 3125, "OutputTooSmallUTxO": 3125,
}
_FAILURE = re.compile(r"\b(" + "|".join(sorted(_NODE_FAILURES, key=len, reverse=True)) + r")\b")
_RETRYABLE = frozenset({425, 429, 500, 502, 503, 504})


class _MempoolFull(Exception):
    """Blockfrost answered a submission with 425: the node's mempool is full; nothing was taken."""

    def __init__(self, retry_after: str | None) -> None:
        super().__init__("mempool full")
        self.retry_after = retry_after


class BlockfrostAuthError(ChainError):
    """Blockfrost refused the project id (403): wrong id, or one of another network. Not retryable."""


class BlockfrostQuotaError(ChainUnavailableError):
    """The project's daily request quota is spent (402), or the IP is banned for flooding (418)."""


def default_url(network: str) -> str:
    """Blockfrost's public endpoint for ``network``; the sandbox's loopback one for the devnet."""
    return PUBLIC_URLS.get(network, SANDBOX_URL)


class RateLimiter:
    """A token bucket: ``burst`` requests at once, refilled at ``rate_per_s``; ``acquire`` waits for one."""

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def acquire(self) -> None:
        """Take one token, sleeping until it is earned (a waiting caller holds its place in the queue)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate_per_s)
            self._at = now
            self._tokens -= 1
            wait = -self._tokens / self.rate_per_s if self._tokens < 0 else 0.0
        if wait > 0:
            self.waited_s += wait
            self._sleep(wait)


def _nat(value: Any, what: str) -> int:
    """A non-negative integer given as a JSON number or a decimal string (Blockfrost uses both)."""
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise ChainProtocolError(f"{what}: expected a non-negative integer, got {str(value)[:40]!r}")


def _field(obj: Any, key: str, what: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ChainProtocolError(f"missing {key} in Blockfrost's {what} answer")
    return obj[key]


def parse_amount(items: Any) -> tuple[int, dict[str, int]]:
    """Parse Blockfrost's ``amount`` list into ``(lovelace, {"policy.name": quantity})``."""
    if not isinstance(items, list):
        raise ChainProtocolError("amount is not a list")
    lovelace = 0
    assets: dict[str, int] = {}
    for item in items:
        unit = _field(item, "unit", "amount")
        qty = _nat(_field(item, "quantity", "amount"), "quantity")
        if unit == LOVELACE:
            lovelace += qty
        elif isinstance(unit, str) and _UNIT.fullmatch(unit):
            asset = f"{unit[:56]}.{unit[56:]}"
            assets[asset] = assets.get(asset, 0) + qty
        else:
            raise ChainProtocolError(f"bad unit in amount: {str(unit)[:130]!r}")
    return lovelace, assets


def parse_utxo(item: Any, address: str | None = None) -> Utxo:
    """Parse one item of ``/addresses/{address}/utxos``."""
    tx_id = _field(item, "tx_hash", "UTxO")
    if not isinstance(tx_id, str) or not _HEX64.fullmatch(tx_id):
        raise ChainProtocolError(f"bad transaction id: {str(tx_id)[:70]!r}")
    where = item.get("address", address) if isinstance(item, dict) else address
    if not isinstance(where, str) or not where:
        raise ChainProtocolError("bad address in UTxO")
    lovelace, assets = parse_amount(_field(item, "amount", "UTxO"))
    return Utxo(OutputRef(tx_id, _nat(_field(item, "output_index", "UTxO"), "output_index")), where, lovelace, assets)


def parse_protocol_params(result: Any) -> ProtocolParams:
    """Parse ``/epochs/latest/parameters`` into what the payment builder needs."""
    what = "parameters"
    return ProtocolParams(
        min_fee_coefficient=_nat(_field(result, "min_fee_a", what), "min_fee_a"),
        min_fee_constant=_nat(_field(result, "min_fee_b", what), "min_fee_b"),
        coins_per_utxo_byte=_nat(_field(result, "coins_per_utxo_size", what), "coins_per_utxo_size"),
        max_tx_size=_nat(_field(result, "max_tx_size", what), "max_tx_size"),
        max_value_size=_nat(_field(result, "max_val_size", what), "max_val_size"),
    )


def submit_failure(message: str) -> SubmitError:
    """The typed ``SubmitError`` for Blockfrost's 400 answer to ``/tx/submit`` (the node's failure text)."""
    found = _FAILURE.search(message)
    if found is None:
        if "DeserialiseFailure" in message or "TxReadError" in message:
            return submit_error(-32602, "Blockfrost could not decode the transaction")
        return SubmitError(f"Blockfrost refused the transaction: {message[:300]}", code=0, data=message[:2000])
    code = _NODE_FAILURES[found.group(1)]
    data: Any = None
    if code == 3117:
        refs = [{"transaction": {"id": tx_id}, "index": int(ix)} for tx_id, ix in _TX_IN.findall(message)]
        data = {"unknownOutputReferences": refs}
    return submit_error(code, f"the ledger refused the transaction: {found.group(1)}", data)


class BlockfrostChain:
    """``Chain`` over a Blockfrost API (``https://cardano-<network>.blockfrost.io/api/v0``), thread-safe."""

    def __init__(
        self,
        url: str,
        project_id: str,
        *,
        network: str,
        timeout_s: float = 10.0,
        attempts: int = 5,
        backoff_s: float = 0.25,
        max_backoff_s: float = 4.0,
        rate_per_s: float = 10.0,
        burst: int = 500,
        params_ttl_s: float = 60.0,
        tip_ttl_s: float = 1.0,
        max_tip_lag_s: float | None = None,
        evidence_max_lag_s: float | None = None,
        submit_timeout_s: float = 180.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        transport: Any = None,
    ) -> None:
        """Args:
            url: the API root, ending in ``/api/v0``.
            project_id: the Blockfrost project id (from ``BLOCKFROST_PROJECT_ID``; kept out of every text).
            network: the network the project is for (named in errors).
            timeout_s: connect and read timeout per request.
            attempts: tries per request on 429/425/5xx/timeouts before ChainUnavailableError.
            backoff_s, max_backoff_s: exponential backoff between tries (a longer ``Retry-After`` wins,
                up to ``max_backoff_s``).
            rate_per_s, burst: the client-side token bucket (Blockfrost allows 10/s, bursts of 500).
            params_ttl_s: how long protocol parameters are reused.
            tip_ttl_s: how long the latest block is reused (a payment asks for it twice within
                milliseconds; an older tip is still a correct lower bound for every use).
            max_tip_lag_s: refuse (retryably) a latest block older than this: Blockfrost's index lags.
            evidence_max_lag_s: conclude that something is absent from the chain (a transaction in no
                block, an output unspent) only while the latest block is at most this old; else
                ChainUnavailableError: what the index has not reached yet cannot be told.
            submit_timeout_s: how long a submission refused for a full mempool (425) is sent again, the same
                bytes after each wait, before MempoolFullError (mainnet makes a block every ~20 s).
            clock, wall_clock, sleep: injectable for tests; ``transport`` an ``httpx`` transport.
        """
        import httpx

        if not project_id:
            raise BlockfrostAuthError(f"no Blockfrost project id for {network}: set {PROJECT_ID_ENV}")
        self.url = url.rstrip("/")
        self.network = network
        self._attempts = max(1, attempts)
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._params_ttl_s = params_ttl_s
        self._tip_ttl_s = tip_ttl_s
        self._latest: tuple[float, dict[str, Any]] | None = None
        self._max_tip_lag_s = max_tip_lag_s
        self._evidence_max_lag_s = evidence_max_lag_s
        self._submit_timeout_s = submit_timeout_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self.limiter = RateLimiter(rate_per_s, burst, clock=clock, sleep=sleep)
        self._client = httpx.Client(
            base_url=self.url, headers={"project_id": project_id, "User-Agent": "cardano-pay-agent"},
            timeout=httpx.Timeout(timeout_s), transport=transport,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1), trust_env=False)
        self._lock = threading.RLock()
        self._params: ProtocolParams | None = None
        self._params_at = 0.0
        self._anchor: tuple[int, float] | None = None  # (slot, unix time) of a block seen
        self._slot_length_s: float | None = None
        self.requests = 0

    def __repr__(self) -> str:
        return f"BlockfrostChain({self.url!r}, network={self.network!r})"

    def __enter__(self) -> BlockfrostChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport -------------------------------------------------------------------------

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = backoff_s(attempt, base_s=self._backoff_s, max_s=self._max_backoff_s)
        if retry_after and retry_after.strip().isdigit():
            delay = max(delay, min(float(retry_after.strip()), self._max_backoff_s))
        return delay

    def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                 content: bytes | None = None) -> Any:
        """Send one request; return the parsed JSON body, or None for a 404.

        A POST (submit) is sent again only when the server surely did not act on it (429, 425,
        a refused connection); after a timeout or a 5xx its outcome is unknown.
        """
        import httpx

        post = method == "POST"
        failure = ""
        retry_after: str | None = None
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._delay(attempt, retry_after))
            retry_after = None
            self.limiter.acquire()
            try:
                with self._lock:
                    self.requests += 1
                    response = self._client.request(
                        method, path, params=params, content=content,
                        headers={"Content-Type": "application/cbor"} if post else None)
            except httpx.ConnectError as exc:
                failure = f"cannot connect: {exc}"
                log.warning("cannot reach Blockfrost at %s (attempt %d): %s", self.url, attempt + 1, exc)
                continue
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if post:
                    raise ChainUnavailableError(
                        f"Blockfrost at {self.url} did not answer the submission ({type(exc).__name__}); "
                        "its outcome is unknown") from None
                failure = f"{type(exc).__name__}"
                log.warning("Blockfrost %s %s failed (attempt %d): %s", method, path, attempt + 1, failure)
                continue
            status = response.status_code
            if status == 200:
                try:
                    return response.json()
                except ValueError:
                    failure = "an answer that is not JSON"
                    if post:
                        raise ChainUnavailableError(
                            "Blockfrost answered the submission with something that is not JSON; "
                            "its outcome is unknown") from None
                    log.warning("Blockfrost answered %s with something that is not JSON (attempt %d)",
                                path, attempt + 1)
                    continue
            if status == 404:
                return None
            message = _error_message(response)
            if status == 403:
                raise BlockfrostAuthError(
                    f"Blockfrost refused the project id for {self.network} ({message}): set {PROJECT_ID_ENV} "
                    f"to the id of a {self.network} project")
            if status == 402:
                raise BlockfrostQuotaError(
                    f"the daily request quota of the Blockfrost project for {self.network} is spent (HTTP 402); "
                    "it renews at 00:00 UTC, or upgrade the plan")
            if status == 418:
                raise BlockfrostQuotaError(
                    f"Blockfrost banned this IP for sending requests over its limit (HTTP 418, {self.network}); "
                    "wait before trying again")
            if post and status == 425:
                raise _MempoolFull(response.headers.get("Retry-After"))
            if status in _RETRYABLE and (not post or status == 429):
                failure = f"HTTP {status}"
                retry_after = response.headers.get("Retry-After")
                log.warning("Blockfrost answered %s with %d (attempt %d)", path, status, attempt + 1)
                continue
            if post and status >= 500:
                raise ChainUnavailableError(
                    f"Blockfrost answered the submission with HTTP {status}; its outcome is unknown")
            if post and status == 400:
                raise submit_failure(message)
            raise ChainProtocolError(f"Blockfrost answered {method} {path.split('?')[0]} with HTTP {status}: "
                                     f"{message[:200]}")
        if failure == "an answer that is not JSON":
            raise ChainProtocolError(f"Blockfrost at {self.url} answered {path} with something that is not JSON "
                                     f"{self._attempts} times")
        raise ChainUnavailableError(f"Blockfrost at {self.url} unavailable after {self._attempts} attempts: {failure}")

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._request("GET", path, params=params)

    def _pages(self, path: str) -> list[Any] | None:
        """Every item of a paged list (100 per page), or None if the first page is a 404."""
        items: list[Any] = []
        page = 1
        while True:
            batch = self._get(path, {"page": page, "count": PAGE_SIZE})
            if batch is None:
                return None if page == 1 else items
            if not isinstance(batch, list):
                raise ChainProtocolError(f"Blockfrost answered {path} with something that is not a list")
            items.extend(batch)
            if len(batch) < PAGE_SIZE:
                return items
            page += 1

    # --- Chain -------------------------------------------------------------------------------

    def _latest_block(self, *, fresh: bool = False) -> dict[str, Any]:
        with self._lock:
            if not fresh and self._latest is not None and self._clock() - self._latest[0] < self._tip_ttl_s:
                return self._latest[1]
        block = self._get("/blocks/latest")
        if not isinstance(block, dict):
            raise ChainProtocolError("Blockfrost has no latest block")
        with self._lock:
            self._latest = (self._clock(), block)
        return block

    def tip(self, *, fresh: bool = False) -> Tip:
        """The latest block Blockfrost has indexed (ChainUnavailableError if older than ``max_tip_lag_s``).

        Reused for ``tip_ttl_s`` unless ``fresh``.
        """
        block = self._latest_block(fresh=fresh)
        block_id = _field(block, "hash", "block")
        if not isinstance(block_id, str) or not _HEX64.fullmatch(block_id):
            raise ChainProtocolError("bad block hash in the latest block")
        slot = _nat(_field(block, "slot", "block"), "slot")
        at = _nat(_field(block, "time", "block"), "time")
        with self._lock:
            self._anchor = (slot, float(at))
        lag = self._wall_clock() - at
        if self._max_tip_lag_s is not None and lag > self._max_tip_lag_s:
            raise ChainUnavailableError(
                f"Blockfrost's latest block is {int(lag)} s old (over {int(self._max_tip_lag_s)} s): "
                "its index lags behind the chain; trying again later")
        return Tip(slot, block_id)

    def _slot_clock(self) -> tuple[int, float, float]:
        """(slot, unix time of that slot, slot length in seconds): a seen block and the genesis slot length."""
        with self._lock:
            length, anchor = self._slot_length_s, self._anchor
        if length is None:
            genesis = self._get("/genesis")
            length = float(_nat(_field(genesis, "slot_length", "genesis"), "slot_length"))
            if length <= 0:
                raise ChainProtocolError("slot length must be positive")
            with self._lock:
                self._slot_length_s = length
        if anchor is None:
            self.tip()
            with self._lock:
                anchor = self._anchor
        assert anchor is not None
        return anchor[0], anchor[1], length

    def _require_fresh_index(self, what: str) -> Tip:
        """A fresh tip, if the index is close enough behind the clock to conclude ``what`` is absent."""
        tip = self.tip(fresh=True)
        if self._evidence_max_lag_s is not None:
            with self._lock:
                at = float(self._latest[1]["time"]) if self._latest is not None else 0.0
            lag = self._wall_clock() - at
            if lag > self._evidence_max_lag_s:
                raise ChainUnavailableError(
                    f"Blockfrost's latest block is {int(lag)} s old: whether {what} cannot be told until its "
                    "index catches up")
        return tip

    def current_slot(self, now: float | None = None) -> int:
        """The slot the ledger is in at ``now`` (epoch seconds): a seen block's slot and time plus elapsed slots."""
        slot, at, length = self._slot_clock()
        now = self._wall_clock() if now is None else now
        return slot + max(0, int((now - at) // length))

    def slot_time(self, slot: int) -> float:
        """The instant (epoch seconds) ``slot`` starts at."""
        anchor_slot, at, length = self._slot_clock()
        return at + (slot - anchor_slot) * length

    def protocol_params(self) -> ProtocolParams:
        """Protocol parameters, asked at most once per ``params_ttl_s`` (and again after a fee or min-UTxO refusal)."""
        with self._lock:
            if self._params is not None and self._clock() - self._params_at < self._params_ttl_s:
                return self._params
        params = parse_protocol_params(self._get("/epochs/latest/parameters"))
        with self._lock:
            self._params, self._params_at = params, self._clock()
        return params

    def utxos_at(self, address: str) -> list[Utxo]:
        """Confirmed UTxOs at ``address`` (every page; none for an address the chain never saw)."""
        items = self._pages(f"/addresses/{address}/utxos")
        return [parse_utxo(item, address) for item in items or []]

    def utxos_by_refs(self, refs: Sequence[OutputRef]) -> list[Utxo]:
        """Confirmed unspent outputs among ``refs`` (from each transaction's outputs and who consumed them).

        With ``evidence_max_lag_s``, refused (retryably) while the index lags: an output it has not
        seen spent yet may be spent in a block it has not reached.
        """
        if self._evidence_max_lag_s is not None and refs:
            self._require_fresh_index("these outputs are unspent")
        by_tx: dict[str, set[int]] = defaultdict(set)
        for ref in refs:
            by_tx[ref.tx_id].add(ref.index)
        found = []
        for tx_id, indexes in by_tx.items():
            answer = self._get(f"/txs/{tx_id}/utxos")
            if answer is None:
                continue
            for item in _field(answer, "outputs", "transaction UTxOs"):
                index = _nat(_field(item, "output_index", "output"), "output_index")
                if index not in indexes or _field(item, "consumed_by_tx", "output") is not None:
                    continue
                lovelace, assets = parse_amount(_field(item, "amount", "output"))
                address = _field(item, "address", "output")
                if not isinstance(address, str):
                    raise ChainProtocolError("bad address in transaction output")
                found.append(Utxo(OutputRef(tx_id, index), address, lovelace, assets))
        return found

    def submit(self, cbor: bytes) -> str:
        """Submit a signed transaction; return its id or raise the typed ``SubmitError`` for the node's failure.

        A full mempool (425: nothing taken) makes it wait for a block and send the same bytes again,
        for up to ``submit_timeout_s``.

        Raises:
            MempoolFullError: still no room after ``submit_timeout_s``; the transaction was not taken.
        """
        deadline = self._clock() + self._submit_timeout_s
        waits = 0
        while True:
            try:
                return self._submit_once(cbor)
            except _MempoolFull as full:
                if self._clock() >= deadline:
                    raise MempoolFullError(
                        f"Blockfrost at {self.url}: the node's mempool had no room for {self._submit_timeout_s:.0f}s "
                        "(HTTP 425); the transaction was not taken", accepted_unknown=False) from None
                waits += 1
                if waits == 1:
                    log.info("Blockfrost: the node's mempool is full; waiting for a block to send the transaction "
                             "again (up to %.0fs)", self._submit_timeout_s)
                delay = self._delay(waits, full.retry_after)
                self._sleep(max(0.0, min(delay, deadline - self._clock())))

    def _submit_once(self, cbor: bytes) -> str:
        try:
            tx_id = self._request("POST", "/tx/submit", content=bytes(cbor))
        except (FeeTooSmallError, OutputTooSmallError):
            with self._lock:
                self._params = None  # the parameters may have changed under us
            raise
        if not isinstance(tx_id, str) or not _HEX64.fullmatch(tx_id):
            raise ChainProtocolError("bad transaction id in Blockfrost's submit answer")
        return tx_id

    def in_mempool(self, tx_id: str) -> bool:
        """Whether ``tx_id`` waits in Blockfrost's mempool (which holds only transactions submitted through it)."""
        return self._get(f"/mempool/{tx_id}") is not None

    def transaction(self, tx_id: str) -> dict[str, Any] | None:
        """``GET /txs/{hash}``: the confirmed transaction (block, slot, fees …), or None if no block holds it."""
        answer = self._get(f"/txs/{tx_id}")
        if answer is not None and not isinstance(answer, dict):
            raise ChainProtocolError("Blockfrost's transaction answer is not an object")
        return answer

    def find_transaction(self, tx_id: str, *, since: tuple[int, str] | None,
                         inputs: Sequence[OutputRef] = ()) -> TxLookup:
        """Did ``tx_id`` land in a block after ``since``, and in which? ``GET /txs/{hash}`` against the indexed tip.

        The tip is read first, so "no block holds it" covers every block up to ``tip_slot``.
        ``since`` must be a block Blockfrost knows (else IntersectionNotFoundError: rolled back,
        or not indexed); a transaction in ``since`` or before it is outside the range read, as
        with chain sync. ``inputs`` spent by another transaction in the range are named.

        Raises:
            IntersectionNotFoundError: Blockfrost does not know ``since`` (no conclusion possible).
            ChainUnavailableError, ChainProtocolError: Blockfrost could not be read.
        """
        from wallets.chain import IntersectionNotFoundError, TxLookup

        floor = 0
        if since is not None:
            block = self._get(f"/blocks/{since[1]}")
            if block is None:
                raise IntersectionNotFoundError(f"Blockfrost has no block {since[1][:16]} at slot {since[0]}")
            floor = _nat(_field(block, "height", "block"), "height")
        tip = self.tip(fresh=True)
        found = self._landed(tx_id, floor)
        if found is None and self._evidence_max_lag_s is not None:
            tip = self._require_fresh_index(f"transaction {tx_id[:16]} landed")
        if found is not None:
            return TxLookup(tx_id, found, max(tip.slot, found[0]))
        spent_by: dict[OutputRef, str] = {}
        by_tx: dict[str, set[int]] = defaultdict(set)
        for ref in inputs:
            by_tx[ref.tx_id].add(ref.index)
        for parent, indexes in by_tx.items():
            answer = self._get(f"/txs/{parent}/utxos")
            for item in (_field(answer, "outputs", "transaction UTxOs") if answer is not None else []):
                index = _nat(_field(item, "output_index", "output"), "output_index")
                other = item.get("consumed_by_tx") if isinstance(item, dict) else None
                if index in indexes and isinstance(other, str) and other != tx_id and self._landed(other, floor):
                    spent_by[OutputRef(parent, index)] = other
        return TxLookup(tx_id, None, tip.slot, spent_by)

    def _landed(self, tx_id: str, floor_height: int) -> tuple[int, str] | None:
        """(slot, block hash) of ``tx_id`` if a block above height ``floor_height`` holds it."""
        found = self.transaction(tx_id)
        if found is None:
            return None
        block = _field(found, "block", "transaction")
        if not isinstance(block, str) or not _HEX64.fullmatch(block):
            raise ChainProtocolError("bad block hash in Blockfrost's transaction answer")
        if _nat(_field(found, "block_height", "transaction"), "block_height") <= floor_height:
            return None
        return _nat(_field(found, "slot", "transaction"), "slot"), block

    def token_metadata(self, asset: str) -> dict[str, Any] | None:
        """Registered metadata of a native token (``policy.name``): name, ticker, decimals; None if none."""
        answer = self._get(f"/assets/{asset.replace('.', '')}")
        metadata = answer.get("metadata") if isinstance(answer, dict) else None
        if not isinstance(metadata, dict):
            return None
        return {k: metadata.get(k) for k in ("name", "ticker", "decimals", "description")}

    def close(self) -> None:
        """Close the connection; the chain is not used afterwards."""
        self._client.close()


def _error_message(response: Any) -> str:
    """The ``message`` of a Blockfrost error body (its text if the body is not Blockfrost's JSON)."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return f"HTTP {response.status_code}"


__all__ = ["PUBLIC_URLS", "BlockfrostAuthError", "BlockfrostChain", "BlockfrostQuotaError", "RateLimiter",
           "default_url", "parse_amount", "parse_protocol_params", "parse_utxo", "submit_failure"]
