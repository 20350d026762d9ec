"""The devnet runtime end to end: pycardano against it, blocks and time, faucet, persistence, CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
import pytest
from websockets.sync.client import connect

from sandbox.errors import LedgerRejection, SandboxConfigError, SandboxError
from tests.fixtures.devnet import GENESIS_LOVELACE, chain_context, new_key
from tests.sandbox.test_ogmios_server import _call, _genesis_input, make_tx

# The `ogmios` client opens its WebSocket without a context manager; websockets warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")


REPO = Path(__file__).resolve().parents[2]


def test_pycardano_builds_submits_and_sees_a_multi_output_transaction(devnet, devnet_key):
    """TransactionBuilder: three outputs (one with tokens), metadata and TTL; outputs visible after the block."""
    from pycardano import (Address, AlonzoMetadata, Asset, AssetName, AuxiliaryData, Metadata, MultiAsset,
                           ScriptHash, TransactionBuilder, TransactionOutput, Value)

    from sandbox.devnet import DEVNET_TOKEN

    devnet.fund(devnet_key.address, 3_000_000, {DEVNET_TOKEN: 500})
    context = chain_context(devnet)
    assert context.epoch >= 1 and context.last_block_slot == devnet.ledger.tip.slot
    assert context.protocol_param.min_fee_coefficient == 44
    assert context.genesis_param.slot_length == 1000
    payees = [new_key().address for _ in range(3)]
    policy, name = DEVNET_TOKEN.split(".")
    tokens = MultiAsset({ScriptHash(bytes.fromhex(policy)): Asset({AssetName(bytes.fromhex(name)): 120})})
    builder = TransactionBuilder(context)
    builder.add_input_address(devnet_key.address)
    builder.add_output(TransactionOutput(Address.from_primitive(payees[0]), 7_000_000))
    builder.add_output(TransactionOutput(Address.from_primitive(payees[1]), 1_500_000))
    builder.add_output(TransactionOutput(Address.from_primitive(payees[2]), Value(2_000_000, tokens)))
    builder.auxiliary_data = AuxiliaryData(AlonzoMetadata(metadata=Metadata({674: {"msg": ["pay"]}})))
    tip_slot = context.last_block_slot
    builder.ttl = tip_slot + 300
    tx = builder.build_and_sign([devnet_key.signing_key],
                                change_address=Address.from_primitive(devnet_key.address))
    context.submit_tx(tx)

    fresh = chain_context(devnet)  # pycardano caches the tip for a second per context
    assert fresh.last_block_slot > tip_slot
    assert [u.output.amount.coin for u in fresh.utxos(payees[0])] == [7_000_000]
    assert [u.output.amount.coin for u in fresh.utxos(payees[1])] == [1_500_000]
    (token_utxo,) = fresh.utxos(payees[2])
    assert token_utxo.output.amount.multi_asset == tokens
    assert devnet.ledger.balance(devnet_key.address)[DEVNET_TOKEN] == 380
    spent = GENESIS_LOVELACE + 3_000_000 - devnet.ledger.balance(devnet_key.address)["lovelace"]
    assert spent == 7_000_000 + 1_500_000 + 2_000_000 + tx.transaction_body.fee


def test_chained_transactions_spend_mempool_outputs(devnet_factory, devnet_key):
    """A transaction may spend the change of one still in the mempool; a conflicting spend is refused."""
    devnet = devnet_factory(block_time_s=3600, fund={devnet_key.address: GENESIS_LOVELACE})
    to = new_key().address
    first, first_id, change = make_tx(devnet_key, [_genesis_input(devnet, devnet_key)], to, 2_000_000)
    second, second_id, _ = make_tx(devnet_key, [(first_id, 1, change)], to, 3_000_000)
    rival, _, _ = make_tx(devnet_key, [(first_id, 1, change)], new_key().address, 4_000_000)
    with connect(devnet.ogmios_url) as ws:
        for cbor in (first, second):
            assert "result" in _call(ws, "submitTransaction", {"transaction": {"cbor": cbor.hex()}})
        assert _call(ws, "submitTransaction", {"transaction": {"cbor": rival.hex()}})["error"]["code"] == 3117
        assert _call(ws, "queryLedgerState/utxo", {"addresses": [to]})["result"] == []  # confirmed state only
        block = devnet.produce_block()
        assert block is not None and block.tx_ids == (first_id, second_id)
        utxos = _call(ws, "queryLedgerState/utxo", {"addresses": [to]})["result"]
    assert sorted(u["value"]["ada"]["lovelace"] for u in utxos) == [2_000_000, 3_000_000]


def test_each_transaction_is_a_block_and_the_tip_slot_advances(devnet, devnet_key):
    """With block_time_s=0 every accepted transaction makes a block whose slot passes the last one."""
    to = new_key().address
    tx_in = _genesis_input(devnet, devnet_key)
    slots = [devnet.ledger.tip.slot]
    with connect(devnet.ogmios_url) as ws:
        for _ in range(5):
            cbor, tx_id, change = make_tx(devnet_key, [tx_in], to, 1_000_000)
            _call(ws, "submitTransaction", {"transaction": {"cbor": cbor.hex()}})
            tip = _call(ws, "queryNetwork/tip")["result"]
            assert devnet.ledger.tip.tx_ids == (tx_id,) and tip["id"] == devnet.ledger.tip.id
            slots.append(tip["slot"])
            tx_in = (tx_id, 1, change)
    assert all(b > a for a, b in zip(slots, slots[1:]))


def test_slot_clock_follows_wall_time_and_never_goes_back(devnet_factory, devnet_key):
    """The current slot is max(wall-clock slot, last block slot); TTLs are judged against it."""
    now = [1_800_000_000.0]
    devnet = devnet_factory(block_time_s=3600, fund={devnet_key.address: GENESIS_LOVELACE}, clock=lambda: now[0])
    start_slot = devnet.node.current_slot()
    assert devnet.ledger.tip.slot == start_slot and devnet.node.genesis.epoch_of(start_slot) == 1
    now[0] += 100
    assert devnet.node.current_slot() == start_slot + 100
    cbor, _, _ = make_tx(devnet_key, [_genesis_input(devnet, devnet_key)], new_key().address, 2_000_000,
                         ttl=start_slot + 50)
    with pytest.raises(LedgerRejection) as rejected:
        devnet.node.submit(cbor)
    assert rejected.value.code == 3118
    now[0] -= 1000  # the wall clock jumps back: slots do not
    assert devnet.node.current_slot() >= start_slot + 100
    with connect(devnet.ogmios_url) as ws:
        assert _call(ws, "acquireMempool")["result"]["slot"] == start_slot + 100


def test_block_timer_makes_blocks_from_the_mempool(devnet_factory, devnet_key):
    """With a block time, submitted transactions wait in the mempool until the timer makes a block."""
    devnet = devnet_factory(block_time_s=0.05, fund={devnet_key.address: GENESIS_LOVELACE})
    payee = new_key().address
    with connect(devnet.ogmios_url) as ws:
        _call(ws, "acquireMempool")
        tx_id = devnet.fund(payee, 2_000_000)
        for _ in range(3):  # each acquire returns once the mempool changed: the submission, then the block
            if tx_id in devnet.ledger.tip.tx_ids:
                break
            _call(ws, "acquireMempool")
    assert tx_id in devnet.ledger.tip.tx_ids
    assert devnet.ledger.balance(payee)["lovelace"] == 2_000_000


def test_faucet_pays_lovelace_and_tokens_and_chains_without_blocks(devnet_factory):
    """fund() pays with real transactions, chaining on its change; a block confirms them all."""
    from sandbox.devnet import DEVNET_TOKEN, FAUCET_ADDRESS

    devnet = devnet_factory(block_time_s=3600)
    payees = [new_key().address for _ in range(3)]
    ids = [devnet.fund(p, 5_000_000) for p in payees]
    token_id = devnet.fund(payees[0], 2_000_000, {DEVNET_TOKEN: 42})
    assert [tx_id for tx_id, _ in devnet.ledger.mempool()] == ids + [token_id]
    devnet.produce_block()
    assert devnet.ledger.balance(payees[0]) == {"lovelace": 7_000_000, DEVNET_TOKEN: 42}
    assert devnet.ledger.balance(payees[2]) == {"lovelace": 5_000_000}
    assert devnet.ledger.balance(FAUCET_ADDRESS)[DEVNET_TOKEN] > 10**12
    with pytest.raises(LedgerRejection) as too_small:
        devnet.fund(payees[1], 1_000, {DEVNET_TOKEN: 1})
    assert too_small.value.code == 3125


def test_faucet_key_and_token_derive_from_the_public_seed():
    """FAUCET_ADDRESS and DEVNET_TOKEN's policy come from the faucet key (a pubkey native script)."""
    from pycardano import Address, Network, ScriptPubkey

    from sandbox.devnet import DEVNET_TOKEN, FAUCET_ADDRESS, faucet_signing_key

    key_hash = faucet_signing_key().to_verification_key().hash()
    assert Address(key_hash, network=Network.TESTNET).encode() == FAUCET_ADDRESS
    assert DEVNET_TOKEN == f"{ScriptPubkey(key_hash).hash().payload.hex()}.{b'DEVNET'.hex()}"


