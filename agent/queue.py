"""The job store: jobs the agent runs, with atomic claims and leases that outlive dead workers.

States::

    queued ──claim──► running ◄──► paying ◄──► awaiting_settlement ──complete──► done
      ▲                 │  (any active state)                     └──fail──────► failed
      └──fail(retry_at)─┘                                                        │
    queued / failed ──cancel──► cancelled;   failed / cancelled ──retry──► queued ◄┘

    (any active state) ──park(retry_at)──► awaiting_settlement, no lease ──claim──► (resumed)

A *parked* job (``awaiting_settlement`` without a lease) has sent its payment and waits for
it to settle without holding a worker: it is claimed again once ``run_at`` comes (or
:meth:`JobStore.wake_parked` makes it due at a new block), keeps its state and ``request_id``
when claimed, and such a claim is not a new attempt.

    active ──wait──► awaiting_approval  (a human must approve; ``release`` queues it again)
    active ──wait──► awaiting_budget    (claimed again once its ``run_at``, when the window frees)
    active ──wait──► queued             (the chain or the API is down: a pause, not a failed try)

Waiting never uses up an attempt: ``wait`` gives back the attempt its claim counted.

A claimed job carries a lease (``lease_owner``, ``lease_expires_at``). A worker that dies
leaves its lease to expire; :meth:`JobStore.claim` then hands the job to another worker.
Time is always a ``now`` parameter (epoch seconds). Two backends share one contract:
:class:`SqlJobStore` (the agent's, on SQLite or PostgreSQL) and :class:`MemoryJobStore` (tests, embedding).
"""

from __future__ import annotations

import abc

import builtins
import json
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping, Protocol

from agent.errors import JobError, StoreError
from agent.store import Database, id_batches, register_migrations

QUEUED, RUNNING, PAYING, AWAITING = "queued", "running", "paying", "awaiting_settlement"
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"
AWAITING_APPROVAL, AWAITING_BUDGET = "awaiting_approval", "awaiting_budget"
STATES = (QUEUED, RUNNING, PAYING, AWAITING, AWAITING_APPROVAL, AWAITING_BUDGET, DONE, FAILED, CANCELLED)
ACTIVE = (RUNNING, PAYING, AWAITING)
WAITING = (AWAITING_APPROVAL, AWAITING_BUDGET)
OUTAGE_PREFIX = "waiting for "
"""``last_error`` of a queued job paused by an outage starts so: ``waiting for the chain since <ISO>: …``."""
IN_FLIGHT_PREFIX = "payment in flight since "
"""``last_error`` of a queued job whose payment's fate the chain cannot yet tell:
``payment in flight since <ISO>: …``. Unlike an outage, ``run --until-idle`` waits for it (the
payment's TTL bounds the wait)."""

register_migrations("queue", [
    """
    CREATE TABLE jobs (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        kind             TEXT    NOT NULL,
        request          TEXT    NOT NULL,
        tags             TEXT    NOT NULL DEFAULT '[]',
        budget           TEXT,
        state            TEXT    NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        max_attempts     INTEGER NOT NULL,
        run_at           REAL    NOT NULL,
        created_at       REAL    NOT NULL,
        updated_at       REAL    NOT NULL,
        lease_owner      TEXT,
        lease_expires_at REAL,
        unique_key       TEXT UNIQUE,
        result_path      TEXT,
        result           TEXT,
        last_error       TEXT,
        request_id       TEXT
    );
    CREATE INDEX jobs_due ON jobs (state, run_at);
    CREATE INDEX jobs_lease ON jobs (state, lease_expires_at);
    """,
])


def _rowid(cur: Any) -> int:
    """The id of the row an ``INSERT ... RETURNING id`` just wrote."""
    row = cur.fetchone()
    if row is None:
        raise StoreError("insert did not return a row id")
    return int(row[0])


class LeaseLostError(JobError):
    """The worker no longer holds the job's lease (it expired and another worker took it)."""


@dataclass(frozen=True)
class Job:
    """One job. ``request`` is the kind's JSON request; ``result`` a small JSON summary."""

    id: int
    kind: str
    request: dict[str, Any]
    tags: tuple[str, ...]
    budget: str | None
    state: str
    attempts: int
    max_attempts: int
    run_at: float
    created_at: float
    updated_at: float
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    unique_key: str | None = None
    result_path: str | None = None
    result: dict[str, Any] | None = None
    last_error: str | None = None
    request_id: str | None = None


