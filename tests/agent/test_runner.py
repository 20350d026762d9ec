"""The runner: one step at a time with an injected clock, retries by error type, workers, leases."""

from __future__ import annotations

import random
import threading

import pytest

from agent.errors import PolicyError, TransientApiError
from agent.queue import MemoryJobStore
from agent.runner import Backoff, JobOutcome, Runner, is_transient
from wallets.errors import ChainUnavailableError, InsufficientFundsError


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedExecutor:
    """Executes jobs by a script: a list of exceptions (raised in turn) then success."""

    def __init__(self, script: dict | None = None) -> None:
        self.script = script or {}
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def execute(self, job, *, worker_id):
        with self.lock:
            self.calls.append(job.id)
            errors = self.script.get(job.kind, [])
            if errors:
                raise errors.pop(0)
        return JobOutcome({"ok": job.id}, f"/results/{job.id}.json")


def enqueue(store, n=1, kind="chat", now=1_000_000.0, **kw):
    return [store.enqueue(kind, {"message": f"m{i}"}, now=now, **kw) for i in range(n)]


def test_run_once_completes_a_job_and_records_its_result():
    """A successful job ends `done` with its result summary and path."""
    store, clock = MemoryJobStore(), Clock()
    [job] = enqueue(store)
    runner = Runner(store, ScriptedExecutor(), clock=clock, lease_s=0)
    assert runner.run_once().id == job.id
    done = store.get(job.id)
    assert done.state == "done" and done.result == {"ok": job.id} and done.result_path.endswith(f"{job.id}.json")
    assert runner.run_once() is None


def test_transient_errors_retry_with_backoff_then_succeed():
    """A 5xx is retried later (not before its backoff), and the job then completes."""
    store, clock = MemoryJobStore(), Clock()
    [job] = enqueue(store)
    executor = ScriptedExecutor({"chat": [TransientApiError("503", status=503)]})
    runner = Runner(store, executor, clock=clock, backoff=Backoff(base_s=10, max_s=10), rng=random.Random(1), lease_s=0)
    runner.run_once()
    waiting = store.get(job.id)
    assert waiting.state == "queued" and waiting.run_at >= clock.now + 5 and "503" in waiting.last_error
    assert runner.run_once() is None  # not due yet
    clock.now = waiting.run_at
    runner.run_once()
    assert store.get(job.id).state == "done"
    assert runner.stats.retried == 1 and runner.stats.done == 1


def test_final_errors_fail_at_once_with_a_one_line_reason():
    """A policy refusal is not retried: the job is `failed` with the first line of its message."""
    store, clock = MemoryJobStore(), Clock()
    [job] = enqueue(store)
    refusal = PolicyError("invoice asks 10000 ADA,\nover the maximum", reason="over_max_per_call")
    runner = Runner(store, ScriptedExecutor({"chat": [refusal]}), clock=clock, lease_s=0)
    runner.run_once()
    failed = store.get(job.id)
    assert failed.state == "failed"
    assert failed.last_error == "invoice asks 10000 ADA,"  # words for people, no Python class name
    assert runner.stats.failed == 1


def test_transient_errors_stop_after_max_attempts():
    """After max_attempts transient failures (5xx) the job is failed, not retried forever."""
    store, clock = MemoryJobStore(), Clock()
    [job] = enqueue(store, max_attempts=2)
    errors = [TransientApiError("HTTP 503", status=503) for _ in range(3)]
    runner = Runner(store, ScriptedExecutor({"chat": errors}), clock=clock, backoff=Backoff(1, 1), lease_s=0)
    for _ in range(4):
        clock.now += 10
        runner.run_once()
    assert store.get(job.id).state == "failed"
    assert store.get(job.id).attempts == 2


def test_a_chain_outage_is_a_pause_not_a_failure():
    """With the chain down for 20 minutes a job uses none of its attempts, stays queued with
    "waiting for the chain at <url> since <start>", waits longer each time (never over 5 minutes),
    and completes once the chain is back."""
    store, clock = MemoryJobStore(), Clock()
    [job] = enqueue(store, max_attempts=2)
    down = [ChainUnavailableError("Ogmios at ws://127.0.0.1:1337 unavailable after 3 attempts: refused")
            for _ in range(40)]
    executor = ScriptedExecutor({"chat": down})
    runner = Runner(store, executor, clock=clock, rng=random.Random(3), lease_s=0)
    start = clock.now
    waits = []
    while clock.now - start < 20 * 60:
        assert runner.run_once() is not None
        paused = store.get(job.id)
        assert paused.state == "queued" and paused.attempts == 0
        assert paused.last_error.startswith("waiting for the chain at ws://127.0.0.1:1337 since 1970-01-12T13:46:40")
        waits.append(paused.run_at - clock.now)
        clock.now = paused.run_at
    assert max(waits) <= 300 and waits[-1] > 60 and waits[0] <= 2
    assert len(waits) < 40  # backed off: not one try every few seconds
    executor.script["chat"].clear()
    runner.run_once()
    assert store.get(job.id).state == "done"
    assert runner.stats.failed == 0