def test_restart_from_state_dir_continues_the_chain(devnet_factory, devnet_key, tmp_path):
    """Stop and restart with the same state dir: same UTxOs, same start time, tip never goes back."""
    state = tmp_path / "state"
    first = devnet_factory(fund={devnet_key.address: GENESIS_LOVELACE}, state_dir=state)
    payee = new_key().address
    first.fund(payee, 9_000_000)
    utxos_before = first.ledger.utxos_at([devnet_key.address, payee])
    tip_before = first.ledger.tip
    with connect(first.ogmios_url) as ws:
        start_before = _call(ws, "queryNetwork/startTime")["result"]
    first.stop()
    late_comer = new_key().address
    second = devnet_factory(fund={devnet_key.address: GENESIS_LOVELACE, late_comer: 4_000_000}, state_dir=state)
    assert second.ledger.utxos_at([devnet_key.address, payee]) == utxos_before
    assert second.ledger.tip.slot >= tip_before.slot and second.ledger.height > tip_before.height
    assert second.ledger.balance(late_comer)["lovelace"] == 4_000_000  # paid by the faucet, not genesis
    assert second.ledger.balance(devnet_key.address)["lovelace"] == GENESIS_LOVELACE
    with connect(second.ogmios_url) as ws:
        assert _call(ws, "queryNetwork/startTime")["result"] == start_before
    second.fund(payee, 1_000_000)
    assert second.ledger.balance(payee)["lovelace"] == 10_000_000