class JobStore(Protocol):
    """The job store contract; :class:`SqlJobStore` and :class:`MemoryJobStore` implement it."""

    def enqueue(self, kind: str, request: Mapping[str, Any], *, tags: Iterable[str] = (),
                budget: str | None = None, unique_key: str | None = None,
                run_at: float | None = None, max_attempts: int = 5, now: float) -> Job: ...
    def claim(self, worker_id: str, *, now: float, lease_s: float, fresh: bool = True) -> Job | None: ...
    def park(self, job_id: int, *, retry_at: float, now: float, worker_id: str | None = None) -> Job: ...
    def wake_parked(self, *, now: float, only: Iterable[int] | None = None) -> int: ...
    def parked_ids(self) -> builtins.list[int]: ...
    def heartbeat(self, job_id: int, worker_id: str, *, now: float, lease_s: float) -> Job: ...
    def set_state(self, job_id: int, state: str, *, worker_id: str | None = None, now: float,
                  request_id: str | None = None) -> Job: ...
    def complete(self, job_id: int, *, result: Mapping[str, Any] | None, result_path: str | None,
                 now: float, worker_id: str | None = None) -> Job: ...
    def fail(self, job_id: int, error: str, *, now: float, retry_at: float | None,
             worker_id: str | None = None) -> Job: ...
    def cancel(self, job_id: int, now: float) -> Job: ...
    def retry(self, job_id: int, now: float) -> Job: ...
    def get(self, job_id: int) -> Job: ...
    def list(self, state: str | None = None, tag: str | None = None, limit: int = 100) -> builtins.list[Job]: ...
    def counts(self) -> dict[str, int]: ...
    def next_run_at(self) -> float | None: ...
    def expire_leases(self, is_dead: Callable[[str], bool], *, now: float) -> int: ...


# -- transition rules shared by both backends -------------------------------------------------

def _check_owner(job: Job, worker_id: str | None) -> None:
    if worker_id is not None and job.lease_owner != worker_id:
        raise LeaseLostError(f"job {job.id}: worker {worker_id!r} does not hold its lease")


def _claimed(job: Job, worker_id: str, now: float, lease_s: float) -> Job:
    # A queued job always has an attempt left (fail requeues only then); a job taken over
    # after its lease expired may not: it resumes its last attempt, never counting past max.
    return replace(job, state=RUNNING, attempts=min(job.attempts + 1, job.max_attempts), lease_owner=worker_id,
                   lease_expires_at=now + lease_s, updated_at=now)


def _resumed(job: Job, worker_id: str, now: float, lease_s: float) -> Job:
    """A parked job claimed again: same state, same attempt (waiting for settlement is no new try)."""
    return replace(job, lease_owner=worker_id, lease_expires_at=now + lease_s, updated_at=now)


def is_parked(job: Job) -> bool:
    """True for a job waiting for its payment to settle without holding a worker."""
    return job.state == AWAITING and job.lease_owner is None


def _park(job: Job, retry_at: float, now: float, worker_id: str | None) -> Job:
    if job.state not in ACTIVE:
        raise JobError(f"job {job.id} is {job.state}; only a running job parks")
    _check_owner(job, worker_id)
    return replace(job, state=AWAITING, run_at=float(retry_at), lease_owner=None, lease_expires_at=None,
                   updated_at=now)


def _heartbeat(job: Job, worker_id: str, now: float, lease_s: float) -> Job:
    if job.state not in ACTIVE:
        raise LeaseLostError(f"job {job.id} is {job.state}, not running")
    _check_owner(job, worker_id)
    return replace(job, lease_expires_at=now + lease_s, updated_at=now)


def _set_state(job: Job, state: str, worker_id: str | None, now: float, request_id: str | None) -> Job:
    if state not in ACTIVE:
        raise JobError(f"set_state moves between {', '.join(ACTIVE)}; use complete/fail/cancel")
    if job.state not in ACTIVE:
        raise JobError(f"job {job.id} is {job.state}; it cannot become {state}")
    _check_owner(job, worker_id)
    return replace(job, state=state, updated_at=now,
                   request_id=request_id if request_id is not None else job.request_id)


