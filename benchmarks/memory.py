"""Figure 4: peak RSS of ``cardano-agent run --until-idle`` working through a queue of jobs.

The jobs (chat calls) are enqueued straight into the home's SQLite through
``agent.queue.SqliteJobStore``, then ``cardano-agent run --until-idle`` works through them
against the T API twin in api-key mode (``T_API_KEY``), so no payment is made: the figure is
the runner, queue, client and result files at scale. Peak RSS is the child's own ``VmHWM``.
The home has a wallet at the keystore's real scrypt cost and its passphrase in the
environment, because ``cardano-agent run`` unlocks the wallet at start (crash recovery) even
in api-key mode.

Beside it, a paying run: a smaller queue paid by x402 from a wallet created at the keystore's
real scrypt cost, so the peak includes unlocking it (scrypt needs ``128·n·r`` bytes at once).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

from benchmarks import _proc
from benchmarks._setup import PASSPHRASE, make_home, start_sandbox, temp_root
from benchmarks.errors import BenchError

FULL_JOBS = 10_000
QUICK_JOBS = 1_000
FULL_PAID_JOBS = 200
QUICK_PAID_JOBS = 20
PAID_WALLET_LOVELACE = 100_000_000_000
WORKERS = 8
"""Worker threads for the run: more threads hold more at once, so this bounds 1 worker from above."""
API_KEY = "twin-admin-key"  # a default key of sandbox.billing.TwinConfig


def enqueue(home: Any, jobs: int) -> None:
    """Put ``jobs`` chat jobs in the home's queue in one transaction."""
    import agent.queue  # noqa: F401 - registers the jobs table migrations
    from agent.queue import SqliteJobStore
    from agent.store import Database

    db = Database.in_home(home)
    try:
        db.migrate()
        store = SqliteJobStore(db)
        now = time.time()
        with db.atomic():
            for i in range(jobs):
                store.enqueue("chat", {"message": f"bench memory job {i}"}, tags=("bench",), now=now)
    finally:
        db.close()


def measure(quick: bool) -> dict[str, Any]:
    """Queue the jobs, run them in a ``cardano-agent run`` subprocess, and return its peak RSS."""
    jobs = QUICK_JOBS if quick else FULL_JOBS
    with ExitStack() as stack:
        root = temp_root(stack)
        home, _ = make_home(root, "memory", real_kdf=True)
        sandbox = start_sandbox(stack)
        enqueue(home, jobs)
        env = {**sandbox.env, "T_API_KEY": API_KEY, "CARDANO_AGENT_HOME": str(home),
               "CARDANO_AGENT_PASSPHRASE": PASSPHRASE}
        baseline = _proc.peak_rss(["status", "--offline"], env=env)
        finished = _proc.peak_rss(["run", "--until-idle", "--workers", str(WORKERS), "--json"], env=env,
                                  log_path=root / "run.log")
        if finished.returncode != 0:
            raise BenchError(f"cardano-agent run exited {finished.returncode}: {finished.stderr.strip()}")
        done = _count_done(home)
        paid_jobs = QUICK_PAID_JOBS if quick else FULL_PAID_JOBS
        paying = paying_run(root, sandbox, paid_jobs)
    if done != jobs:
        raise BenchError(f"cardano-agent run finished {done} of {jobs} jobs")
    return {
        "jobs": jobs,
        "jobs_done": done,
        "workers": WORKERS,
        "run_seconds": round(finished.wall_s, 2),
        "peak_rss_mb": round(finished.peak_rss_kb / 1024, 1),
        "status_peak_rss_mb": round(baseline.peak_rss_kb / 1024, 1),
        "paying_jobs": paid_jobs,
        "paying_peak_rss_mb": round(paying.peak_rss_kb / 1024, 1),
    }


def paying_run(root: Any, sandbox: Any, jobs: int) -> Any:
    """``cardano-agent run`` paying ``jobs`` chat calls from a wallet at the real scrypt cost."""
    home, address = make_home(root, "memory-paying", real_kdf=True)
    assert address is not None
    sandbox.devnet.fund(address, PAID_WALLET_LOVELACE)
    enqueue(home, jobs)
    env = {**sandbox.env, "CARDANO_AGENT_HOME": str(home), "CARDANO_AGENT_PASSPHRASE": PASSPHRASE}
    finished = _proc.peak_rss(["run", "--until-idle", "--workers", str(WORKERS), "--json"], env=env,
                              log_path=root / "run-paying.log")
    done = _count_done(home)
    if finished.returncode != 0 or done != jobs:
        raise BenchError(f"paying cardano-agent run exited {finished.returncode} with {done} of {jobs} jobs done: "
                         f"{finished.stderr.strip()}")
    return finished


def _count_done(home: Any) -> int:
    from agent.store import Database

    db = Database.in_home(home)
    try:
        return int(db.execute("SELECT COUNT(*) AS n FROM jobs WHERE state = 'done'").fetchone()["n"])
    finally:
        db.close()
