"""Chain access: OgmiosChain against a loopback JSON-RPC stub, and the MemoryChain's test controls.

What every Chain must answer alike is in test_chain_contract.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from sandbox.memchain import MemoryChain
from tests.wallets.test_payment import TOKEN, KeySigner, fresh_address, pay
from wallets.chain import MAINNET_PARAMS, Chain
from wallets.errors import (
    ChainProtocolError,
    ChainUnavailableError,
    FeeTooSmallError,
    InputsSpentError,
    MempoolFullError,
    MissingSignaturesError,
    OutsideValidityError,
    SubmitError,
)
from wallets.ogmios import OgmiosChain, parse_protocol_params, parse_ratio, parse_utxo
from wallets.payment import build_payment
from wallets.types import OutputRef, RequiredOutput

VECTORS = Path(__file__).resolve().parents[1] / "data" / "ogmios" / "test-vectors" / "v6.14.0"
TX = "ab" * 32
TIP = {"slot": 1234, "id": "cd" * 32}


def _vector(category: str, n: int = 0) -> Any:
    return json.loads((VECTORS / category / f"{n:03d}.json").read_text())["result"]


PARAMS_RESULT = {
    "minFeeCoefficient": 44,
    "minFeeConstant": {"ada": {"lovelace": 155381}},
    "minUtxoDepositCoefficient": 4310,
    "maxTransactionSize": {"bytes": 16384},
    "maxValueSize": {"bytes": 5000},
    "stakePoolPledgeInfluence": "3/10",
    "monetaryExpansion": "3/1000",
    "treasuryExpansion": "1/5",
}


class Stub:
    """A loopback Ogmios stand-in: ``handlers[method](params) -> reply``; counts connections and requests."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.handlers: dict[str, Callable[[Any], Any]] = {
            "queryNetwork/tip": lambda p: {"result": TIP},
            "queryLedgerState/protocolParameters": lambda p: {"result": PARAMS_RESULT},
            "acquireMempool": lambda p: {"result": {"acquired": "mempool", "slot": 1234}},
            "hasTransaction": lambda p: {"result": p["id"] == TX},
            "releaseMempool": lambda p: {"result": {"released": "mempool"}},
        }
        self.connections = 0
        self.requests: list[str] = []
        self.close_after: set[int] = set()  # close the connection after answering request number n
        self._server = serve(self._handle, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, ws: Any) -> None:
        self.connections += 1
        for raw in ws:
            msg = json.loads(raw)
            self.requests.append(msg["method"])
            reply = self.handlers[msg["method"]](msg.get("params"))
            if reply == "drop":
                return
            if isinstance(reply, str):
                ws.send(reply)
            else:
                ws.send(json.dumps({"jsonrpc": "2.0", "method": msg["method"], "id": msg["id"], **reply}))
            if len(self.requests) in self.close_after:
                return

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


@pytest.fixture
def stub() -> Iterator[Stub]:
    """A running stub server."""
    s = Stub()
    yield s
    s.stop()


@pytest.fixture
def chain(stub: Stub) -> Iterator[OgmiosChain]:
    """An OgmiosChain on the stub that never really sleeps while backing off."""
    c = OgmiosChain(stub.url, timeout_s=2.0, sleep=lambda s: None)
    yield c
    c.close()


def test_ogmios_chain_is_a_chain(chain: OgmiosChain) -> None:
    """OgmiosChain and MemoryChain both satisfy the Chain protocol."""
    assert isinstance(chain, Chain) and isinstance(MemoryChain(), Chain)


def test_memory_chain_slots_have_no_wall_clock_instant() -> None:
    """MemoryChain's time moves only with advance(): no slot has a start instant, so payers judge by their clock."""
    chain = MemoryChain(slot=7)
    chain.advance(3)
    assert chain.current_slot(1_800_000_000.0) == chain.current_slot() == 10
    assert chain.slot_time(10) is None


