"""/metrics on the sandbox: it parses with prometheus_client's own parser and equals the ledger."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agent.console.server import ConsoleServer, ConsoleSettings
from agent.metrics import RunnerMetrics, error_kind, latency_buckets, registry_for, render


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _run_jobs(agent, kinds):
    from agent.executor import TApiExecutor
    from agent.runner import Runner

    for kind, request in kinds:
        agent.jobs.enqueue(kind, request, now=agent.clock())
    executor = TApiExecutor(agent)
    try:
        runner = Runner(agent.jobs, executor, lease_s=60)
        while runner.run_once() is not None:
            pass
    finally:
        executor.close()


def test_metrics_equal_the_ledger_after_paid_jobs(agent_home_factory):
    """After three paid jobs (and one refused by a budget), /metrics counters equal the ledger's figures."""
    home = agent_home_factory(extra='[[budgets]]\nname = "images"\nlimit_ada = 3\nscope = "route:*images*"\n')
    with home.open() as agent:
        _run_jobs(agent, [("chat", {"message": "one"}), ("chat", {"message": "two"}),
                          ("token-analysis", {"token": "SNEK"}), ("images-generate", {"prompt": "a cat"})])
        server = ConsoleServer(agent, ConsoleSettings(port=0)).start()
        try:
            text = httpx.get(server.url + "/metrics").text
        finally:
            server.stop()
        rows = agent.ledger.rows()
        balance = home.balance()
        counts = agent.jobs.counts()
    m = _samples(text)
    paid = [r for r in rows if r.paid]
    assert len(paid) == 3
    by_route: dict[str, list[int]] = {}
    for r in paid:
        entry = by_route.setdefault(r.route, [0, 0, 0])
        entry[0] += 1
        entry[1] += r.cost_lovelace
        entry[2] += r.fee_lovelace
    for route, (n, cost, fee) in by_route.items():
        labels = (("route", route),)
        assert m[("cardano_agent_paid_payments_total", labels)] == n
        assert m[("cardano_agent_paid_lovelace_total", labels)] == cost
        assert m[("cardano_agent_fees_lovelace_total", labels)] == fee
    assert sum(v for (name, _), v in m.items() if name == "cardano_agent_paid_lovelace_total") \
        == sum(r.cost_lovelace for r in paid)
    for r in rows:
        assert m[("cardano_agent_payments", (("route", r.route), ("state", r.state)))] >= 1
    assert m[("cardano_agent_payment_refusals", (("reason", "budget"),))] == 1
    assert m[("cardano_agent_payment_latency_seconds_count", (("phase", "402_to_proof"),))] == 3
    assert m[("cardano_agent_payment_latency_seconds_count", (("phase", "proof_to_200"),))] == 3
    assert m[("cardano_agent_budget_limit", (("asset", "lovelace"), ("budget", "images")))] == 3_000_000
    assert m[("cardano_agent_budget_spent", (("asset", "lovelace"), ("budget", "images")))] == 0
    assert m[("cardano_agent_jobs", (("state", "done"),))] == counts["done"] == 3
    assert m[("cardano_agent_jobs", (("state", "failed"),))] == counts["failed"] == 1
    assert m[("cardano_agent_queue_depth", ())] == 0
    assert m[("cardano_agent_wallet_balance_lovelace", ())] == balance
    assert m[("cardano_agent_wallet_utxos", ())] >= 1


def test_metrics_without_chain_or_runner_still_parse(tmp_path):
    """Offline, with an empty home: the exposition parses and reports an empty queue."""
    from agent.app import Agent

    (tmp_path / "agent.toml").write_text('[chain]\nnetwork = "devnet"\n')
    runner = RunnerMetrics(clock=lambda: 5.0)
    runner.beat(workers=2)
    runner.error(ConnectionError("refused"))
    with Agent.open(tmp_path, env={}) as agent:
        body, ctype = render(registry_for(agent, runner=runner, chain=False))
    m = _samples(body.decode())
    assert ctype.startswith("text/plain")
    assert m[("cardano_agent_queue_depth", ())] == 0
    assert m[("cardano_agent_runner_workers", ())] == 2
    assert m[("cardano_agent_runner_heartbeat_timestamp_seconds", ())] == 5.0
    assert m[("cardano_agent_errors_total", (("kind", "api"),))] == 1


