"""The Agent methods the CLI, the console and MCP share: approve/deny refusals, payee changes, status."""

from __future__ import annotations

import pytest

from agent.app import Agent
from agent.approvals import ApprovalError

T0 = 1_800_000_000.0


@pytest.fixture
def agent(tmp_path):
    (tmp_path / "agent.toml").write_text('[chain]\nnetwork = "devnet"\n[[budgets]]\nname = "daily"\n'
                                         'limit_ada = 10\nwindow = "1d"\n')
    with Agent.open(tmp_path, env={}, clock=lambda: T0) as a:
        yield a


def _park(agent, invoice_id, *, job_id=None, expires_at=T0 + 600, **summary):
    return agent.approvals.park(invoice_id=invoice_id, host="api.example", route="/chat", job_id=job_id,
                                summary={"cost_lovelace": 5_000_000, "expires_at": expires_at, **summary}, now=T0)


def test_approving_twice_is_refused_and_changes_nothing(agent):
    """The second approve of one approval raises ApprovalError; the decision time stays the first."""
    aid = _park(agent, "inv-1")
    first = agent.approve(aid, now=T0 + 1)
    assert first["approval"]["state"] == "approved"
    with pytest.raises(ApprovalError, match="already approved"):
        agent.approve(aid, now=T0 + 2)
    with pytest.raises(ApprovalError, match="already approved"):
        agent.deny(aid, now=T0 + 2)
    assert agent.approvals.get(aid).decided_at == T0 + 1


def test_approving_an_expired_invoice_is_refused_and_changes_nothing(agent):
    """An approval whose invoice expired stays pending, and no payee is pinned by it."""
    job = agent.enqueue("chat", {"message": "hi"}, now=T0)
    aid = _park(agent, "inv-old", job_id=job["id"], expires_at=T0 - 1, new_payees=["addr_test1qnew"])
    with pytest.raises(ApprovalError, match=f"expired.*job retry {job['id']}"):
        agent.approve(aid)
    assert agent.approvals.get(aid).state == "pending"
    assert agent.pins.pinned("api.example") is None


def test_unknown_approval_is_refused(agent):
    """Approving or denying an id that does not exist raises ApprovalError."""
    with pytest.raises(ApprovalError, match="no approval 99"):
        agent.approve(99)
    with pytest.raises(ApprovalError, match="no approval 99"):
        agent.deny(99)


def test_payee_change_shows_old_and_new_addresses(agent):
    """A parked payee change lists the host's pinned addresses as old and the invoice's as new."""
    agent.pins.pin("api.example", ["addr_test1qold"], T0)
    _park(agent, "inv-new", new_payees=["addr_test1qnew"])
    (pending,) = agent.pending_approvals()["pending"]
    assert (pending["kind"], pending["old_payees"], pending["new_payees"]) == (
        "payee_change", ["addr_test1qold"], ["addr_test1qnew"])


def test_approve_requeues_a_failed_job(agent):
    """Approving the payment of a job that gave up queues it again."""
    job = agent.enqueue("chat", {"message": "hi"}, now=T0)
    agent.jobs.claim("w", now=T0, lease_s=60)
    agent.jobs.fail(job["id"], "approval required", now=T0, retry_at=None)
    aid = _park(agent, "inv-2", job_id=job["id"])
    data = agent.approve(aid)
    assert data["job"] == {"id": job["id"], "state": "queued", "requeued": True}


def test_status_offline_reports_budgets_and_queue(agent):
    """status(offline=True) needs no chain: queue counts, budget usage, no balance."""
    agent.enqueue("chat", {"message": "hi"}, now=T0)
    data = agent.status(offline=True)
    assert data["queue"]["queued"] == 1
    assert [(b["name"], b["limit"], b["spent"]) for b in data["budgets"]] == [("daily", 10_000_000, 0)]
    assert "balance_lovelace" not in data["wallet"]
