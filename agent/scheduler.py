"""Recurring jobs: turns `[[schedules]]` into queued jobs, once per firing, whatever restarts.

APScheduler's triggers compute the fire times (cron or interval); this module decides what to
enqueue. Each firing is enqueued with the unique key ``schedule:<name>:<fire time>``, so a
restarted runner, or a second runner on the same home, never enqueues the same firing twice:
the job store returns the existing job for a known key. The last firing handled is kept in
SQLite, so after downtime the missed firings follow the schedule's misfire policy:
``run_once`` enqueues the latest missed firing once, ``skip`` drops them all.

``Scheduler.run_once(now)`` is the whole step; the runner calls it on every loop turn and tests
call it by hand with the instant they want.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Protocol, Sequence

from agent.errors import ConfigError
from agent.store import Database, register_migrations

log = logging.getLogger(__name__)

register_migrations("scheduler", [
    """
    CREATE TABLE schedule_state (
        name TEXT PRIMARY KEY,
        anchor REAL NOT NULL,
        last_fire REAL
    );
    """,
])

MAX_CATCH_UP = 10_000
"""Upper bound on missed firings walked after downtime (a 1-minute schedule off for a week)."""


class ScheduleLike(Protocol):
    """What the scheduler reads of a schedule from agent.toml (``agent.config.ScheduleSpec``)."""

    name: str
    cron: str | None
    every_s: int | None
    kind: str
    params: Any
    tags: Sequence[str]
    budget: str | None
    misfire: str


class JobQueue(Protocol):
    """The part of the job store the scheduler uses."""

    def enqueue(self, kind: str, request: dict, *, tags: Sequence[str] = (), budget: str | None = None,
                unique_key: str | None = None, run_at: float | None = None, max_attempts: int = 5,
                now: float) -> Any: ...


@dataclass(frozen=True, slots=True)
class Firing:
    """One firing of a schedule that was enqueued (or found already enqueued)."""

    schedule: str
    fire_time: datetime
    unique_key: str
    job_id: Any


def make_trigger(spec: ScheduleLike, *, anchor: datetime) -> Any:
    """Return the APScheduler trigger for ``spec``; intervals count from ``anchor``.

    Raises:
        ConfigError: neither or both of ``cron`` and ``every`` are set, or the cron is invalid.
    """
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if bool(spec.cron) == bool(spec.every_s):
        raise ConfigError(f"schedule {spec.name!r}: set exactly one of cron or every")
    if spec.cron:
        try:
            return CronTrigger.from_crontab(spec.cron, timezone=timezone.utc)
        except ValueError as exc:
            raise ConfigError(f"schedule {spec.name!r}: bad cron {spec.cron!r}: {exc}") from None
    return IntervalTrigger(seconds=int(spec.every_s or 0), start_date=anchor, timezone=timezone.utc)


def fires_between(trigger: Any, after: datetime | None, until: datetime, *, start: datetime | None = None,
                  limit: int = MAX_CATCH_UP) -> list[datetime]:
    """Return the trigger's fire times in ``(after, until]``, oldest first (pure).

    With ``after=None`` the schedule is new: fire times from ``start`` (inclusive) count.
    """
    out: list[datetime] = []
    if after is None:
        assert start is not None, "a new schedule needs a start"
        first = trigger.get_next_fire_time(None, start)
        if first is None or first > until:
            return out
        out.append(first)
        after = first
    prev = after
    while len(out) < limit:
        nxt = trigger.get_next_fire_time(prev, prev)
        if nxt is None or nxt > until:
            break
        if nxt > after:
            out.append(nxt)
        prev = nxt
    return out


def next_fire(trigger: Any, after: datetime) -> datetime | None:
    """Return the first fire time strictly after ``after`` (pure)."""
    return trigger.get_next_fire_time(after, after)


def firing_key(name: str, fire_time: datetime) -> str:
    """The queue's unique key for one firing: the same firing always maps to the same key."""
    return f"schedule:{name}:{fire_time.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}"