def test_a_full_mempool_pauses_the_job_saying_what_it_waits_for():
    """A payment held past the submit timeout by a full mempool: the job keeps its place (queued, no
    attempt used) and its state says it waits for room in the mempool, not that it failed."""
    from wallets.errors import MempoolFullError

    store, clock = MemoryJobStore(), Clock()
    [job] = enqueue(store, max_attempts=1)
    full = MempoolFullError("Ogmios at ws://127.0.0.1:1337 held the submitTransaction for 180s: the node's "
                            "mempool had no room", accepted_unknown=True)
    runner = Runner(store, ScriptedExecutor({"chat": [full]}), clock=clock, lease_s=0)
    runner.run_once()
    paused = store.get(job.id)
    assert paused.state == "queued" and paused.attempts == 0
    assert paused.last_error.startswith("waiting for room in the mempool of the chain at ws://127.0.0.1:1337 since ")
    assert any("waits for room in the mempool" in note for note in runner.stats.notes)
    clock.now = paused.run_at
    runner.run_once()
    assert store.get(job.id).state == "done"


def test_an_api_outage_names_its_url_and_waits():
    """An unreachable API (a network failure, not an HTTP status) pauses the job the same way."""
    store, clock = MemoryJobStore(), Clock()
    [job] = enqueue(store)
    gone = TransientApiError("POST /chat: cannot reach the API at http://127.0.0.1:9/ (connection refused or "
                             "host unreachable) after 4 attempts (request_id x)", status=0)
    runner = Runner(store, ScriptedExecutor({"chat": [gone]}), clock=clock, lease_s=0)
    runner.run_once()
    paused = store.get(job.id)
    assert paused.state == "queued" and paused.attempts == 0
    assert paused.last_error.startswith("waiting for the API at http://127.0.0.1:9/ since ")
    assert "Error" not in paused.last_error


def test_a_dead_workers_job_is_taken_again_after_its_lease():
    """A job claimed by a worker that died is claimed again once its lease has expired."""
    store, clock = MemoryJobStore(), Clock()
    [job] = enqueue(store)
    assert store.claim("dead-worker", now=clock.now, lease_s=60).id == job.id
    runner = Runner(store, ScriptedExecutor(), clock=clock, lease_s=0)
    assert runner.run_once() is None
    clock.now += 61
    assert runner.run_once().id == job.id
    assert store.get(job.id).state == "done" and store.get(job.id).attempts == 2


def test_workers_drain_the_queue_until_idle():
    """`run(until_idle=True)` with 4 workers runs every job exactly once, then returns."""
    store = MemoryJobStore()
    jobs = enqueue(store, 40, now=0.0)
    executor = ScriptedExecutor()
    stats = Runner(store, executor, workers=4, lease_s=60).run(until_idle=True, poll_s=0.01)
    assert stats.done == 40
    assert sorted(executor.calls) == sorted(j.id for j in jobs)
    assert store.counts()["done"] == 40


def test_stop_lets_workers_finish_and_exit():
    """stop() ends run() without waiting for the queue to empty."""
    store = MemoryJobStore()
    runner = Runner(store, ScriptedExecutor(), workers=2, lease_s=60)
    threading.Timer(0.05, runner.stop).start()
    runner.run(until_idle=False, poll_s=0.01)
    assert runner.stopping


def test_error_classification():
    """Chain, 5xx and database failures are transient; refusals and missing funds are final."""
    assert is_transient(TransientApiError("x", status=502))
    assert is_transient(ChainUnavailableError("x"))
    assert not is_transient(PolicyError("x", reason="r"))
    assert not is_transient(InsufficientFundsError("x"))


def test_runner_refuses_zero_workers():
    """At least one worker is required."""
    with pytest.raises(Exception, match="at least 1"):
        Runner(MemoryJobStore(), ScriptedExecutor(), workers=0)


def test_leases_of_dead_local_processes_are_taken_back_at_once():
    """A job leased by a process of this host that no longer exists is claimable without waiting."""
    import socket
    import subprocess
    import sys

    from agent.runner import lease_owner_is_dead

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_owner = f"{socket.gethostname()}:{gone.stdout.strip()}-0"
    store, clock = MemoryJobStore(), Clock()
    [job] = enqueue(store)
    store.claim(dead_owner, now=clock.now, lease_s=3600)
    other = store.enqueue("chat", {"message": "x"}, now=clock.now)
    store.claim(f"elsewhere:{1}-0", now=clock.now, lease_s=3600)
    assert store.expire_leases(lease_owner_is_dead, now=clock.now) == 1
    runner = Runner(store, ScriptedExecutor(), clock=clock, lease_s=0)
    assert runner.run_once().id == job.id
    assert store.get(other.id).state == "running"
    assert not lease_owner_is_dead(f"{socket.gethostname()}:{__import__('os').getpid()}-0")