def test_tip_and_origin(stub: Stub, chain: OgmiosChain) -> None:
    """The tip parses; ``origin`` before the first block is slot 0."""
    assert chain.tip().slot == 1234 and chain.tip().id == "cd" * 32
    stub.handlers["queryNetwork/tip"] = lambda p: {"result": "origin"}
    assert chain.tip().slot == 0


def test_one_persistent_connection(stub: Stub, chain: OgmiosChain) -> None:
    """Many queries share one WebSocket."""
    for _ in range(25):
        chain.tip()
    assert stub.connections == 1 and len(stub.requests) == 25


def test_protocol_params_parsed_and_cached(stub: Stub) -> None:
    """Parameters parse from the v6.6 shape and are asked again only after params_ttl_s."""
    now = [0.0]
    c = OgmiosChain(stub.url, params_ttl_s=60, clock=lambda: now[0])
    assert c.protocol_params() == MAINNET_PARAMS
    c.protocol_params()
    assert stub.requests.count("queryLedgerState/protocolParameters") == 1
    now[0] = 61.0
    c.protocol_params()
    assert stub.requests.count("queryLedgerState/protocolParameters") == 2
    c.close()


def test_protocol_params_vectors_parse() -> None:
    """Every Ogmios protocol-parameter test vector parses (ratios via Fraction, sizes, lovelace objects)."""
    for path in sorted((VECTORS / "QueryLedgerStateProtocolParameters").glob("*.json")):
        result = json.loads(path.read_text()).get("result")
        if result is None:
            continue  # an error-response vector
        params = parse_protocol_params(result)
        assert params.min_fee_coefficient == result["minFeeCoefficient"]
        assert params.coins_per_utxo_byte == result["minUtxoDepositCoefficient"]


def test_utxo_vectors_parse() -> None:
    """Every Ogmios UTxO test vector parses, native assets as policy.name."""
    seen_assets = 0
    for path in sorted((VECTORS / "QueryLedgerStateUtxo").glob("*.json")):
        for item in json.loads(path.read_text()).get("result", []):
            u = parse_utxo(item)
            assert u.lovelace == item["value"]["ada"]["lovelace"]
            seen_assets += len(u.assets)
    assert seen_assets > 0


def test_utxos_at_and_by_refs(stub: Stub, chain: OgmiosChain) -> None:
    """utxos_at sends the address, utxos_by_refs the references; values with tokens parse."""
    policy, name = TOKEN.split(".")
    item = {"transaction": {"id": TX}, "index": 1, "address": "addr_test1xyz",
            "value": {"ada": {"lovelace": 5_000_000}, policy: {name: 7}}}
    asked: list[Any] = []
    stub.handlers["queryLedgerState/utxo"] = lambda p: asked.append(p) or {"result": [item]}
    [u] = chain.utxos_at("addr_test1xyz")
    assert u.ref == OutputRef(TX, 1) and u.lovelace == 5_000_000 and u.assets == {TOKEN: 7}
    chain.utxos_by_refs([OutputRef(TX, 1)])
    assert asked == [{"addresses": ["addr_test1xyz"]},
                     {"outputReferences": [{"transaction": {"id": TX}, "index": 1}]}]
    assert chain.utxos_by_refs([]) == []


def test_submit_success_and_typed_errors(stub: Stub, chain: OgmiosChain) -> None:
    """submit returns the id; Ogmios error codes become typed errors with code and data kept."""
    stub.handlers["submitTransaction"] = lambda p: {"result": {"transaction": {"id": TX}}}
    assert chain.submit(b"\x84") == TX
    data = {"unknownOutputReferences": [{"transaction": {"id": TX}, "index": 0}]}
    stub.handlers["submitTransaction"] = lambda p: {"error": {"code": 3117, "message": "spent", "data": data}}
    with pytest.raises(InputsSpentError) as exc:
        chain.submit(b"\x84")
    assert exc.value.code == 3117 and exc.value.data == data
    stub.handlers["submitTransaction"] = lambda p: {"error": {"code": 3118, "message": "late", "data": {}}}
    with pytest.raises(OutsideValidityError):
        chain.submit(b"\x84")
    stub.handlers["submitTransaction"] = lambda p: {"error": {"code": 3999, "message": "new rule"}}
    with pytest.raises(SubmitError) as other:
        chain.submit(b"\x84")
    assert other.value.code == 3999


