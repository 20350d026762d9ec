"""The scheduler: one job per firing, misfire policies after downtime, dedupe across runners."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.scheduler import Scheduler, firing_key, fires_between, make_trigger
from agent.store import Database
from tests.fixtures.postgres import ENGINES, open_db


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str = "token-analysis"
    cron: str | None = None
    every_s: int | None = None
    params: dict = field(default_factory=lambda: {"token": "SNEK"})
    tags: tuple = ("reports",)
    budget: str | None = "daily"
    misfire: str = "run_once"
    report: bool = True


@dataclass
class FakeJob:
    id: int
    kind: str
    request: dict
    unique_key: str


class DedupQueue:
    """Stands in for the job store: enqueue with a known unique key returns the existing job."""

    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}

    def enqueue(self, kind: str, request: dict, *, tags=(), budget=None, unique_key=None,
                run_at=None, max_attempts=5, now: float) -> Any:
        if unique_key in self.jobs:
            return self.jobs[unique_key]
        job = FakeJob(len(self.jobs) + 1, kind, request, unique_key)
        self.jobs[unique_key] = job
        return job


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


@pytest.fixture(params=ENGINES)
def db(request, tmp_path):
    """A migrated database on each engine (SQLite and PostgreSQL)."""
    yield from open_db(request, request.param, tmp_path)


def test_new_cron_schedule_does_not_fire_for_the_past(db):
    """A daily schedule first seen after today's time waits for tomorrow."""
    queue = DedupQueue()
    sched = Scheduler(db, queue, [Spec("morning", cron="0 7 * * *")])
    assert sched.run_once(ts("2026-11-29T09:00:00")) == []
    assert len(sched.run_once(ts("2026-11-30T07:00:01"))) == 1


def test_daily_cron_fires_once_per_day(db):
    """A 07:00 daily schedule enqueues one job at 07:00 and nothing more that day."""
    queue = DedupQueue()
    sched = Scheduler(db, queue, [Spec("morning", cron="0 7 * * *")])
    assert sched.run_once(ts("2026-11-29T06:00:00")) == []
    assert sched.run_once(ts("2026-11-29T06:59:59")) == []
    fired = sched.run_once(ts("2026-11-29T07:00:05"))
    assert [f.unique_key for f in fired] == ["schedule:morning:2026-11-29T07:00:00Z"]
    assert sched.run_once(ts("2026-11-29T12:00:00")) == []
    assert len(queue.jobs) == 1
    job = next(iter(queue.jobs.values()))
    assert job.kind == "token-analysis" and job.request["token"] == "SNEK"
    assert job.request["_schedule"]["name"] == "morning"


def test_interval_fires_at_start_and_every_period(db):
    """An interval schedule fires when first seen, then once per period."""
    queue = DedupQueue()
    sched = Scheduler(db, queue, [Spec("often", every_s=900)])
    t0 = ts("2026-11-29T09:00:00")
    assert len(sched.run_once(t0)) == 1
    assert sched.run_once(t0 + 899) == []
    assert len(sched.run_once(t0 + 900)) == 1
    assert len(queue.jobs) == 2


def test_run_once_misfire_enqueues_only_latest_after_downtime(db):
    """After three days down, a daily `run_once` schedule enqueues the latest missed firing once."""
    queue = DedupQueue()
    sched = Scheduler(db, queue, [Spec("morning", cron="0 7 * * *")])
    sched.run_once(ts("2026-11-26T06:00:00"))
    sched.run_once(ts("2026-11-26T07:00:01"))
    fired = sched.run_once(ts("2026-11-29T10:00:00"))
    assert [f.unique_key for f in fired] == ["schedule:morning:2026-11-29T07:00:00Z"]
    assert len(queue.jobs) == 2


def test_skip_misfire_drops_missed_firings(db):
    """A `skip` schedule enqueues nothing for firings missed while down, then resumes."""
    queue = DedupQueue()
    sched = Scheduler(db, queue, [Spec("morning", cron="0 7 * * *", misfire="skip")])
    sched.run_once(ts("2026-11-26T06:00:00"))
    sched.run_once(ts("2026-11-26T07:00:01"))
    assert sched.run_once(ts("2026-11-29T10:00:00")) == []
    assert len(queue.jobs) == 1
    assert len(sched.run_once(ts("2026-11-30T07:00:02"))) == 1


def test_restart_does_not_enqueue_twice(db):
    """A new Scheduler over the same database (a restart) does not re-fire a handled firing."""
    queue = DedupQueue()
    Scheduler(db, queue, [Spec("morning", cron="0 7 * * *")]).run_once(ts("2026-11-29T06:00:00"))
    Scheduler(db, queue, [Spec("morning", cron="0 7 * * *")]).run_once(ts("2026-11-29T07:00:03"))
    again = Scheduler(db, queue, [Spec("morning", cron="0 7 * * *")])
    assert again.run_once(ts("2026-11-29T07:00:04")) == []
    assert len(queue.jobs) == 1


def test_two_runners_share_one_firing(tmp_path):
    """Two runners on one home, each with its own connection, enqueue a firing once."""
    queue = DedupQueue()
    a = Database(tmp_path / "agent.db")
    a.migrate()
    b = Database(tmp_path / "agent.db")
    first = Scheduler(a, queue, [Spec("morning", cron="0 7 * * *")])
    second = Scheduler(b, queue, [Spec("morning", cron="0 7 * * *")])
    first.run_once(ts("2026-11-29T06:00:00"))
    f1 = first.run_once(ts("2026-11-29T07:00:01"))
    f2 = second.run_once(ts("2026-11-29T07:00:01"))
    assert len(queue.jobs) == 1
    assert all(f.job_id == f1[0].job_id for f in f1 + f2)


def test_fires_between_is_exclusive_inclusive():
    """fires_between returns fire times in (after, until]."""
    trig = make_trigger(Spec("x", cron="*/10 * * * *"), anchor=datetime.now(timezone.utc))
    after = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)
    until = datetime(2026, 11, 29, 10, 30, tzinfo=timezone.utc)
    assert [t.minute for t in fires_between(trig, after, until)] == [10, 20, 30]
    assert [t.minute for t in fires_between(trig, None, until, start=after)] == [0, 10, 20, 30]


def test_bad_schedule_definitions_are_config_errors():
    """A bad cron, or both/neither of cron and every, is a ConfigError naming the schedule."""
    now = datetime.now(timezone.utc)
    with pytest.raises(ConfigError, match="nightly"):
        make_trigger(Spec("nightly", cron="61 * * * *"), anchor=now)
    with pytest.raises(ConfigError, match="both"):
        make_trigger(Spec("both", cron="0 7 * * *", every_s=60), anchor=now)
    with pytest.raises(ConfigError, match="none"):
        make_trigger(Spec("none"), anchor=now)


def test_next_due_and_describe(db):
    """next_due reports the earliest coming firing; describe lists each schedule."""
    sched = Scheduler(db, DedupQueue(), [Spec("morning", cron="0 7 * * *"), Spec("often", every_s=3600)])
    now = ts("2026-11-29T06:30:00")
    sched.run_once(now)
    assert sched.next_due(now) == ts("2026-11-29T07:00:00")
    rows = {r["name"]: r for r in sched.describe(now)}
    assert rows["morning"]["next_fire"].startswith("2026-11-29T07:00:00")
    assert firing_key("x", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "schedule:x:2026-01-02T03:04:05Z"
