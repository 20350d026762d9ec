"""The job store contract, run against both backends (SQLite and memory), like huey's StorageTests."""

from __future__ import annotations

import threading

import pytest

from agent.errors import JobError
from agent.queue import LeaseLostError, MemoryJobStore, SqliteJobStore
from agent.store import Database
from tests.fixtures.postgres import open_db

T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryJobStore()
        return
    for db in open_db(request, request.param, tmp_path):
        yield SqliteJobStore(db)


def test_enqueue_then_get_round_trips(store):
    """A new job is queued with its request, tags and budget, due now, with no attempts."""
    job = store.enqueue("chat", {"message": "hi", "n": [1, 2]}, tags=("a", "b"), budget="daily", now=T0)
    got = store.get(job.id)
    assert got == job
    assert (got.kind, got.request, got.tags, got.budget) == ("chat", {"message": "hi", "n": [1, 2]}, ("a", "b"), "daily")
    assert (got.state, got.attempts, got.max_attempts, got.run_at) == ("queued", 0, 5, T0)


def test_claim_takes_oldest_due_job_and_sets_lease(store):
    """claim returns the earliest due queued job, running, attempt 1, leased to the worker."""
    later = store.enqueue("chat", {"i": 1}, run_at=T0 + 100, now=T0)
    first = store.enqueue("chat", {"i": 2}, run_at=T0 - 5, now=T0)
    second = store.enqueue("chat", {"i": 3}, now=T0)
    job = store.claim("w1", now=T0, lease_s=300)
    assert job.id == first.id
    assert (job.state, job.attempts, job.lease_owner, job.lease_expires_at) == ("running", 1, "w1", T0 + 300)
    assert store.claim("w1", now=T0, lease_s=300).id == second.id
    assert store.claim("w1", now=T0, lease_s=300) is None
    assert store.claim("w1", now=T0 + 100, lease_s=300).id == later.id


def test_claim_on_empty_store_returns_none(store):
    """An empty store has nothing to claim and no next run time."""
    assert store.claim("w", now=T0, lease_s=10) is None
    assert store.next_run_at() is None


def test_unique_key_dedupes_enqueue(store):
    """Enqueueing an existing unique_key returns the existing job, never a second one."""
    a = store.enqueue("report", {"x": 1}, unique_key="schedule:daily:2026-11-29T06:00", now=T0)
    b = store.enqueue("report", {"x": 2}, unique_key="schedule:daily:2026-11-29T06:00", now=T0 + 1)
    assert a.id == b.id and b.request == {"x": 1}
    assert sum(store.counts().values()) == 1


def test_unique_key_holds_after_the_job_finished(store):
    """A finished job still owns its unique_key: the same firing is never run twice."""
    a = store.enqueue("report", {}, unique_key="k", now=T0)
    store.claim("w", now=T0, lease_s=10)
    store.complete(a.id, result={"ok": True}, result_path=None, now=T0 + 1)
    assert store.enqueue("report", {}, unique_key="k", now=T0 + 2).state == "done"


def test_unique_key_dedupes_across_racing_threads(store):
    """Sixteen threads enqueueing one unique_key at once create exactly one job."""
    ids: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait(timeout=10)
        job = store.enqueue("report", {}, unique_key="schedule:daily:1", now=T0)
        with lock:
            ids.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(ids) == 16 and len(set(ids)) == 1
    assert store.counts()["queued"] == 1


def test_request_and_result_read_back_as_json(store):
    """What enqueue and complete return equals what get reads back; non-JSON values are refused."""
    job = store.enqueue("chat", {"pair": (1, 2)}, tags="solo", now=T0)
    assert job == store.get(job.id) and job.request == {"pair": [1, 2]} and job.tags == ("solo",)
    with pytest.raises(JobError):
        store.enqueue("chat", {"when": object()}, now=T0)
    store.claim("w", now=T0, lease_s=10)
    with pytest.raises(JobError):
        store.complete(job.id, result={"x": object()}, result_path=None, now=T0)
    done = store.complete(job.id, result={"t": (1,)}, result_path=None, now=T0)
    assert done == store.get(job.id) and done.result == {"t": [1]}


