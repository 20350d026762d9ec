"""Prometheus metrics for an agent home, read from its database at each scrape.

Everything that another process may change (payments, budgets, jobs) is computed from the
ledger and the queue when Prometheus scrapes, so ``serve`` in one process and ``run`` in
another report the same figures, and the counters equal the ledger by construction. What only
a running worker knows (its liveness, the errors it met) is kept in :class:`RunnerMetrics`,
exported by ``run --metrics-port``.

Metric names (all prefixed ``cardano_agent_``):

- ``payments{state,route}``: ledger rows by state and route (gauge: rows move between states)
- ``paid_lovelace_total{route}``, ``fees_lovelace_total{route}``, ``paid_payments_total{route}``:
  what left the wallet in paid rows (submitted, settled, unsettled)
- ``budget_limit{budget,asset}``, ``budget_spent{budget,asset}``, ``budget_reserved{budget,asset}``
- ``payment_latency_seconds{phase}`` histogram: ``402_to_proof`` (invoice judged to proof sent)
  and ``proof_to_200`` (proof sent to the paid answer)
- ``jobs{state}``, ``queue_depth``, ``queue_oldest_age_seconds``, ``live_leases``
- ``workers_live{process,host}``, ``process_heartbeat_timestamp_seconds{process,host}``: every live
  ``run`` process sharing the store (its lease), whichever host runs it
- ``approvals_pending``, ``payment_refusals{reason}``
- ``wallet_balance_lovelace``, ``wallet_utxos``, ``wallet_reserved_utxos`` (UTxO lanes in use)
- ``scrape_errors_total{kind}``: chain or database unreachable while scraping
- from ``run``: ``runner_workers``, ``runner_heartbeat_timestamp_seconds``,
  ``runner_jobs_total{outcome}``, ``errors_total{kind}`` (chain, api, policy, budget, store, other)
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

PREFIX = "cardano_agent"
LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PAID_STATES = ("submitted", "settled", "unsettled")


def error_kind(exc: BaseException) -> str:
    """Classify a job failure for ``errors_total{kind}``: chain, api, policy, budget, store or other."""
    from agent.errors import BudgetExceededError, PolicyError, StoreError
    from wallets.errors import WalletError

    name = type(exc).__name__
    if isinstance(exc, BudgetExceededError):
        return "budget"
    if isinstance(exc, PolicyError):
        return "policy"
    if isinstance(exc, StoreError):
        return "store"
    if isinstance(exc, WalletError) or "Chain" in name or "Ogmios" in name:
        return "chain"
    if "Api" in name or "HTTP" in name or "Timeout" in name or isinstance(exc, ConnectionError):
        return "api"
    return "other"


def latency_buckets(values: Iterable[float], bounds: tuple[float, ...] = LATENCY_BUCKETS_S
                    ) -> tuple[list[tuple[str, int]], float]:
    """Cumulative Prometheus buckets (``le`` label, count) and the sum for ``values``."""
    values = [max(0.0, v) for v in values]
    buckets = [(_le(b), sum(1 for v in values if v <= b)) for b in bounds]
    buckets.append(("+Inf", len(values)))
    return buckets, float(sum(values))


def _le(bound: float) -> str:
    return repr(float(bound))


class RunnerMetrics:
    """What a running ``run`` process knows: worker heartbeat, job outcomes and errors by kind."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.workers = 0
        self.heartbeat: float | None = None
        self.outcomes: dict[str, int] = {"done": 0, "retried": 0, "failed": 0}
        self.errors: dict[str, int] = {}
        self._lock = threading.Lock()

    def beat(self, *, workers: int, stats: Any = None) -> None:
        """The runner's main loop is alive with ``workers`` threads (``stats``: its RunStats)."""
        with self._lock:
            self.workers = workers
            self.heartbeat = self.clock()
            if stats is not None:
                self.outcomes = {"done": stats.done, "retried": stats.retried, "failed": stats.failed}

    def error(self, exc: BaseException) -> None:
        """Count one job error by kind."""
        kind = error_kind(exc)
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def wrap_progress(self, progress: Any, *, workers: int) -> Any:
        """A runner ``on_progress`` callback that also beats (the runner calls it while workers live)."""
        def on_progress(counts: dict[str, int], stats: Any) -> None:
            self.beat(workers=workers, stats=stats)
            progress(counts, stats)

        on_progress.finish = getattr(progress, "finish", lambda: None)  # type: ignore[attr-defined]
        return on_progress

    def instrument(self, executor: Any) -> Any:
        """Wrap a job executor so every exception it raises is counted (and re-raised)."""
        return _CountingExecutor(executor, self)


