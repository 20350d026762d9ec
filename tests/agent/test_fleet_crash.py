"""Two hosts, one PostgreSQL, one wallet: SIGKILL both runners again and again while they pay.

Two agent homes (two "hosts") share one PostgreSQL store and one wallet on the sandbox; each
runs a real ``cardano-agent run`` process that is SIGKILLed at random (half of the runs at a
named crash point inside a payment, half from outside once they made progress) and started
again, independently of the other host. A last clean run on both finishes the queue. Then the
chain judges: every job done once, every invoice paid by exactly one transaction, the
budget never exceeded at any instant (from the ledger's payment times), and the payee and
the wallet moved by exactly what the ledger says.

Each host names itself with ``CARDANO_AGENT_HOST``, so the two judge each other by process
lease (as machines must), not by PID. The default is issue 14's size: 200 jobs, at least 20
kills per host (about a minute on a 2-core machine); ``FLEET_CRASH_JOBS`` and
``FLEET_CRASH_KILLS`` change it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from sandbox.billing import DEFAULT_PAY_TO, TwinConfig
from tests.fixtures.agent_home import PASSPHRASE
from wallets.types import OutputRef

JOBS = int(os.environ.get("FLEET_CRASH_JOBS", "200"))
KILLS_PER_HOST = int(os.environ.get("FLEET_CRASH_KILLS", "20"))
CRASH_POINTS = ("after_claim", "after_reserve", "after_sign", "after_submit", "after_call")
PRICE = 2_000_000
BUDGET_ADA = 3 * JOBS  # 2 ADA per call plus its fee: room for every job, and a limit to hold


def _done(db) -> int:
    return int(db.execute("SELECT count(*) AS n FROM jobs WHERE state = 'done'").fetchone()["n"])


def _left(db) -> int:
    return int(db.execute("SELECT count(*) AS n FROM jobs WHERE state <> 'done'").fetchone()["n"])


@pytest.mark.slow
def test_two_hosts_killed_at_random_pay_each_invoice_once(agent_home_factory, pg_cluster, tmp_path):
    """Paid jobs on two hosts, each SIGKILLed again and again: done once, paid once, budget held, ledger == chain."""
    from agent.store import Database

    url = pg_cluster.create_database("fleet_crash")
    home = agent_home_factory(TwinConfig(invoice_timeout_s=3600), funds=0, max_per_call_ada="5",
                              real_kdf=True, name="hostA", extra=f"""
        [store]
        url = "{url}"

        [[budgets]]
        name = "fleet"
        limit_ada = {BUDGET_ADA}
        window = "none"
        """)
    home_b = tmp_path / "hostB"
    shutil.copytree(home.home, home_b)
    for _ in range(16):
        home.devnet.fund(home.address, 60_000_000)
    wallet_before = home.balance()
    pay_to_before = home.balance(DEFAULT_PAY_TO)
    with home.open() as agent:
        for n in range(JOBS):
            agent.jobs.enqueue("chat", {"message": f"fleet crash question {n}"}, max_attempts=100,
                               now=time.time())
    watch = Database(url)
    env = {**os.environ, "CARDANO_AGENT_PASSPHRASE": PASSPHRASE}
    kills = {"hostA": 0, "hostB": 0}
    errors: list[BaseException] = []

    def host_loop(name: str, home_dir, seed: int) -> None:
        rng = random.Random(seed)
        cmd = [sys.executable, "-m", "agent.cli", "run", "--workers", "4", "--lease-s", "30",
               "--home", str(home_dir)]
        restart = 0
        try:
            while kills[name] < KILLS_PER_HOST and _left(watch) > 0:
                run_env = {**env, "CARDANO_AGENT_HOST": name}
                if restart % 2 == 0:
                    run_env["CARDANO_AGENT_CRASH_POINTS"] = f"{rng.choice(CRASH_POINTS)}:{rng.choice([0.2, 0.5])}"
                    run_env["CARDANO_AGENT_CRASH_SEED"] = f"{seed}-{restart}"
                restart += 1
                proc = subprocess.Popen(cmd, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                target = _done(watch) + rng.randint(1, 4)
                deadline = time.monotonic() + 60
                while proc.poll() is None and time.monotonic() < deadline and _done(watch) < target:
                    time.sleep(0.05)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                proc.wait()
                if proc.returncode == -signal.SIGKILL:
                    kills[name] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=host_loop, args=("hostA", home.home, 1)),
               threading.Thread(target=host_loop, args=("hostB", home_b, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert kills["hostA"] >= min(KILLS_PER_HOST, 20) and kills["hostB"] >= min(KILLS_PER_HOST, 20), kills

    final = [subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--until-idle", "--workers", "4",
                               "--lease-s", "30", "--home", str(h)],
                              env={**env, "CARDANO_AGENT_HOST": n}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for n, h in (("hostA", home.home), ("hostB", home_b))]
    for proc in final:
        _out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-2000:]
    watch.close()
    home.devnet.produce_block()

    with home.open() as agent:
        jobs = agent.jobs.list(limit=JOBS + 10)
        rows = agent.ledger.rows()
        assert agent.ledger.unfinished() == []
    failed = [(j.id, j.attempts, j.last_error) for j in jobs if j.state != "done"]
    assert len(jobs) == JOBS and not failed, failed

    paid = [r for r in rows if r.paid]
    assert {r.state for r in paid} == {"settled"}
    assert len({r.invoice_id for r in paid}) == len(paid), "an invoice has two payments"
    assert len({r.tx_id for r in paid}) == len(paid)
    assert {r.job_id for r in paid} == {j.id for j in jobs} and len(paid) >= JOBS
    ledger = home.devnet.ledger
    for r in paid:
        [(_ref, out)] = ledger.utxos_by_refs([OutputRef(r.tx_id, 0)])
        assert out.address == DEFAULT_PAY_TO and out.lovelace == PRICE
        assert home.twin.status(r.invoice_id)["txHash"] == r.tx_id
    for r in rows:
        if r.state == "released" and r.tx_id:
            assert not ledger.utxos_by_refs([OutputRef(r.tx_id, 0)]), "a released payment reached the chain"
    # The budget at every instant: what was paid up to each payment never passed the limit.
    spent = 0
    for r in sorted(paid, key=lambda r: (r.submitted_at or r.created_at)):
        spent += r.cost_lovelace or 0
        assert spent <= BUDGET_ADA * 1_000_000
    assert home.balance(DEFAULT_PAY_TO) - pay_to_before == PRICE * len(paid)
    assert wallet_before - home.balance() == sum(r.cost_lovelace for r in paid)
