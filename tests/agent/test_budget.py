"""Budget arithmetic (scopes, rolling windows, fees) and the SQLite budget book's usage."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from agent.budget import BudgetBook, BudgetSpec, BudgetUsage, budget_matches, charge_for, window_start
from agent.errors import BudgetExceededError
from agent.ledger import SpendLedger
from agent.store import Database
from tests.fixtures.postgres import ENGINES, open_db

TOKEN = "a" * 56 + ".534e454b"
T0 = 1_700_000_000.0


def Spec(name, limits=None, window_s=None, scope="all", include_fees=True):
    """A BudgetSpec with a 10 ADA limit unless told otherwise."""
    return BudgetSpec(name, limits if limits is not None else {"lovelace": 10_000_000},
                      window_s=window_s, scope=scope, include_fees=include_fees)


@pytest.fixture(params=ENGINES)
def db(request, tmp_path):
    """A migrated database on each engine (SQLite and PostgreSQL)."""
    yield from open_db(request, request.param, tmp_path)


def test_scope_all_matches_everything():
    """An "all" budget covers every payment, with or without a route or tags."""
    assert budget_matches(Spec("a"), route=None, tags=())
    assert budget_matches(Spec("a"), route="/chat", tags=("x",))


def test_scope_route_glob():
    """A "route:<glob>" budget covers routes matching the glob, and no call without a route."""
    spec = Spec("r", scope="route:/token-*")
    assert budget_matches(spec, route="/token-analysis", tags=())
    assert not budget_matches(spec, route="/chat", tags=())
    assert not budget_matches(spec, route=None, tags=())


def test_scope_tag():
    """A "tag:<tag>" budget covers only payments of jobs carrying that tag."""
    spec = Spec("t", scope="tag:reports")
    assert budget_matches(spec, route="/chat", tags=("bots", "reports"))
    assert not budget_matches(spec, route="/chat", tags=("bots",))


def test_unknown_scope_is_an_error():
    """A scope that is neither all, route: nor tag: raises instead of silently matching."""
    with pytest.raises(ValueError):
        budget_matches(Spec("x", scope="host:example.com"), route="/", tags=())
    with pytest.raises(ValueError):
        budget_matches(Spec("x", scope="everything"), route="/", tags=())


def test_window_start_is_rolling():
    """A window of w seconds ending now starts at now - w; no window means all time."""
    assert window_start(T0, 3600) == T0 - 3600
    assert window_start(T0, None) is None


def test_charge_counts_fee_unless_excluded():
    """The fee adds to lovelace unless include_fees is false; tokens are charged as they are."""
    amounts = {"lovelace": 2_000_000, TOKEN: 5}
    assert charge_for(Spec("a"), amounts, 170_000) == {"lovelace": 2_170_000, TOKEN: 5}
    assert charge_for(Spec("a", include_fees=False), amounts, 170_000) == {"lovelace": 2_000_000, TOKEN: 5}
    assert charge_for(Spec("a"), {TOKEN: 5}, 170_000) == {TOKEN: 5, "lovelace": 170_000}
    assert charge_for(Spec("a", include_fees=False), {TOKEN: 5, "lovelace": 0}, 1) == {TOKEN: 5}


def test_charge_refuses_negative_amounts():
    """Negative amounts or fees are refused, never turned into a credit."""
    with pytest.raises(ValueError):
        charge_for(Spec("a"), {"lovelace": -1}, 0)
    with pytest.raises(ValueError):
        charge_for(Spec("a"), {"lovelace": 1}, -5)


@given(amount=st.integers(0, 10**15), fee=st.integers(0, 10**9), include=st.booleans())
def test_charge_is_exact_integer_arithmetic(amount, fee, include):
    """Charging never loses or invents a lovelace, whatever the size."""
    charge = charge_for(Spec("a", include_fees=include), {"lovelace": amount}, fee)
    assert charge.get("lovelace", 0) == amount + (fee if include else 0)


def test_duplicate_budget_names_are_refused(db):
    """Two budgets with one name would share charges; the book refuses them."""
    with pytest.raises(ValueError):
        BudgetBook(db, [Spec("d"), Spec("d")])


def _reserve(ledger, n, *, amount, fee=0, route="/chat", tags=(), now=T0, token=0):
    amounts = {"lovelace": amount}
    if token:
        amounts[TOKEN] = token
    return ledger.reserve(invoice_id=f"inv-{n}", host="api.example", route=route, job_id=None,
                          tags=tags, outputs=[{"address": "addr_test1payto", "amount": amount}],
                          amounts=amounts, fee_estimate_lovelace=fee, now=now)


def test_usage_reports_spent_reserved_and_remaining(db):
    """Usage splits committed spend in the window from open reservations, per asset."""
    book = BudgetBook(db, [Spec("daily", limits={"lovelace": 10_000_000, TOKEN: 100}, window_s=86_400)])
    ledger = SpendLedger(db, book)
    paid = _reserve(ledger, 1, amount=2_000_000, fee=200_000, token=10)
    ledger.mark_signed(paid.id, tx_id="t" * 64, cbor=b"\x80", fee_lovelace=180_000, inputs=[],
                       ttl_slot=100, cost_lovelace=2_180_000, now=T0)
    ledger.mark_submitted(paid.id, now=T0 + 1)
    _reserve(ledger, 2, amount=1_000_000, fee=200_000, now=T0 + 2)
    lovelace, token = book.usage(T0 + 10)
    assert lovelace == BudgetUsage("daily", "lovelace", 10_000_000, 2_180_000, 1_200_000, 6_620_000, 86_400, T0 + 10 - 86_400)
    assert (token.asset, token.spent, token.reserved, token.remaining) == (TOKEN, 10, 0, 90)


def test_committed_spend_leaves_the_rolling_window(db):
    """Spend older than the window no longer counts; an open reservation counts whatever its age."""
    book = BudgetBook(db, [Spec("hourly", window_s=3600)])
    ledger = SpendLedger(db, book)
    row = _reserve(ledger, 1, amount=4_000_000)
    ledger.mark_signed(row.id, tx_id="a" * 64, cbor=b"\x80", fee_lovelace=0, inputs=[], ttl_slot=1,
                       cost_lovelace=4_000_000, now=T0)
    ledger.mark_submitted(row.id, now=T0)
    _reserve(ledger, 2, amount=3_000_000)
    assert [(u.spent, u.reserved) for u in book.usage(T0 + 3599)] == [(4_000_000, 3_000_000)]
    assert [(u.spent, u.reserved) for u in book.usage(T0 + 3601)] == [(0, 3_000_000)]
    _reserve(ledger, 3, amount=7_000_000, now=T0 + 3601)
    with pytest.raises(BudgetExceededError):
        _reserve(ledger, 4, amount=1, now=T0 + 3601)


def test_only_matching_budgets_are_charged(db):
    """A tag budget ignores untagged payments; the all budget sees every payment."""
    book = BudgetBook(db, [Spec("all"), Spec("reports", limits={"lovelace": 1_000_000}, scope="tag:reports")])
    ledger = SpendLedger(db, book)
    _reserve(ledger, 1, amount=3_000_000)
    usage = {u.name: u.reserved for u in book.usage(T0)}
    assert usage == {"all": 3_000_000, "reports": 0}
    with pytest.raises(BudgetExceededError) as exc:
        _reserve(ledger, 2, amount=1_000_001, tags=("reports",))
    assert (exc.value.budget, exc.value.limit, exc.value.spent, exc.value.requested) == ("reports", 1_000_000, 0, 1_000_001)


def test_spend_series_lists_committed_charges(db):
    """spend_series gives the committed charges of one budget over time, for the spend plot."""
    book = BudgetBook(db, [Spec("all")])
    ledger = SpendLedger(db, book)
    row = _reserve(ledger, 1, amount=1_000_000, now=T0)
    _reserve(ledger, 2, amount=2_000_000, now=T0 + 5)
    ledger.mark_signed(row.id, tx_id="b" * 64, cbor=b"\x80", fee_lovelace=170_000, inputs=[],
                       ttl_slot=1, cost_lovelace=1_170_000, now=T0)
    ledger.mark_submitted(row.id, now=T0 + 1)
    assert list(book.spend_series("all")) == [(T0, 1_170_000)]


def test_budget_spec_is_the_config_one():
    """agent.budget.BudgetSpec is the class agent.config parses agent.toml into."""
    from agent.config import BudgetSpec as ConfigSpec

    assert BudgetSpec is ConfigSpec