class _CountingExecutor:
    def __init__(self, inner: Any, metrics: RunnerMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def execute(self, job: Any, *, worker_id: str) -> Any:
        from agent.runner import JobParked

        try:
            return self._inner.execute(job, worker_id=worker_id)
        except JobParked:
            raise  # waiting for settlement: no error
        except Exception as exc:
            self._metrics.error(exc)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class AgentCollector:
    """A prometheus_client collector over one agent home (``agent.app.Agent``).

    Args:
        agent: the agent whose database is read at each scrape.
        runner: the ``RunnerMetrics`` of this process, if it runs workers.
        chain: ask the chain for the wallet balance at each scrape (False: skip, e.g. offline tests).
    """

    def __init__(self, agent: Any, *, runner: RunnerMetrics | None = None, chain: bool = True) -> None:
        self.agent = agent
        self.runner = runner
        self.chain = chain
        self.scrape_errors: dict[str, int] = {}
        self._lock = threading.Lock()

    def describe(self) -> list[Any]:
        return []  # collected on demand; no fixed description needed

    def collect(self) -> Iterator[Any]:
        with self._lock:
            yield from self._collect_db()
            if self.chain:
                yield from self._collect_wallet()
            yield from self._collect_runner()
            from prometheus_client.core import CounterMetricFamily

            errors = CounterMetricFamily(f"{PREFIX}_scrape_errors", "Failures reading the chain or the "
                                         "database while scraping, by kind", labels=["kind"])
            for kind, n in sorted(self.scrape_errors.items()):
                errors.add_metric([kind], n)
            yield errors

    # -- the database -------------------------------------------------------------------------
    def _collect_db(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        agent = self.agent
        now = agent.clock()
        try:
            rows = agent.ledger.rows()
            usage = agent.budgets.usage(now)
            counts = agent.jobs.counts()
            oldest = agent.db.execute("SELECT min(created_at) AS t FROM jobs WHERE state = 'queued'").fetchone()["t"]
            leases = agent.db.execute(
                "SELECT count(DISTINCT lease_owner) AS n FROM jobs WHERE state IN "
                "('running', 'paying', 'awaiting_settlement') AND lease_expires_at > ?", (now,)).fetchone()["n"]
            pending = len(agent.approvals.pending())
        except Exception as exc:  # noqa: BLE001 - a scrape reports, it does not crash the server
            log.warning("metrics: reading the database failed: %s", exc)
            self.scrape_errors["database"] = self.scrape_errors.get("database", 0) + 1
            return

        by_state: dict[tuple[str, str], int] = {}
        paid: dict[str, list[int]] = {}
        refusals: dict[str, int] = {}
        to_proof: list[float] = []
        to_200: list[float] = []
        for row in rows:
            route = row.route or "-"
            by_state[(row.state, route)] = by_state.get((row.state, route), 0) + 1
            if row.state in PAID_STATES:
                p = paid.setdefault(route, [0, 0, 0])
                p[0] += 1
                p[1] += row.cost_lovelace or 0
                p[2] += row.fee_lovelace or 0
                if row.submitted_at is not None:
                    to_proof.append(row.submitted_at - row.created_at)
                    if row.settled_at is not None:
                        to_200.append(row.settled_at - row.submitted_at)
            if row.state == "refused":
                reason = (row.reason or "unknown").split(":", 1)[0].strip() or "unknown"
                refusals[reason] = refusals.get(reason, 0) + 1

        g = GaugeMetricFamily(f"{PREFIX}_payments", "Ledger rows by state and route", labels=["state", "route"])
        for (state, route), n in sorted(by_state.items()):
            g.add_metric([state, route], n)
        yield g
        count = CounterMetricFamily(f"{PREFIX}_paid_payments", "Paid ledger rows (submitted, settled, "
                                    "unsettled) by route", labels=["route"])
        spent = CounterMetricFamily(f"{PREFIX}_paid_lovelace", "Lovelace that left the wallet in paid rows "
                                    "(outputs and fees) by route", labels=["route"])
        fees = CounterMetricFamily(f"{PREFIX}_fees_lovelace", "Transaction fees of paid rows by route",
                                   labels=["route"])
        for route, (n, cost, fee) in sorted(paid.items()):
            count.add_metric([route], n)
            spent.add_metric([route], cost)
            fees.add_metric([route], fee)
        yield count
        yield spent
        yield fees

        refused = GaugeMetricFamily(f"{PREFIX}_payment_refusals", "Invoices refused (nothing paid) by reason",
                                    labels=["reason"])
        for reason, n in sorted(refusals.items()):
            refused.add_metric([reason], n)
        yield refused

        hist = HistogramMetricFamily(f"{PREFIX}_payment_latency_seconds",
                                     "Payment latency: 402_to_proof (invoice judged to proof sent) and "
                                     "proof_to_200 (proof sent to the paid answer)", labels=["phase"])
        for phase, values in (("402_to_proof", to_proof), ("proof_to_200", to_200)):
            buckets, total = latency_buckets(values)
            hist.add_metric([phase], buckets, total)
        yield hist

        limit = GaugeMetricFamily(f"{PREFIX}_budget_limit", "Budget limit (smallest units)", labels=["budget", "asset"])
        used = GaugeMetricFamily(f"{PREFIX}_budget_spent", "Committed spend in the budget's current window",
                                 labels=["budget", "asset"])
        held = GaugeMetricFamily(f"{PREFIX}_budget_reserved", "Held by unfinished payments", labels=["budget", "asset"])
        for u in usage:
            limit.add_metric([u.name, u.asset], u.limit)
            used.add_metric([u.name, u.asset], u.spent)
            held.add_metric([u.name, u.asset], u.reserved)
        yield limit
        yield used
        yield held

        jobs = GaugeMetricFamily(f"{PREFIX}_jobs", "Jobs by state", labels=["state"])
        for state, n in counts.items():
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily(f"{PREFIX}_queue_depth", "Jobs queued", value=counts.get("queued", 0))
        yield GaugeMetricFamily(f"{PREFIX}_queue_oldest_age_seconds", "Age of the oldest queued job (0: none)",
                                value=max(0.0, now - oldest) if oldest is not None else 0.0)
        yield GaugeMetricFamily(f"{PREFIX}_live_leases", "Workers (in any process) holding a live job lease",
                                value=leases)
        yield GaugeMetricFamily(f"{PREFIX}_approvals_pending", "Payments waiting for a human", value=pending)
        yield from self._collect_fleet(now)

    def _collect_fleet(self, now: float) -> Iterator[Any]:
        """Worker liveness across processes and hosts, from the process leases in the shared store."""
        from prometheus_client.core import GaugeMetricFamily

        try:
            fleet = self.agent.fleet(now)
        except Exception as exc:  # noqa: BLE001 - an older store without the process registry
            log.debug("metrics: no process registry: %s", exc)
            return
        workers = GaugeMetricFamily(f"{PREFIX}_workers_live", "Worker threads of each live `run` process "
                                    "(lease not expired)", labels=["process", "host"])
        beat = GaugeMetricFamily(f"{PREFIX}_process_heartbeat_timestamp_seconds", "When each live `run` "
                                 "process last renewed its lease (epoch s)", labels=["process", "host"])
        for p in fleet:
            workers.add_metric([p["name"], p["host"]], p["workers"])
            beat.add_metric([p["name"], p["host"]], p["beat_at"])
        yield workers
        yield beat

    # -- the wallet ---------------------------------------------------------------------------
    def _collect_wallet(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        status = self.agent.wallet_status()
        if "balance_lovelace" not in status:
            kind = "wallet" if str(status.get("error", "")).startswith("no wallet") else "chain"
            self.scrape_errors[kind] = self.scrape_errors.get(kind, 0) + 1
            return
        yield GaugeMetricFamily(f"{PREFIX}_wallet_balance_lovelace", "Confirmed lovelace at the wallet address",
                                value=status["balance_lovelace"])
        yield GaugeMetricFamily(f"{PREFIX}_wallet_utxos", "UTxOs at the wallet address (payment lanes)",
                                value=status["utxos"])
        try:
            reserved = self.agent.db.execute("SELECT count(*) AS n FROM utxo_reservations").fetchone()["n"]
        except Exception:  # noqa: BLE001 - no reservations table yet: none in use
            reserved = 0
        yield GaugeMetricFamily(f"{PREFIX}_wallet_reserved_utxos", "UTxOs held by payments in flight",
                                value=reserved)

    # -- this process's runner ----------------------------------------------------------------
    def _collect_runner(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        runner = self.runner
        if runner is None:
            return
        with runner._lock:
            workers, beat = runner.workers, runner.heartbeat
            outcomes, errors = dict(runner.outcomes), dict(runner.errors)
        yield GaugeMetricFamily(f"{PREFIX}_runner_workers", "Worker threads alive in this run", value=workers)
        yield GaugeMetricFamily(f"{PREFIX}_runner_heartbeat_timestamp_seconds",
                                "When this run's main loop last saw its workers (epoch s)", value=beat or 0.0)
        done = CounterMetricFamily(f"{PREFIX}_runner_jobs", "Jobs this run finished, by outcome", labels=["outcome"])
        for outcome, n in sorted(outcomes.items()):
            done.add_metric([outcome], n)
        yield done
        errs = CounterMetricFamily(f"{PREFIX}_errors", "Job errors met by this run, by kind", labels=["kind"])
        for kind, n in sorted(errors.items()):
            errs.add_metric([kind], n)
        yield errs


def registry_for(agent: Any, *, runner: RunnerMetrics | None = None, chain: bool = True) -> "CollectorRegistry":
    """A fresh registry holding only this agent's collector (no process or GC metrics)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent, runner=runner, chain=chain))  # type: ignore[arg-type]
    return registry


def render(registry: "CollectorRegistry") -> tuple[bytes, str]:
    """The text exposition of ``registry`` and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST


def start_metrics_server(registry: "CollectorRegistry", port: int, *, host: str = "127.0.0.1") -> Any:
    """Serve ``registry`` on ``http://host:port/metrics`` in a daemon thread; return the server."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
