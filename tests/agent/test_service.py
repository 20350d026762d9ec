"""``Agent.run``: the one way to run the queue, used by ``cardano-agent run`` and callable as a library."""

from __future__ import annotations

import socket
import time


def test_agent_run_pays_queued_jobs_until_idle(agent_home):
    """A library caller runs the queue with one call: the job is paid, settled and done; the wallet pays once."""
    before = agent_home.balance()
    said: list[str] = []
    with agent_home.open() as agent:
        job = agent.jobs.enqueue("chat", {"message": "What is Cardano?", "session_id": "s-lib"}, now=time.time())
        stats = agent.run(until_idle=True, concurrency=4, say=said.append)
        assert (stats.done, stats.failed) == (1, 0)
        assert agent.jobs.get(job.id).state == "done"
        [row] = agent.ledger.by_job(job.id)
        assert row.state == "settled"
    assert agent_home.balance() == before - row.cost_lovelace  # the amount and the fee, once
    assert said == []  # nothing to recover, nothing capped: nothing said


def test_agent_stopped_before_it_runs_runs_nothing(agent_home):
    """stop() asked before the run started (a SIGTERM during start-up) is not lost: no job starts, nothing is paid."""
    before = agent_home.balance()
    with agent_home.open() as agent:
        job = agent.jobs.enqueue("chat", {"message": "later", "session_id": "s-stop"}, now=time.time())
        agent.stop()
        stats = agent.run(stop_grace_s=0)
        assert stats.done == 0 and agent.jobs.get(job.id).state == "queued"
        assert agent.ledger.rows() == []
    assert agent_home.balance() == before


def test_agent_run_says_what_start_up_recovery_did(agent_home):
    """A job left running by a dead process is taken back, and the run says so in words."""
    with agent_home.open() as agent:
        job = agent.jobs.enqueue("chat", {"message": "again", "session_id": "s-back"}, now=time.time())
        dead = f"{socket.gethostname()}:999999999-0"  # a worker of a process that no longer exists
        claimed = agent.jobs.claim(dead, lease_s=600, now=time.time())
        assert claimed is not None and claimed.id == job.id
    said: list[str] = []
    with agent_home.open() as agent:
        stats = agent.run(until_idle=True, concurrency=4, say=said.append)
        assert stats.done == 1 and agent.jobs.get(job.id).state == "done"
    assert said == ["recovered from an interrupted run: 1 job(s) left running by a stopped process taken back"]