def _complete(job: Job, result: Mapping[str, Any] | None, result_path: str | None, now: float,
              worker_id: str | None) -> Job:
    if job.state not in ACTIVE:
        raise JobError(f"job {job.id} is {job.state}; only a running job completes")
    _check_owner(job, worker_id)
    return replace(job, state=DONE, result=_json_copy(result, "result") if result is not None else None,
                   result_path=result_path, lease_owner=None, lease_expires_at=None,
                   last_error=None, updated_at=now)


def _fail(job: Job, error: str, now: float, retry_at: float | None, worker_id: str | None) -> Job:
    if job.state not in ACTIVE:
        raise JobError(f"job {job.id} is {job.state}; only a running job fails")
    _check_owner(job, worker_id)
    if retry_at is not None and job.attempts < job.max_attempts:
        return replace(job, state=QUEUED, run_at=float(retry_at), last_error=error,
                       lease_owner=None, lease_expires_at=None, updated_at=now)
    return replace(job, state=FAILED, last_error=error, lease_owner=None,
                   lease_expires_at=None, updated_at=now)


def _wait(job: Job, state: str, reason: str, now: float, run_at: float | None, worker_id: str | None) -> Job:
    if state not in (QUEUED, *WAITING):
        raise JobError(f"a job cannot wait in state {state!r}")
    if job.state not in ACTIVE:
        raise JobError(f"job {job.id} is {job.state}; only a running job can be put to wait")
    _check_owner(job, worker_id)
    return replace(job, state=state, run_at=float(now if run_at is None else run_at), last_error=reason,
                   attempts=max(0, job.attempts - 1), lease_owner=None, lease_expires_at=None, updated_at=now)


def _release(job: Job, now: float) -> Job:
    if job.state not in WAITING:
        return job
    return replace(job, state=QUEUED, run_at=now, last_error=None, updated_at=now)


def _cancel(job: Job, now: float) -> Job:
    if job.state == CANCELLED:
        return job
    if job.state not in (QUEUED, FAILED, *WAITING):
        raise JobError(f"job {job.id} is {job.state}; only queued or failed jobs can be cancelled")
    return replace(job, state=CANCELLED, updated_at=now)


def _retry(job: Job, now: float) -> Job:
    if job.state not in (FAILED, CANCELLED, *WAITING):
        raise JobError(f"job {job.id} is {job.state}; only failed, cancelled or waiting jobs can be retried")
    return replace(job, state=QUEUED, attempts=0, run_at=now, updated_at=now)


def _validate_new(kind: str, max_attempts: int) -> None:
    if not kind:
        raise JobError("a job needs a kind")
    if max_attempts < 1:
        raise JobError("max_attempts must be at least 1")