def test_latency_buckets_are_cumulative():
    """Buckets count values at or below each bound; +Inf counts all; the sum adds them."""
    buckets, total = latency_buckets([0.05, 0.3, 7.0, 1000.0], (0.1, 1.0, 10.0))
    assert buckets == [("0.1", 1), ("1.0", 2), ("10.0", 3), ("+Inf", 4)]
    assert total == 1007.35


def test_error_kinds():
    """Job errors are told apart by type for errors_total{kind}."""
    from agent.errors import BudgetExceededError, PolicyError, StoreError, TransientApiError

    assert error_kind(PolicyError("x", reason="r")) == "policy"
    assert error_kind(StoreError("locked")) == "store"
    assert error_kind(TransientApiError("503", status=503)) == "api"
    assert error_kind(RuntimeError("?")) == "other"
    assert error_kind(BudgetExceededError("daily", limit=1, spent=1, requested=1)) == "budget"


def test_runner_metrics_count_outcomes_and_errors_by_kind(tmp_path):
    """A runner whose executor is instrumented: one job done, one failed by a policy refusal; /metrics says so."""
    from agent.app import Agent
    from agent.errors import PolicyError
    from agent.runner import JobOutcome, Runner

    class Executor:
        def execute(self, job, *, worker_id):
            if job.request["message"] == "refuse":
                raise PolicyError("above max_per_call_ada", reason="max_per_call")
            return JobOutcome({"reply": "ok"})

    (tmp_path / "agent.toml").write_text('[chain]\nnetwork = "devnet"\n')
    metrics = RunnerMetrics(clock=lambda: 42.0)
    with Agent.open(tmp_path, env={}) as agent:
        agent.enqueue("chat", {"message": "fine"})
        agent.enqueue("chat", {"message": "refuse"})
        runner = Runner(agent.jobs, metrics.instrument(Executor()), lease_s=60)
        runner.run(until_idle=True, poll_s=0.01, on_progress=metrics.wrap_progress(lambda c, s: None, workers=1))
        m = _samples(render(registry_for(agent, runner=metrics, chain=False))[0].decode())
    assert m[("cardano_agent_runner_jobs_total", (("outcome", "done"),))] == 1
    assert m[("cardano_agent_runner_jobs_total", (("outcome", "failed"),))] == 1
    assert m[("cardano_agent_errors_total", (("kind", "policy"),))] == 1
    assert m[("cardano_agent_runner_heartbeat_timestamp_seconds", ())] == 42.0
    assert m[("cardano_agent_jobs", (("state", "failed"),))] == 1


def test_worker_liveness_comes_from_process_leases(tmp_path):
    """A `run` process on another host with a live lease shows its workers; one whose lease ran out does not."""
    from agent.app import Agent
    from agent.workers import ProcessRegistry

    (tmp_path / "agent.toml").write_text('[chain]\nnetwork = "devnet"\n')
    with Agent.open(tmp_path, env={}, clock=lambda: 1000.0) as agent:
        registry = ProcessRegistry(agent.db, host="this-host")
        registry.register("other-host:41", workers=4, now=990.0, lease_s=30)
        registry.register("gone-host:7", workers=2, now=900.0, lease_s=30)
        m = _samples(render(registry_for(agent, chain=False))[0].decode())
    assert m[("cardano_agent_workers_live", (("host", "other-host"), ("process", "other-host:41")))] == 4
    assert m[("cardano_agent_process_heartbeat_timestamp_seconds",
              (("host", "other-host"), ("process", "other-host:41")))] == 990.0
    assert not [k for k in m if k[0] == "cardano_agent_workers_live" and ("host", "gone-host") in k[1]]
