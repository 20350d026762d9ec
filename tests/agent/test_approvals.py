"""Payee pins per host and parked approvals: park once, decide once, approving a payee change re-pins."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from agent.approvals import ApprovalError, Approvals, PayeePins
from agent.store import Database
from tests.fixtures.postgres import ENGINES, open_db

T0 = 1_700_000_000.0
OLD, NEW, PARTNER = "addr_test1qold", "addr_test1qnew", "addr_test1qpartner"


@pytest.fixture(params=ENGINES)
def db(request, tmp_path):
    """A migrated database on each engine (SQLite and PostgreSQL)."""
    yield from open_db(request, request.param, tmp_path)


def test_unpinned_host_returns_none(db):
    """A host never paid has no pins (None), not an empty set."""
    assert PayeePins(db).pinned("api.example") is None


def test_pin_replaces_and_add_extends(db):
    """pin replaces a host's addresses; add keeps them and adds more; hosts are case-insensitive."""
    pins = PayeePins(db)
    pins.pin("API.example", [OLD, PARTNER], T0)
    assert pins.pinned("api.example") == frozenset({OLD, PARTNER})
    pins.pin("api.example", [NEW], T0 + 1)
    assert pins.pinned("api.example") == frozenset({NEW})
    assert pins.add("api.example", [OLD], T0 + 2) == frozenset({NEW, OLD})
    assert pins.hosts() == {"api.example": frozenset({NEW, OLD})}


def test_pin_needs_an_address(db):
    """Pinning a host to nothing is refused."""
    with pytest.raises(ValueError):
        PayeePins(db).pin("api.example", [], T0)


def test_park_then_approve(db):
    """A parked payment is pending until approved, then recorded with the decision time."""
    approvals = Approvals(db)
    aid = approvals.park(invoice_id="inv-1", host="api.example", route="/chat", job_id=4,
                         summary={"cost_lovelace": 50_000_000, "reason": "approval_required"}, now=T0)
    assert [a.id for a in approvals.pending()] == [aid]
    assert approvals.status(invoice_id="inv-1") == "pending"
    done = approvals.approve(aid, T0 + 60)
    assert (done.state, done.decided_at, done.summary["cost_lovelace"]) == ("approved", T0 + 60, 50_000_000)
    assert approvals.pending() == [] and approvals.status(job_id=4) == "approved"


def test_parking_the_same_invoice_twice_returns_the_same_id(db):
    """A retried job that meets the same invoice does not park it a second time."""
    approvals = Approvals(db)
    first = approvals.park(invoice_id="inv-1", host="h", route=None, job_id=None, summary={}, now=T0)
    approvals.deny(first, T0 + 1)
    assert approvals.park(invoice_id="inv-1", host="h", route=None, job_id=None, summary={}, now=T0 + 2) == first
    assert approvals.status(invoice_id="inv-1") == "denied"


def test_decisions_are_final(db):
    """An approval cannot be decided twice, and an unknown id raises ApprovalError."""
    approvals = Approvals(db)
    aid = approvals.park(invoice_id="inv-1", host="h", route=None, job_id=None, summary={}, now=T0)
    approvals.deny(aid, T0)
    with pytest.raises(ApprovalError):
        approvals.approve(aid, T0)
    with pytest.raises(ApprovalError):
        approvals.deny(aid, T0)
    with pytest.raises(ApprovalError):
        approvals.get(999)
    assert approvals.get(aid).state == "denied"


def test_approving_a_payee_change_repins(db):
    """Approving a parked payee change adds the new payees to the host's pins; denying does not."""
    pins, approvals = PayeePins(db), Approvals(db)
    pins.pin("api.example", [OLD], T0)
    aid = approvals.park(invoice_id="inv-1", host="api.example", route="/chat", job_id=None,
                         summary={"reason": "payee_changed", "new_payees": [NEW]}, now=T0)
    denied = approvals.park(invoice_id="inv-2", host="api.example", route="/chat", job_id=None,
                            summary={"reason": "payee_changed", "new_payees": [PARTNER]}, now=T0)
    approvals.deny(denied, T0 + 1)
    assert pins.pinned("api.example") == frozenset({OLD})
    approvals.approve(aid, T0 + 2)
    assert pins.pinned("api.example") == frozenset({OLD, NEW})


def test_status_needs_one_key_and_unknown_is_none(db):
    """status takes an invoice or a job (not both, not neither) and is None for unknown ones."""
    approvals = Approvals(db)
    assert approvals.status(invoice_id="nope") is None and approvals.status(job_id=1) is None
    with pytest.raises(ValueError):
        approvals.status()
    with pytest.raises(ValueError):
        approvals.status(invoice_id="a", job_id=1)


def test_summary_accepts_sets_and_datetimes(db):
    """A summary with a frozenset of payees and an expiry instant is stored as JSON and read back."""
    approvals = Approvals(db)
    expires = datetime(2026, 11, 29, 15, 0, tzinfo=timezone.utc)
    aid = approvals.park(invoice_id="inv", host="h", route=None, job_id=None,
                         summary={"new_payees": frozenset({NEW, PARTNER}), "expires_at": expires}, now=T0)
    assert approvals.get(aid).summary == {"new_payees": sorted([NEW, PARTNER]), "expires_at": expires.isoformat()}
    with pytest.raises(TypeError):
        approvals.park(invoice_id="inv-2", host="h", route=None, job_id=None, summary={"x": object()}, now=T0)