def test_corrupt_state_dir_is_a_config_error(tmp_path):
    """An unreadable state file raises SandboxConfigError instead of starting an empty chain."""
    from sandbox.devnet import Devnet

    (tmp_path / "devnet.json").write_text("{broken")
    with pytest.raises(SandboxConfigError):
        Devnet.start(state_dir=tmp_path, block_time_s=0)


def test_busy_port_is_a_sandbox_error(devnet):
    """Starting on a port that is taken raises SandboxError; stop() is idempotent."""
    from sandbox.devnet import Devnet

    port = int(devnet.ogmios_url.rsplit(":", 1)[1])
    with pytest.raises(SandboxError):
        Devnet.start(ogmios_port=port, block_time_s=0)
    devnet.stop()
    devnet.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_sandbox_up_prints_its_url_and_stops_on_signal(tmp_path, stop_signal):
    """`sandbox up` prints one ready line with its URL, serves, and exits 0 on SIGTERM/SIGINT."""
    key = new_key()
    port = _free_port()
    cmd = [sys.executable, "-m", "agent.cli", "sandbox", "up", "--ogmios-port", str(port),
           "--state-dir", str(tmp_path / "chain"), "--block-time", "0", "--fund", f"{key.address}=25", "--api-port", "0",
           "--kupo-port", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"sandbox ready: ogmios=ws://127.0.0.1:{port}")  # then other services' URLs
        with connect(f"ws://127.0.0.1:{port}") as ws:
            utxos = _call(ws, "queryLedgerState/utxo", {"addresses": [key.address]})["result"]
        assert [u["value"]["ada"]["lovelace"] for u in utxos] == [25_000_000]
        kupo_url = line.split(" kupo=")[1].split()[0]
        import httpx

        matches = httpx.get(f"{kupo_url}/matches/{key.address}?unspent").json()
        assert [m["value"]["coins"] for m in matches] == [25_000_000]
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read() == "" and "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.loads((tmp_path / "chain" / "devnet.json").read_text())["version"] == 1


