"""Every devnet Ogmios response validates against the v6.6 schema and parses in the `ogmios` client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from websockets.sync.client import connect

from tests.fixtures.devnet import new_key

# The `ogmios` client opens its WebSocket without a context manager; websockets warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")


SCHEMA_DIR = Path(__file__).resolve().parents[1] / "data" / "ogmios" / "schemas" / "v6.6"


def _relaxed_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """cardano.json and ogmios.json with the README's known quirks fixed in memory."""
    cardano = json.loads((SCHEMA_DIR / "cardano.json").read_text())
    ogmios = json.loads((SCHEMA_DIR / "ogmios.json").read_text())
    defs = cardano["definitions"]
    # Value: "ada" is required but the key pattern only admits policy ids.
    defs["Value"]["propertyNames"] = {"pattern": "^(ada|[0-9a-f]{56})$"}
    # Genesis<Byron>: requires "protocolParameters" but only allows "updatableParameters",
    # which the server sends as bootstrap parameters.
    byron = defs["Genesis<Byron>"]
    byron["required"] = [k if k != "protocolParameters" else "updatableParameters" for k in byron["required"]]
    byron["properties"]["updatableParameters"] = {"$ref": "cardano.json#/definitions/BootstrapProtocolParameters"}
    # RpcError: "string" is a typo for "message"; the server also echoes the method.
    rpc = ogmios["properties"]["RpcError"]
    rpc["properties"]["error"]["required"] = ["code", "message"]
    rpc["properties"]["method"] = {"type": "string"}
    return cardano, ogmios


@pytest.fixture(scope="module")
def validate():
    """validate(name, response): check ``response`` against ``ogmios.json#/properties/<name>``."""
    cardano, ogmios = _relaxed_schemas()
    registry = Registry().with_resources([
        ("cardano.json", Resource.from_contents(cardano, default_specification=DRAFT7)),
        ("ogmios.json", Resource.from_contents(ogmios, default_specification=DRAFT7)),
    ])

    def check(name: str, response: dict[str, Any]) -> None:
        schema = {"$ref": f"ogmios.json#/properties/{name}"}
        errors = list(Draft7Validator(schema, registry=registry).iter_errors(response))
        assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"

    return check


def _rpc(url: str, method: str, params: Any = None) -> dict[str, Any]:
    with connect(url, max_size=None) as ws:
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": None}
        if params is not None:
            request["params"] = params
        ws.send(json.dumps(request))
        return json.loads(ws.recv(timeout=10))


QUERIES = [
    ("queryNetwork/tip", None, "QueryNetworkTipResponse"),
    ("queryNetwork/blockHeight", None, "QueryNetworkBlockHeightResponse"),
    ("queryNetwork/startTime", None, "QueryNetworkStartTimeResponse"),
    ("queryNetwork/genesisConfiguration", {"era": "byron"}, "QueryNetworkGenesisConfigurationResponse"),
    ("queryNetwork/genesisConfiguration", {"era": "shelley"}, "QueryNetworkGenesisConfigurationResponse"),
    ("queryNetwork/genesisConfiguration", {"era": "alonzo"}, "QueryNetworkGenesisConfigurationResponse"),
    ("queryNetwork/genesisConfiguration", {"era": "conway"}, "QueryNetworkGenesisConfigurationResponse"),
    ("queryLedgerState/epoch", None, "QueryLedgerStateEpochResponse"),
    ("queryLedgerState/eraStart", None, "QueryLedgerStateEraStartResponse"),
    ("queryLedgerState/eraSummaries", None, "QueryLedgerStateEraSummariesResponse"),
    ("queryLedgerState/protocolParameters", None, "QueryLedgerStateProtocolParametersResponse"),
    ("queryLedgerState/tip", None, "QueryLedgerStateTipResponse"),
    ("queryLedgerState/utxo", {}, "QueryLedgerStateUtxoResponse"),
]


@pytest.mark.parametrize("method,params,schema", QUERIES, ids=[f"{q[0]}:{q[1]}" for q in QUERIES])
def test_query_responses_validate(devnet, validate, method, params, schema):
    """Each query's response matches its v6.6 response schema and echoes method and id."""
    reply = _rpc(devnet.ogmios_url, method, params)
    assert reply["method"] == method and reply["id"] is None and "result" in reply
    validate(schema, reply)


