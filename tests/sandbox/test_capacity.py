"""The devnet's real capacity limits and block schedule: 90,112-byte blocks, a two-block mempool whose
overflow waits, arrival order, and empty blocks on schedule (time driven by an injected clock)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.sync.client import connect

from sandbox.utxo_ledger import Ledger, MempoolFullError
from tests.fixtures.devnet import DevnetKey, new_key
from tests.sandbox.test_ogmios_server import _call

MAX_BLOCK_BODY = 90_112


def bulky_tx(key: DevnetKey, tx_in: tuple[str, int, int], *, strings: int = 220) -> tuple[bytes, str, int]:
    """A ~15 KB payment to ``key`` itself (metadata padding); returns (cbor, tx id, change)."""
    from pycardano import (Address, AuxiliaryData, Metadata, Transaction, TransactionBody, TransactionId,
                           TransactionInput, TransactionOutput, TransactionWitnessSet, VerificationKeyWitness)

    aux = AuxiliaryData(Metadata({674: {"msg": [f"{i:04d}" + "x" * 60 for i in range(strings)]}}))
    tx_id, index, amount = tx_in
    fee = 900_000
    for _ in range(4):
        body = TransactionBody(inputs=[TransactionInput(TransactionId(bytes.fromhex(tx_id)), index)],
                               outputs=[TransactionOutput(Address.from_primitive(key.address), amount - fee)],
                               fee=fee, auxiliary_data_hash=aux.hash())
        witness = VerificationKeyWitness(key.verification_key, key.signing_key.sign(body.hash()))
        cbor = Transaction(body, TransactionWitnessSet(vkey_witnesses=[witness]), auxiliary_data=aux).to_cbor()
        needed = 44 * (len(cbor) - 1) + 155381
        if needed == fee:
            break
        fee = needed
    return cbor, body.hash().hex(), amount - fee


@pytest.fixture(scope="module")
def bulky() -> tuple[DevnetKey, list[tuple[str, int]], list[bytes]]:
    """A key, 14 genesis outputs (as (address, lovelace) to fund) and 14 independent ~15 KB transactions."""
    from sandbox.utxo_ledger import Ledger

    key = new_key()
    probe = Ledger(slot=10)
    refs = [probe.add_genesis_utxo(key.address, 100_000_000) for _ in range(14)]
    return key, [(key.address, 100_000_000)] * 14, [bulky_tx(key, (r.tx_id, r.index, 100_000_000))[0] for r in refs]


def _ledger_with(bulky: Any) -> Ledger:
    """A ledger whose genesis outputs are exactly the ones ``bulky``'s transactions spend."""
    key, funds, _ = bulky
    ledger = Ledger(slot=10)
    for address, lovelace in funds:
        ledger.add_genesis_utxo(address, lovelace)
    return ledger


def test_blocks_take_the_longest_arrival_order_prefix_that_fits(bulky):
    """A block holds at most 90,112 bytes, in arrival order; what does not fit waits for the next block."""
    _, _, txs = bulky
    ledger = _ledger_with(bulky)
    ids = [ledger.submit(cbor) for cbor in txs[:8]]
    size = len(txs[0])
    assert 14_000 < size < 16_384
    fit = MAX_BLOCK_BODY // size
    first = ledger.produce_block()
    assert first is not None and first.tx_ids == tuple(ids[:fit])
    assert sum(len(c) for c in txs[:fit]) <= MAX_BLOCK_BODY < sum(len(c) for c in txs[:fit + 1])
    assert [tx_id for tx_id, _ in ledger.mempool()] == ids[fit:]
    second = ledger.produce_block()
    assert second is not None and second.tx_ids == tuple(ids[fit:]) and ledger.mempool() == []


def test_mempool_holds_two_blocks_worth_then_refuses_for_capacity(bulky):
    """Past 2 x 90,112 bytes the mempool takes nothing more (MempoolFullError) until a block makes room."""
    _, _, txs = bulky
    ledger = _ledger_with(bulky)
    accepted = 0
    with pytest.raises(MempoolFullError) as full:
        for cbor in txs:
            ledger.submit(cbor)
            accepted += 1
    assert full.value.capacity_bytes == 2 * MAX_BLOCK_BODY
    assert sum(len(c) for c in txs[:accepted]) <= 2 * MAX_BLOCK_BODY < sum(len(c) for c in txs[:accepted + 1])
    assert len(ledger.mempool()) == accepted  # the refused one left no trace
    ledger.produce_block()
    assert ledger.submit(txs[accepted]) in {tx_id for tx_id, _ in ledger.mempool()}