def test_fee_refusal_refreshes_params(stub: Stub, chain: OgmiosChain) -> None:
    """After a 3122 refusal the cached parameters are asked for again."""
    chain.protocol_params()
    stub.handlers["submitTransaction"] = lambda p: {"error": {"code": 3122, "message": "fee", "data": {}}}
    with pytest.raises(FeeTooSmallError):
        chain.submit(b"\x84")
    chain.protocol_params()
    assert stub.requests.count("queryLedgerState/protocolParameters") == 2


def test_in_mempool_acquires_asks_releases(stub: Stub, chain: OgmiosChain) -> None:
    """in_mempool is acquireMempool + hasTransaction + releaseMempool."""
    assert chain.in_mempool(TX) is True
    assert chain.in_mempool("ef" * 32) is False
    assert stub.requests == ["acquireMempool", "hasTransaction", "releaseMempool"] * 2


def test_reconnects_after_disconnect(stub: Stub, chain: OgmiosChain) -> None:
    """When the server drops the connection, the next query opens a new one and succeeds."""
    stub.close_after = {1, 3}
    assert chain.tip().slot == 1234
    assert chain.tip().slot == 1234
    assert chain.tip().slot == 1234
    assert chain.tip().slot == 1234
    assert stub.connections == 3 and chain.reconnects == 2


def test_dropped_mid_query_is_retried(stub: Stub, chain: OgmiosChain) -> None:
    """A query whose connection drops before the answer is sent again on a new connection."""
    calls = []

    def flaky(p: Any) -> Any:
        calls.append(1)
        return "drop" if len(calls) == 1 else {"result": TIP}

    stub.handlers["queryNetwork/tip"] = flaky
    assert chain.tip().slot == 1234 and len(calls) == 2


def test_submit_is_not_resent_after_a_lost_answer(stub: Stub, chain: OgmiosChain) -> None:
    """A submit whose answer is lost raises ChainUnavailableError and is not sent twice."""
    stub.handlers["submitTransaction"] = lambda p: "drop"
    with pytest.raises(ChainUnavailableError, match="outcome is unknown"):
        chain.submit(b"\x84")
    assert stub.requests.count("submitTransaction") == 1
    assert chain.tip().slot == 1234  # and the chain is usable again