def test_utxo_with_assets_and_by_reference_validate(devnet_factory, devnet_key, validate):
    """UTxO answers by address (with native tokens) and by output reference match the schema."""
    from sandbox.devnet import DEVNET_TOKEN

    devnet = devnet_factory(fund={devnet_key.address: 5_000_000}, fund_assets={devnet_key.address: {DEVNET_TOKEN: 9}})
    by_address = _rpc(devnet.ogmios_url, "queryLedgerState/utxo", {"addresses": [devnet_key.address]})
    validate("QueryLedgerStateUtxoResponse", by_address)
    (item,) = by_address["result"]
    assert len(item["value"]) == 2  # ada and the DEVNET policy
    refs = [{"transaction": item["transaction"], "index": item["index"]}]
    by_ref = _rpc(devnet.ogmios_url, "queryLedgerState/utxo", {"outputReferences": refs})
    validate("QueryLedgerStateUtxoResponse", by_ref)
    assert by_ref["result"] == by_address["result"]


def test_submit_success_and_failures_validate(devnet, validate):
    """Submit success, a ledger rejection and undecodable CBOR all match SubmitTransactionResponse."""
    from sandbox.devnet import FAUCET_ADDRESS, build_faucet_tx

    (ref, out), = devnet.ledger.utxos_at([FAUCET_ADDRESS])
    cbor, _ = build_faucet_tx([(ref, out.lovelace, dict(out.assets))], to_address=new_key().address,
                              lovelace=3_000_000, assets={}, params=devnet.ledger.params)
    ok = _rpc(devnet.ogmios_url, "submitTransaction", {"transaction": {"cbor": cbor.hex()}})
    validate("SubmitTransactionResponse", ok)
    again = _rpc(devnet.ogmios_url, "submitTransaction", {"transaction": {"cbor": cbor.hex()}})
    assert again["error"]["code"] == 3117
    validate("SubmitTransactionResponse", again)
    garbage = _rpc(devnet.ogmios_url, "submitTransaction", {"transaction": {"cbor": "deadbeef"}})
    assert garbage["error"]["code"] == -32602
    validate("SubmitTransactionResponse", garbage)


def test_evaluate_validates(devnet, validate):
    """evaluateTransaction answers [] for a script-free transaction, and -32602 for garbage."""
    from sandbox.devnet import FAUCET_ADDRESS, build_faucet_tx

    (ref, out), = devnet.ledger.utxos_at([FAUCET_ADDRESS])
    cbor, _ = build_faucet_tx([(ref, out.lovelace, dict(out.assets))], to_address=new_key().address,
                              lovelace=3_000_000, assets={}, params=devnet.ledger.params)
    reply = _rpc(devnet.ogmios_url, "evaluateTransaction", {"transaction": {"cbor": cbor.hex()}, "additionalUtxo": None})
    assert reply["result"] == []
    validate("EvaluateTransactionResponse", reply)
    bad = _rpc(devnet.ogmios_url, "evaluateTransaction", {"transaction": {"cbor": "00"}})
    validate("EvaluateTransactionResponse", bad)


def test_mempool_monitor_responses_validate(devnet_factory, validate):
    """acquire/next (ids and fields=all)/has/size/release and the must-acquire error match the schema."""
    from sandbox.devnet import DEVNET_TOKEN

    devnet = devnet_factory(block_time_s=3600)
    tx_id = devnet.fund(new_key().address, 5_000_000, {DEVNET_TOKEN: 7})
    with connect(devnet.ogmios_url) as ws:
        def call(method: str, params: Any = None) -> dict[str, Any]:
            ws.send(json.dumps({"jsonrpc": "2.0", "method": method, **({"params": params} if params else {})}))
            return json.loads(ws.recv(timeout=10))

        validate("NextTransactionResponse", call("nextTransaction"))
        validate("AcquireMempoolResponse", call("acquireMempool"))
        short = call("nextTransaction")
        assert short["result"] == {"transaction": {"id": tx_id}}
        validate("NextTransactionResponse", short)
        validate("HasTransactionResponse", call("hasTransaction", {"id": tx_id}))
        validate("SizeOfMempoolResponse", call("sizeOfMempool"))
        validate("NextTransactionResponse", call("nextTransaction"))  # exhausted: null
        validate("ReleaseMempoolResponse", call("releaseMempool"))
        call("acquireMempool")
        full = call("nextTransaction", {"fields": "all"})
        validate("NextTransactionResponse", full)
        assert full["result"]["transaction"]["id"] == tx_id


