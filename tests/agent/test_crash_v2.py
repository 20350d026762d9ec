"""Crash soak with both dialects: SIGKILL the runner while it pays T invoices and x402 v2 requirements.

Like ``test_crash.py`` (a real ``cardano-agent run`` process, killed at named crash points and
from outside), with half the jobs ``http`` calls to the sandbox's x402 v2 server. v2 payments
are never submitted by the agent; whatever a crash left is decided from the chain. The chain
judges at the end: each payment is one transaction on chain at the right payee, no released
or refused payment reached the chain, every v2 transaction the facilitator submitted is a paid
row of the ledger, and the wallet lost exactly what the ledger says.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from sandbox.billing import DEFAULT_PAY_TO as T_PAY_TO, TwinConfig
from sandbox.x402_server import DEFAULT_PAY_TO as V2_PAY_TO, Routes, X402Server
from tests.crash_soak import kill_runs
from tests.fixtures.agent_home import PASSPHRASE
from wallets.types import OutputRef

JOBS = int(os.environ.get("CRASH_V2_TEST_JOBS", "24"))
RESTARTS = int(os.environ.get("CRASH_V2_TEST_RESTARTS", "16"))
CRASH_POINTS = ("after_claim", "after_reserve", "after_sign", "after_submit", "after_call")
T_PRICE, V2_PRICE = 2_000_000, 1_000_000


@pytest.mark.slow
def test_runner_killed_paying_t_and_v2_jobs_pays_each_once(agent_home_factory):
    """T and x402 v2 jobs across SIGKILLs: every job done, one transaction per paid job, ledger == chain."""
    home = agent_home_factory(TwinConfig(invoice_timeout_s=3600), funds=0, max_per_call_ada="5", real_kdf=True)
    for _ in range(10):
        home.devnet.fund(home.address, 40_000_000)
    server = X402Server.start(home.devnet, routes=Routes(confirmations=0, max_timeout_s=3600))
    try:
        wallet_before = home.balance()
        with home.open() as agent:
            for n in range(JOBS):
                if n % 2:
                    agent.jobs.enqueue("http", {"url": f"{server.url}/premium", "method": "GET"},
                                       max_attempts=50, now=time.time())
                else:
                    agent.jobs.enqueue("chat", {"message": f"mixed crash question {n}"}, max_attempts=50,
                                       now=time.time())
        db_path = home.home / "agent.db"
        rng = random.Random(20261201)
        env = {**os.environ, "CARDANO_AGENT_PASSPHRASE": PASSPHRASE}
        cmd = [sys.executable, "-m", "agent.cli", "run", "--until-idle", "--workers", "4", "--lease-s", "60",
               "--home", str(home.home)]
        kills = kill_runs(cmd, env, db_path, restarts=RESTARTS, crash_points=CRASH_POINTS, rng=rng)
        assert kills >= min(RESTARTS, 16) // 3, f"only {kills} runs were killed"

        final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert final.returncode == 0, final.stderr[-2000:]

        with home.open() as agent:
            jobs = agent.jobs.list(limit=JOBS + 10)
            rows = agent.ledger.rows()
            assert agent.ledger.unfinished() == []
        assert len(jobs) == JOBS and {j.state for j in jobs} == {"done"}

        paid = [r for r in rows if r.paid]
        assert {r.state for r in paid} == {"settled"}
        v2_paid = [r for r in paid if r.invoice_id.startswith("x402v2:")]
        t_paid = [r for r in paid if not r.invoice_id.startswith("x402v2:")]
        assert len({r.tx_id for r in paid}) == len(paid)
        # Every v2 job paid; a job pays again only as the T dialect does: when a crash after a
        # settled call lost its answer, the re-run is a new call (never a second signature for one).
        assert {r.job_id for r in v2_paid} == {j.id for j in jobs if j.kind == "http"}
        ledger = home.devnet.ledger
        for r in paid:
            [(_, out)] = ledger.utxos_by_refs([OutputRef(r.tx_id, 0)])
            assert out.address == (V2_PAY_TO if r in v2_paid else T_PAY_TO)
            assert out.lovelace == (V2_PRICE if r in v2_paid else T_PRICE)
        for r in rows:
            if r.state in ("released", "refused") and r.tx_id:
                assert not ledger.utxos_by_refs([OutputRef(r.tx_id, 0)]), "a released payment reached the chain"
        # Every transaction the facilitator submitted is one the ledger counts as paid.
        assert server.facilitator.submissions == len(v2_paid)
        assert home.balance(V2_PAY_TO) == V2_PRICE * len(v2_paid)
        assert len(t_paid) >= JOBS // 2
        assert wallet_before - home.balance() == sum(r.cost_lovelace for r in paid)
    finally:
        server.stop()
