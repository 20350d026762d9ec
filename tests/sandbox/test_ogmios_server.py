"""The devnet's Ogmios JSON-RPC server: protocol behaviour, bad input, rejections, mempool monitor, speed."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fixtures.devnet import DevnetKey, GENESIS_LOVELACE, new_key, ogmios_host_port

# The `ogmios` client opens its WebSocket without a context manager; websockets warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")


def _call(ws: Any, method: str, params: Any = None, **extra: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, **extra}
    if params is not None:
        request["params"] = params
    ws.send(json.dumps(request))
    return json.loads(ws.recv(timeout=10))


def make_tx(key: DevnetKey, inputs: list[tuple[str, int, int]], to_address: str, amount: int, *,
            fee: int | None = None, signers: list[Any] | None = None, ttl: int | None = None) -> tuple[bytes, str, int]:
    """A payment of ``amount`` to ``to_address`` with change back to ``key`` (output 1).

    ``inputs`` are (tx id, index, lovelace). Returns (cbor, tx id, change lovelace). With
    ``fee`` None the exact minimum fee is paid; ``signers`` replaces the witnessing keys.
    """
    from pycardano import (Address, Transaction, TransactionBody, TransactionId, TransactionInput,
                           TransactionOutput, TransactionWitnessSet, VerificationKeyWitness)

    total = sum(n for _, _, n in inputs)
    paid_fee = fee if fee is not None else 200_000
    for _ in range(4):
        body = TransactionBody(
            inputs=[TransactionInput(TransactionId(bytes.fromhex(t)), i) for t, i, _ in inputs],
            outputs=[TransactionOutput(Address.from_primitive(to_address), amount),
                     TransactionOutput(Address.from_primitive(key.address), total - amount - paid_fee)],
            fee=paid_fee, ttl=ttl)
        witnesses = [VerificationKeyWitness(k.to_verification_key(), k.sign(body.hash()))
                     for k in (signers if signers is not None else [key.signing_key])]
        cbor = Transaction(body, TransactionWitnessSet(vkey_witnesses=witnesses)).to_cbor()
        needed = 44 * (len(cbor) - 1) + 155381
        if fee is not None or needed == paid_fee:
            break
        paid_fee = needed
    return cbor, body.hash().hex(), total - amount - paid_fee


def _genesis_input(devnet: Any, key: DevnetKey) -> tuple[str, int, int]:
    (ref, out), = devnet.ledger.utxos_at([key.address])
    return ref.tx_id, ref.index, out.lovelace


def test_echoes_method_and_any_id(devnet):
    """Replies echo the method and the request id of any JSON type; no id in, no id out."""
    with connect(devnet.ogmios_url) as ws:
        for request_id in ("abc", 7, {"n": [1, 2]}, None):
            reply = _call(ws, "queryNetwork/tip", id=request_id)
            assert reply["method"] == "queryNetwork/tip" and reply["id"] == request_id
        assert "id" not in _call(ws, "queryNetwork/tip")


def test_many_requests_on_one_connection_and_many_connections(devnet):
    """One connection answers hundreds of requests in order; twenty connections work at once."""
    with connect(devnet.ogmios_url) as ws:
        for n in range(300):
            assert _call(ws, "queryLedgerState/epoch", id=n)["id"] == n
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with connect(devnet.ogmios_url) as ws:
                for n in range(50):
                    assert _call(ws, "queryNetwork/blockHeight", id=n)["result"] >= 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors


def test_garbage_frames_get_json_rpc_errors_and_the_connection_stays(devnet):
    """Unparseable frames get -32700, non-requests -32600, unknown methods -32601; then it still works."""
    with connect(devnet.ogmios_url) as ws:
        for frame in ("{not json", "", b"\xff\xfe\x00", "\x00" * 100):
            ws.send(frame)
            assert json.loads(ws.recv(timeout=10))["error"]["code"] == -32700
        for frame in ("[1, 2]", '{"method": 5}', "42", '{"id": 3}'):
            ws.send(frame)
            assert json.loads(ws.recv(timeout=10))["error"]["code"] == -32600
        reply = _call(ws, "queryLedgerState/everything", id=1)
        assert (reply["error"]["code"], reply["method"], reply["id"]) == (-32601, "queryLedgerState/everything", 1)
        assert _call(ws, "queryNetwork/tip")["result"]["slot"] == devnet.ledger.tip.slot


@pytest.mark.parametrize("method,params", [
    ("queryLedgerState/utxo", {"addresses": "addr_test1"}),
    ("queryLedgerState/utxo", {"addresses": ["not-an-address"]}),
    ("queryLedgerState/utxo", {"outputReferences": [{"transaction": {"id": "zz"}, "index": 0}]}),
    ("queryLedgerState/utxo", {"outputReferences": [{"transaction": {"id": "00" * 32}, "index": -1}]}),
    ("queryLedgerState/utxo", {"somethingElse": []}),
    ("queryNetwork/genesisConfiguration", {"era": "mary"}),
    ("queryNetwork/genesisConfiguration", None),
    ("queryNetwork/tip", [1, 2]),
    ("submitTransaction", {"transaction": "84a4"}),
    ("submitTransaction", {"transaction": {"cbor": "not hex"}}),
    ("submitTransaction", {"transaction": {"cbor": "ff00ff00"}}),
    ("evaluateTransaction", {}),
])
def test_bad_params_answer_minus_32602(devnet, method, params):
    """Wrong or undecodable params answer -32602 with the method echoed."""
    with connect(devnet.ogmios_url) as ws:
        reply = _call(ws, method, params, id="x")
    assert reply["error"]["code"] == -32602 and reply["method"] == method and reply["id"] == "x"


def test_ten_megabyte_frames_are_answered_and_leave_the_ledger_alone(devnet):
    """A 10 MB garbage frame and a 10 MB submission get errors; the server and ledger are unchanged."""
    def state() -> dict[str, Any]:
        return {k: v for k, v in devnet.ledger.to_state().items() if k != "slot"}  # the clock may tick

    before = state()
    with connect(devnet.ogmios_url, max_size=None) as ws:
        ws.send("x" * 10_000_000)
        assert json.loads(ws.recv(timeout=30))["error"]["code"] == -32700
        reply = _call(ws, "submitTransaction", {"transaction": {"cbor": "84" + "00" * 5_000_000}})
        assert reply["error"]["code"] == -32602
        assert _call(ws, "queryNetwork/tip")["result"]["id"] == devnet.ledger.tip.id
    assert state() == before


def test_oversized_frame_closes_that_connection_only(devnet):
    """A frame over 16 MiB closes its connection with 1009; other connections and new ones work."""
    with connect(devnet.ogmios_url) as bystander:
        with connect(devnet.ogmios_url, max_size=None) as ws:
            with pytest.raises(ConnectionClosed) as closed:  # the close may come while the frame is still sent
                ws.send("y" * (17 * 1024 * 1024))
                ws.recv(timeout=30)
            # 1009 is sent; a client still writing its frame may see the socket reset before reading it
            assert closed.value.rcvd is None or closed.value.rcvd.code == 1009
        assert "result" in _call(bystander, "queryNetwork/tip")
    with connect(devnet.ogmios_url) as ws:
        assert "result" in _call(ws, "queryNetwork/tip")


def test_rejections_pass_code_and_data_through(devnet, devnet_key):
    """Ledger rejections reach the client as Ogmios code and data (3101, 3100, 3122, 3117)."""
    tx_in = _genesis_input(devnet, devnet_key)
    to = new_key().address
    stranger = new_key()
    with connect(devnet.ogmios_url) as ws:
        cbor, _, _ = make_tx(devnet_key, [tx_in], to, 5_000_000, signers=[])
        reply = _call(ws, "submitTransaction", {"transaction": {"cbor": cbor.hex()}})
        assert reply["error"]["code"] == 3101
        assert reply["error"]["data"] == {"missingSignatories": [devnet_key.verification_key.hash().payload.hex()]}

        good, _, _ = make_tx(devnet_key, [tx_in], to, 5_000_000)
        forged = bytearray(good)
        forged[-10] ^= 0x01  # inside the signature
        reply = _call(ws, "submitTransaction", {"transaction": {"cbor": bytes(forged).hex()}})
        assert reply["error"]["code"] == 3100
        assert reply["error"]["data"] == {"invalidSignatories": [devnet_key.verification_key.payload.hex()]}

        cbor, _, _ = make_tx(devnet_key, [tx_in], to, 5_000_000, fee=155_381)
        reply = _call(ws, "submitTransaction", {"transaction": {"cbor": cbor.hex()}})
        assert reply["error"]["code"] == 3122
        assert reply["error"]["data"]["providedFee"] == {"ada": {"lovelace": 155_381}}

        cbor, _, _ = make_tx(stranger, [("ab" * 32, 0, 10_000_000)], to, 5_000_000)
        reply = _call(ws, "submitTransaction", {"transaction": {"cbor": cbor.hex()}})
        assert reply["error"]["code"] == 3117
        assert reply["error"]["data"] == {"unknownOutputReferences": [{"transaction": {"id": "ab" * 32}, "index": 0}]}
    assert devnet.ledger.balance(devnet_key.address)["lovelace"] == GENESIS_LOVELACE
    assert devnet.ledger.mempool() == []


def test_raw_ogmios_client_submits_and_sees_errors(devnet, devnet_key):
    """The `ogmios` client submits a transaction and gets ResponseError for a double spend."""
    from ogmios import Client
    from ogmios.errors import ResponseError

    cbor, tx_id, change = make_tx(devnet_key, [_genesis_input(devnet, devnet_key)], new_key().address, 5_000_000)
    host, port = ogmios_host_port(devnet)
    with Client(host, port) as client:
        assert client.submit_transaction.execute(cbor.hex())[0] == tx_id
        with pytest.raises(ResponseError, match="3117"):
            client.submit_transaction.execute(cbor.hex())
        assert client.evaluate_transaction.execute(cbor.hex())[0] == []
    assert devnet.ledger.balance(devnet_key.address)["lovelace"] == change


def test_mempool_monitor_snapshots_and_waits_for_changes(devnet_factory, devnet_key):
    """acquire takes a snapshot; next/has/size read it; a second acquire waits until the mempool changes."""
    devnet = devnet_factory(block_time_s=3600, fund={devnet_key.address: GENESIS_LOVELACE})
    first = devnet.fund(new_key().address, 2_000_000)
    second = devnet.fund(new_key().address, 3_000_000)
    with connect(devnet.ogmios_url) as ws:
        assert _call(ws, "hasTransaction", {"id": first})["error"]["code"] == 4000
        acquired = _call(ws, "acquireMempool")["result"]
        assert acquired["acquired"] == "mempool" and acquired["slot"] >= devnet.ledger.tip.slot
        size = _call(ws, "sizeOfMempool")["result"]
        assert size["transactions"] == {"count": 2} and size["currentSize"]["bytes"] > 0
        assert _call(ws, "hasTransaction", {"id": second})["result"] is True
        assert _call(ws, "hasTransaction", {"id": "00" * 32})["result"] is False
        ids = [_call(ws, "nextTransaction")["result"]["transaction"] for _ in range(3)]
        assert ids == [{"id": first}, {"id": second}, None]

        ws.send(json.dumps({"jsonrpc": "2.0", "method": "acquireMempool", "id": "wait"}))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # same mempool: the server holds the answer
        devnet.produce_block()
        reply = json.loads(ws.recv(timeout=10))
        assert reply["id"] == "wait"
        assert _call(ws, "nextTransaction")["result"] == {"transaction": None}
        assert _call(ws, "releaseMempool")["result"] == {"released": "mempool"}
        assert _call(ws, "sizeOfMempool")["error"]["code"] == 4000


def test_next_transaction_all_fields_describe_the_transaction(devnet_factory, devnet_key):
    """nextTransaction with fields=all returns inputs, outputs, fee, validity interval, metadata, cbor."""
    from pycardano import AlonzoMetadata, AuxiliaryData, Metadata, TransactionBuilder, TransactionOutput, Address

    from tests.fixtures.devnet import chain_context

    devnet = devnet_factory(block_time_s=3600, fund={devnet_key.address: GENESIS_LOVELACE})
    context = chain_context(devnet)
    payee = new_key().address
    builder = TransactionBuilder(context)
    builder.add_input_address(devnet_key.address)
    builder.add_output(TransactionOutput(Address.from_primitive(payee), 4_000_000))
    builder.auxiliary_data = AuxiliaryData(AlonzoMetadata(metadata=Metadata({674: {"msg": ["invoice 42"]}, 7: b"\x01"})))
    builder.ttl = devnet.ledger.tip.slot + 600
    tx = builder.build_and_sign([devnet_key.signing_key], change_address=Address.from_primitive(devnet_key.address))
    context.submit_tx(tx)
    with connect(devnet.ogmios_url) as ws:
        _call(ws, "acquireMempool")
        got = _call(ws, "nextTransaction", {"fields": "all"})["result"]["transaction"]
    assert got["id"] == str(tx.id)
    assert got["cbor"] == tx.to_cbor_hex()
    assert got["fee"] == {"ada": {"lovelace": tx.transaction_body.fee}}
    assert got["validityInterval"] == {"invalidAfter": builder.ttl}
    assert got["outputs"][0] == {"address": payee, "value": {"ada": {"lovelace": 4_000_000}}}
    assert got["inputs"] == [{"transaction": {"id": _genesis_input(devnet, devnet_key)[0]}, "index": 0}]
    assert got["metadata"]["labels"]["674"] == {"json": {"msg": ["invoice 42"]}}
    assert got["metadata"]["labels"]["7"] == {"cbor": "4101"}
    assert got["metadata"]["hash"] == tx.transaction_body.auxiliary_data_hash.payload.hex()
    assert got["signatories"][0]["key"] == devnet_key.verification_key.payload.hex()


def test_hundreds_of_pipelined_submits(devnet, devnet_key):
    """300 chained submissions pipelined over one connection each become their own block, in order.

    How fast is the bench's business (devnet capacity figure); tests never depend on machine speed.
    """
    to = new_key().address
    tx_in = _genesis_input(devnet, devnet_key)
    txs = []
    for _ in range(300):
        cbor, tx_id, change = make_tx(devnet_key, [tx_in], to, 1_000_000)
        txs.append(cbor.hex())
        tx_in = (tx_id, 1, change)
    height = devnet.ledger.height
    with connect(devnet.ogmios_url) as ws:
        for cbor_hex in txs:
            ws.send(json.dumps({"jsonrpc": "2.0", "method": "submitTransaction",
                                "params": {"transaction": {"cbor": cbor_hex}}}))
        replies = [json.loads(ws.recv(timeout=120)) for _ in txs]
    assert all("result" in r for r in replies), replies[0]
    assert devnet.ledger.height == height + 300
    assert devnet.ledger.balance(to)["lovelace"] == 300_000_000


def test_stopping_releases_a_waiting_mempool_monitor(devnet_factory):
    """A client waiting in acquireMempool does not hold up stop(): its connection is closed."""
    devnet = devnet_factory(block_time_s=3600)
    with connect(devnet.ogmios_url) as ws:
        _call(ws, "acquireMempool")
        ws.send(json.dumps({"jsonrpc": "2.0", "method": "acquireMempool"}))
        stopper = threading.Thread(target=devnet.stop)
        stopper.start()
        stopper.join(15)
        assert not stopper.is_alive()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
