"""The sandbox's Blockfrost API: third-party clients unchanged, JSON shapes, paging, auth, limits and faults."""

from __future__ import annotations

import httpx
import pytest

from sandbox.blockfrost_api import DEFAULT_PROJECT_ID, BlockfrostServer, Limits
from tests.fixtures.devnet import GENESIS_LOVELACE, new_key
from wallets.blockfrost import BlockfrostAuthError, BlockfrostChain, BlockfrostQuotaError
from wallets.errors import ChainProtocolError, ChainUnavailableError, InputsSpentError
from wallets.types import OutputRef

HEADERS = {"project_id": DEFAULT_PROJECT_ID}


@pytest.fixture
def blockfrost(devnet):
    """The Blockfrost API over the ``devnet`` fixture's ledger."""
    server = BlockfrostServer.start(devnet.node)
    yield server
    server.stop()


def chain_on(server, **options):
    options.setdefault("timeout_s", 5.0)
    return BlockfrostChain(server.url, DEFAULT_PROJECT_ID, network="devnet", **options)


def get(server, path, **kwargs):
    return httpx.get(server.url + path, headers=kwargs.pop("headers", HEADERS), timeout=10, **kwargs)


def _pay_with_pycardano(context, key, to_address, lovelace):
    from pycardano import Address, TransactionBuilder, TransactionOutput

    builder = TransactionBuilder(context)
    builder.add_input_address(key.address)
    builder.add_output(TransactionOutput(Address.from_primitive(to_address), lovelace))
    return builder.build_and_sign([key.signing_key], change_address=Address.from_primitive(key.address))


def test_pycardano_blockfrost_context_builds_submits_and_sees_a_payment(devnet, devnet_key, blockfrost):
    """pycardano's BlockFrostChainContext, unchanged, pays on the devnet and then sees the payee's UTxO."""
    from pycardano import BlockFrostChainContext

    payee = new_key()
    context = BlockFrostChainContext(DEFAULT_PROJECT_ID, base_url=blockfrost.url.removesuffix("/v0"))
    assert context.protocol_param.min_fee_coefficient == 44 and context.genesis_param.slot_length == 1
    tx = _pay_with_pycardano(context, devnet_key, payee.address, 3_000_000)
    tx_id = context.submit_tx(tx)
    assert tx_id == str(tx.id)
    [seen] = BlockFrostChainContext(DEFAULT_PROJECT_ID, base_url=blockfrost.url.removesuffix("/v0")).utxos(payee.address)
    assert seen.output.amount.coin == 3_000_000 and str(seen.input.transaction_id) == tx_id
    assert devnet.ledger.balance(payee.address)["lovelace"] == 3_000_000


def test_blockfrost_python_submits_and_sees_a_payment(devnet, devnet_key, blockfrost):
    """blockfrost-python, unchanged: latest block, paged UTxOs, submit, then the transaction and its outputs."""
    from blockfrost import ApiError, BlockFrostApi
    from pycardano import BlockFrostChainContext

    api = BlockFrostApi(project_id=DEFAULT_PROJECT_ID, base_url=blockfrost.url.removesuffix("/v0"))
    assert api.health().is_healthy and api.block_latest().height == devnet.node.height()
    [genesis_utxo] = api.address_utxos(devnet_key.address, gather_pages=True)
    assert genesis_utxo.amount[0].unit == "lovelace" and int(genesis_utxo.amount[0].quantity) == GENESIS_LOVELACE
    payee = new_key()
    context = BlockFrostChainContext(DEFAULT_PROJECT_ID, base_url=blockfrost.url.removesuffix("/v0"))
    tx = _pay_with_pycardano(context, devnet_key, payee.address, 4_000_000)
    tx_id = api.transaction_submit_cbor(tx.to_cbor())
    assert tx_id == str(tx.id)
    found = api.transaction(tx_id)
    assert found.block_height == devnet.node.height() and int(found.fees) == tx.transaction_body.fee
    outputs = api.transaction_utxos(tx_id).outputs
    assert outputs[0].address == payee.address and outputs[0].amount[0].quantity == "4000000"
    assert outputs[0].consumed_by_tx is None
    assert api.address(payee.address).amount[0].quantity == "4000000"
    with pytest.raises(ApiError) as info:
        api.transaction("00" * 32)
    assert info.value.status_code == 404