def test_rpc_errors_validate(devnet, validate):
    """Unknown method and garbage frames answer RpcError shapes (with the README's typo fixed)."""
    unknown = _rpc(devnet.ogmios_url, "queryLedgerState/nonsense")
    assert unknown["error"]["code"] == -32601
    validate("RpcError", unknown)
    with connect(devnet.ogmios_url) as ws:
        ws.send("{not json")
        validate("RpcError", json.loads(ws.recv(timeout=10)))


def test_ogmios_client_parses_every_query(devnet, devnet_key):
    """The `ogmios` 1.4 client's strict parsers accept every query answer."""
    from ogmios import Client
    from ogmios.datatypes import Address, Era, TxOutputReference
    from ogmios.utils import GenesisParameters, get_current_era

    from tests.fixtures.devnet import ogmios_host_port

    host, port = ogmios_host_port(devnet)
    with Client(host, port) as client:
        tip, _ = client.query_network_tip.execute()
        assert tip.slot == devnet.ledger.tip.slot
        ledger_tip, _ = client.query_ledger_tip.execute()
        assert ledger_tip.id == devnet.ledger.tip.id
        height, _ = client.query_block_height.execute()
        assert height == devnet.ledger.height >= 1
        epoch, _ = client.query_epoch.execute()
        assert epoch >= 1
        assert get_current_era(client) == Era.conway
        start, _ = client.query_start_time.execute()
        genesis = GenesisParameters(client, Era.conway)
        assert genesis.start_time == start and genesis.slot_length == 1000
        time_s, slot, era_epoch, _ = client.query_era_start.execute()
        assert (time_s, slot, era_epoch) == (0, 0, 0)
        params, _ = client.query_protocol_parameters.execute()
        assert (params.min_fee_coefficient, params.min_fee_constant.lovelace) == (44, 155381)
        assert params.min_utxo_deposit_coefficient == 4310
        utxos, _ = client.query_utxo.execute([Address(devnet_key.address)])
        assert len(utxos) == 1
        same, _ = client.query_utxo.execute([TxOutputReference(utxos[0].tx_id, utxos[0].index)])
        assert same[0].value == utxos[0].value
        summaries, _ = client.query_era_summaries.execute()
        assert len(summaries) == 7 and summaries[-1].end_slot > devnet.ledger.tip.slot


def test_start_time_consistent_across_queries(devnet):
    """startTime, Shelley genesis and era summaries agree: slot s is at start + s seconds."""
    import datetime as dt

    start = _rpc(devnet.ogmios_url, "queryNetwork/startTime")["result"]
    shelley = _rpc(devnet.ogmios_url, "queryNetwork/genesisConfiguration", {"era": "shelley"})["result"]
    summaries = _rpc(devnet.ogmios_url, "queryLedgerState/eraSummaries")["result"]
    assert shelley["startTime"] == start and start.endswith("Z") and "." not in start
    assert shelley["slotLength"] == {"milliseconds": 1000}
    assert all(s["parameters"]["slotLength"] == {"milliseconds": 1000} for s in summaries)
    conway_end = summaries[-1]["end"]
    assert conway_end["time"]["seconds"] == conway_end["slot"]
    started = dt.datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    tip_time = started.timestamp() + devnet.ledger.tip.slot
    assert abs(tip_time - dt.datetime.now(dt.timezone.utc).timestamp()) < 120


def test_protocol_parameters_use_v66_names_only(devnet):
    """Protocol parameters carry the fields pycardano reads and nothing the client does not know."""
    import inspect

    from ogmios.datatypes import ProtocolParameters

    result = _rpc(devnet.ogmios_url, "queryLedgerState/protocolParameters")["result"]
    known = set(inspect.signature(ProtocolParameters.__init__).parameters) - {"self"}
    assert set(result) <= known
    for needed in ("maxTransactionSize", "maxValueSize", "scriptExecutionPrices",
                   "maxExecutionUnitsPerTransaction", "maxExecutionUnitsPerBlock"):
        assert needed in result
    assert result["maxTransactionSize"] == {"bytes": 16384} and result["maxValueSize"] == {"bytes": 5000}
    conway = _rpc(devnet.ogmios_url, "queryNetwork/genesisConfiguration", {"era": "conway"})["result"]
    assert len(conway["updatableParameters"]) == 8