def test_expired_lease_is_taken_over(store):
    """A job whose worker died is claimed again after its lease expires, attempts counted."""
    job = store.enqueue("chat", {}, now=T0)
    store.claim("dead", now=T0, lease_s=30)
    store.set_state(job.id, "paying", worker_id="dead", now=T0 + 1)
    assert store.claim("w2", now=T0 + 29, lease_s=30) is None
    taken = store.claim("w2", now=T0 + 30, lease_s=30)
    assert (taken.id, taken.state, taken.attempts, taken.lease_owner) == (job.id, "running", 2, "w2")


def test_takeover_never_counts_past_max_attempts(store):
    """A job resumed after its lease expired on its last attempt stays at max_attempts (was 6 of 5)."""
    job = store.enqueue("chat", {}, max_attempts=2, now=T0)
    store.claim("w1", now=T0, lease_s=10)
    store.fail(job.id, "timeout", now=T0 + 1, retry_at=T0 + 1)
    assert store.claim("w2", now=T0 + 1, lease_s=10).attempts == 2
    for n, worker in enumerate(("dead1", "dead2", "w3")):
        taken = store.claim(worker, now=T0 + 11 + 10 * n, lease_s=10)
        assert (taken.id, taken.lease_owner, taken.attempts, taken.max_attempts) == (job.id, worker, 2, 2)
    assert store.get(job.id).attempts == 2
    # Its last attempt failing still ends the job, even when a retry is asked for.
    assert store.fail(job.id, "timeout", now=T0 + 40, retry_at=T0 + 41, worker_id="w3").state == "failed"


def test_heartbeat_extends_lease(store):
    """A heartbeat pushes the lease forward so the job is not taken over."""
    job = store.enqueue("chat", {}, now=T0)
    store.claim("w1", now=T0, lease_s=30)
    beat = store.heartbeat(job.id, "w1", now=T0 + 20, lease_s=30)
    assert beat.lease_expires_at == T0 + 50
    assert store.claim("w2", now=T0 + 40, lease_s=30) is None


def test_stale_worker_loses_lease(store):
    """After a takeover the old worker's heartbeat, state change and completion are refused."""
    job = store.enqueue("chat", {}, now=T0)
    store.claim("old", now=T0, lease_s=10)
    store.claim("new", now=T0 + 10, lease_s=10)
    with pytest.raises(LeaseLostError):
        store.heartbeat(job.id, "old", now=T0 + 11, lease_s=10)
    with pytest.raises(LeaseLostError):
        store.set_state(job.id, "paying", worker_id="old", now=T0 + 11)
    with pytest.raises(LeaseLostError):
        store.complete(job.id, result={}, result_path=None, now=T0 + 11, worker_id="old")
    assert store.get(job.id).lease_owner == "new"


def test_state_path_to_done(store):
    """running → paying → awaiting_settlement → done keeps the result and clears the lease."""
    job = store.enqueue("chat", {}, now=T0)
    store.claim("w", now=T0, lease_s=10)
    assert store.set_state(job.id, "paying", worker_id="w", now=T0 + 1).state == "paying"
    got = store.set_state(job.id, "awaiting_settlement", now=T0 + 2, request_id="req-1")
    assert (got.state, got.request_id) == ("awaiting_settlement", "req-1")
    done = store.complete(job.id, result={"reply": "ok"}, result_path="reports/x.json", now=T0 + 3)
    assert (done.state, done.result, done.result_path, done.lease_owner) == ("done", {"reply": "ok"}, "reports/x.json", None)
    assert store.get(job.id) == done


def test_set_state_refuses_terminal_targets_and_unclaimed_jobs(store):
    """set_state only moves between active states, and only for a claimed job."""
    job = store.enqueue("chat", {}, now=T0)
    with pytest.raises(JobError):
        store.set_state(job.id, "paying", now=T0)
    store.claim("w", now=T0, lease_s=10)
    with pytest.raises(JobError):
        store.set_state(job.id, "done", now=T0)


