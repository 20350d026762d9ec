"""The spend ledger: reservations that never overshoot a budget, legal state moves, reports."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent.budget import BudgetBook, BudgetSpec
from agent.errors import BudgetExceededError
from agent.ledger import DuplicatePaymentError, LedgerStateError, SpendLedger
from agent.store import Database
from tests.fixtures.postgres import ENGINES, open_db
from wallets.types import OutputRef, RequiredOutput

T0 = 1_700_000_000.0
DAY = 86_400.0
PAY_TO = "addr_test1qpayto"
PARTNER = "addr_test1qpartner"


@pytest.fixture(params=ENGINES)
def db(request, tmp_path):
    """A migrated database on each engine (SQLite and PostgreSQL)."""
    yield from open_db(request, request.param, tmp_path)


def make_ledger(db, *specs):
    return SpendLedger(db, BudgetBook(db, specs or [BudgetSpec("total", {"lovelace": 100_000_000})]))


def reserve(ledger, invoice, amount=1_000_000, *, fee=200_000, now=T0, route="/chat", job_id=7, tags=()):
    return ledger.reserve(invoice_id=invoice, host="api.example", route=route, job_id=job_id, tags=tags,
                          outputs=[RequiredOutput(PAY_TO, amount)], amounts={"lovelace": amount},
                          fee_estimate_lovelace=fee, now=now)


def pay(ledger, row, *, fee=170_000, now=T0, settle=True):
    cost = row.amounts["lovelace"] + fee
    ledger.mark_signed(row.id, tx_id=f"{row.id:064x}", cbor=b"\x84\xa0", fee_lovelace=fee,
                       inputs=[OutputRef("f" * 64, 0)], ttl_slot=500, cost_lovelace=cost, now=now)
    ledger.mark_submitted(row.id, now=now + 1)
    if settle:
        return ledger.mark_settled(row.id, now=now + 2)
    return ledger.get(row.id)


def test_reserve_writes_a_reserved_row(db):
    """reserve records the invoice, route, job, outputs and estimate in state reserved."""
    ledger = make_ledger(db)
    row = ledger.reserve(invoice_id="inv-1", host="api.example", route="/chat", job_id=3, tags=("b", "a"),
                         outputs=[RequiredOutput(PAY_TO, 1_000_000, role="payTo"),
                                  {"address": PARTNER, "amount": 500_000}],
                         amounts={"lovelace": 1_500_000}, fee_estimate_lovelace=200_000, now=T0,
                         expires_at=T0 + 600)
    assert (row.state, row.invoice_id, row.route, row.job_id, row.tags) == ("reserved", "inv-1", "/chat", 3, ("a", "b"))
    assert (row.created_at, row.expires_at, row.fee_estimate_lovelace) == (T0, T0 + 600, 200_000)
    assert row.outputs == ({"address": PAY_TO, "amount": 1_000_000, "asset": "lovelace", "role": "payTo"},
                           {"address": PARTNER, "amount": 500_000, "asset": "lovelace", "role": None})
    assert ledger.get(row.id) == row and ledger.by_invoice("inv-1") == row


def test_full_path_records_timestamps_and_actual_cost(db):
    """signed → submitted → settled keeps the tx, its inputs and every timestamp; charges follow the actual cost."""
    ledger = make_ledger(db)
    row = reserve(ledger, "inv-1", fee=300_000)
    signed = ledger.mark_signed(row.id, tx_id="ab" * 32, cbor=b"\x84\xa0", fee_lovelace=170_000,
                                inputs=[OutputRef("f" * 64, 1)], ttl_slot=900, cost_lovelace=1_170_000, now=T0 + 1)
    assert (signed.state, signed.tx_id, signed.cbor, signed.inputs, signed.ttl_slot) == (
        "signed", "ab" * 32, b"\x84\xa0", (OutputRef("f" * 64, 1),), 900)
    assert ledger.budgets.usage(T0 + 1)[0].reserved == 1_170_000
    ledger.mark_submitted(row.id, now=T0 + 2)
    done = ledger.mark_settled(row.id, now=T0 + 3)
    assert (done.state, done.signed_at, done.submitted_at, done.settled_at) == ("settled", T0 + 1, T0 + 2, T0 + 3)
    usage = ledger.budgets.usage(T0 + 4)[0]
    assert (usage.spent, usage.reserved) == (1_170_000, 0)
    assert ledger.total_paid() == 1_170_000


def test_same_invoice_is_never_reserved_twice(db):
    """A second reservation for a live invoice raises; after a release it may be reserved again."""
    ledger = make_ledger(db)
    row = reserve(ledger, "inv-1")
    with pytest.raises(DuplicatePaymentError) as exc:
        reserve(ledger, "inv-1")
    assert exc.value.payment_id == row.id
    ledger.release(row.id, "never submitted")
    again = reserve(ledger, "inv-1")
    assert again.id != row.id and ledger.by_invoice("inv-1") == again


def test_unsettled_invoice_stays_live_forever(db):
    """A paid-but-refused invoice keeps its charge and blocks any new payment of it."""
    ledger = make_ledger(db)
    row = pay(ledger, reserve(ledger, "inv-1"), settle=False)
    bad = ledger.mark_unsettled(row.id, "server said invalid proof")
    assert (bad.state, bad.reason) == ("unsettled", "server said invalid proof")
    assert ledger.total_paid() == 1_170_000
    with pytest.raises(DuplicatePaymentError):
        reserve(ledger, "inv-1")
    with pytest.raises(LedgerStateError):
        ledger.release(row.id, "too late")


def test_release_and_refusal_drop_charges(db):
    """Released and refused payments free their reservation and count as nothing paid."""
    ledger = make_ledger(db)
    a = reserve(ledger, "inv-a")
    b = reserve(ledger, "inv-b")
    ledger.release(a.id, "invoice expired")
    ledger.mark_refused(b.id, "approval denied")
    assert ledger.budgets.usage(T0)[0].reserved == 0
    assert ledger.total_paid() == 0
    assert [r.state for r in ledger.rows()] == ["released", "refused"]


def test_submitted_is_released_only_with_evidence_that_it_never_landed(db):
    """A submitted row is never released by a plain release (a submit error); only with evidence."""
    ledger = make_ledger(db)
    row = pay(ledger, reserve(ledger, "inv-1"), settle=False)
    assert ledger.mark_submitted(row.id, now=T0 + 9).submitted_at == T0 + 1
    with pytest.raises(LedgerStateError):
        ledger.release(row.id, "rejected by the ledger: 3117")
    with pytest.raises(LedgerStateError):
        ledger.release_unlanded(row.id, "")
    assert ledger.get(row.id).state == "submitted" and ledger.budgets.usage(T0 + 10)[0].spent == 1_170_000
    done = ledger.release_unlanded(row.id, "TTL slot 500 passed; in no block from slot 90")
    assert done.state == "released" and done.reason.startswith("never landed: TTL slot 500")
    assert ledger.budgets.usage(T0 + 10)[0].spent == 0


def test_take_over_moves_an_unfinished_row_to_one_new_owner(db):
    """take_over is a compare-and-set on the owner: of two recovering processes only one wins."""
    ledger = make_ledger(db)
    row = ledger.reserve(invoice_id="inv-1", host="h", route="/chat", job_id=None,
                         outputs=[RequiredOutput(PAY_TO, 1)], amounts={"lovelace": 1},
                         fee_estimate_lovelace=1, owner="host:1:1")
    assert row.owner == "host:1:1"
    assert ledger.take_over(row.id, owner="host:2:1", previous="host:1:1")
    assert not ledger.take_over(row.id, owner="host:3:1", previous="host:1:1")
    assert ledger.get(row.id).owner == "host:2:1"
    ledger.release(row.id, "x")
    assert not ledger.take_over(row.id, owner="host:3:1", previous="host:2:1")


def test_signing_point_is_kept_with_the_signed_row(db):
    """mark_signed stores the chain point (slot, block id) recovery reads the chain from."""
    ledger = make_ledger(db)
    row = reserve(ledger, "inv-1")
    signed = ledger.mark_signed(row.id, tx_id="ab" * 32, cbor=b"\x84", fee_lovelace=1, inputs=[],
                                ttl_slot=900, cost_lovelace=1_000_001, sync_point=(812, "cd" * 32))
    assert (signed.sync_slot, signed.sync_id) == (812, "cd" * 32)


@pytest.mark.parametrize("moves", [
    ("mark_submitted",),
    ("mark_settled",),
    ("signed", "mark_settled"),
    ("signed", "submitted", "signed"),
    ("release", "mark_submitted"),
    ("signed", "submitted", "release"),
    ("refuse", "release"),
])
def test_illegal_moves_raise(db, moves):
    """Each move out of order raises LedgerStateError and changes nothing."""
    ledger = make_ledger(db)
    row = reserve(ledger, "inv-1")
    actions = {
        "signed": lambda: ledger.mark_signed(row.id, tx_id="0" * 64, cbor=b"", fee_lovelace=1, inputs=[],
                                             ttl_slot=1, cost_lovelace=1_000_001),
        "submitted": lambda: ledger.mark_submitted(row.id),
        "mark_submitted": lambda: ledger.mark_submitted(row.id),
        "mark_settled": lambda: ledger.mark_settled(row.id),
        "release": lambda: ledger.release(row.id, "x"),
        "refuse": lambda: ledger.mark_refused(row.id, "x"),
    }
    for move in moves[:-1]:
        actions[move]()
    before = ledger.get(row.id)
    with pytest.raises(LedgerStateError):
        actions[moves[-1]]()
    assert ledger.get(row.id) == before


def test_unknown_payment_raises(db):
    """Asking for a payment id that does not exist raises LedgerStateError."""
    with pytest.raises(LedgerStateError):
        make_ledger(db).get(42)


def test_budget_refusal_writes_nothing_and_is_recorded_on_request(db):
    """An over-budget reservation leaves no row; record_refusal writes a refused row that blocks nothing."""
    ledger = make_ledger(db, BudgetSpec("small", {"lovelace": 1_000_000}))
    with pytest.raises(BudgetExceededError) as exc:
        reserve(ledger, "inv-1", 900_000, fee=200_000)
    assert (exc.value.limit, exc.value.spent, exc.value.requested) == (1_000_000, 0, 1_100_000)
    assert ledger.rows() == []
    ref = ledger.record_refusal("inv-1", "api.example", "/chat", 7, "budget_exceeded", {"lovelace": 900_000}, T0)
    assert (ref.state, ref.reason, ref.amounts) == ("refused", "budget_exceeded", {"lovelace": 900_000})
    assert ledger.unfinished() == [] and ledger.total_paid() == 0
    assert reserve(ledger, "inv-1", 500_000).state == "reserved"


def test_signed_cost_over_budget_is_refused_before_submit(db):
    """If the signed cost no longer fits, mark_signed raises and the row stays reserved to be released."""
    ledger = make_ledger(db, BudgetSpec("small", {"lovelace": 2_000_000}))
    row = reserve(ledger, "inv-1", 1_500_000, fee=200_000)
    with pytest.raises(BudgetExceededError):
        ledger.mark_signed(row.id, tx_id="0" * 64, cbor=b"", fee_lovelace=200_000, inputs=[], ttl_slot=1,
                           cost_lovelace=2_100_000, now=T0)
    assert ledger.get(row.id).state == "reserved"
    assert ledger.budgets.usage(T0)[0].reserved == 1_700_000


def test_token_budget_limits_tokens(db):
    """A token limit refuses a payment that would take the token past it, whatever the lovelace."""
    token = "b" * 56 + ".01"
    ledger = make_ledger(db, BudgetSpec("snek", {token: 100}))
    ledger.reserve(invoice_id="i1", host="h", route="/r", job_id=None, outputs=[{"address": PAY_TO, "amount": 60, "asset": token}],
                   amounts={token: 60}, fee_estimate_lovelace=200_000, now=T0)
    with pytest.raises(BudgetExceededError) as exc:
        ledger.reserve(invoice_id="i2", host="h", route="/r", job_id=None, outputs=[],
                       amounts={token: 41}, fee_estimate_lovelace=200_000, now=T0)
    assert exc.value.asset == token
    assert ledger.total_paid(token) == 0


def test_unfinished_lists_in_flight_rows(db):
    """unfinished returns reserved, signed and submitted rows, oldest first, for crash recovery."""
    ledger = make_ledger(db)
    a = reserve(ledger, "a")
    b = reserve(ledger, "b")
    ledger.mark_signed(b.id, tx_id="1" * 64, cbor=b"\x01", fee_lovelace=1, inputs=[], ttl_slot=1, cost_lovelace=1_000_001)
    c = pay(ledger, reserve(ledger, "c"), settle=False)
    pay(ledger, reserve(ledger, "d"))
    assert [(r.id, r.state) for r in ledger.unfinished()] == [(a.id, "reserved"), (b.id, "signed"), (c.id, "submitted")]
    assert ledger.unfinished()[1].cbor == b"\x01"


def test_rows_filter_by_time(db):
    """rows(since, until) returns rows created in the half-open interval."""
    ledger = make_ledger(db)
    for i in range(4):
        reserve(ledger, f"i{i}", now=T0 + i * 10)
    assert [r.invoice_id for r in ledger.rows(T0 + 10, T0 + 30)] == ["i1", "i2"]
    assert len(ledger.rows()) == 4


def test_report_groups_paid_rows(db):
    """report sums paid rows by day, route, budget and payee; unpaid rows are left out."""
    ledger = make_ledger(db, BudgetSpec("total", {"lovelace": 10**9}),
                         BudgetSpec("chat", {"lovelace": 10**9}, scope="route:/chat"))
    pay(ledger, reserve(ledger, "i1", 1_000_000, now=T0))
    pay(ledger, reserve(ledger, "i2", 2_000_000, now=T0 + DAY, route="/image"))
    split = ledger.reserve(invoice_id="i3", host="h", route="/chat", job_id=None,
                           outputs=[RequiredOutput(PAY_TO, 600_000), RequiredOutput(PARTNER, 400_000)],
                           amounts={"lovelace": 1_000_000}, fee_estimate_lovelace=200_000, now=T0 + DAY)
    pay(ledger, split, now=T0 + DAY)
    reserve(ledger, "i4", 5_000_000, now=T0)
    assert ledger.report(T0, group_by="day") == [("2023-11-14", 1, 1_000_000, 170_000),
                                                 ("2023-11-15", 2, 3_000_000, 340_000)]
    assert ledger.report(T0, group_by="route") == [("/chat", 2, 2_000_000, 340_000), ("/image", 1, 2_000_000, 170_000)]
    assert ledger.report(T0, group_by="budget") == [("chat", 2, 2_000_000, 340_000), ("total", 3, 4_000_000, 510_000)]
    assert ledger.report(None, group_by="payee") == [(PARTNER, 1, 400_000, 0), (PAY_TO, 3, 3_600_000, 510_000)]
    assert ledger.report(T0 + DAY, group_by="route") == [("/chat", 1, 1_000_000, 170_000), ("/image", 1, 2_000_000, 170_000)]
    with pytest.raises(ValueError):
        ledger.report(T0, group_by="week")


def test_cbor_is_kept_out_of_the_repr(db):
    """A row's repr does not dump the transaction bytes."""
    ledger = make_ledger(db)
    row = reserve(ledger, "inv")
    signed = ledger.mark_signed(row.id, tx_id="2" * 64, cbor=b"\xde\xad" * 50, fee_lovelace=1, inputs=[],
                                ttl_slot=1, cost_lovelace=1_000_001)
    assert "dead" not in repr(signed) and "\\xde" not in repr(signed)