def test_a_locked_database_makes_the_runner_wait_and_loses_nothing(tmp_path, monkeypatch):
    """While another process holds the database locked, a step fails retryably; afterwards the job runs."""
    import sqlite3

    from agent import store as store_module
    from agent.errors import StoreError
    from agent.queue import SqliteJobStore
    from agent.store import Database

    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 50)
    db = Database(tmp_path / "agent.db")
    db.migrate()
    jobs = SqliteJobStore(db)
    job = jobs.enqueue("chat", {"message": "hi"}, now=0)
    runner = Runner(jobs, ScriptedExecutor(), clock=Clock(10.0), lease_s=0)
    locker = sqlite3.connect(tmp_path / "agent.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError):
            runner.run_once()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert jobs.get(job.id).state == "queued"
    assert runner.run_once().id == job.id
    assert jobs.get(job.id).state == "done"


@pytest.mark.parametrize("script", [{}, {"chat": [PolicyError("no", reason="x")]},
                                    {"chat": [TransientApiError("5xx", status=503)]}])
def test_a_worker_whose_lease_was_taken_never_records_the_jobs_outcome(script):
    """A stalled worker (its lease ran out; another host's worker took the job) neither completes
    nor fails the job: it stays with the worker that holds it."""
    store = MemoryJobStore()
    [job] = enqueue(store)
    stale = store.claim("hostA:1-0", now=1_000_000.0, lease_s=10)
    taken = store.claim("hostB:2-0", now=1_000_011.0, lease_s=60)
    assert taken.id == stale.id
    runner = Runner(store, ScriptedExecutor(script), clock=Clock(1_000_012.0), lease_s=0)
    runner._execute(stale, "hostA:1-0")
    now = store.get(job.id)
    assert (now.state, now.lease_owner) == ("running", "hostB:2-0")
    assert runner.stats.done == runner.stats.failed == runner.stats.retried == 0


def test_one_lease_keeper_renews_every_running_job_and_none_after_it_ends():
    """Leases of jobs in hand are renewed by one thread for the runner, never after a job's outcome.

    Before, every job started and joined a heartbeat thread of its own: a thread per call.
    """
    store, clock = MemoryJobStore(), Clock()
    jobs = enqueue(store, 3)
    inside = threading.Barrier(4)
    leave = threading.Event()
    seen: dict[int, dict] = {}

    class Holding:
        def execute(self, job, *, worker_id):
            inside.wait(30)
            assert leave.wait(30)
            return JobOutcome({"ok": job.id}, None)

    runner = Runner(store, Holding(), clock=clock, lease_s=60, workers=3)
    threads_before = threading.active_count()
    workers = [threading.Thread(target=runner.run_once, kwargs={"worker_id": f"w{n}"}) for n in range(3)]
    for w in workers:
        w.start()
    inside.wait(30)
    held = runner.leases.held()
    assert sorted(held) == sorted(j.id for j in jobs)
    assert threading.active_count() == threads_before + 3 + 1  # three workers, one lease keeper
    clock.now += 30
    assert runner.leases.beat_once() == 3
    for job_id, worker_id in held.items():
        seen[job_id] = {"owner": store.get(job_id).lease_owner, "until": store.get(job_id).lease_expires_at}
        assert seen[job_id] == {"owner": worker_id, "until": clock.now + 60}
    leave.set()
    for w in workers:
        w.join(30)
    assert runner.leases.held() == {} and runner.leases.beat_once() == 0
    assert {store.get(j.id).state for j in jobs} == {"done"}


def test_a_payment_whose_fate_is_unknown_waits_without_using_attempts():
    """PaymentInFlightError (a signed payment the chain cannot yet judge) is a wait, not a failed try.

    Before, it counted against the job's attempts: after five quick retries the job failed
    while its payment could still land (paid, and the job lost). The fate is decided by the
    chain within the payment's TTL; the job waits for it, saying so, however long that takes.
    """
    from agent.errors import PaymentInFlightError

    store, clock = MemoryJobStore(), Clock()
    [job] = enqueue(store, max_attempts=3)
    in_flight = [PaymentInFlightError(f"payment 7 for invoice inv-1 is signed; whether it landed is not known ({n})")
                 for n in range(8)]
    runner = Runner(store, ScriptedExecutor({"chat": in_flight}), clock=clock, lease_s=0)
    for n in range(8):
        assert runner.run_once().id == job.id
        waiting = store.get(job.id)
        assert waiting.state == "queued" and waiting.attempts < 3, (n, waiting)
        assert "whether it landed is not known" in waiting.last_error
        assert waiting.run_at > clock.now
        assert runner.run_once() is None  # not before its time
        clock.now = waiting.run_at
    assert runner.run_once().id == job.id
    assert store.get(job.id).state == "done"
    assert runner.stats.failed == 0