def test_fail_with_retry_requeues_later(store):
    """fail(retry_at=t) puts the job back in the queue, due at t, with the error kept."""
    job = store.enqueue("chat", {}, now=T0)
    store.claim("w", now=T0, lease_s=10)
    failed = store.fail(job.id, "timeout", now=T0 + 1, retry_at=T0 + 60)
    assert (failed.state, failed.run_at, failed.last_error, failed.lease_owner) == ("queued", T0 + 60, "timeout", None)
    assert store.claim("w", now=T0 + 59, lease_s=10) is None
    assert store.claim("w", now=T0 + 60, lease_s=10).attempts == 2
    assert store.next_run_at() == T0 + 70


def test_fail_without_retry_is_final(store):
    """fail(retry_at=None) marks the job failed for good."""
    job = store.enqueue("chat", {}, now=T0)
    store.claim("w", now=T0, lease_s=10)
    assert store.fail(job.id, "bad request", now=T0 + 1, retry_at=None).state == "failed"
    assert store.claim("w", now=T0 + 1000, lease_s=10) is None


def test_fail_after_max_attempts_is_final(store):
    """A retry asked for after the last allowed attempt still ends the job as failed."""
    job = store.enqueue("chat", {}, max_attempts=2, now=T0)
    store.claim("w", now=T0, lease_s=10)
    store.fail(job.id, "e1", now=T0, retry_at=T0)
    store.claim("w", now=T0, lease_s=10)
    assert store.fail(job.id, "e2", now=T0, retry_at=T0).state == "failed"


def test_cancel_rules(store):
    """Queued and failed jobs cancel; a running job refuses; cancelling twice is harmless."""
    a = store.enqueue("chat", {}, now=T0)
    b = store.enqueue("chat", {}, now=T0 + 1)
    assert store.cancel(a.id, T0 + 2).state == "cancelled"
    assert store.cancel(a.id, T0 + 2).state == "cancelled"
    store.claim("w", now=T0 + 2, lease_s=10)
    with pytest.raises(JobError):
        store.cancel(b.id, T0 + 3)
    store.fail(b.id, "x", now=T0 + 3, retry_at=None)
    assert store.cancel(b.id, T0 + 4).state == "cancelled"
    assert store.claim("w", now=T0 + 100, lease_s=10) is None


def test_retry_requeues_failed_and_cancelled_with_attempts_reset(store):
    """retry puts a failed or cancelled job back in the queue with attempts reset; others refuse."""
    a = store.enqueue("chat", {}, now=T0)
    store.claim("w", now=T0, lease_s=10)
    store.fail(a.id, "boom", now=T0, retry_at=None)
    again = store.retry(a.id, T0 + 5)
    assert (again.state, again.attempts, again.run_at) == ("queued", 0, T0 + 5)
    with pytest.raises(JobError):
        store.retry(a.id, T0 + 6)
    b = store.enqueue("chat", {}, now=T0)
    store.cancel(b.id, T0)
    assert store.retry(b.id, T0 + 7).state == "queued"


def test_done_job_cannot_fail_complete_or_cancel(store):
    """A finished job refuses fail, complete, cancel and retry."""
    job = store.enqueue("chat", {}, now=T0)
    store.claim("w", now=T0, lease_s=10)
    store.complete(job.id, result=None, result_path=None, now=T0)
    for move in (lambda: store.fail(job.id, "x", now=T0, retry_at=None),
                 lambda: store.complete(job.id, result=None, result_path=None, now=T0),
                 lambda: store.cancel(job.id, T0), lambda: store.retry(job.id, T0)):
        with pytest.raises(JobError):
            move()


def test_unknown_job_raises_job_error(store):
    """Looking up or changing a job that does not exist raises JobError."""
    with pytest.raises(JobError):
        store.get(999)
    with pytest.raises(JobError):
        store.cancel(999, T0)


def test_bad_enqueue_is_refused(store):
    """A job without a kind or with no allowed attempt is refused."""
    with pytest.raises(JobError):
        store.enqueue("", {}, now=T0)
    with pytest.raises(JobError):
        store.enqueue("chat", {}, max_attempts=0, now=T0)


