"""Ogmios fidelity: /health, HTTP JSON-RPC, every v6.14 ledger-state method, acquired states,
Plutus V3 cost model, inline datums and reference scripts in UTxOs, the reference-script fee."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from websockets.sync.client import connect

from tests.fixtures.devnet import GENESIS_LOVELACE, DevnetKey, new_key
from tests.sandbox.test_ogmios_server import _call, _genesis_input

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "ogmios" / "schemas"


def _registry(version: str) -> tuple[Registry, set[str]]:
    cardano = json.loads((SCHEMAS / version / "cardano.json").read_text())
    ogmios = json.loads((SCHEMAS / version / "ogmios.json").read_text())
    cardano["definitions"]["Value"]["propertyNames"] = {"pattern": "^(ada|[0-9a-f]{56})$"}  # see the README
    rpc = ogmios["properties"]["RpcError"]
    rpc["properties"]["error"]["required"] = ["code", "message"]
    rpc["properties"]["method"] = {"type": "string"}
    registry = Registry().with_resources([
        ("cardano.json", Resource.from_contents(cardano, default_specification=DRAFT7)),
        ("ogmios.json", Resource.from_contents(ogmios, default_specification=DRAFT7)),
    ])
    return registry, set(ogmios["properties"])


@pytest.fixture(scope="module")
def validate():
    """validate(name, response): check ``response`` against ``ogmios.json#/properties/<name>`` of v6.6
    (the wire format) when v6.6 has the method, else of v6.14 (the methods)."""
    v66, v66_names = _registry("v6.6")
    v614, _ = _registry("v6.14")

    def check(name: str, response: dict[str, Any]) -> None:
        registry = v66 if name in v66_names else v614
        errors = list(Draft7Validator({"$ref": f"ogmios.json#/properties/{name}"}, registry=registry)
                      .iter_errors(response))
        assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"

    return check


def _http(devnet: Any) -> str:
    return devnet.ogmios_url.replace("ws://", "http://")


def _rpc(ws: Any, method: str, params: Any = None) -> dict[str, Any]:
    return _call(ws, method, params, id=None)


def build(key: DevnetKey, inputs: list[tuple[str, int, int]], outputs: list[Any], *, extra_fee: int = 0,
          reference_inputs: list[tuple[str, int]] = ()) -> tuple[bytes, str, int]:
    """Sign ``inputs`` -> ``outputs`` plus change to ``key`` (last output) at the size fee plus ``extra_fee``.

    Returns (cbor, tx id, fee).
    """
    from pycardano import (Address, Transaction, TransactionBody, TransactionId, TransactionInput,
                           TransactionOutput, TransactionWitnessSet, VerificationKeyWitness)

    total = sum(n for _, _, n in inputs)
    paid = sum(o.amount if isinstance(o.amount, int) else o.amount.coin for o in outputs)
    fee = 300_000
    for _ in range(5):
        body = TransactionBody(
            inputs=[TransactionInput(TransactionId(bytes.fromhex(t)), i) for t, i, _ in inputs],
            outputs=[*outputs, TransactionOutput(Address.from_primitive(key.address), total - paid - fee)],
            fee=fee,
            reference_inputs=[TransactionInput(TransactionId(bytes.fromhex(t)), i) for t, i in reference_inputs]
            or None)
        witness = VerificationKeyWitness(key.verification_key, key.signing_key.sign(body.hash()))
        cbor = Transaction(body, TransactionWitnessSet(vkey_witnesses=[witness])).to_cbor()
        needed = 44 * (len(cbor) - 1) + 155381 + extra_fee
        if needed == fee:
            break
        fee = needed
    return cbor, body.hash().hex(), fee


# --- /health and HTTP JSON-RPC ----------------------------------------------------------------------


def test_health_has_ogmios_shape_and_follows_the_tip(devnet):
    """GET /health answers Ogmios's JSON: connected, synchronised, the tip with its height, conway."""
    reply = httpx.get(_http(devnet) + "/health")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/json")
    health = reply.json()
    tip = devnet.ledger.tip
    assert health["lastKnownTip"] == {"slot": tip.slot, "id": tip.id, "height": tip.height}
    assert health["connectionStatus"] == "connected" and health["networkSynchronization"] == 1
    assert health["currentEra"] == "conway" and health["version"].startswith("v6.")
    assert set(health["metrics"]) >= {"activeConnections", "totalConnections", "totalMessages", "sessionDurations"}
    assert {"startTime", "lastTipUpdate", "currentEpoch", "slotInEpoch", "network"} <= set(health)