ops = st.lists(st.tuples(st.sampled_from(["reserve", "reserve", "sign", "submit", "release", "settle", "tick"]),
                         st.integers(0, 3_000_000) | st.sampled_from([900_001, 1_500_000, 2_400_001]),
                         st.integers(0, 50)), max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_random_sequences_never_overshoot(tmp_path_factory, ops):
    """Whatever order reservations, commits and releases come in, spent + reserved stays within every limit."""
    db = Database(tmp_path_factory.mktemp("h") / "agent.db")
    db.migrate()
    specs = [BudgetSpec("hour", {"lovelace": 5_000_000}, window_s=3600),
             BudgetSpec("all", {"lovelace": 12_000_000}),
             BudgetSpec("chat", {"lovelace": 3_000_000}, scope="route:/chat", include_fees=False)]
    ledger = make_ledger(db, *specs)
    now = T0
    n = 0
    for op, amount, pick in ops:
        live = ledger.unfinished()
        target = live[pick % len(live)] if live else None
        try:
            if op == "reserve":
                n += 1
                reserve(ledger, f"i{n}", amount, fee=amount % 300_000, now=now,
                        route="/chat" if amount % 2 else "/image")
            elif op == "tick":
                now += pick * 200
            elif target is None:
                continue
            elif op == "sign" and target.state == "reserved":
                fee = 150_000 + pick * 1000
                ledger.mark_signed(target.id, tx_id=f"{target.id:064x}", cbor=b"", fee_lovelace=fee, inputs=[],
                                   ttl_slot=1, cost_lovelace=target.amounts["lovelace"] + fee, now=now)
            elif op == "submit" and target.state == "signed":
                ledger.mark_submitted(target.id, now=now)
            elif op == "settle" and target.state == "submitted":
                ledger.mark_settled(target.id, now=now)
            elif op == "release" and target.state == "submitted":
                ledger.release_unlanded(target.id, "TTL passed, in no block", now=now)
            elif op == "release":
                ledger.release(target.id, "abandoned", now=now)
        except BudgetExceededError:
            pass
        for usage in ledger.budgets.usage(now):
            assert usage.spent + usage.reserved <= usage.limit, usage
    db.close()


def test_thirty_two_threads_against_a_budget_for_ten(db):
    """32 threads reserving at once against a budget that fits 10: exactly 10 succeed."""
    ledger = make_ledger(db, BudgetSpec("ten", {"lovelace": 10 * 1_200_000}, window_s=86_400))
    start = threading.Barrier(32)
    results: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        start.wait(timeout=10)
        try:
            reserve(ledger, f"inv-{i}", 1_000_000, fee=200_000)
            outcome = "ok"
        except BudgetExceededError:
            outcome = "refused"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results.count("ok") == 10 and results.count("refused") == 22
    assert len(ledger.unfinished()) == 10
    assert ledger.budgets.usage(T0)[0].reserved == 12_000_000


def _reserve_in_process(path: str, first: int, count: int) -> int:
    """Worker process: open the shared database and try ``count`` reservations; return the successes."""
    db = Database(path)
    ledger = make_ledger(db, BudgetSpec("ten", {"lovelace": 10 * 1_200_000}, window_s=86_400))
    ok = 0
    for i in range(first, first + count):
        try:
            reserve(ledger, f"inv-{i}", 1_000_000, fee=200_000)
            ok += 1
        except BudgetExceededError:
            pass
    db.close()
    return ok


def test_processes_sharing_one_home_never_overshoot(db):
    """Four processes (hosts, on PostgreSQL) reserving 8 payments each against a budget for 10: exactly 10 succeed."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_reserve_in_process, [(db.target, n * 8, 8) for n in range(4)])
    assert sum(results) == 10
    assert len(make_ledger(db).unfinished()) == 10


def test_submitting_and_settling_are_one_guarded_write_each(tmp_path):
    """mark_submitted and mark_settled write the row in one UPDATE that only a state allowing the
    move matches (no read first, no read after); a move the state forbids still fails as before."""
    db = Database(tmp_path / "agent.db")
    db.migrate()
    ledger = SpendLedger(db, BudgetBook(db, []))
    row = ledger.reserve(invoice_id="inv_1", host="api.test", route="/chat", job_id=None, outputs=[],
                         amounts={"lovelace": 2_000_000}, fee_estimate_lovelace=200_000, now=1.0)
    assert (row.state, row.invoice_id) == ("reserved", "inv_1")
    with pytest.raises(LedgerStateError):
        ledger.mark_settled(row.id, now=2.0)
    signed = ledger.mark_signed(row.id, tx_id="ab" * 32, cbor=b"\x84", fee_lovelace=170_000, inputs=[],
                                ttl_slot=100, cost_lovelace=2_170_000, now=3.0)
    assert (signed.state, signed.tx_id, signed.fee_lovelace) == ("signed", "ab" * 32, 170_000)
    statements: list[str] = []
    db.connection().set_trace_callback(statements.append)
    submitted = ledger.mark_submitted(row.id, now=4.0)
    settled = ledger.mark_settled(row.id, now=5.0)
    db.connection().set_trace_callback(None)
    assert (submitted.state, submitted.submitted_at) == ("submitted", 4.0)
    assert (settled.state, settled.settled_at, settled.submitted_at) == ("settled", 5.0, 4.0)
    assert not any(s.startswith("SELECT") for s in statements), statements
    with pytest.raises(LedgerStateError):
        ledger.mark_submitted(row.id, now=6.0)
    with pytest.raises(LedgerStateError):
        ledger.mark_settled(999, now=6.0)
    assert ledger.get(row.id) == settled
    db.close()