def test_project_id_is_checked_with_blockfrosts_error_body(blockfrost):
    """No project_id header or a wrong one: 403 with Blockfrost's {status_code, error, message}."""
    missing = get(blockfrost, "/blocks/latest", headers={})
    assert missing.status_code == 403 and missing.json()["error"] == "Forbidden"
    wrong = get(blockfrost, "/blocks/latest", headers={"project_id": "mainnet" + "1" * 32})
    assert wrong.json() == {"status_code": 403, "error": "Forbidden", "message": "Invalid project token."}


def test_the_agent_backend_names_a_wrong_project_id_in_one_line(blockfrost):
    """BlockfrostChain with a wrong id: BlockfrostAuthError naming the network and BLOCKFROST_PROJECT_ID."""
    chain = BlockfrostChain(blockfrost.url, "devnet" + "9" * 32, network="devnet")
    with pytest.raises(BlockfrostAuthError, match="for devnet .*BLOCKFROST_PROJECT_ID") as info:
        chain.tip()
    assert "9" * 32 not in str(info.value)


def test_address_utxos_are_paged_and_ordered(devnet, devnet_key, blockfrost):
    """count/page/order work as Blockfrost's; bad values are 400; an unknown address is 404."""
    for n in range(3):
        devnet.fund(devnet_key.address, 2_000_000 + n)
    first = get(blockfrost, f"/addresses/{devnet_key.address}/utxos", params={"count": 2, "page": 1}).json()
    second = get(blockfrost, f"/addresses/{devnet_key.address}/utxos", params={"count": 2, "page": 2}).json()
    assert len(first) == 2 and len(second) == 2
    assert first[0]["amount"][0]["quantity"] == str(GENESIS_LOVELACE)  # oldest first
    newest = get(blockfrost, f"/addresses/{devnet_key.address}/utxos", params={"order": "desc", "count": 1}).json()
    assert newest[0]["amount"][0]["quantity"] == "2000002"
    bad = get(blockfrost, f"/addresses/{devnet_key.address}/utxos", params={"count": 101})
    assert bad.status_code == 400 and bad.json()["error"] == "Bad Request"
    unknown = get(blockfrost, f"/addresses/{new_key().address}/utxos")
    assert unknown.json() == {"status_code": 404, "error": "Not Found",
                              "message": "The requested component has not been found."}
    assert chain_on(blockfrost).utxos_at(new_key().address) == []


def test_a_double_spend_is_a_typed_refusal_naming_the_spent_input(devnet, devnet_key, blockfrost):
    """Submitting a transaction whose input is gone: 400 BadInputsUTxO, InputsSpentError with the reference."""
    from pycardano import BlockFrostChainContext

    context = BlockFrostChainContext(DEFAULT_PROJECT_ID, base_url=blockfrost.url.removesuffix("/v0"))
    first = _pay_with_pycardano(context, devnet_key, new_key().address, 2_000_000)
    second = _pay_with_pycardano(context, devnet_key, new_key().address, 3_000_000)  # same input
    chain = chain_on(blockfrost)
    chain.submit(first.to_cbor())
    answer = httpx.post(blockfrost.url + "/tx/submit", content=second.to_cbor(),
                        headers={**HEADERS, "Content-Type": "application/cbor"})
    assert answer.status_code == 400 and "BadInputsUTxO" in answer.json()["message"]
    with pytest.raises(InputsSpentError) as info:
        chain.submit(second.to_cbor())
    spent = second.transaction_body.inputs[0]
    assert info.value.data["unknownOutputReferences"] == [
        {"transaction": {"id": str(spent.transaction_id)}, "index": spent.index}]