def test_health_reports_a_stale_tip_as_not_synchronised(devnet_factory):
    """When the wall clock runs far past the tip, /health answers 202 with a synchronisation below 1."""
    now = [1_800_000_000.0]
    devnet = devnet_factory(block_time_s=3600, clock=lambda: now[0])
    from sandbox.ogmios_json import health_json

    health = health_json(devnet.node, started_at=now[0], version="v6.14.0", connections=(0, 0, 0),
                         now=now[0] + 86_400)
    assert 0 < health["networkSynchronization"] < 1


def test_json_rpc_over_http_post(devnet, devnet_key, validate):
    """POST / answers JSON-RPC like the WebSocket: 200 with a result, 400 with an error; submit works too."""
    from tests.sandbox.test_ogmios_server import make_tx

    url = _http(devnet)
    tip = httpx.post(url, json={"jsonrpc": "2.0", "method": "queryNetwork/tip", "id": 7})
    assert tip.status_code == 200 and tip.json()["result"]["id"] == devnet.ledger.tip.id and tip.json()["id"] == 7
    validate("QueryNetworkTipResponse", tip.json())
    unknown = httpx.post(url, json={"jsonrpc": "2.0", "method": "nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == -32601
    garbage = httpx.post(url, content=b"{nope")
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == -32700
    cbor, tx_id, _ = make_tx(devnet_key, [_genesis_input(devnet, devnet_key)], new_key().address, 3_000_000)
    submitted = httpx.post(url, json={"jsonrpc": "2.0", "method": "submitTransaction",
                                      "params": {"transaction": {"cbor": cbor.hex()}}})
    assert submitted.status_code == 200 and submitted.json()["result"]["transaction"]["id"] == tx_id
    assert tx_id in devnet.ledger.tip.tx_ids
    again = httpx.post(url, json={"jsonrpc": "2.0", "method": "submitTransaction",
                                  "params": {"transaction": {"cbor": cbor.hex()}}})
    assert again.status_code == 400 and again.json()["error"]["code"] == 3117
    assert httpx.get(url + "/nowhere").status_code == 404


# --- every v6.14 method -------------------------------------------------------------------------------

LEDGER_QUERIES = [
    ("queryLedgerState/constitution", None, "QueryLedgerStateConstitutionResponse"),
    ("queryLedgerState/constitutionalCommittee", None, "QueryLedgerStateConstitutionalCommitteeResponse"),
    ("queryLedgerState/delegateRepresentatives", {"keys": []}, "QueryLedgerStateDelegateRepresentativesResponse"),
    ("queryLedgerState/dump", None, "QueryLedgerStateDumpResponse"),
    ("queryLedgerState/governanceProposals", None, "QueryLedgerStateGovernanceProposalsResponse"),
    ("queryLedgerState/liveStakeDistribution", None, "QueryLedgerStateLiveStakeDistributionResponse"),
    ("queryLedgerState/nonces", None, "QueryLedgerStateNoncesResponse"),
    ("queryLedgerState/operationalCertificates", None, "QueryLedgerStateOperationalCertificatesResponse"),
    ("queryLedgerState/projectedRewards", {"stake": [{"ada": {"lovelace": 1_000_000}}]},
     "QueryLedgerStateProjectedRewardsResponse"),
    ("queryLedgerState/rewardAccountSummaries", {"keys": ["8200581c" + "ab" * 28]},
     "QueryLedgerStateRewardAccountSummariesResponse"),
    ("queryLedgerState/rewardsProvenance", None, "QueryLedgerStateRewardsProvenanceResponse"),
    ("queryLedgerState/stakePools", {"includeStake": True}, "QueryLedgerStateStakePoolsResponse"),
    ("queryLedgerState/stakePoolsPerformances", None, "QueryLedgerStateStakePoolsPerformancesResponse"),
    ("queryLedgerState/treasuryAndReserves", None, "QueryLedgerStateTreasuryAndReservesResponse"),
    ("queryLedgerState/proposedProtocolParameters", None, "QueryLedgerStateProposedProtocolParametersResponse"),
    ("queryLedgerState/protocolParameters", None, "QueryLedgerStateProtocolParametersResponse"),
    ("queryLedgerState/utxo", {}, "QueryLedgerStateUtxoResponse"),
    ("queryLedgerState/tip", None, "QueryLedgerStateTipResponse"),
    ("queryLedgerState/epoch", None, "QueryLedgerStateEpochResponse"),
    ("queryLedgerState/eraSummaries", None, "QueryLedgerStateEraSummariesResponse"),
    ("queryNetwork/blockHeight", None, "QueryNetworkBlockHeightResponse"),
]


def test_every_ledger_state_query_answers_and_validates(devnet, validate):
    """No v6.14 ledger-state query is an unknown method; each answer matches its schema (v6.6 where it has one)."""
    with connect(devnet.ogmios_url, max_size=None) as ws:
        for method, params, schema in LEDGER_QUERIES:
            reply = _rpc(ws, method, params)
            assert "result" in reply, (method, reply)
            validate(schema, reply)


def test_empty_answers_where_the_devnet_has_nothing(devnet):
    """No pools, DReps, proposals or reward accounts: empty answers; the supply adds up."""
    with connect(devnet.ogmios_url) as ws:
        assert _rpc(ws, "queryLedgerState/stakePools")["result"] == {}
        assert _rpc(ws, "queryLedgerState/governanceProposals")["result"] == []
        assert _rpc(ws, "queryLedgerState/rewardAccountSummaries", {"keys": ["ab" * 28]})["result"] == {}
        assert _rpc(ws, "queryLedgerState/delegateRepresentatives")["result"] == []
        money = _rpc(ws, "queryLedgerState/treasuryAndReserves")["result"]
        held = sum(out.lovelace for _, out in devnet.node.all_utxos())
        assert money["reserves"]["ada"]["lovelace"] == 45_000_000_000_000_000 - held
        bad = _rpc(ws, "queryLedgerState/rewardAccountSummaries", {"keys": "ab"})
        assert bad["error"]["code"] == -32602


def test_ogmios_client_pays_sees_the_payment_and_reads_governance_and_stake(devnet, devnet_key):
    """The `ogmios` 1.4 client, unchanged: submit, then see the payee's output; the new queries parse."""
    from ogmios import Address, Client

    from tests.fixtures.devnet import ogmios_host_port
    from tests.sandbox.test_ogmios_server import make_tx

    payee = new_key().address
    cbor, tx_id, _ = make_tx(devnet_key, [_genesis_input(devnet, devnet_key)], payee, 6_000_000)
    host, port = ogmios_host_port(devnet)
    with Client(host, port) as client:
        assert client.submit_transaction.execute(cbor.hex())[0] == tx_id
        (utxo,), _ = client.query_utxo.execute([Address(payee)])
        assert (utxo.tx_id, utxo.value["ada"]["lovelace"]) == (tx_id, 6_000_000)
        guardrails, anchor, _ = client.query_constitution.execute()
        assert anchor["url"].startswith("ipfs://")
        assert client.query_constitutional_committee.execute()[0] == {"members": [], "quorum": "2/3"}
        summaries, _ = client.query_reward_account_summaries.execute(keys=["ab" * 28])
        assert not summaries
        treasury, reserves, _ = client.query_treasury_and_reserves.execute()
        assert treasury.lovelace == 0 and reserves.lovelace > 0
        tip, _ = client.query_ledger_tip.execute()
        assert client.acquire_ledger_state.execute(tip)[0].id == tip.id


def test_protocol_parameters_carry_plutus_v3_at_protocol_version_10(devnet):
    """plutus:v3 has mainnet's 297 parameters at version 10.0; pycardano reads all three models."""
    from tests.fixtures.devnet import chain_context

    with connect(devnet.ogmios_url) as ws:
        params = _rpc(ws, "queryLedgerState/protocolParameters")["result"]
    assert params["version"] == {"major": 10, "minor": 0}
    assert len(params["plutusCostModels"]["plutus:v3"]) == 297
    assert params["minFeeReferenceScripts"] == {"range": 25600, "base": 15.0, "multiplier": 1.2}
    models = chain_context(devnet).protocol_param.cost_models
    assert set(models) == {"PlutusV1", "PlutusV2", "PlutusV3"} and len(models["PlutusV3"]) == 297


# --- acquired ledger states -----------------------------------------------------------------------------


def test_acquired_ledger_state_answers_from_its_point_until_released(devnet, devnet_key):
    """After acquireLedgerState, queries answer the state at that point even as blocks come; release ends it."""
    from tests.sandbox.test_ogmios_server import make_tx

    payee = new_key().address
    with connect(devnet.ogmios_url) as ws:
        tip = _rpc(ws, "queryNetwork/tip")["result"]
        acquired = _rpc(ws, "acquireLedgerState", {"point": tip})
        assert acquired["result"] == {"acquired": "ledgerState", "point": tip}
        cbor, tx_id, _ = make_tx(devnet_key, [_genesis_input(devnet, devnet_key)], payee, 4_000_000)
        assert "result" in _rpc(ws, "submitTransaction", {"transaction": {"cbor": cbor.hex()}})
        assert devnet.ledger.tip.id != tip["id"]  # a block was made
        assert _rpc(ws, "queryLedgerState/tip")["result"] == tip
        assert _rpc(ws, "queryLedgerState/utxo", {"addresses": [payee]})["result"] == []
        old = _rpc(ws, "queryLedgerState/utxo", {"addresses": [devnet_key.address]})["result"]
        assert [u["value"]["ada"]["lovelace"] for u in old] == [GENESIS_LOVELACE]
        assert _rpc(ws, "releaseLedgerState")["result"] == {"released": "ledgerState"}
        now = _rpc(ws, "queryLedgerState/utxo", {"addresses": [payee]})["result"]
        assert [u["transaction"]["id"] for u in now] == [tx_id]


def test_acquiring_unknown_or_origin_points_fails_with_2000(devnet):
    """Origin and points that are not on the chain are refused with 2000 and Ogmios's reason."""
    with connect(devnet.ogmios_url) as ws:
        origin = _rpc(ws, "acquireLedgerState", {"point": "origin"})
        assert origin["error"]["code"] == 2000 and origin["error"]["data"] == "Target point is too old."
        nowhere = _rpc(ws, "acquireLedgerState", {"point": {"slot": devnet.ledger.tip.slot, "id": "ab" * 32}})
        assert nowhere["error"]["code"] == 2000
        assert nowhere["error"]["message"] == "Failed to acquire requested point."
        assert _rpc(ws, "acquireLedgerState", {"point": 5})["error"]["code"] == -32602


# --- datums, reference scripts and their fee --------------------------------------------------------


def test_utxos_carry_inline_datums_and_reference_scripts_and_spending_pays_the_reference_fee(devnet, devnet_key):
    """An output with an inline datum and a reference script shows both; spending it costs 15 lovelace
    per script byte more (Conway's tiered fee), and the exact minimum is refused one lovelace short."""
    from pycardano import Address, PlutusV3Script, RawCBOR, TransactionOutput

    script = PlutusV3Script(bytes(range(256)) * 40)  # 10,240 bytes
    datum = RawCBOR(bytes.fromhex("d8799f4568656c6c6fff"))  # Constr 0 [b"hello"]
    holder = TransactionOutput(Address.from_primitive(devnet_key.address), 60_000_000, datum=datum, script=script)
    cbor, tx_id, _ = build(devnet_key, [_genesis_input(devnet, devnet_key)], [holder])
    with connect(devnet.ogmios_url) as ws:
        assert "result" in _rpc(ws, "submitTransaction", {"transaction": {"cbor": cbor.hex()}}), "setup"
        (item,) = _rpc(ws, "queryLedgerState/utxo", {"outputReferences": [
            {"transaction": {"id": tx_id}, "index": 0}]})["result"]
        assert item["datum"] == "d8799f4568656c6c6fff"
        assert item["script"] == {"language": "plutus:v3", "cbor": bytes(script).hex()}
        ref_fee = 15 * len(script)
        spend = [(tx_id, 0, 60_000_000)]
        short, _, fee = build(devnet_key, spend, [], extra_fee=ref_fee - 1)
        refused = _rpc(ws, "submitTransaction", {"transaction": {"cbor": short.hex()}})
        assert refused["error"]["code"] == 3122
        assert refused["error"]["data"]["minimumRequiredFee"]["ada"]["lovelace"] == fee + 1
        assert refused["error"]["message"].startswith("Insufficient fee!")
        exact, spent_id, _ = build(devnet_key, spend, [], extra_fee=ref_fee)
        assert _rpc(ws, "submitTransaction", {"transaction": {"cbor": exact.hex()}})["result"]["transaction"]["id"] \
            == spent_id


def test_reference_inputs_pay_the_reference_fee_too(devnet, devnet_key):
    """A transaction that only references an output with a script pays for that script's bytes."""
    from pycardano import Address, PlutusV2Script, TransactionOutput

    script = PlutusV2Script(b"\x4d" * 3000)
    holder = TransactionOutput(Address.from_primitive(new_key().address), 30_000_000, script=script)
    cbor, tx_id, _ = build(devnet_key, [_genesis_input(devnet, devnet_key)], [holder])
    with connect(devnet.ogmios_url) as ws:
        assert "result" in _rpc(ws, "submitTransaction", {"transaction": {"cbor": cbor.hex()}}), "setup"
        change = (tx_id, 1, devnet.ledger.balance(devnet_key.address)["lovelace"])
        short, _, _ = build(devnet_key, [change], [], reference_inputs=[(tx_id, 0)])
        assert _rpc(ws, "submitTransaction", {"transaction": {"cbor": short.hex()}})["error"]["code"] == 3122
        paid, _, _ = build(devnet_key, [change], [], reference_inputs=[(tx_id, 0)], extra_fee=15 * 3000)
        assert "result" in _rpc(ws, "submitTransaction", {"transaction": {"cbor": paid.hex()}})


def test_tiered_reference_script_fee_matches_conway():
    """25,600 bytes at 15/byte, the next tier at 18/byte, rounded down."""
    from sandbox.rules import ref_script_fee

    assert ref_script_fee(0, 15) == 0
    assert ref_script_fee(25_600, 15) == 384_000
    assert ref_script_fee(25_601, 15) == 384_018
    assert ref_script_fee(51_200 + 10, 15) == 384_000 + 460_800 + 216  # third tier: 21.6/byte, floored

