"""The sandbox's Kupo-compatible API: pycardano's KupoOgmiosV6ChainContext pays through it, and the
/matches patterns, /datums, /scripts and /health answer as Kupo does."""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest

from tests.fixtures.devnet import GENESIS_LOVELACE, new_key, ogmios_host_port
from tests.sandbox.test_ogmios_fidelity import build
from tests.sandbox.test_ogmios_server import _genesis_input

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")


@pytest.fixture
def kupo(devnet: Any) -> Iterator[Any]:
    """A Kupo API over the ``devnet`` fixture's node."""
    from sandbox.kupo_api import KupoApi

    with KupoApi.start(devnet.node) as api:
        yield api


def test_pycardano_kupo_ogmios_context_builds_submits_and_sees_a_payment(devnet, devnet_key, kupo):
    """KupoOgmiosV6ChainContext, unchanged, finds UTxOs through Kupo, pays through Ogmios, sees the result."""
    from pycardano import Address, KupoOgmiosV6ChainContext, Network, TransactionBuilder, TransactionOutput

    def context() -> Any:
        host, port = ogmios_host_port(devnet)
        return KupoOgmiosV6ChainContext(host, port, "", False, network=Network.TESTNET, kupo_url=kupo.url)

    payee = new_key().address
    sender = Address.from_primitive(devnet_key.address)
    builder = TransactionBuilder(context())
    builder.add_input_address(sender)
    builder.add_output(TransactionOutput(Address.from_primitive(payee), 7_000_000))
    tx = builder.build_and_sign([devnet_key.signing_key], change_address=sender)
    context().submit_tx(tx)
    seen = context().utxos(payee)
    assert [(str(u.input.transaction_id), u.output.amount.coin) for u in seen] == [(str(tx.id), 7_000_000)]
    change = context().utxos(devnet_key.address)
    assert sum(u.output.amount.coin for u in change) == GENESIS_LOVELACE - 7_000_000 - tx.transaction_body.fee


def test_matches_by_address_reference_and_credential(devnet, devnet_key, kupo):
    """Address, <index>@<tx>, *@<tx> and <credential>/* patterns find the same unspent output with its point."""
    from pycardano import Address

    (ref, out), = devnet.ledger.utxos_at([devnet_key.address])
    by_address = httpx.get(f"{kupo.url}/matches/{devnet_key.address}?unspent").json()
    assert len(by_address) == 1
    match = by_address[0]
    assert (match["transaction_id"], match["output_index"], match["address"]) == (ref.tx_id, ref.index, out.address)
    assert match["value"] == {"coins": GENESIS_LOVELACE, "assets": {}}
    assert match["datum_hash"] is None and match["script_hash"] is None and match["spent_at"] is None
    genesis_block = devnet.ledger.created_at(ref)
    assert match["created_at"] == {"slot_no": genesis_block[0], "header_hash": genesis_block[1]}
    credential = Address.from_primitive(devnet_key.address).payment_part.payload.hex()
    for pattern in (f"{ref.index}@{ref.tx_id}", f"*@{ref.tx_id}", f"{credential}/*"):
        assert httpx.get(f"{kupo.url}/matches/{pattern}?unspent").json() == by_address, pattern
    assert httpx.get(f"{kupo.url}/matches/{devnet_key.address}?spent").json() == []  # pruned, as --prune-utxo
    headers = httpx.get(f"{kupo.url}/matches/{devnet_key.address}").headers
    assert int(headers["x-most-recent-checkpoint"]) == devnet.ledger.tip.slot


def test_matches_by_asset_and_filters(devnet_factory, devnet_key):
    """<policy>.* and <policy>.<name> patterns and policy_id/asset_name filters select token holders."""
    from sandbox.devnet import DEVNET_TOKEN
    from sandbox.kupo_api import KupoApi

    devnet = devnet_factory(fund={devnet_key.address: 5_000_000}, fund_assets={devnet_key.address: {DEVNET_TOKEN: 9}})
    policy, name = DEVNET_TOKEN.split(".")
    with KupoApi.start(devnet.node) as kupo:
        mine = httpx.get(f"{kupo.url}/matches/{devnet_key.address}?unspent").json()
        assert mine[0]["value"]["assets"] == {DEVNET_TOKEN: 9}
        holders = {m["address"] for m in httpx.get(f"{kupo.url}/matches/{policy}.*?unspent").json()}
        assert devnet_key.address in holders and devnet.faucet_address in holders
        exact = httpx.get(f"{kupo.url}/matches/{DEVNET_TOKEN}?unspent").json()
        assert {m["address"] for m in exact} == holders
        filtered = httpx.get(f"{kupo.url}/matches/*?unspent&policy_id={policy}&asset_name={name}").json()
        assert {m["address"] for m in filtered} == holders
        assert httpx.get(f"{kupo.url}/matches/{policy}.{'00' * 4}?unspent").json() == []


def test_inline_datums_and_reference_scripts_resolve(devnet, devnet_key, kupo):
    """A match with an inline datum and a reference script names their hashes; /datums and /scripts give them."""
    from pycardano import Address, PlutusV3Script, RawCBOR, TransactionOutput, datum_hash

    script = PlutusV3Script(b"\x01\x02\x03" * 100)
    datum = RawCBOR(bytes.fromhex("d87980"))
    holder = TransactionOutput(Address.from_primitive(devnet_key.address), 30_000_000, datum=datum, script=script)
    cbor, tx_id, _ = build(devnet_key, [_genesis_input(devnet, devnet_key)], [holder])
    devnet.node.submit(cbor)
    (match,) = httpx.get(f"{kupo.url}/matches/0@{tx_id}?unspent").json()
    assert match["datum_type"] == "inline" and match["datum_hash"] == datum_hash(datum).payload.hex()
    from pycardano import plutus_script_hash

    assert match["script_hash"] == plutus_script_hash(script).payload.hex()
    assert httpx.get(f"{kupo.url}/datums/{match['datum_hash']}").json() == {"datum": "d87980"}
    assert httpx.get(f"{kupo.url}/scripts/{match['script_hash']}").json() == {
        "language": "plutus:v3", "script": bytes(script).hex()}
    assert httpx.get(f"{kupo.url}/datums/{'00' * 32}").json() is None
    assert httpx.get(f"{kupo.url}/scripts/{'00' * 28}").json() is None


def test_health_and_bad_requests(devnet, kupo):
    """/health answers JSON or Prometheus text; bad patterns get 400, unknown paths 404, writes 405."""
    health = httpx.get(f"{kupo.url}/health", headers={"accept": "application/json"}).json()
    assert health["connection_status"] == "connected"
    assert health["most_recent_checkpoint"] == devnet.ledger.tip.slot
    assert "kupo_most_recent_checkpoint" in httpx.get(f"{kupo.url}/health").text
    for pattern in ("nonsense", "zz@" + "00" * 32, "1@abc", f"{'ab' * 28}.xyz", "addr_test1qqq"):
        reply = httpx.get(f"{kupo.url}/matches/{pattern}")
        assert reply.status_code == 400 and "hint" in reply.json(), pattern
    assert httpx.get(f"{kupo.url}/matches/*?policy_id=zz").status_code == 400
    assert httpx.get(f"{kupo.url}/nothing").status_code == 404
    assert httpx.put(f"{kupo.url}/matches/*").status_code == 405
