"""Figure 7: paid calls per second on PostgreSQL: 1 host x 8 workers vs 2 hosts x 8, and SQLite vs PostgreSQL.

On the default sandbox (1 s blocks, the twin waits for each payment to be confirmed) and a
throwaway PostgreSQL cluster (``tests/pgcluster.py``, fsync off: it measures the agent's
locking and round trips, not a disk). Three runs, each with its own wallet and database:

- ``sqlite_1x8``: one agent, 8 workers, SQLite in its home (the embedded default);
- ``pg_1x8``: the same on PostgreSQL;
- ``pg_2x8``: two agents ("hosts": separate homes, pools and runners, in this process) with
  8 workers each sharing one PostgreSQL queue, budget and wallet.

After each run the ledger is held against the chain: every paid row's transaction is on the
devnet, no job or invoice is paid twice, and the wallet's balance drop equals the ledger's
costs to the lovelace. The two hosts share one Python process (one GIL) on this machine, so
``pg_2x8`` shows what the shared store allows, not what two machines' CPUs would add.
"""

from __future__ import annotations

import shutil
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks._sandbox_proc import SandboxProcess
from benchmarks._setup import make_home, money_checks, open_agent, temp_root

BLOCK_TIME_S = 1.0
WORKERS = 8
LANE_LOVELACE = 2_000_000_000
FULL_JOBS = 96
QUICK_JOBS = 16
CONFIRM_TIMEOUT_S = 30.0


def _fund(sandbox: SandboxProcess, address: str, lanes: int) -> int:
    for _ in range(lanes):
        sandbox.fund(address, LANE_LOVELACE)
    deadline = time.monotonic() + CONFIRM_TIMEOUT_S
    while sandbox.balance(address) < lanes * LANE_LOVELACE and time.monotonic() < deadline:
        time.sleep(0.05)  # the lanes must be confirmed before paying from them
    return sandbox.balance(address)


def run_hosts(sandbox: SandboxProcess, root: Path, name: str, *, hosts: int, jobs: int,
              store_url: str | None) -> dict[str, Any]:
    """Queue ``jobs`` chat jobs once and run them with ``hosts`` agents of 8 workers each."""
    from agent.executor import TApiExecutor
    from agent.runner import Runner

    home, address = make_home(root, f"{name}-host0")
    assert address is not None
    if store_url:
        config = home / "agent.toml"
        config.write_text(config.read_text(encoding="utf-8").replace("[store]\n", f'[store]\nurl = "{store_url}"\n', 1),
                          encoding="utf-8")
    homes = [home]
    for n in range(1, hosts):
        other = root / f"{name}-host{n}"
        shutil.copytree(home, other)
        homes.append(other)
    start_balance = _fund(sandbox, address, WORKERS * hosts)
    with ExitStack() as stack:
        agents = []
        for h in homes:
            agent = open_agent(h, sandbox.env)
            stack.callback(agent.close)
            agent.payer()  # unlock and connect before the clock starts
            agents.append(agent)
        now = time.time()
        for i in range(jobs):
            agents[0].jobs.enqueue("chat", {"message": f"fleet bench job {i}"}, now=now)
        runners = []
        for n, agent in enumerate(agents):
            executor = TApiExecutor(agent)
            stack.callback(executor.close)
            runners.append(Runner(agent.jobs, executor, workers=WORKERS, name=f"bench-host{n}:{n}"))
        stats: list[Any] = [None] * hosts

        def go(n: int) -> None:
            stats[n] = runners[n].run(until_idle=True, poll_s=0.02)

        threads = [threading.Thread(target=go, args=(n,)) for n in range(hosts)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        counts = agents[0].jobs.counts()
        rows = [r for r in agents[0].ledger.rows() if r.paid]
    end_balance = sandbox.balance(address)
    return {
        "hosts": hosts,
        "jobs": jobs,
        "done": counts.get("done", 0),
        "failed": counts.get("failed", 0) + sum(s.failed for s in stats),
        "seconds": elapsed,
        "calls_per_s": counts.get("done", 0) / elapsed,
        **money_checks(sandbox, rows, start_balance, end_balance),
        "errors": [e for s in stats for e in s.errors][:3],
    }


def measure(quick: bool) -> dict[str, Any]:
    """SQLite 1x8, PostgreSQL 1x8 and PostgreSQL 2x8 on the default sandbox; rates and ledger checks."""
    from tests.pgcluster import PgCluster

    jobs = QUICK_JOBS if quick else FULL_JOBS
    with ExitStack() as stack:
        root = temp_root(stack)
        cluster = PgCluster.start()
        stack.callback(cluster.stop)
        sandbox = stack.enter_context(SandboxProcess(block_time_s=BLOCK_TIME_S))
        sqlite = run_hosts(sandbox, root, "sqlite", hosts=1, jobs=jobs, store_url=None)
        pg_one = run_hosts(sandbox, root, "pg1", hosts=1, jobs=jobs, store_url=cluster.create_database("bench1"))
        pg_two = run_hosts(sandbox, root, "pg2", hosts=2, jobs=2 * jobs,
                           store_url=cluster.create_database("bench2"))
    runs = (sqlite, pg_one, pg_two)
    result: dict[str, Any] = {
        "block_time_s": BLOCK_TIME_S,
        "jobs_per_host": jobs,
        "calls_per_s_sqlite_1x8": round(sqlite["calls_per_s"], 2),
        "calls_per_s_pg_1x8": round(pg_one["calls_per_s"], 2),
        "calls_per_s_pg_2x8": round(pg_two["calls_per_s"], 2),
        "pg_vs_sqlite": round(pg_one["calls_per_s"] / sqlite["calls_per_s"], 2),
        "two_hosts_vs_one": round(pg_two["calls_per_s"] / pg_one["calls_per_s"], 2),
        "failed": sum(r["failed"] for r in runs),
        "double_spent": sum(r["double_spent"] for r in runs),
        "missing_on_chain": sum(r["missing_on_chain"] for r in runs),
        "ledger_mismatch_lovelace": sum(r["ledger_mismatch_lovelace"] for r in runs),
    }
    errors = [e for r in runs for e in r["errors"]]
    if errors:
        result["first_errors"] = "; ".join(errors[:3])
    return result
