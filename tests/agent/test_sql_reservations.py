"""SQLite UTxO reservations: the wallets' UtxoReservations contract, durable across restarts."""

from __future__ import annotations

import threading

import pytest

from agent.sql_reservations import SqliteReservations
from agent.store import Database
from tests.fixtures.postgres import ENGINES, open_db
from wallets.reservations import MemoryReservations, ReservationConflict, UtxoReservations
from wallets.types import OutputRef, Utxo

A, B, C = (OutputRef(c * 64, i) for i, c in enumerate("abc"))
CHANGE = Utxo(OutputRef("d" * 64, 1), "addr_test1qchange", 5_000_000, {"e" * 56 + ".01": 3})


@pytest.fixture(params=ENGINES)
def db(request, tmp_path):
    """A migrated database on each engine (SQLite and PostgreSQL)."""
    yield from open_db(request, request.param, tmp_path)


@pytest.fixture(params=["sqlite", "memory"])
def res(request, db):
    """Both implementations, so the SQLite one is held to the in-memory one's behaviour."""
    return SqliteReservations(db, "main") if request.param == "sqlite" else MemoryReservations()


def test_implements_the_wallets_protocol(db):
    """SqliteReservations and MemoryReservations are UtxoReservations (owners() included)."""
    assert isinstance(SqliteReservations(db, "main"), UtxoReservations)
    assert isinstance(MemoryReservations(), UtxoReservations)


def test_owners_hold_inputs_or_pending_change(res):
    """owners(): every owner holding inputs or pending change (recovery drops those of finished payments)."""
    assert res.owners() == set()
    res.reserve("p1", [A])
    res.record_pending("p2", "d" * 64, [CHANGE])
    assert res.owners() == {"p1", "p2"}
    res.release("p1")
    assert res.owners() == {"p2"}
    res.release("p2")
    assert res.owners() == set()


def test_reserve_and_list(res):
    """Reserved refs are listed; reserving again for the same owner is harmless."""
    res.reserve("p1", [A, B])
    res.reserve("p1", [A])
    assert res.reserved_refs() == {A, B}


def test_conflict_is_all_or_nothing(res):
    """A reservation touching another owner's input fails whole, naming the input and holder."""
    res.reserve("p1", [A])
    with pytest.raises(ReservationConflict) as exc:
        res.reserve("p2", [B, A, C])
    assert exc.value.refs == frozenset({A}) and exc.value.holder == "p1"
    assert res.reserved_refs() == {A}


def test_release_frees_inputs_and_pending(res):
    """Releasing an owner frees its inputs for others and forgets its pending change."""
    res.reserve("p1", [A, B])
    res.reserve("p2", [C])
    res.record_pending("p1", "d" * 64, [CHANGE])
    res.release("p1")
    assert res.reserved_refs() == {C}
    assert res.pending_change() == []
    res.reserve("p3", [A])


def test_pending_change_round_trips_and_clears(res):
    """Recorded change comes back as the same Utxo values until its transaction is cleared."""
    res.record_pending("p1", "d" * 64, [CHANGE])
    other = Utxo(OutputRef("f" * 64, 0), "addr_test1qchange", 1_500_000, {})
    res.record_pending("p2", "f" * 64, [other])
    assert res.pending_change() == [CHANGE, other]
    res.clear_pending("d" * 64)
    assert res.pending_change() == [other]
    res.clear_pending("unknown")


def test_state_survives_a_restart(tmp_path):
    """A new process opening the same home sees the reservations and pending change of the old one."""
    first = Database(tmp_path / "agent.db")
    first.migrate()
    SqliteReservations(first, "main").reserve("payment:7", [A, B])
    SqliteReservations(first, "main").record_pending("payment:7", "d" * 64, [CHANGE])
    first.close()
    again = Database(tmp_path / "agent.db")
    again.migrate()
    res = SqliteReservations(again, "main")
    assert res.reserved_refs() == {A, B}
    assert res.pending_change() == [CHANGE]
    assert res.owner_of(A) == "payment:7" and res.owners() == {"payment:7"}
    res.record_pending("payment:8", "9" * 64, [])
    assert res.pending_tx_ids() == ["d" * 64, "9" * 64]