def test_transactions_and_who_consumed_their_outputs(devnet, devnet_key, blockfrost):
    """/txs/{hash} places a confirmed transaction in its block; consumed outputs are no longer unspent."""
    tx_id = devnet.fund(devnet_key.address, 5_000_000)
    chain = chain_on(blockfrost)
    found = chain.transaction(tx_id)
    tip = devnet.node.tip()
    assert (found["block"], found["block_height"], found["slot"]) == (tip.id, tip.height, tip.slot)
    assert chain.utxos_by_refs([OutputRef(tx_id, 0)])[0].lovelace == 5_000_000
    later = devnet.fund(devnet_key.address, 6_000_000)  # spends the faucet change, output 1 of tx_id
    outputs = get(blockfrost, f"/txs/{tx_id}/utxos").json()["outputs"]
    assert outputs[1]["consumed_by_tx"] == later and outputs[0]["consumed_by_tx"] is None
    assert chain.utxos_by_refs([OutputRef(tx_id, 1)]) == []
    assert chain.transaction("ab" * 32) is None


def test_mempool_shows_transactions_waiting_for_a_block(devnet_factory, devnet_key):
    """On a devnet that makes blocks only when told, /mempool/{hash} sees the waiting transaction."""
    slow = devnet_factory(block_time_s=3600, fund={devnet_key.address: GENESIS_LOVELACE})
    with BlockfrostServer.start(slow.node) as server:
        chain = chain_on(server)
        tx_id = slow.fund(devnet_key.address, 2_000_000)
        assert chain.in_mempool(tx_id) and chain.transaction(tx_id) is None
        assert get(server, f"/mempool/{tx_id}").json()["tx"]["hash"] == tx_id
        slow.produce_block()
        assert not chain.in_mempool(tx_id) and chain.transaction(tx_id)["block"] == slow.node.tip().id


def test_token_metadata_for_the_devnet_token(devnet, blockfrost):
    """/assets/{asset} answers the faucet token's metadata; the backend reads its name and ticker."""
    from sandbox.devnet import DEVNET_TOKEN

    meta = chain_on(blockfrost).token_metadata(DEVNET_TOKEN)
    assert meta is not None and meta["ticker"] == "DEVNET" and meta["decimals"] == 0
    answer = get(blockfrost, "/assets/" + DEVNET_TOKEN.replace(".", "")).json()
    assert answer["fingerprint"].startswith("asset1") and int(answer["quantity"]) > 0


def test_a_burst_of_429_is_waited_out(blockfrost):
    """Three 429s, then answers: the backend backs off and gets its answer."""
    blockfrost.faults.fail_next(429, 3)
    chain = chain_on(blockfrost, backoff_s=0.001)
    assert chain.tip().slot > 0
    assert blockfrost.requests == 4


def test_the_servers_rate_limit_answers_429_and_the_client_limiter_avoids_it(devnet):
    """A bucket of 5 with no refill: the sixth request is 429; a client limited to 5 never sends it."""
    with BlockfrostServer.start(devnet.node, limits=Limits(rate_per_s=1e-9, burst=5)) as server:
        answers = [get(server, "/health").status_code for _ in range(6)]
        assert answers == [200] * 5 + [429]
    with BlockfrostServer.start(devnet.node, limits=Limits(rate_per_s=1e-9, burst=5, daily_quota=2)) as server:
        chain = chain_on(server, params_ttl_s=0)
        chain.protocol_params()
        chain.protocol_params()
        with pytest.raises(BlockfrostQuotaError, match="daily request quota"):
            chain.protocol_params()


def test_5xx_garbage_and_hangs_end_in_clear_errors(blockfrost):
    """Persistent 503, persistent garbage, and an answer that never comes: one clear error each."""
    chain = chain_on(blockfrost, attempts=2, backoff_s=0.001)
    blockfrost.faults.fail_next(503, 2)
    with pytest.raises(ChainUnavailableError, match="HTTP 503"):
        chain.tip()
    blockfrost.faults.garbage_next(2)
    with pytest.raises(ChainProtocolError, match="not JSON"):
        chain.tip()
    blockfrost.faults.hang_next(2)
    hurried = chain_on(blockfrost, attempts=2, backoff_s=0.001, timeout_s=0.2)
    with pytest.raises(ChainUnavailableError, match="ReadTimeout"):
        hurried.tip()
    blockfrost.faults.release.set()
    assert chain.tip().slot > 0