def _json_copy(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Return ``value`` as it reads back from storage (JSON), refusing what JSON cannot hold."""
    try:
        return json.loads(json.dumps(dict(value)))
    except (TypeError, ValueError) as exc:
        raise JobError(f"a job's {what} must be JSON: {exc}") from None


def _tags(tags: Iterable[str]) -> tuple[str, ...]:
    return (tags,) if isinstance(tags, str) else tuple(str(t) for t in tags)


# -- SQLite ------------------------------------------------------------------------------------

_COLUMNS = ("kind", "request", "tags", "budget", "state", "attempts", "max_attempts", "run_at",
            "created_at", "updated_at", "lease_owner", "lease_expires_at", "unique_key",
            "result_path", "result", "last_error", "request_id")


def _from_row(r: Any) -> Job:
    return Job(
        id=r["id"], kind=r["kind"], request=json.loads(r["request"]), tags=tuple(json.loads(r["tags"])),
        budget=r["budget"], state=r["state"], attempts=r["attempts"], max_attempts=r["max_attempts"],
        run_at=r["run_at"], created_at=r["created_at"], updated_at=r["updated_at"],
        lease_owner=r["lease_owner"], lease_expires_at=r["lease_expires_at"],
        unique_key=r["unique_key"], result_path=r["result_path"],
        result=json.loads(r["result"]) if r["result"] is not None else None,
        last_error=r["last_error"], request_id=r["request_id"],
    )


def _to_values(job: Job) -> tuple[Any, ...]:
    return (job.kind, json.dumps(job.request), json.dumps(list(job.tags)), job.budget, job.state,
            job.attempts, job.max_attempts, job.run_at, job.created_at, job.updated_at,
            job.lease_owner, job.lease_expires_at, job.unique_key, job.result_path,
            json.dumps(job.result) if job.result is not None else None, job.last_error,
            job.request_id)


class _Transitions(abc.ABC):
    """The state changes both backends share: each applies a pure rule through ``_change``."""

    @abc.abstractmethod
    def _change(self, job_id: int, fn: Callable[[Job], Job]) -> Job:
        """Apply ``fn`` to job ``job_id`` atomically in this backend's storage; return the new job."""

    def heartbeat(self, job_id: int, worker_id: str, *, now: float, lease_s: float) -> Job:
        """Extend ``worker_id``'s lease on the job (LeaseLostError if it no longer holds it)."""
        return self._change(job_id, lambda j: _heartbeat(j, worker_id, now, lease_s))

    def set_state(self, job_id: int, state: str, *, worker_id: str | None = None, now: float,
                  request_id: str | None = None) -> Job:
        """Move a claimed job between running, paying and awaiting_settlement."""
        return self._change(job_id, lambda j: _set_state(j, state, worker_id, now, request_id))

    def park(self, job_id: int, *, retry_at: float, now: float, worker_id: str | None = None) -> Job:
        """Release a claimed job's lease while its payment settles; it is claimable again at ``retry_at``."""
        return self._change(job_id, lambda j: _park(j, retry_at, now, worker_id))

    def complete(self, job_id: int, *, result: Mapping[str, Any] | None, result_path: str | None,
                 now: float, worker_id: str | None = None) -> Job:
        """Mark a claimed job done with its summary and result location."""
        return self._change(job_id, lambda j: _complete(j, result, result_path, now, worker_id))

    def fail(self, job_id: int, error: str, *, now: float, retry_at: float | None,
             worker_id: str | None = None) -> Job:
        """Requeue at ``retry_at`` (while attempts remain) or mark failed for good (``None``)."""
        return self._change(job_id, lambda j: _fail(j, error, now, retry_at, worker_id))

    def wait(self, job_id: int, state: str, reason: str, *, now: float, run_at: float | None = None,
             worker_id: str | None = None) -> Job:
        """Park a claimed job in ``state`` (queued, awaiting_approval, awaiting_budget) until ``run_at``.

        The attempt its claim counted is given back: waiting for a person, a budget window or
        the chain is not a failed try.
        """
        return self._change(job_id, lambda j: _wait(j, state, reason, now, run_at, worker_id))

    def release(self, job_id: int, now: float) -> Job:
        """Queue a waiting job now (its approval was given); other states are left as they are."""
        return self._change(job_id, lambda j: _release(j, now))

    def cancel(self, job_id: int, now: float) -> Job:
        """Cancel a queued, waiting or failed job (JobError for a running or finished one)."""
        return self._change(job_id, lambda j: _cancel(j, now))

    def retry(self, job_id: int, now: float) -> Job:
        """Queue a failed or cancelled job again now, with its attempts reset."""
        return self._change(job_id, lambda j: _retry(j, now))


_ACTIVE_SQL = "(" + ", ".join(f"'{state}'" for state in ACTIVE) + ")"


class SqlJobStore(_Transitions):
    """The job store in the agent database (SQLite or PostgreSQL); safe across threads, processes and hosts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue(self, kind: str, request: Mapping[str, Any], *, tags: Iterable[str] = (),
                budget: str | None = None, unique_key: str | None = None,
                run_at: float | None = None, max_attempts: int = 5, now: float) -> Job:
        """Add a job (due at ``run_at``, default ``now``); an existing ``unique_key`` returns that job."""
        _validate_new(kind, max_attempts)
        job = Job(id=0, kind=kind, request=_json_copy(request, "request"), tags=_tags(tags), budget=budget,
                  state=QUEUED, attempts=0, max_attempts=max_attempts,
                  run_at=float(now if run_at is None else run_at), created_at=now, updated_at=now,
                  unique_key=unique_key)
        with self.db.atomic() as conn:
            if unique_key is not None:
                found = conn.execute("SELECT * FROM jobs WHERE unique_key = ?", (unique_key,)).fetchone()
                if found is not None:
                    return _from_row(found)
            cur = conn.execute(
                f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
                " RETURNING id",
                _to_values(job),
            )
            return replace(job, id=_rowid(cur))

    def claim(self, worker_id: str, *, now: float, lease_s: float, fresh: bool = True) -> Job | None:
        """Take the job whose lease expired longest ago, else a due parked job, else the oldest due queued job.

        With ``fresh=False`` no queued job is started (the caller has enough calls in flight):
        only expired leases and parked jobs are taken. A job taken over resumes: on its last
        attempt it stays at ``max_attempts`` (see ``_claimed``). One statement. On an engine with
        row locks (PostgreSQL) it runs on its own and skips rows other workers are claiming
        (``FOR UPDATE SKIP LOCKED``): claims from many hosts never wait for each other nor
        take the same job. On SQLite it holds the write lock.
        """
        dialect = self.db.dialect
        parked = "state = 'awaiting_settlement' AND lease_owner IS NULL"
        sql = (
            f"UPDATE jobs SET state = CASE WHEN {parked} THEN state ELSE 'running' END,"
            f" attempts = CASE WHEN {parked} THEN attempts WHEN attempts < max_attempts THEN attempts + 1"
            " ELSE max_attempts END, lease_owner = ?,"
            " lease_expires_at = ?, updated_at = ? WHERE id = COALESCE("
            " (SELECT id FROM jobs WHERE state IN ('running', 'paying', 'awaiting_settlement')"
            "  AND lease_expires_at <= ? ORDER BY lease_expires_at, id LIMIT 1" + dialect.skip_locked + "),"
            f" (SELECT id FROM jobs WHERE {parked} AND run_at <= ? ORDER BY run_at, id LIMIT 1"
            + dialect.skip_locked + ")"
            + (", (SELECT id FROM jobs WHERE state IN ('queued', 'awaiting_budget') AND run_at <= ? ORDER BY run_at, id LIMIT 1"
               + dialect.skip_locked + ")" if fresh else "")
            + ") RETURNING *"
        )
        params = (worker_id, now + lease_s, now, now, now) + ((now,) if fresh else ())
        if dialect.row_locks:
            r = self.db.execute(sql, params).fetchone()
        else:
            with self.db.atomic() as conn:
                r = conn.execute(sql, params).fetchone()
        return _from_row(r) if r is not None else None

    # A worker's own transitions of the job it holds, each one guarded UPDATE (not read, decide,
    # write): they are most of a paid call's job writes. A guard that matches no row means the
    # transition is refused or raced; the general path (``_change``) then reads the job and says why.

    def _held(self, job_id: int, worker_id: str | None, sets: str, params: tuple[Any, ...]) -> Job | None:
        sql = f"UPDATE jobs SET {sets} WHERE id = ? AND state IN {_ACTIVE_SQL}"
        args: tuple[Any, ...] = (*params, job_id)
        if worker_id is not None:
            sql += " AND lease_owner = ?"
            args += (worker_id,)
        rows = self.db.execute(sql + " RETURNING *", args).fetchall()  # stepped to the end: committed
        return _from_row(rows[0]) if rows else None

    def set_state(self, job_id: int, state: str, *, worker_id: str | None = None, now: float,
                  request_id: str | None = None) -> Job:
        """Move a claimed job between running, paying and awaiting_settlement."""
        if state in ACTIVE:
            job = self._held(job_id, worker_id, "state = ?, updated_at = ?, request_id = COALESCE(?, request_id)",
                             (state, now, request_id))
            if job is not None:
                return job
        return super().set_state(job_id, state, worker_id=worker_id, now=now, request_id=request_id)

    def park(self, job_id: int, *, retry_at: float, now: float, worker_id: str | None = None) -> Job:
        """Release a claimed job's lease while its payment settles; it is claimable again at ``retry_at``."""
        job = self._held(job_id, worker_id, f"state = '{AWAITING}', run_at = ?, lease_owner = NULL,"
                         " lease_expires_at = NULL, updated_at = ?", (float(retry_at), now))
        return job if job is not None else super().park(job_id, retry_at=retry_at, now=now, worker_id=worker_id)

    def complete(self, job_id: int, *, result: Mapping[str, Any] | None, result_path: str | None,
                 now: float, worker_id: str | None = None) -> Job:
        """Mark a claimed job done with its summary and result location."""
        stored = json.dumps(_json_copy(result, "result")) if result is not None else None
        job = self._held(job_id, worker_id, f"state = '{DONE}', result = ?, result_path = ?, lease_owner = NULL,"
                         " lease_expires_at = NULL, last_error = NULL, updated_at = ?", (stored, result_path, now))
        if job is not None:
            return job
        return super().complete(job_id, result=result, result_path=result_path, now=now, worker_id=worker_id)

    def wake_parked(self, *, now: float, only: Iterable[int] | None = None) -> int:
        """Make parked jobs due now (a new block came: their payments may have settled); return how many.

        ``only``: just these jobs (those whose payment is seen on chain); default every parked job.
        """
        sql = ("UPDATE jobs SET run_at = ? WHERE state = 'awaiting_settlement'"
               " AND lease_owner IS NULL AND run_at > ?")
        with self.db.atomic() as conn:
            if only is None:
                return max(0, conn.execute(sql, (now, now)).rowcount or 0)
            woken = 0
            for batch, marks in id_batches(only):
                woken += max(0, conn.execute(f"{sql} AND id IN ({marks})", (now, now, *batch)).rowcount or 0)
            return woken

    def parked_ids(self) -> builtins.list[int]:
        """Every parked job (awaiting settlement, no worker holding it), oldest first."""
        return [r["id"] for r in self.db.execute(
            "SELECT id FROM jobs WHERE state = 'awaiting_settlement' AND lease_owner IS NULL ORDER BY id")]

    def _change(self, job_id: int, fn: Callable[[Job], Job]) -> Job:
        with self.db.atomic() as conn:
            job = self._get(conn, job_id, lock=self.db.dialect.for_update)
            new = fn(job)
            if new is not job:
                self._save(conn, new)
            return new

    def get(self, job_id: int) -> Job:
        """Return job ``job_id`` (JobError if none)."""
        return self._get(self.db, job_id)

    @staticmethod
    def _get(conn: Any, job_id: int, lock: str = "") -> Job:
        r = conn.execute("SELECT * FROM jobs WHERE id = ?" + lock, (job_id,)).fetchone()
        if r is None:
            raise JobError(f"no job {job_id}")
        return _from_row(r)

    @staticmethod
    def _save(conn: Any, job: Job) -> None:
        conn.execute(
            f"UPDATE jobs SET {', '.join(c + ' = ?' for c in _COLUMNS)} WHERE id = ?",
            (*_to_values(job), job.id),
        )

    def list(self, state: str | None = None, tag: str | None = None, limit: int = 100) -> builtins.list[Job]:
        """Return up to ``limit`` jobs, newest first, optionally of one state and/or tag."""
        rows = self.db.execute(
            "SELECT * FROM jobs WHERE (? IS NULL OR state = ?)"
            f" AND (? IS NULL OR EXISTS (SELECT 1 FROM {self.db.dialect.json_elements('jobs.tags')}"
            " AS t WHERE t.value = ?))"
            " ORDER BY id DESC LIMIT ?", (state, state, tag, tag, limit),
        )
        return [_from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Return the number of jobs in every state (zeros included)."""
        out = dict.fromkeys(STATES, 0)
        for r in self.db.execute("SELECT state, count(*) AS n FROM jobs GROUP BY state"):
            out[r["state"]] = r["n"]
        return out

    def expire_leases(self, is_dead: Callable[[str], bool], *, now: float) -> int:
        """End now the leases held by workers that ``is_dead`` says are gone; return how many."""
        with self.db.atomic() as conn:
            rows = conn.execute(
                "SELECT id, lease_owner FROM jobs WHERE state IN ('running', 'paying', 'awaiting_settlement')"
                " AND lease_expires_at > ?", (now,)).fetchall()
            dead = [(now, r["id"], r["lease_owner"]) for r in rows
                    if r["lease_owner"] and is_dead(r["lease_owner"])]
            # Only while the dead worker still holds it: a claim may have taken it meanwhile.
            conn.executemany("UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ?", dead)
        return len(dead)

    def next_run_at(self) -> float | None:
        """Return the earliest time a claim could succeed: a queued job due or a lease expiring."""
        r = self.db.execute(
            "SELECT min(t) AS t FROM ("
            " SELECT min(run_at) AS t FROM jobs WHERE state IN ('queued', 'awaiting_budget')"
            " OR (state = 'awaiting_settlement' AND lease_owner IS NULL)"
            " UNION ALL SELECT min(lease_expires_at) FROM jobs"
            " WHERE state IN ('running', 'paying', 'awaiting_settlement')) AS due"
        ).fetchone()
        return r["t"]


SqliteJobStore = SqlJobStore
"""The name the job store had when SQLite was its only engine."""


# -- memory ------------------------------------------------------------------------------------

class MemoryJobStore(_Transitions):
    """The same contract in a dict guarded by a lock: for tests and for embedding without a home."""

    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._unique: dict[str, int] = {}
        self._lock = threading.Lock()
        self._next_id = 1

    def enqueue(self, kind: str, request: Mapping[str, Any], *, tags: Iterable[str] = (),
                budget: str | None = None, unique_key: str | None = None,
                run_at: float | None = None, max_attempts: int = 5, now: float) -> Job:
        """Add a job (due at ``run_at``, default ``now``); an existing ``unique_key`` returns that job."""
        _validate_new(kind, max_attempts)
        with self._lock:
            if unique_key is not None and unique_key in self._unique:
                return self._jobs[self._unique[unique_key]]
            job = Job(id=self._next_id, kind=kind, request=_json_copy(request, "request"),
                      tags=_tags(tags), budget=budget, state=QUEUED, attempts=0,
                      max_attempts=max_attempts, run_at=float(now if run_at is None else run_at),
                      created_at=now, updated_at=now, unique_key=unique_key)
            self._next_id += 1
            self._jobs[job.id] = job
            if unique_key is not None:
                self._unique[unique_key] = job.id
            return job

    def claim(self, worker_id: str, *, now: float, lease_s: float, fresh: bool = True) -> Job | None:
        """Take the job whose lease expired longest ago, else a due parked job, else the oldest due queued job."""
        with self._lock:
            expired: Job | None = None
            parked: Job | None = None
            due: Job | None = None
            for j in self._jobs.values():
                if is_parked(j):
                    if j.run_at <= now and (parked is None or (j.run_at, j.id) < (parked.run_at, parked.id)):
                        parked = j
                elif j.state in (QUEUED, AWAITING_BUDGET) and j.run_at <= now:
                    if fresh and (due is None or (j.run_at, j.id) < (due.run_at, due.id)):
                        due = j
                elif (j.state in ACTIVE and j.lease_expires_at is not None and j.lease_expires_at <= now
                      and (expired is None or (j.lease_expires_at, j.id) < (expired.lease_expires_at or 0, expired.id))):
                    expired = j
            if expired is not None:
                job = _claimed(expired, worker_id, now, lease_s)
            elif parked is not None:
                job = _resumed(parked, worker_id, now, lease_s)
            elif due is not None:
                job = _claimed(due, worker_id, now, lease_s)
            else:
                return None
            self._jobs[job.id] = job
            return job

    def wake_parked(self, *, now: float, only: Iterable[int] | None = None) -> int:
        """Make parked jobs due now (a new block came: their payments may have settled); return how many.

        ``only``: just these jobs (those whose payment is seen on chain); default every parked job.
        """
        chosen = None if only is None else set(only)
        with self._lock:
            woken = [j for j in self._jobs.values() if is_parked(j) and j.run_at > now
                     and (chosen is None or j.id in chosen)]
            for job in woken:
                self._jobs[job.id] = replace(job, run_at=now)
        return len(woken)

    def parked_ids(self) -> builtins.list[int]:
        """Every parked job (awaiting settlement, no worker holding it), oldest first."""
        with self._lock:
            return sorted(j.id for j in self._jobs.values() if is_parked(j))

    def _change(self, job_id: int, fn: Callable[[Job], Job]) -> Job:
        with self._lock:
            job = self._get(job_id)
            new = fn(job)
            self._jobs[job_id] = new
            return new

    def get(self, job_id: int) -> Job:
        """Return job ``job_id`` (JobError if none)."""
        with self._lock:
            return self._get(job_id)

    def _get(self, job_id: int) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobError(f"no job {job_id}") from None

    def list(self, state: str | None = None, tag: str | None = None, limit: int = 100) -> builtins.list[Job]:
        """Return up to ``limit`` jobs, newest first, optionally of one state and/or tag."""
        with self._lock:
            jobs = [j for j in self._jobs.values()
                    if (state is None or j.state == state) and (tag is None or tag in j.tags)]
        return sorted(jobs, key=lambda j: -j.id)[:limit]

    def counts(self) -> dict[str, int]:
        """Return the number of jobs in every state (zeros included)."""
        out = dict.fromkeys(STATES, 0)
        with self._lock:
            for j in self._jobs.values():
                out[j.state] += 1
        return out

    def expire_leases(self, is_dead: Callable[[str], bool], *, now: float) -> int:
        """End now the leases held by workers that ``is_dead`` says are gone; return how many."""
        with self._lock:
            dead = [j for j in self._jobs.values() if j.state in ACTIVE and j.lease_owner
                    and (j.lease_expires_at or 0) > now and is_dead(j.lease_owner)]
            for job in dead:
                self._jobs[job.id] = replace(job, lease_expires_at=now)
        return len(dead)

    def next_run_at(self) -> float | None:
        """Return the earliest time a claim could succeed: a queued job due or a lease expiring."""
        with self._lock:
            times = [j.run_at for j in self._jobs.values() if j.state in (QUEUED, AWAITING_BUDGET) or is_parked(j)]
            times += [j.lease_expires_at for j in self._jobs.values()
                      if j.state in ACTIVE and j.lease_expires_at is not None]
        return min(times) if times else None


def in_flight_since(last_error: str | None) -> str | None:
    """The ISO time a job began waiting for its payment's fate (None if it does not)."""
    if not last_error or not last_error.startswith(IN_FLIGHT_PREFIX):
        return None
    return last_error[len(IN_FLIGHT_PREFIX):].split(": ", 1)[0].strip() or None


def outage_since(last_error: str | None) -> str | None:
    """The ISO time an outage began, from a paused job's ``last_error`` (None if not paused)."""
    if not last_error or not last_error.startswith(OUTAGE_PREFIX) or " since " not in last_error:
        return None
    return last_error.split(" since ", 1)[1].split(": ", 1)[0].strip() or None


def waiting_summary(store: Any, *, limit: int = 500) -> builtins.list[str]:
    """One line per reason jobs are waiting: the chain or API (since when), approvals, budget windows."""
    from datetime import datetime, timezone

    lines: builtins.list[str] = []
    outages: dict[str, tuple[str, int]] = {}
    for job in store.list(state=QUEUED, limit=limit):
        if job.last_error and job.last_error.startswith(OUTAGE_PREFIX):
            what = job.last_error[len(OUTAGE_PREFIX):].split(" since ", 1)[0]
            since = outage_since(job.last_error) or "?"
            first, n = outages.get(what, (since, 0))
            outages[what] = (min(first, since), n + 1)
    for what, (since, n) in outages.items():
        lines.append(f"{n} job(s) waiting for {what} since {since}")
    in_flight = [began for job in store.list(state=QUEUED, limit=limit)
                 if (began := in_flight_since(job.last_error)) is not None]
    if in_flight:
        lines.append(f"{len(in_flight)} job(s) waiting for the chain to show whether their payment landed, "
                     f"since {min(in_flight)}")
    approvals = store.list(state=AWAITING_APPROVAL, limit=limit)
    if approvals:
        lines.append(f"{len(approvals)} job(s) awaiting approval: cardano-agent approvals")
    for job in store.list(state=AWAITING_BUDGET, limit=limit):
        at = datetime.fromtimestamp(job.run_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"job {job.id} awaiting budget until {at}")
    return lines