def test_wallets_do_not_share_reservations(db):
    """Two wallets in one database keep separate reservations."""
    SqliteReservations(db, "main").reserve("p1", [A])
    other = SqliteReservations(db, "savings")
    other.reserve("p2", [A])
    assert other.reserved_refs() == {A}
    assert SqliteReservations(db, "main").owner_of(A) == "p1"


def test_concurrent_reservations_never_share_an_input(tmp_path):
    """Sixteen threads racing for the same three inputs: exactly one wins each whole set."""
    db = Database(tmp_path / "agent.db")
    db.migrate()
    res = SqliteReservations(db, "main")
    start = threading.Barrier(16)
    winners: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        start.wait(timeout=10)
        try:
            res.reserve(f"p{i}", [A, B, C])
        except ReservationConflict:
            return
        with lock:
            winners.append(f"p{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(winners) == 1
    assert {res.owner_of(r) for r in (A, B, C)} == {winners[0]}
    db.close()


def test_a_second_instance_sees_every_write_of_the_first(db):
    """Two instances on one wallet (two processes or hosts): each read reflects the other's writes."""
    one, two = SqliteReservations(db, "main"), SqliteReservations(db, "main")
    other = Utxo(OutputRef("f" * 64, 0), "addr_test1qchange", 1_500_000, {})
    assert two.reserved_refs() == set() and two.pending_change() == []  # a copy kept at generation 0
    one.reserve("p1", [A, B])
    assert two.reserved_refs() == {A, B} and two.owner_of(A) == "p1"
    two.record_pending("p2", "f" * 64, [other])
    one.record_pending("p1", "d" * 64, [CHANGE])
    assert one.pending_change() == [other, CHANGE] == two.pending_change()
    two.clear_pending("f" * 64)
    assert one.pending_tx_ids() == ["d" * 64] and one.owners() == {"p1"}
    one.release("p1")
    assert two.reserved_refs() == set() and two.pending_change() == [] and two.owners() == set()
    two.reserve("p3", [A])
    with pytest.raises(ReservationConflict):
        one.reserve("p4", [A])
    assert one.owner_of(A) == "p3"


def test_pending_change_keeps_recording_order_across_rewrites(db):
    """Re-recording a transaction keeps its place; a cleared one leaves the order of the rest intact."""
    res = SqliteReservations(db, "main")
    ids = [c * 64 for c in "123456"]
    for i, tx_id in enumerate(ids):
        res.record_pending(f"p{i}", tx_id, [Utxo(OutputRef(tx_id, 0), "addr_test1qchange", 1_000_000 + i, {})])
    res.record_pending("p2", ids[2], [])  # recorded again (a resubmission): same place, no change now
    res.clear_pending(ids[4])
    expected = [ids[0], ids[1], ids[2], ids[3], ids[5]]
    assert res.pending_tx_ids() == expected
    assert SqliteReservations(db, "main").pending_tx_ids() == expected  # the database says the same
    assert [u.ref.tx_id for u in res.pending_change()] == [ids[0], ids[1], ids[3], ids[5]]


def test_reads_of_an_unchanged_wallet_fetch_no_reservation_rows(tmp_path):
    """Selecting inputs reads one generation row, not every reservation in flight (they grow with the calls parked)."""
    db = Database(tmp_path / "agent.db")
    db.migrate()
    res = SqliteReservations(db, "main")
    for i in range(50):
        tx_id = f"{i:064x}"
        res.reserve(f"p{i}", [OutputRef(tx_id, 1)])
        res.record_pending(f"p{i}", tx_id, [Utxo(OutputRef(tx_id, 0), "addr_test1qchange", 2_000_000, {})])
    assert len(res.pending_change()) == 50
    statements: list[str] = []
    db.connection().set_trace_callback(statements.append)
    for _ in range(10):
        assert len(res.reserved_refs()) == 50 and len(res.pending_change()) == 50
    db.connection().set_trace_callback(None)
    assert statements and all("reservation_generations" in s for s in statements), statements
    db.close()
