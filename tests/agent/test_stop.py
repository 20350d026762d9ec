"""Stopping: SIGTERM ends `run` within its grace time, with the payments in hand durable and resumed later."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from agent.runner import JobOutcome, Runner
from sandbox.billing import DEFAULT_PAY_TO
from tests.fixtures.agent_home import PASSPHRASE, WALLET_FUNDS_LOVELACE


def _one(db_path, sql):
    with sqlite3.connect(db_path, timeout=30) as conn:
        return conn.execute(sql).fetchone()


def _wait_until(predicate, *, proc, timeout_s):
    """Poll ``predicate`` (an event seen in the database) until true; fail if ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"run exited early with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            if predicate():
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    pytest.fail("the runner never reached the awaited state")


@pytest.mark.slow
def test_sigterm_during_a_pending_settlement_stops_fast_and_resumes_paid_once(agent_home_factory, devnet_factory):
    """SIGTERM while the server says `pending`: run exits at once, the payment is kept submitted, the next run finishes the job paying nothing more."""
    slow = devnet_factory(block_time_s=3600)
    home = agent_home_factory(on=slow, name="stop", funds=0, real_kdf=True)
    slow.fund(home.address, WALLET_FUNDS_LOVELACE)
    slow.produce_block()
    with home.open() as agent:
        job = agent.jobs.enqueue("chat", {"message": "wait for the chain"}, now=time.time())
    db_path = home.home / "agent.db"
    before, pay_to_before = home.balance(), home.balance(DEFAULT_PAY_TO)
    env = {**os.environ, "CARDANO_AGENT_PASSPHRASE": PASSPHRASE}
    cmd = [sys.executable, "-m", "agent.cli", "run", "--home", str(home.home)]

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_until(lambda: _one(db_path, f"SELECT state FROM jobs WHERE id = {job.id}")[0] == "awaiting_settlement"
                    and _one(db_path, "SELECT state FROM payments")[0] == "submitted",
                    proc=proc, timeout_s=120)
        proc.send_signal(signal.SIGTERM)
        # The default grace is 10 s; the invoice stays payable for 300 s, which the old runner waited out.
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    payment = _one(db_path, "SELECT state, tx_id FROM payments")
    assert payment[0] == "submitted"
    assert _one(db_path, f"SELECT state FROM jobs WHERE id = {job.id}")[0] != "failed"

    slow.produce_block()  # the payment lands while no agent runs
    resumed = subprocess.run([*cmd, "--until-idle"], env=env, capture_output=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert _one(db_path, f"SELECT state FROM jobs WHERE id = {job.id}")[0] == "done"
    rows = _one(db_path, "SELECT count(*), max(state), sum(fee_lovelace) FROM payments")
    assert rows[:2] == (1, "settled")
    assert home.balance(DEFAULT_PAY_TO) - pay_to_before == 2_000_000
    assert before - home.balance() == 2_000_000 + rows[2]


class _Stuck:
    """An executor whose job blocks until released (a payment that cannot be cut short)."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def execute(self, job, *, worker_id):
        self.started.set()
        self.release.wait(60)
        raise RuntimeError("Cannot send a request, as the client has been closed")


def test_run_returns_after_the_grace_time_even_with_a_job_in_hand():
    """stop() with a job that never ends: run() returns once stop_grace_s has passed, the job still leased."""
    from agent.queue import MemoryJobStore

    store = MemoryJobStore()
    job = store.enqueue("chat", {"message": "x"}, now=time.time())
    stuck = _Stuck()
    runner = Runner(store, stuck, lease_s=60, stop_grace_s=0)
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(runner.run(poll_s=0.05)), daemon=True)
    thread.start()
    assert stuck.started.wait(30)
    runner.stop()
    thread.join(30)
    try:
        assert not thread.is_alive() and result
        assert store.get(job.id).state == "running"  # resumes at the next start
    finally:
        stuck.release.set()
    # The abandoned job then fails only because the process closes around it: not recorded.
    for worker in [t for t in threading.enumerate() if t.name == "runner-0"]:
        worker.join(30)
    after = store.get(job.id)
    assert (after.state, after.last_error) == ("running", None)


def test_stop_requested_leaves_the_job_to_resume():
    """A job cut short by StopRequestedError is neither failed nor retried: its lease stays for the next start."""
    from agent.errors import StopRequestedError
    from agent.queue import MemoryJobStore

    class Stopped:
        def execute(self, job, *, worker_id):
            raise StopRequestedError("stopping")

    store = MemoryJobStore()
    job = store.enqueue("chat", {"message": "x"}, now=1000.0)
    runner = Runner(store, Stopped(), lease_s=60, clock=lambda: 1000.0)
    runner.run_once()
    after = store.get(job.id)
    assert (after.state, after.attempts, after.last_error) == ("running", 1, None)
    assert runner.stats.failed == runner.stats.retried == 0