def test_a_chained_transaction_never_jumps_ahead_of_its_parent(bulky):
    """A child that would fit waits with its parent when the parent does not fit in the block."""
    key, _, txs = bulky
    ledger = _ledger_with(bulky)
    fit = MAX_BLOCK_BODY // len(txs[0])
    ids = [ledger.submit(cbor) for cbor in txs[:fit + 1]]
    last_id = ids[-1]
    change = 100_000_000 - (44 * (len(txs[fit]) - 1) + 155381)
    child, child_id, _ = bulky_tx(key, (last_id, 0, change), strings=2)  # small: would fit by size
    ledger.submit(child)
    block = ledger.produce_block()
    assert block is not None and last_id not in block.tx_ids and child_id not in block.tx_ids
    assert [tx_id for tx_id, _ in ledger.mempool()][-2:] == [last_id, child_id]
    assert ledger.produce_block().tx_ids[-2:] == (last_id, child_id)


def test_a_submit_to_a_full_mempool_waits_for_a_block(devnet_factory, bulky):
    """Over Ogmios, a submission the mempool cannot hold waits (no answer) until a block makes room."""
    key, funds, _ = bulky
    devnet = devnet_factory(block_time_s=3600)
    refs = [devnet.ledger.add_genesis_utxo(address, lovelace) for address, lovelace in funds]
    txs = [bulky_tx(key, (ref.tx_id, ref.index, lovelace))[0] for ref, (_, lovelace) in zip(refs, funds)]
    waiting_cbor = None
    for cbor in txs:
        try:
            devnet.node.submit(cbor)
        except MempoolFullError:
            waiting_cbor = cbor
            break
    assert waiting_cbor is not None
    with connect(devnet.ogmios_url) as ws, connect(devnet.ogmios_url) as monitor:
        ws.send(json.dumps({"jsonrpc": "2.0", "method": "submitTransaction",
                            "params": {"transaction": {"cbor": waiting_cbor.hex()}}}))
        _call(monitor, "acquireMempool")
        size = _call(monitor, "sizeOfMempool")["result"]
        assert size["maxCapacity"] == {"bytes": 2 * MAX_BLOCK_BODY}
        assert size["currentSize"]["bytes"] + len(waiting_cbor) > 2 * MAX_BLOCK_BODY
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # still waiting: bounded check that no answer came
        devnet.produce_block()
        reply = json.loads(ws.recv(timeout=30))
    assert "result" in reply, reply
    assert devnet.ledger.in_mempool(reply["result"]["transaction"]["id"])


# --- blocks on schedule ----------------------------------------------------------------------------------


def test_empty_blocks_keep_the_tip_moving_with_the_clock(devnet_factory):
    """With a block time, a timer beat makes an empty block once the clock has moved past the tip."""
    now = [1_800_000_000.0]
    devnet = devnet_factory(block_time_s=3600, clock=lambda: now[0])  # the real timer never fires here
    tip = devnet.ledger.tip
    assert devnet.node.tick() is None  # no time has passed: no block
    now[0] += 20
    block = devnet.node.tick()
    assert block is not None and block.tx_ids == () and block.height == tip.height + 1
    assert block.slot == tip.slot + 20
    with connect(devnet.ogmios_url) as ws:
        assert _call(ws, "queryNetwork/tip")["result"] == {"slot": block.slot, "id": block.id}
        assert _call(ws, "queryNetwork/blockHeight")["result"] == block.height
    now[0] += 40
    assert devnet.node.tick().slot == tip.slot + 60


