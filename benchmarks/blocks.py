"""Figure 9: paid calls at real block times, against the chain's capacity; agent CPU time per call.

Issue 15. ``JOBS`` paid chat jobs on a sandbox making a block every ``BLOCK_TIME_S`` seconds
(real time: the sandbox has no faster clock, so the full run waits for real 20 s blocks),
wallet starting from 8 UTxOs, run by ``Runner`` with 4 workers and ``concurrency = JOBS``:
calls waiting for their block are parked, not held by a worker, and a watcher following the
chain tip wakes them at each block.

* ``wall_blocks``: the run's wall time in block intervals;
* ``capacity_blocks``: the chain's limit, total bytes of the transactions paid ÷ the maximum
  block body size (mainnet's 90,112 bytes), rounded up, plus the one block a call needs to
  see its payment confirmed; ``vs_capacity`` = wall ÷ limit (target ≤ 1.5);
* ``cpu_ms_per_call``: user + system CPU time of this process (the agent only: the sandbox
  runs in a child process) ÷ paid calls (target ≤ 3 ms), after two untimed warm-up calls
  (the first payment imports and builds what the later ones reuse);
* with block time 0, ``calls_per_s_block_time_0`` beside ``cpu_bound_calls_per_s`` =
  1000 ÷ the CPU ms per call there: how close the agent runs to its own CPU-time bound;
* ledger checks as in figure 2: none failed, none paid twice, every paid transaction on the
  chain, wallet drop = ledger costs.
"""

from __future__ import annotations

import math
import resource
import time
from contextlib import ExitStack
from typing import Any

from benchmarks._sandbox_proc import SandboxProcess
from benchmarks._setup import make_home, money_checks, open_agent, temp_root

MAX_BLOCK_BODY_BYTES = 90_112
"""Mainnet's maximum block body size."""
LANES = 8
LANE_LOVELACE = 5_000_000_000
WORKERS = 4
FULL = {"jobs": 1000, "block_time_s": 20.0, "jobs_block_time_0": 300}
QUICK = {"jobs": 20, "block_time_s": 2.0, "jobs_block_time_0": 15}
CONFIRM_TIMEOUT_S = 120.0
WARMUP_JOBS = 2
"""Paid untimed first: the first payment imports and builds what every later one reuses."""


def _cpu_s() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def run_jobs(sandbox: SandboxProcess, root: Any, jobs: int, block_time_s: float, *, tag: str) -> dict[str, Any]:
    """Queue ``jobs`` chat jobs in a fresh home (8 UTxOs) and run them parked; return the tally."""
    from agent.executor import TApiExecutor
    from agent.runner import Runner
    from agent.service import NOMINAL_BLOCK_INTERVAL_S, TIP_POLL_S, landed_reader, tip_reader

    home, address = make_home(root, f"{tag}-blocks")
    assert address is not None
    for _ in range(LANES):
        sandbox.fund(address, LANE_LOVELACE)
    deadline = time.monotonic() + CONFIRM_TIMEOUT_S
    while sandbox.balance(address) < LANES * LANE_LOVELACE and time.monotonic() < deadline:
        time.sleep(0.05)  # the lanes must be confirmed before paying from them
    start_balance = sandbox.balance(address)
    with ExitStack() as stack:
        agent = open_agent(home, sandbox.env)
        stack.callback(agent.close)
        agent.payer()  # unlock and connect before the clock starts
        executor = TApiExecutor(agent)
        stack.callback(executor.close)

        # The watcher and the workers poll as ``cardano-agent run`` does (its tip reader, tip poll
        # and the runner's default poll): the CPU measured is what a user's run spends.
        tip = tip_reader(agent) if block_time_s > 0 else None
        tip_poll_s = TIP_POLL_S["ogmios"]
        for i in range(WARMUP_JOBS):
            agent.jobs.enqueue("chat", {"message": f"warm-up job {i}"}, now=time.time())
        Runner(agent.jobs, executor, workers=1, concurrency=WARMUP_JOBS, name=f"{tag}warm",
               tip=tip, tip_poll_s=tip_poll_s).run(until_idle=True)
        warm_done = agent.jobs.counts().get("done", 0)
        now = time.time()
        measured = {agent.jobs.enqueue("chat", {"message": f"bench job {i}"}, now=now).id for i in range(jobs)}
        runner = Runner(agent.jobs, executor, workers=WORKERS, concurrency=jobs, name=f"{tag}blocks",
                        tip=tip, tip_poll_s=tip_poll_s,
                        landed=landed_reader(agent) if block_time_s > 0 else None,
                        block_interval_s=NOMINAL_BLOCK_INTERVAL_S)
        cpu_before = _cpu_s()
        start = time.perf_counter()
        stats = runner.run(until_idle=True)
        elapsed = time.perf_counter() - start
        cpu_after = _cpu_s()
        user, system = cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]
        cpu = user + system
        counts = agent.jobs.counts()
        rows = [r for r in agent.ledger.rows() if r.paid]
    end_balance = sandbox.balance(address)
    done = counts.get("done", 0) - warm_done
    return {
        "jobs": jobs,
        "done": done,
        "failed": counts.get("failed", 0) + stats.failed,
        "parked": stats.parked,
        "seconds": elapsed,
        "cpu_s": cpu,
        "system_s": system,
        "tx_bytes": sum(len(r.cbor or b"") for r in rows if r.job_id in measured),
        **money_checks(sandbox, rows, start_balance, end_balance),
        "errors": stats.errors[:3],
    }