def test_a_stale_tip_is_refused_when_the_index_must_be_fresh(blockfrost, devnet):
    """The first block reported as latest, and the clock far ahead of it: a retryable error."""
    devnet.fund(new_key().address, 2_000_000)
    genesis_time = devnet.node.genesis.system_start + devnet.node.block_at(0)[0].slot
    chain = chain_on(blockfrost, max_tip_lag_s=60, wall_clock=lambda: genesis_time + 3600)
    blockfrost.faults.stale_tip_next()
    with pytest.raises(ChainUnavailableError, match="index lags"):
        chain.tip()


def test_a_submission_whose_answer_is_lost_is_not_resent(devnet, devnet_key, blockfrost):
    """The node took the transaction but the answer was a 500: the backend says 'unknown', sends it once."""
    from pycardano import BlockFrostChainContext

    context = BlockFrostChainContext(DEFAULT_PROJECT_ID, base_url=blockfrost.url.removesuffix("/v0"))
    tx = _pay_with_pycardano(context, devnet_key, new_key().address, 2_000_000)
    blockfrost.faults.fail_next(500, path="/tx/submit", after=True)
    chain = chain_on(blockfrost)
    with pytest.raises(ChainUnavailableError, match="outcome is unknown"):
        chain.submit(tx.to_cbor())
    assert chain.transaction(str(tx.id)) is not None  # it landed: evidence, not a guess


def test_find_transaction_over_blockfrost_matches_chain_sync(devnet, blockfrost):
    """Did it land, in which block: found after the point it was signed at; not after a later point; spender named."""
    from tests.wallets.test_payment import KeySigner, fresh_address
    from wallets.chain import IntersectionNotFoundError
    from wallets.sender import PaymentSender
    from wallets.types import RequiredOutput

    signer = KeySigner()
    devnet.fund(signer.address, 50_000_000)
    chain = chain_on(blockfrost)
    start = chain.tip()
    sender = PaymentSender(chain, signer, poll_s=0.01)
    payee = fresh_address()
    ttl = chain.current_slot() + 600
    first = sender.pay([RequiredOutput(payee, 2_000_000)], ttl_slot=ttl, owner="a")
    second = sender.pay([RequiredOutput(payee, 2_000_000)], ttl_slot=ttl, owner="b")
    assert second.inputs == (first.change[0].ref,)  # chained on the first's change
    found = chain.find_transaction(first.tx_id, since=(start.slot, start.id), inputs=first.inputs)
    position = devnet.node.block_position(found.block[1])
    assert found.landed and found.block == (devnet.node.block_at(position)[0].slot, found.block[1])
    assert found.tip_slot == chain.tip().slot
    tip = chain.tip()
    assert not chain.find_transaction(first.tx_id, since=(tip.slot, tip.id)).landed  # before the range read
    other = chain.find_transaction("00" * 32, since=(start.slot, start.id), inputs=second.inputs)
    assert not other.landed and dict(other.spent_by) == {second.inputs[0]: second.tx_id}
    with pytest.raises(IntersectionNotFoundError):
        chain.find_transaction(first.tx_id, since=(tip.slot, "ab" * 32))


def test_sandbox_up_serves_the_blockfrost_api():
    """`sandbox up --blockfrost-port 0` adds the Blockfrost URL to the ready line; it answers with the default id."""
    import json
    import signal

    from tests.sandbox.test_tapi_cli import _first_line, _start

    proc = _start("--blockfrost-port", "0")
    try:
        ready = json.loads(_first_line(proc))
        assert ready["blockfrost"].startswith("http://127.0.0.1:") and ready["blockfrost"].endswith("/api/v0")
        latest = httpx.get(ready["blockfrost"] + "/blocks/latest", headers=HEADERS, timeout=30)
        assert latest.status_code == 200 and latest.json()["height"] >= 1
        assert httpx.get(ready["blockfrost"] + "/blocks/latest", timeout=30).status_code == 403
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
