"""Crash safety: SIGKILL the runner again and again while it pays; nothing is paid twice or lost.

The runner runs as a real `cardano-agent run` process against the sandbox (devnet + twin in
this test process). Half of the restarts die at a named crash point between two steps of a
payment (reserved, signed, submitted, answered); the other half are killed from outside as
soon as they have made progress. Up to 100 calls are in flight (``--concurrency 100``): paid
calls wait for their block parked, not in a worker. Midway a second `run` starts on the same home and works
beside the others until it is killed too. The payee spends what it receives (the twin sweeps
every payment it accepts), so whether a payment landed can only be read from the chain's
blocks, never from its outputs. A last clean run finishes the queue. Then the chain is the
judge: every invoice the agent paid received exactly one transaction, the transactions
paying the payee are exactly the ledger's paid rows, and the wallet lost exactly their costs.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from agent.lanes import HOST as LANE_HOST
from sandbox.billing import DEFAULT_PAY_TO, TwinConfig
from tests.crash_soak import kill_runs
from tests.fixtures.agent_home import CHAIN_BACKENDS, PASSPHRASE

_JOBS = int(os.environ.get("CRASH_TEST_JOBS", "100"))
_RESTARTS = int(os.environ.get("CRASH_TEST_RESTARTS", "50"))
CRASH_POINTS = ("after_claim", "after_reserve", "after_sign", "after_submit", "after_park", "after_call")
LANE_CRASH_POINTS = ("lane_after_reserve", "lane_after_sign", "lane_after_submit")
PRICE = 2_000_000


@pytest.fixture(params=CHAIN_BACKENDS)
def chain_backend(request: pytest.FixtureRequest) -> str:
    """The crash soak runs over Ogmios and over Blockfrost."""
    return request.param


def _chain_txs(devnet):
    """Every transaction in the devnet's blocks: {tx id: [(address, lovelace), ...]}."""
    from sandbox.txcbor import decode_transaction

    node = devnet.node
    txs = {}
    for i in range(node.block_count()):
        for raw in node.block_at(i)[1]:
            tx = decode_transaction(raw)
            txs[tx.tx_id] = [(out.address, out.lovelace) for out in tx.outputs]
    return txs