def test_cli_sandbox_fund_pays_from_the_faucet(devnet, capsys):
    """`sandbox fund ADDR LOVELACE --ogmios-url` submits a faucet transaction and prints its id."""
    from agent.cli import main

    payee = new_key().address
    assert main(["sandbox", "fund", payee, "6", "--ogmios-url", devnet.ogmios_url]) == 0
    tx_id = capsys.readouterr().out.strip()
    assert devnet.ledger.tip.tx_ids == (tx_id,)
    assert devnet.ledger.balance(payee)["lovelace"] == 6_000_000


def test_cli_sandbox_fund_reports_bad_input_without_traceback(devnet, capsys):
    """Unreachable Ogmios and a wrong-network address end in one error line and a non-zero exit."""
    from agent.cli import main

    assert main(["sandbox", "fund", new_key().address, "6", "--ogmios-url", "ws://127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Ogmios at ws://127.0.0.1:1 unavailable") and err.count("\n") == 1
    from pycardano import Address, Network

    mainnet = Address(new_key().verification_key.hash(), network=Network.MAINNET).encode()
    assert main(["sandbox", "fund", mainnet, "6", "--ogmios-url", devnet.ogmios_url]) == 1
    assert "configured for another network" in capsys.readouterr().err
    assert main(["sandbox", "fund", "addr_test1nonsense", "6", "--ogmios-url", devnet.ogmios_url]) == 1
    assert capsys.readouterr().err.startswith("error: not a bech32 payment address")
    with pytest.raises(SystemExit):
        main(["sandbox", "up", "--fund", "no-equals-sign"])


def test_repr_names_the_url_not_secrets(devnet):
    """A devnet's repr shows its URL and tip and nothing about the faucet key."""
    from sandbox.devnet import FAUCET_SEED

    text = repr(devnet)
    assert devnet.ogmios_url in text and FAUCET_SEED.hex() not in text


def test_genesis_outputs_and_shelley_initial_funds_agree(devnet_factory):
    """Each funded address gets one genesis output (token-only ones carry 10 ADA); genesis lists them."""
    from sandbox.devnet import DEVNET_TOKEN, TOKEN_ONLY_LOVELACE

    rich, token_only = new_key().address, new_key().address
    devnet = devnet_factory(fund={rich: 50_000_000}, fund_assets={rich: {DEVNET_TOKEN: 5}, token_only: {DEVNET_TOKEN: 3}})
    assert devnet.ledger.balance(rich) == {"lovelace": 50_000_000, DEVNET_TOKEN: 5}
    assert devnet.ledger.balance(token_only) == {"lovelace": TOKEN_ONLY_LOVELACE, DEVNET_TOKEN: 3}
    assert len(devnet.ledger.utxos_at([rich, token_only])) == 2
    with connect(devnet.ogmios_url) as ws:
        shelley = _call(ws, "queryNetwork/genesisConfiguration", {"era": "shelley"})["result"]
    assert shelley["initialFunds"] == {rich: {"ada": {"lovelace": 50_000_000}},
                                       token_only: {"ada": {"lovelace": TOKEN_ONLY_LOVELACE}}}
    assert shelley["networkMagic"] == 42 and shelley["network"] == "testnet"