def test_empty_blocks_alone_do_not_rewrite_the_state_file_every_beat(devnet_factory, tmp_path):
    """Only empty blocks: the state is saved at the idle cadence; a transaction marks it for the next save."""
    now = [1_800_000_000.0]
    devnet = devnet_factory(block_time_s=3600, clock=lambda: now[0], state_dir=tmp_path)
    devnet.node.snapshot()
    now[0] += 20
    assert devnet.node.tick() is not None
    assert devnet.node.dirty and not devnet.node.dirty_transactions
    devnet.fund(new_key().address, 2_000_000)
    assert devnet.node.dirty_transactions
    devnet.save()
    assert not devnet.node.dirty and not devnet.node.dirty_transactions


def test_a_timer_beat_with_transactions_makes_a_block_of_them(devnet_factory):
    """A beat makes a block of what waits, even when the clock has not moved (slot tip + 1)."""
    now = [1_800_000_000.0]
    devnet = devnet_factory(block_time_s=3600, clock=lambda: now[0])
    tx_id = devnet.fund(new_key().address, 2_000_000)
    block = devnet.node.tick()
    assert block is not None and block.tx_ids == (tx_id,)


def test_block_time_zero_still_makes_one_block_per_transaction(devnet):
    """block_time_s=0 keeps its test semantics: each transaction is a block at once, no empty blocks."""
    height = devnet.ledger.height
    tx_id = devnet.fund(new_key().address, 2_000_000)
    assert devnet.ledger.tip.tx_ids == (tx_id,) and devnet.ledger.height == height + 1


# --- ledger states at recent points ----------------------------------------------------------------


def test_ledger_views_at_recent_points_equal_the_state_then():
    """at_point(p) reproduces the UTxO set right after block p, chained spends within a block included."""
    from pycardano import TransactionOutput

    from sandbox.errors import PointNotFoundError
    from sandbox.utxo_ledger import OutputRef
    from sandbox.txcbor import address_from_str, payment_credential
    from tests.sandbox.test_utxo_ledger import Wallet, balanced

    alice, bob = Wallet.new(), Wallet.new()
    ledger = Ledger(slot=10)
    ref = ledger.add_genesis_utxo(alice.addr, 500_000_000)
    ledger.produce_block(force=True)
    snapshots = {(ledger.tip.slot, ledger.tip.id): sorted(ledger.to_state()["utxo"], key=str)}
    amount = 500_000_000
    for round_no in range(4):
        first = balanced([(ref, amount)], [alice.key], [TransactionOutput(bob.address, 3_000_000)], alice.address)
        first_id = ledger.submit(first)
        change = amount - 3_000_000 - (44 * (len(first) - 1) + 155381)
        second = balanced([(OutputRef(first_id, 1), change)], [alice.key], [TransactionOutput(bob.address, 2_000_000)],
                          alice.address)  # spends the first one's change in the same block
        second_id = ledger.submit(second)
        amount = change - 2_000_000 - (44 * (len(second) - 1) + 155381)
        ref = OutputRef(second_id, 1)
        if round_no == 2:
            ledger.produce_block(force=True)  # and an empty block in between
            snapshots[(ledger.tip.slot, ledger.tip.id)] = sorted(ledger.to_state()["utxo"], key=str)
        ledger.produce_block()
        snapshots[(ledger.tip.slot, ledger.tip.id)] = sorted(ledger.to_state()["utxo"], key=str)

    def as_state(pairs: list[Any]) -> list[dict[str, Any]]:
        mine = Ledger(slot=0)
        for r, out in pairs:  # the same serialisation as to_state, through a scratch ledger
            mine._add_confirmed(r, out, payment_credential(address_from_str(out.address)))
            mine._created[r] = ledger.created_at(r) or (0, "", 0)
        return [{k: v for k, v in item.items() if k != "created"} for item in mine.to_state()["utxo"]]

    for (slot, block_id), expected in snapshots.items():
        view = ledger.at_point(slot, block_id)
        want = [{k: v for k, v in item.items() if k != "created"} for item in expected]
        assert sorted(as_state(view.all_utxos()), key=str) == sorted(want, key=str)
        assert sorted(as_state(view.utxos_at([bob.addr])), key=str) == sorted(
            [i for i in want if i["address"] == bob.addr], key=str)
    with pytest.raises(PointNotFoundError):
        ledger.at_point(ledger.tip.slot, "00" * 32)