def test_list_filters_by_state_and_tag_newest_first(store):
    """list filters by state and tag, newest first, and honours the limit."""
    a = store.enqueue("chat", {}, tags=("reports",), now=T0)
    b = store.enqueue("chat", {}, tags=("bots", "reports"), now=T0)
    c = store.enqueue("chat", {}, now=T0)
    store.cancel(c.id, T0)
    assert [j.id for j in store.list()] == [c.id, b.id, a.id]
    assert [j.id for j in store.list(tag="reports")] == [b.id, a.id]
    assert [j.id for j in store.list(state="cancelled")] == [c.id]
    assert [j.id for j in store.list(state="queued", tag="bots")] == [b.id]
    assert len(store.list(limit=1)) == 1


def test_counts_include_every_state(store):
    """counts reports every state, zero included."""
    store.enqueue("chat", {}, now=T0)
    store.enqueue("chat", {}, now=T0)
    store.claim("w", now=T0, lease_s=5)
    counts = store.counts()
    assert counts["queued"] == 1 and counts["running"] == 1 and counts["done"] == 0
    assert set(counts) == {"queued", "running", "paying", "awaiting_settlement", "awaiting_approval",
                           "awaiting_budget", "done", "failed", "cancelled"}


def test_next_run_at_is_earliest_due_or_lease_expiry(store):
    """next_run_at is the earliest queued run time or active lease expiry."""
    store.enqueue("chat", {}, run_at=T0 + 50, now=T0)
    assert store.next_run_at() == T0 + 50
    store.enqueue("chat", {}, run_at=T0 + 10, now=T0)
    store.claim("w", now=T0 + 10, lease_s=5)
    assert store.next_run_at() == T0 + 15


def test_concurrent_claims_never_share_a_job(store):
    """Eight threads claiming 200 jobs each get distinct jobs, and all are claimed once."""
    for i in range(200):
        store.enqueue("chat", {"i": i}, now=T0)
    got: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait(timeout=10)
        while True:
            job = store.claim(f"w{n}", now=T0, lease_s=60)
            if job is None:
                return
            with lock:
                got.append(job.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(got) == sorted(set(got)) and len(got) == 200


def test_ten_thousand_jobs_claim_in_due_order(store):
    """With 10,000 queued jobs, 200 claims come in due order (speed is the bench's; the index test below)."""
    if isinstance(store, SqliteJobStore):
        # One statement on either engine (10,000 round trips cost minutes on a loaded machine).
        store.db.execute(
            "INSERT INTO jobs (kind, request, tags, state, attempts, max_attempts, run_at, created_at,"
            " updated_at) WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999)"
            " SELECT 'chat', '{\"i\": ' || i || '}', '[]', 'queued', 0, 5, ? + (i % 100), ?, ? FROM n",
            (T0, T0, T0))
    else:
        for i in range(10_000):
            store.enqueue("chat", {"i": i}, run_at=T0 + (i % 100), now=T0)
    claimed = [store.claim("w", now=T0 + 1000, lease_s=60) for _ in range(200)]
    assert all(j is not None for j in claimed)
    assert [j.run_at for j in claimed] == sorted(j.run_at for j in claimed)


def test_sqlite_claim_uses_the_due_index(tmp_path):
    """The queued-job claim query is answered from the (state, run_at) index, not a table scan."""
    db = Database(tmp_path / "agent.db")
    db.migrate()
    plan = " ".join(r[3] for r in db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE state = 'queued' AND run_at <= ?"
        " ORDER BY run_at, id LIMIT 1", (T0,)))
    assert "jobs_due" in plan


def test_sqlite_jobs_survive_reopen(tmp_path):
    """Jobs written by one process are read back by another opening the same file."""
    db = Database(tmp_path / "agent.db")
    db.migrate()
    job = SqliteJobStore(db).enqueue("chat", {"m": "x"}, unique_key="u", now=T0)
    db.close()
    again = Database(tmp_path / "agent.db")
    again.migrate()
    assert SqliteJobStore(again).get(job.id) == job