def test_unreachable_gives_up_with_backoff() -> None:
    """No server: ChainUnavailableError after the attempts, backing off exponentially between them."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    delays: list[float] = []
    c = OgmiosChain(f"ws://127.0.0.1:{port}", attempts=5, backoff_s=0.1, sleep=delays.append, timeout_s=1)
    with pytest.raises(ChainUnavailableError, match="after 5 attempts"):
        c.tip()
    assert delays == [0.1, 0.2, 0.4]


@pytest.mark.parametrize(
    "reply",
    [
        "this is not json",
        "[1, 2, 3]",
        json.dumps({"jsonrpc": "2.0", "method": "queryNetwork/tip", "id": 999, "result": TIP}),
        json.dumps({"jsonrpc": "2.0", "method": "queryLedgerState/epoch", "id": 1, "result": TIP}),
        {"result": {"slot": "1234", "id": "cd" * 32}},
        {"result": {"slot": -1, "id": "cd" * 32}},
        {"result": {"slot": True, "id": "cd" * 32}},
        {"result": {"slot": 1, "id": "not hex"}},
        {"error": {"code": "bad", "message": "x"}},
        {"error": {"code": -32601, "message": "unknown method"}},
        {"nothing": 1},
    ],
)
def test_garbage_answers_are_protocol_errors(stub: Stub, chain: OgmiosChain, reply: Any) -> None:
    """Non-JSON, out-of-step ids, wrong methods, wrong types and errors on queries raise ChainProtocolError."""
    stub.handlers["queryNetwork/tip"] = lambda p: reply
    with pytest.raises(ChainProtocolError):
        chain.tip()
    stub.handlers["queryNetwork/tip"] = lambda p: {"result": TIP}
    assert chain.tip().slot == 1234  # the client recovers


@pytest.mark.parametrize(
    "value",
    [
        {"ada": {"lovelace": "1e9"}},
        {"ada": {"lovelace": 1.5}},
        {"lovelace": 5},
        {"ada": {"lovelace": 1}, "zz": {"00": 1}},
        {"ada": {"lovelace": 1}, "aa" * 28: {"xyz": 1}},
        {"ada": {"lovelace": 1}, "aa" * 28: {"00": -1}},
    ],
)
def test_garbage_values_are_protocol_errors(stub: Stub, chain: OgmiosChain, value: Any) -> None:
    """A UTxO value with strings, floats, bad policies, bad names or negative quantities is refused."""
    item = {"transaction": {"id": TX}, "index": 0, "address": "addr_test1xyz", "value": value}
    stub.handlers["queryLedgerState/utxo"] = lambda p: {"result": [item]}
    with pytest.raises(ChainProtocolError):
        chain.utxos_at("addr_test1xyz")


@pytest.mark.parametrize("ratio", ["__import__('os').system('true')", "1/0", "1e999999", 0.5, "3/4/5", ""])
def test_ratios_are_parsed_never_evaluated(ratio: Any) -> None:
    """Ratios must be n or n/d digits; anything else is ChainProtocolError (and nothing is evaluated)."""
    with pytest.raises(ChainProtocolError):
        parse_ratio(ratio)
    with pytest.raises(ChainProtocolError):
        parse_protocol_params({**PARAMS_RESULT, "monetaryExpansion": ratio})
    assert parse_ratio("577/10000").denominator == 10000


def test_threads_share_the_connection_safely(stub: Stub, chain: OgmiosChain) -> None:
    """Eight threads querying at once each get their own answers over the one connection."""
    stub.handlers["hasTransaction"] = lambda p: {"result": p["id"].startswith("a")}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(30):
                assert chain.in_mempool(("a" if i % 2 else "b") * 64) is bool(i % 2)
                assert chain.tip().slot == 1234
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == [] and stub.connections == 1


# --- MemoryChain ---------------------------------------------------------------------------


def test_memory_chain_mempool_and_blocks() -> None:
    """Without auto_confirm a tx waits in the mempool (its outputs chainable) until a block confirms it."""
    signer, payee = KeySigner(), fresh_address()
    chain = MemoryChain(auto_confirm=False, slot=10)
    chain.fund(signer.address, 20_000_000)
    first = pay([RequiredOutput(payee, 2_000_000)], chain.utxos_at(signer.address), signer)
    chain.submit(first.cbor)
    assert chain.in_mempool(first.tx_id) and chain.utxos_at(payee) == []
    second = pay([RequiredOutput(payee, 3_000_000)], list(first.change), signer)
    chain.submit(second.cbor)
    assert chain.produce_block() == [first.tx_id, second.tx_id]
    assert not chain.in_mempool(first.tx_id) and chain.tip().slot == 11
    assert sorted(u.lovelace for u in chain.utxos_at(payee)) == [2_000_000, 3_000_000]


def test_memory_chain_refuses_like_the_ledger() -> None:
    """Spent inputs (3117), another key's signature (3101), a past TTL (3118) are refused with typed errors."""
    signer, thief, payee = KeySigner(), KeySigner(), fresh_address()
    chain = MemoryChain(slot=10)
    chain.fund(signer.address, 20_000_000)
    utxos = chain.utxos_at(signer.address)
    p = pay([RequiredOutput(payee, 2_000_000)], utxos, signer)
    chain.submit(p.cbor)
    with pytest.raises(InputsSpentError) as exc:
        chain.submit(p.cbor)
    assert exc.value.data["unknownOutputReferences"][0]["transaction"]["id"] == utxos[0].ref.tx_id
    chain.fund(signer.address, 20_000_000)
    stolen = pay([RequiredOutput(payee, 2_000_000)], [u for u in chain.utxos_at(signer.address)
                                                      if u.ref != p.change[0].ref], thief)
    with pytest.raises(MissingSignaturesError):
        chain.submit(stolen.cbor)
    chain.advance(10_000)
    late = pay([RequiredOutput(payee, 2_000_000)], chain.utxos_at(signer.address), signer)
    with pytest.raises(OutsideValidityError):
        chain.submit(late.cbor)


