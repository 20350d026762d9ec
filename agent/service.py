"""The agent running unattended: start-up recovery, the runner's wiring and one run.

``Agent.run`` (agent/app.py) is the one way to run the queue: ``cardano-agent run`` is a thin
call to it, and the console, MCP or a test can call it the same way. What a run says to its
operator (recovery done at start, a capped concurrency, the metrics address) goes to ``say``.

Heavy modules (the runner, the executor, metrics) are imported where used, so the CLI's
``--help`` stays fast.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from agent.app import Agent
    from agent.metrics import RunnerMetrics
    from agent.runner import Runner, RunStats

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 64
"""Calls in flight by default: waiting for a block holds no worker, so many more than workers."""

NOMINAL_BLOCK_INTERVAL_S = 20.0
"""Mean time between blocks on every network we name (Praos: 1 s slots, active slot coefficient
1/20; the sandbox's genesis says the same): where the settlement watcher's measured mean starts,
so the calls parked before it has seen two blocks do not retry before their block."""
TIP_POLL_S = {"ogmios": 0.25, "blockfrost": 2.0}
"""How often the settlement watcher reads the tip: Blockfrost's rate limit (10 requests/s) is shared."""

Say = Callable[[str], None]


def _log_line(line: str) -> None:
    log.info("%s", line)


def pays_by_wallet(agent: "Agent") -> bool:
    """Whether this agent's calls are paid from its wallet (no API key, or billed through a partner)."""
    return not agent.config.api.api_key or bool(agent.config.api.partner)


def concurrency_cap(agent: "Agent", requested: int, *, now: float) -> tuple[int, str | None]:
    """``requested``, or fewer with the one-line reason when the wallet or a budget cannot pay that many at once.

    Judged at the per-call maximum (``[policy] max_per_call_ada``): the wallet's balance and
    every budget that covers all calls must hold that much per call in flight.
    """
    per_call = agent.config.policy.max_per_call_lovelace
    if not per_call:
        return requested, None
    limits: list[tuple[int, str]] = []
    wallet = agent.wallet_status()
    if "balance_lovelace" in wallet:
        limits.append((wallet["balance_lovelace"] // per_call,
                       f"the wallet holds {wallet['balance_lovelace'] / 1e6:g} ADA"))
    for b in agent.budget_usage(now):
        if b.get("scope", "all") == "all" and b.get("asset") == "lovelace":
            limits.append((b["remaining"] // per_call, f"budget {b['name']} has {b['remaining'] / 1e6:g} ADA left"))
    if not limits:
        return requested, None
    cap, why = min(limits)
    cap = max(1, cap)
    if cap >= requested:
        return requested, None
    return cap, (f"--concurrency {requested} capped to {cap}: {why}, enough for {cap} call(s) in flight at the "
                 f"per-call maximum of {per_call / 1e6:g} ADA")


def recovery_text(freed: int, recovered: dict[str, int]) -> str:
    """What start-up recovery did, in words."""
    parts = []
    if freed:
        parts.append(f"{freed} job(s) left running by a stopped process taken back")
    words = {"kept": "found on the chain and kept", "resubmitted": "submitted again (same transaction)",
             "released": "never sent, released"}
    parts += [f"{n} payment(s) {words[k]}" for k, n in recovered.items() if n and k in words]
    return "recovered from an interrupted run: " + "; ".join(parts)


def take_back(agent: "Agent") -> tuple[int, dict[str, int]]:
    """Start-up recovery: the jobs and payments a stopped process left; (jobs freed, payment counts).

    Leases of workers whose process is gone (here: its PID; any host: its process lease ran
    out) are freed; payments are resolved only where their owner is gone ("busy" ones are
    another live process's).
    """
    from agent.runner import lease_owner_is_dead
    from agent.workers import ProcessRegistry

    registry = ProcessRegistry(agent.db)
    freed = agent.jobs.expire_leases(
        lambda owner: lease_owner_is_dead(owner) or registry.is_gone(owner, now=time.time()),
        now=time.time())
    return freed, agent.recover()


def tip_reader(agent: "Agent") -> Callable[[], tuple[int, str]]:
    """What the settlement watcher follows: the chain tip (a new block may settle parked calls)."""
    def tip() -> tuple[int, str]:
        t = agent.chain.tip()
        return (t.slot, t.id)

    return tip


def landed_reader(agent: "Agent") -> Callable[[list[int]], set[int] | None] | None:
    """Which parked calls' payments the chain shows now: the runner wakes only those at a block.

    A call parked on a sent payment is worth re-sending once an output of its transaction is
    on the ledger (the payee's, usually: it waits there until the server settles); one with
    no payment in flight (parked for another reason) is always woken. A landed payment whose
    outputs were all spent already is missed here and retried at its fallback time, never
    lost. Over Ogmios only (one query per block); over Blockfrost each transaction would cost
    a request against the rate limit, so every parked call is woken as before (None).
    """
    if agent.config.chain.backend != "ogmios":
        return None
    from wallets.types import OutputRef

    def landed(job_ids: list[int]) -> set[int] | None:
        sent = agent.ledger.sent_for_jobs(job_ids)
        ready = set(job_ids) - {r.job_id for r in sent if r.job_id is not None}
        refs = [OutputRef(r.tx_id, i) for r in sent if r.tx_id for i in range(len(r.outputs) + 1)]
        seen = {u.ref.tx_id for u in agent.chain.utxos_by_refs(refs)} if refs else set()
        return ready | {r.job_id for r in sent if r.job_id is not None and r.tx_id in seen}

    return landed


def start_metrics(agent: "Agent", port: int | None, workers: int, say: Say) -> "RunnerMetrics | None":
    """With a port, serve /metrics for this run on loopback; return its RunnerMetrics."""
    if port is None:
        return None
    from agent.errors import ConfigError
    from agent.metrics import RunnerMetrics, registry_for, start_metrics_server

    metrics = RunnerMetrics()
    metrics.beat(workers=workers)
    try:
        start_metrics_server(registry_for(agent, runner=metrics), port)
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: cannot listen: {exc.strerror or exc}") from None
    say(f"metrics on http://127.0.0.1:{port}/metrics")
    return metrics


def run(agent: "Agent", *, workers: int = 1, concurrency: int | None = None, until_idle: bool = False,
        lease_s: float = 120.0, stop_grace_s: float = 10.0, metrics_port: int | None = None,
        on_progress: Callable[[dict[str, int], Any], None] | None = None, say: Say | None = None,
        on_start: Callable[[], None] | None = None) -> "RunStats":
    """Recover what a stopped process left, then run the queue's workers and schedules.

    Returns when :meth:`Agent.stop` is called (or, with ``until_idle``, when no job is left).
    ``concurrency``: paid calls in flight at most (default :data:`DEFAULT_CONCURRENCY`, at
    least ``workers``), capped by what the wallet and the budgets can pay at once.
    ``on_start`` is called once start-up is over (wallet unlocked, recovery done), just before
    the workers start: where a CLI installs the signal handlers that call :meth:`Agent.stop`.
    """
    from agent.executor import TApiExecutor
    from agent.lanes import lane_tender
    from agent.runner import Runner, process_worker_name
    from agent.scheduler import Scheduler
    from agent.workers import ProcessLease, ProcessRegistry

    say = say or _log_line
    if pays_by_wallet(agent):
        agent.payer()  # unlock now: a wrong passphrase is one line at start, not a failure per job
    freed, recovered = take_back(agent)
    if freed or any(v for k, v in recovered.items() if k != "busy"):
        say(recovery_text(freed, recovered))
    in_flight = concurrency if concurrency is not None else max(DEFAULT_CONCURRENCY, workers)
    if pays_by_wallet(agent):
        in_flight, why = concurrency_cap(agent, in_flight, now=time.time())
        if why:
            say(why)
    in_flight = max(in_flight, 1)
    executor: Any = TApiExecutor(agent)
    metrics = start_metrics(agent, metrics_port, workers, say)
    if metrics is not None:
        executor = metrics.instrument(executor)
    specs: Any = agent.config.schedules  # ScheduleSpec satisfies ScheduleLike at run time
    scheduler = Scheduler(agent.db, agent.jobs, specs) if specs else None

    def budget_frees_at(exc: Any, now: float) -> float | None:
        try:
            return agent.budgets.frees_at(exc.budget, exc.asset, requested=exc.requested, now=now)
        except Exception:  # noqa: BLE001 - an unknown budget cannot free: the job fails instead
            return None

    runner = Runner(agent.jobs, executor, scheduler=scheduler, workers=workers, lease_s=lease_s,
                    name=process_worker_name(), stop_grace_s=stop_grace_s, concurrency=in_flight,
                    tip=tip_reader(agent), tip_poll_s=TIP_POLL_S.get(agent.config.chain.backend, 2.0),
                    budget_frees_at=budget_frees_at, lanes=lane_tender(agent), landed=landed_reader(agent),
                    block_interval_s=NOMINAL_BLOCK_INTERVAL_S)
    progress = on_progress
    if metrics is not None:  # the heartbeat rides on the runner's progress calls
        progress = metrics.wrap_progress(progress or (lambda counts, stats: None), workers=workers)
    try:
        agent.attach_runner(runner)
        if on_start is not None:
            on_start()
        with ProcessLease(ProcessRegistry(agent.db), process_worker_name(), workers=workers, clock=time.time):
            return runner.run(until_idle=until_idle, on_progress=progress)
    finally:
        agent.attach_runner(None)
        executor.close()


__all__ = ["DEFAULT_CONCURRENCY", "NOMINAL_BLOCK_INTERVAL_S", "TIP_POLL_S", "concurrency_cap", "pays_by_wallet",
           "recovery_text", "run", "landed_reader", "start_metrics", "take_back", "tip_reader"]