@pytest.mark.slow
def test_runner_killed_at_random_points_pays_each_invoice_once(agent_home_factory, chain_backend):
    """100 paid jobs across 50+ SIGKILLs: every job done once, every invoice paid by one tx, ledger == chain."""
    # Over Blockfrost the same soak, a third of its size: the full tier stays within its time.
    jobs, restarts = (_JOBS, _RESTARTS) if chain_backend == "ogmios" else (max(1, _JOBS // 3), max(2, _RESTARTS // 3))
    _soak(agent_home_factory, jobs=jobs, restarts=restarts, crash_points=CRASH_POINTS, utxos=10)


@pytest.mark.slow
@pytest.mark.parametrize("chain_backend", ["ogmios"])
def test_runner_killed_while_its_lanes_split_and_merge_pays_each_invoice_once(agent_home_factory, chain_backend):
    """As above with ``[wallet] lanes = 8`` (the default) from six UTxOs: the wallet splits one that
    is free while payments queue (or loses the race for it to a payment, and lets the split go),
    and a run may also die right after a split or merge is reserved, signed or sent. Every job
    done once, every invoice paid by one tx, every split the ledger counts in a block and none
    it let go; the ledger (lane fees included) == chain."""
    _soak(agent_home_factory, jobs=max(1, _JOBS // 3), restarts=max(2, _RESTARTS // 3),
          crash_points=CRASH_POINTS + LANE_CRASH_POINTS, utxos=6, lanes=8)


def _soak(agent_home_factory, *, jobs: int, restarts: int, crash_points: tuple[str, ...], utxos: int,
          lanes: int = 0) -> None:
    JOBS, RESTARTS = jobs, restarts
    # One-hour invoices: on a loaded machine fifty restarts can take longer than the default five
    # minutes, and a proof presented after its invoice expired is (rightly) refused by the server.
    home = agent_home_factory(TwinConfig(invoice_timeout_s=3600, sweep=True), funds=0, max_per_call_ada="5",
                              real_kdf=True, lanes=lanes)
    for _ in range(utxos):
        home.devnet.fund(home.address, 600_000_000 // utxos)
    wallet_before = home.balance()
    pay_to_before = home.balance(DEFAULT_PAY_TO)
    with home.open() as agent:
        for n in range(JOBS):
            agent.jobs.enqueue("chat", {"message": f"crash-safe question {n}"}, max_attempts=50, now=time.time())
    db_path = home.home / "agent.db"
    rng = random.Random(20261129)
    env = {**os.environ, "CARDANO_AGENT_PASSPHRASE": PASSPHRASE}
    cmd = [sys.executable, "-m", "agent.cli", "run", "--until-idle", "--workers", "4", "--concurrency", "100", "--lease-s", "60",
           "--home", str(home.home)]

    second: list[subprocess.Popen[bytes]] = []  # the second `run`, started midway beside the others

    def second_run(restart: int) -> None:
        if restart == RESTARTS // 3:
            second.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if restart == 2 * RESTARTS // 3 and second and second[0].poll() is None:
            second[0].send_signal(signal.SIGKILL)
            second[0].wait()  # reaped at once, as a service manager would

    kills = kill_runs(cmd, env, db_path, restarts=RESTARTS, crash_points=crash_points, rng=rng,
                      before_each=second_run)
    if second:
        if second[0].poll() is None:
            second[0].send_signal(signal.SIGKILL)
        second[0].wait()
    assert second, "the second run never started"
    assert kills >= min(RESTARTS, 50) // 2, f"only {kills} runs were killed"

    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    home.devnet.produce_block()

    with home.open() as agent:
        if lanes:
            # A split the last run resubmitted at its start lands after that run settled
            # its last job; the next start's recovery settles it (it has no server to answer).
            agent.recover()
        jobs = agent.jobs.list(limit=JOBS + 10)
        rows = agent.ledger.rows()
        assert agent.ledger.unfinished() == []
    assert len(jobs) == JOBS and {j.state for j in jobs} == {"done"}
    assert all(j.result_path and os.path.exists(j.result_path) for j in jobs)

    lane_rows = [r for r in rows if r.host == LANE_HOST]
    paid = [r for r in rows if r.paid and r.host != LANE_HOST]
    assert {r.state for r in paid} == {"settled"}
    assert len({r.invoice_id for r in paid}) == len(paid), "an invoice has two payments"
    assert len({r.tx_id for r in paid}) == len(paid)
    chain = _chain_txs(home.devnet)
    for r in paid:
        assert r.tx_id in chain, f"paid row {r.id} is in no block"
        assert chain[r.tx_id][0] == (DEFAULT_PAY_TO, PRICE)
        assert home.twin.status(r.invoice_id)["txHash"] == r.tx_id
    for r in rows:
        if r.state == "released" and r.tx_id:
            assert r.tx_id not in chain, "a released payment reached the chain"
    # The chain agrees with the ledger: the transactions paying the payee are exactly the paid
    # rows, one price each (the payee's sweeps go elsewhere), and the wallet lost their costs.
    paying = {tx_id for tx_id, outs in chain.items() if any(addr == DEFAULT_PAY_TO for addr, _ in outs)}
    assert paying == {r.tx_id for r in paid}
    assert sum(n for tx_id in paying for addr, n in chain[tx_id] if addr == DEFAULT_PAY_TO) == PRICE * len(paid)
    if lanes:
        assert any(r.invoice_id.startswith("wallet:split:") for r in lane_rows), "the wallet never tried to split"
    for r in lane_rows:  # a split or merge the ledger counts is in a block; one it let go is not
        assert (r.tx_id in chain) == r.paid, f"lane row {r.id} ({r.state}) disagrees with the chain"
    assert wallet_before - home.balance() == sum(r.cost_lovelace for r in paid + lane_rows if r.paid)
    assert home.balance(DEFAULT_PAY_TO) - pay_to_before < PRICE * len(paid), "the payee never swept"
    assert len(paid) >= JOBS