def measure(quick: bool) -> dict[str, Any]:
    """The paced run (blocks) and the block-time-0 run (CPU bound); limits beside each figure."""
    plan = QUICK if quick else FULL
    block_time_s = plan["block_time_s"]
    with ExitStack() as stack:
        root = temp_root(stack)
        with SandboxProcess(block_time_s=block_time_s) as sandbox:
            paced = run_jobs(sandbox, root, int(plan["jobs"]), block_time_s, tag="paced")
        with SandboxProcess(block_time_s=0.0) as sandbox:
            fast = run_jobs(sandbox, root, int(plan["jobs_block_time_0"]), 0.0, tag="bt0")
    wall_blocks = paced["seconds"] / block_time_s
    capacity_blocks = math.ceil(paced["tx_bytes"] / MAX_BLOCK_BODY_BYTES) + 1
    cpu_ms_fast = 1000 * fast["cpu_s"] / max(1, fast["done"])
    result: dict[str, Any] = {
        "jobs": paced["jobs"],
        "block_time_s": block_time_s,
        "workers": WORKERS,
        "concurrency": paced["jobs"],
        "wall_s": round(paced["seconds"], 2),
        "wall_blocks": round(wall_blocks, 2),
        "tx_bytes": paced["tx_bytes"],
        "capacity_blocks": capacity_blocks,
        "vs_capacity": round(wall_blocks / capacity_blocks, 2),
        "parked": paced["parked"],
        "cpu_ms_per_call": round(1000 * paced["cpu_s"] / max(1, paced["done"]), 3),
        "of_which_system_ms": round(1000 * paced["system_s"] / max(1, paced["done"]), 3),
        "jobs_block_time_0": fast["jobs"],
        "calls_per_s_block_time_0": round(fast["done"] / fast["seconds"], 2),
        "cpu_ms_per_call_block_time_0": round(cpu_ms_fast, 3),
        "cpu_bound_calls_per_s": round(1000 / cpu_ms_fast, 2) if cpu_ms_fast else 0.0,
        "failed": paced["failed"] + fast["failed"],
        "double_spent": paced["double_spent"] + fast["double_spent"],
        "missing_on_chain": paced["missing_on_chain"] + fast["missing_on_chain"],
        "ledger_mismatch_lovelace": paced["ledger_mismatch_lovelace"] + fast["ledger_mismatch_lovelace"],
    }
    errors = paced["errors"] + fast["errors"]
    if errors:
        result["first_errors"] = "; ".join(errors[:3])
    return result