def _enqueue_firings(path: str) -> list[int]:
    """Worker process: enqueue the same 20 scheduled firings and return the job ids it got."""
    db = Database(path)
    store = SqliteJobStore(db)
    ids = [store.enqueue("report", {}, unique_key=f"schedule:daily:{n}", now=T0).id for n in range(20)]
    db.close()
    return ids


def test_unique_key_dedupes_across_processes(tmp_path):
    """Four runner processes on one home enqueueing the same firings create each job once."""
    import multiprocessing

    db = Database(tmp_path / "agent.db")
    db.migrate()
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_enqueue_firings, [db.path] * 4)
    assert all(r == results[0] for r in results)
    assert SqliteJobStore(db).counts()["queued"] == 20
    db.close()


def test_held_transitions_refuse_what_the_rules_refuse(store):
    """set_state, park and complete by the lease holder take one guarded write on SQL stores; each
    refusal is the rules' own (a stale worker, a finished or unknown job, a result JSON cannot
    hold) and leaves the job as it was."""
    job = store.enqueue("chat", {}, now=T0)
    store.claim("old", now=T0, lease_s=10)
    store.claim("new", now=T0 + 10, lease_s=10)
    with pytest.raises(LeaseLostError):
        store.park(job.id, retry_at=T0 + 60, now=T0 + 11, worker_id="old")
    with pytest.raises(JobError):
        store.complete(job.id, result={"bad": object()}, result_path=None, now=T0 + 11, worker_id="new")
    assert store.get(job.id).state == "running" and store.get(job.id).lease_owner == "new"
    parked = store.park(job.id, retry_at=T0 + 60, now=T0 + 12, worker_id="new")
    assert (parked.state, parked.run_at, parked.lease_owner) == ("awaiting_settlement", T0 + 60, None)
    with pytest.raises(LeaseLostError):  # parked: nobody holds it
        store.set_state(job.id, "paying", worker_id="new", now=T0 + 13)
    resumed = store.claim("w", now=T0 + 60, lease_s=10)
    assert resumed.id == job.id and resumed.request_id is None
    kept = store.set_state(job.id, "awaiting_settlement", worker_id="w", now=T0 + 61, request_id="r-1")
    assert store.set_state(job.id, "paying", worker_id="w", now=T0 + 62).request_id == kept.request_id == "r-1"
    done = store.complete(job.id, result={"n": 1}, result_path=None, now=T0 + 63, worker_id="w")
    assert (done.state, done.result, done.lease_owner, done.lease_expires_at) == ("done", {"n": 1}, None, None)
    for change in (lambda: store.set_state(job.id, "paying", now=T0 + 64),
                   lambda: store.park(job.id, retry_at=T0 + 70, now=T0 + 64),
                   lambda: store.complete(job.id, result=None, result_path=None, now=T0 + 64)):
        with pytest.raises(JobError):
            change()
    assert store.get(job.id) == done
    for change in (lambda: store.set_state(999, "paying", now=T0), lambda: store.park(999, retry_at=T0, now=T0),
                   lambda: store.complete(999, result=None, result_path=None, now=T0)):
        with pytest.raises(JobError):
            change()


def test_a_held_transition_is_one_statement_on_sqlite(tmp_path):
    """A paid call moves its job six times; each is one UPDATE, not a locked read and a rewrite of every column."""
    db = Database(tmp_path / "agent.db")
    db.migrate()
    store = SqliteJobStore(db)
    job = store.enqueue("chat", {"message": "x" * 1000}, now=T0)
    store.claim("w", now=T0, lease_s=10)
    statements: list[str] = []
    db.connection().set_trace_callback(statements.append)
    store.set_state(job.id, "paying", worker_id="w", now=T0 + 1, request_id="r")
    store.park(job.id, retry_at=T0 + 5, now=T0 + 2, worker_id="w")
    db.connection().set_trace_callback(None)
    assert len(statements) == 2 and all(s.startswith("UPDATE jobs SET state") for s in statements), statements
    db.close()