class Scheduler:
    """Enqueues due firings of the configured schedules into a job queue.

    Args:
        db: the agent database (keeps each schedule's anchor and last handled firing).
        queue: the job store; its ``enqueue(unique_key=...)`` must deduplicate.
        schedules: the schedules from agent.toml.
    """

    def __init__(self, db: Database, queue: JobQueue, schedules: Iterable[ScheduleLike]) -> None:
        self._db = db
        self._queue = queue
        self._schedules = list(schedules)
        self._lock = threading.Lock()

    def run_once(self, now: float) -> list[Firing]:
        """Enqueue every firing due at ``now`` (epoch seconds) and return what was enqueued."""
        instant = _utc(now)
        firings: list[Firing] = []
        # Workers of one runner all call this; one at a time, so one firing is handled once.
        with self._lock:
            for spec in self._schedules:
                firings.extend(self._run_schedule(spec, instant, now))
        return firings

    def next_due(self, now: float) -> float | None:
        """Return the epoch time of the earliest future firing of any schedule, if any."""
        instant = _utc(now)
        best: datetime | None = None
        for spec in self._schedules:
            anchor, last = self._state(spec.name, instant)
            nxt = next_fire(make_trigger(spec, anchor=anchor), max(last or anchor, instant))
            if nxt is not None and (best is None or nxt < best):
                best = nxt
        return best.timestamp() if best else None

    def describe(self, now: float) -> list[dict[str, Any]]:
        """One row per schedule: name, kind, rule, misfire policy, last and next firing (ISO)."""
        from agent.config import format_duration

        instant = _utc(now)
        rows = []
        for spec in self._schedules:
            anchor, last = self._state(spec.name, instant)
            nxt = _planned_fire(spec, make_trigger(spec, anchor=anchor), anchor, last, instant)
            rows.append({
                "name": spec.name,
                "kind": spec.kind,
                "rule": spec.cron or f"every {format_duration(spec.every_s)}",
                "misfire": spec.misfire,
                "last_fire": last.isoformat() if last else None,
                "next_fire": nxt.isoformat() if nxt else None,
            })
        return rows

    def _run_schedule(self, spec: ScheduleLike, instant: datetime, now: float) -> list[Firing]:
        anchor, last = self._state(spec.name, instant)
        trigger = make_trigger(spec, anchor=anchor)
        # A schedule seen for the first time starts at its anchor: it has missed nothing before.
        due = fires_between(trigger, last, instant, start=anchor)
        if not due:
            return []
        if len(due) > 1 or due[-1] < instant - timedelta(seconds=_grace_s(spec)):
            # Firings missed while the agent was down.
            if spec.misfire == "skip":
                log.info("schedule %s: skipping %d missed firing(s)", spec.name, len(due))
                self._record(spec.name, due[-1])
                return []
            due = due[-1:]
        fired = []
        for fire_time in due:
            key = firing_key(spec.name, fire_time)
            job = self._queue.enqueue(
                spec.kind, _request_for(spec, fire_time), tags=tuple(spec.tags), budget=spec.budget,
                unique_key=key, now=now,
            )
            fired.append(Firing(spec.name, fire_time, key, getattr(job, "id", None)))
            if getattr(job, "created_at", now) == now:
                log.info("schedule %s fired for %s: job %s", spec.name, fire_time.isoformat(),
                         getattr(job, "id", None))
            else:  # another runner on this home enqueued this firing first
                log.debug("schedule %s: firing %s already queued as job %s", spec.name,
                          fire_time.isoformat(), getattr(job, "id", None))
        self._record(spec.name, due[-1])
        return fired

    def _state(self, name: str, instant: datetime) -> tuple[datetime, datetime | None]:
        with self._db.atomic() as conn:
            row = conn.execute(
                "SELECT anchor, last_fire FROM schedule_state WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO schedule_state (name, anchor, last_fire) VALUES (?, ?, NULL)"
                    " ON CONFLICT (name) DO NOTHING",
                    (name, instant.timestamp()),
                )
                return instant, None
        last = _utc(row["last_fire"]) if row["last_fire"] is not None else None
        return _utc(row["anchor"]), last

    def _record(self, name: str, fire_time: datetime) -> None:
        with self._db.atomic() as conn:
            conn.execute(
                "UPDATE schedule_state SET last_fire = ? WHERE name = ?"
                " AND (last_fire IS NULL OR last_fire < ?)",
                (fire_time.timestamp(), name, fire_time.timestamp()),
            )


def _planned_fire(spec: ScheduleLike, trigger: Any, anchor: datetime, last: datetime | None,
                  instant: datetime) -> datetime | None:
    """When a schedule fires next as planned: an interval counts from its last firing (or its
    anchor, for a schedule that has not fired yet), so the answer does not move with ``now``;
    a time already past means "due at the next runner step"."""
    if spec.every_s:
        return anchor if last is None else last + timedelta(seconds=int(spec.every_s))
    return next_fire(trigger, max(last or anchor, instant))


def _grace_s(spec: ScheduleLike) -> float:
    """How late a single firing may be handled and still count as on time."""
    if spec.every_s:
        return min(60.0, spec.every_s / 2)
    return 60.0


def _request_for(spec: ScheduleLike, fire_time: datetime) -> dict[str, Any]:
    import uuid

    request = dict(spec.params or {})
    if spec.kind == "chat" and not request.get("session_id"):
        # A fresh conversation per firing, named in the job: never another job's or home's context.
        request["session_id"] = f"{spec.name}-{fire_time.strftime('%Y%m%dT%H%M')}-{uuid.uuid4().hex[:6]}"
    request.setdefault("_schedule", {"name": spec.name, "fire_time": fire_time.isoformat(),
                                     "report": bool(getattr(spec, "report", False))})
    return request


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)