def test_memory_chain_fault_injection() -> None:
    """fail_next makes the next call of a method raise the given error, once."""
    chain = MemoryChain()
    chain.fail_next("tip", ChainUnavailableError("down"))
    with pytest.raises(ChainUnavailableError):
        chain.tip()
    assert chain.tip().slot == 0 and chain.calls["tip"] == 2
    assert chain.utxos_by_refs([chain.fund(fresh_address(), 5_000_000)])[0].lovelace == 5_000_000
    assert MAINNET_PARAMS == chain.protocol_params()


def test_memory_chain_time_passes_with_blocks() -> None:
    """advance() lets slots pass as the devnet does: a block at the new slot, where an expired tx is dropped."""
    signer, payee = KeySigner(), fresh_address()
    chain = MemoryChain(auto_confirm=False, slot=10)
    start = chain.tip()
    chain.fund(signer.address, 20_000_000)
    p = build_payment([RequiredOutput(payee, 2_000_000)], utxos=chain.utxos_at(signer.address),
                      change_address=signer.address, signer=signer, params=MAINNET_PARAMS, ttl_slot=50)
    chain.submit(p.cbor)
    chain.advance(100)
    assert chain.tip().slot == chain.current_slot() == 110 and chain.tip().id != start.id
    assert not chain.in_mempool(p.tx_id) and chain.utxos_at(payee) == []
    assert not chain.find_transaction(p.tx_id, since=(start.slot, start.id)).landed


def test_memory_chain_confirm_elsewhere_drops_what_needed_the_spent_input() -> None:
    """Another wallet's transaction spends an input in a block: a waiting tx needing it leaves the mempool."""
    signer = KeySigner()
    chain = MemoryChain(auto_confirm=False)
    ref = chain.fund(signer.address, 20_000_000)
    p = pay([RequiredOutput(fresh_address(), 2_000_000)], chain.utxos_at(signer.address), signer)
    chain.submit(p.cbor)
    start = chain.tip()
    chain.confirm_elsewhere("ee" * 32, [ref])
    assert not chain.in_mempool(p.tx_id) and chain.utxos_by_refs([ref]) == []
    found = chain.find_transaction(p.tx_id, since=(start.slot, start.id), inputs=[ref])
    assert not found.landed and dict(found.spent_by) == {ref: "ee" * 32}


def test_memory_chain_full_mempool_is_retryable_and_takes_nothing() -> None:
    """No room in the mempool: MempoolFullError (nothing taken); after a block the same bytes are accepted."""
    signer = KeySigner()
    chain = MemoryChain(auto_confirm=False, max_block_body_size=700)  # a mempool of 1400 bytes
    chain.fund(signer.address, 100_000_000)
    utxos = chain.utxos_at(signer.address)
    for _ in range(10):
        p = pay([RequiredOutput(fresh_address(), 2_000_000)], utxos, signer)
        try:
            chain.submit(p.cbor)
        except MempoolFullError as exc:
            assert exc.accepted_unknown is False and isinstance(exc, ChainUnavailableError)
            break
        utxos = list(p.change)
    else:
        pytest.fail("the mempool never filled")
    assert not chain.in_mempool(p.tx_id) and p.tx_id not in chain.accepted
    chain.produce_block()
    assert chain.submit(p.cbor) == p.tx_id
