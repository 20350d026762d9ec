"""Process leases: which agent processes are alive on every host sharing the database (both engines)."""

from __future__ import annotations

import os

import pytest

from agent.queue import SqlJobStore
from agent.workers import ProcessLease, ProcessRegistry, split_owner
from tests.fixtures.postgres import ENGINES, open_db

T0 = 1_700_000_000.0


@pytest.fixture(params=ENGINES)
def db(request, tmp_path):
    """A migrated database on each engine (SQLite and PostgreSQL)."""
    yield from open_db(request, request.param, tmp_path)


def test_split_owner_reads_every_name_form():
    """Process, worker and payment-owner names all give (host, pid)."""
    assert split_owner("hostA:12") == ("hostA", 12)
    assert split_owner("hostA:12-3") == ("hostA", 12)
    assert split_owner("hostA:12:4") == ("hostA", 12)
    assert split_owner("runner-0") is None and split_owner("h:x") is None


def test_lease_decides_for_other_hosts(db):
    """A process of another host is alive while its lease runs and gone once it ran out."""
    here = ProcessRegistry(db, host="hostA")
    there = ProcessRegistry(db, host="hostB")
    there.register("hostB:4242", workers=8, now=T0, lease_s=30)
    assert not here.is_gone("hostB:4242-3", now=T0 + 29)
    assert [p.name for p in here.live(T0 + 29)] == ["hostB:4242"]
    assert here.is_gone("hostB:4242:1", now=T0 + 31)
    assert here.live(T0 + 31) == []
    there.beat("hostB:4242", now=T0 + 31, lease_s=30)
    assert not here.is_gone("hostB:4242-0", now=T0 + 40)


def test_this_hosts_dead_pid_is_gone_at_once(db):
    """On its own host a process whose PID no longer exists is gone, lease or not."""
    reg = ProcessRegistry(db, host="hostA", pid_exists=lambda pid: pid != 999_999)
    reg.register("hostA:999999", workers=1, now=T0, lease_s=3600)
    assert reg.is_gone("hostA:999999-0", now=T0 + 1)
    assert reg.live(T0 + 1) == []
    assert not reg.is_gone(f"hostA:{os.getpid()}-0", now=T0 + 1)


def test_unregistered_foreign_owner_is_not_judged(db):
    """A process of another host that never registered is never declared gone from here."""
    assert not ProcessRegistry(db, host="hostA").is_gone("hostZ:1-0", now=T0)


def test_expire_leases_frees_only_jobs_of_gone_processes(db):
    """Jobs held by a host whose lease ran out are freed; a live host's jobs keep their lease."""
    jobs = SqlJobStore(db)
    reg = ProcessRegistry(db, host="hostA")
    reg.register("hostB:1", workers=1, now=T0, lease_s=30)
    reg.register("hostC:2", workers=1, now=T0 + 100, lease_s=30)
    a = jobs.enqueue("chat", {}, now=T0)
    b = jobs.enqueue("chat", {}, now=T0)
    jobs.claim("hostB:1-0", now=T0, lease_s=600)
    jobs.claim("hostC:2-0", now=T0, lease_s=600)
    assert jobs.expire_leases(lambda o: reg.is_gone(o, now=T0 + 110), now=T0 + 110) == 1
    assert jobs.get(a.id).lease_expires_at == T0 + 110
    assert jobs.get(b.id).lease_expires_at == T0 + 600
    taken = jobs.claim("hostC:2-1", now=T0 + 110, lease_s=600)
    assert taken is not None and taken.id == a.id


def test_process_lease_registers_and_unregisters(db):
    """ProcessLease registers on entry and removes its row on exit."""
    reg = ProcessRegistry(db, host="hostA")
    with ProcessLease(reg, "hostA:77", workers=4, clock=lambda: T0, lease_s=300):
        assert [(p.name, p.workers) for p in reg.processes()] == [("hostA:77", 4)]
    assert reg.processes() == []


def test_recovery_reads_another_hosts_payment_owner_from_its_lease(db):
    """A payment owned by a live process of another host is never taken over; once its lease ran
    out it is; a foreign owner without a lease falls back to the row's age."""
    from agent.recovery import FOREIGN_OWNER_STALE_S, owner_is_gone

    reg = ProcessRegistry(db, host="hostA")
    ProcessRegistry(db, host="hostB").register("hostB:4242", workers=8, now=T0, lease_s=30)
    assert not owner_is_gone("hostB:4242:1", updated_at=T0 - 10 * FOREIGN_OWNER_STALE_S, now=T0 + 10,
                             registry=reg)
    assert owner_is_gone("hostB:4242:1", updated_at=T0 + 10, now=T0 + 31, registry=reg)
    assert not owner_is_gone("hostC:7:1", updated_at=T0, now=T0 + 60, registry=reg)
    assert owner_is_gone("hostC:7:1", updated_at=T0, now=T0 + FOREIGN_OWNER_STALE_S + 1, registry=reg)


def test_a_killed_process_not_yet_reaped_is_dead():
    """A SIGKILLed process its parent has not waited for (a zombie) holds nothing: it is dead.

    Seen in the crash soak: a killed `run` left unreaped kept its signed payment "owned by a live
    process", and every later run waited a minute for it instead of recovering it.
    """
    import signal
    import subprocess
    import sys

    from agent.workers import pid_exists

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert pid_exists(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, still unreaped
        assert not pid_exists(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not pid_exists(child.pid)
