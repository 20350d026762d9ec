"""The SQLite store: migrations per component, atomic blocks, per-thread connections."""

from __future__ import annotations

import threading

import pytest

from agent import store
from agent.store import Database


@pytest.fixture
def component():
    store.register_migrations("_probe", [
        "CREATE TABLE probe (id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
        "ALTER TABLE probe ADD COLUMN w INTEGER NOT NULL DEFAULT 0;\nCREATE INDEX probe_v ON probe(v);",
    ])
    yield "_probe"
    store._MIGRATIONS.pop("_probe", None)


def test_migrate_applies_each_step_once(tmp_path, component):
    """Migrations run once; reopening the database does not re-run them."""
    db = Database(tmp_path / "a.db")
    db.migrate()
    db.migrate()
    db.execute("INSERT INTO probe (v, w) VALUES ('x', 1)")
    row = db.execute("SELECT version FROM schema_versions WHERE component = '_probe'").fetchone()
    assert row["version"] == 2
    db.close()
    again = Database(tmp_path / "a.db")
    again.migrate()
    assert again.execute("SELECT count(*) AS n FROM probe").fetchone()["n"] == 1


def test_atomic_rolls_back_on_error(tmp_path, component):
    """An exception inside atomic() leaves no trace in the database."""
    db = Database(tmp_path / "a.db")
    db.migrate()
    with pytest.raises(RuntimeError):
        with db.atomic() as conn:
            conn.execute("INSERT INTO probe (v) VALUES ('lost')")
            raise RuntimeError("boom")
    assert db.execute("SELECT count(*) AS n FROM probe").fetchone()["n"] == 0


def test_nested_atomic_joins_outer(tmp_path, component):
    """A nested atomic() is part of the outer transaction and rolls back with it."""
    db = Database(tmp_path / "a.db")
    db.migrate()
    with pytest.raises(RuntimeError):
        with db.atomic():
            with db.atomic() as conn:
                conn.execute("INSERT INTO probe (v) VALUES ('inner')")
            raise RuntimeError("outer fails")
    assert db.execute("SELECT count(*) AS n FROM probe").fetchone()["n"] == 0


def test_threads_get_their_own_connections(tmp_path, component):
    """Concurrent writers from several threads all land (WAL + busy timeout)."""
    db = Database(tmp_path / "a.db")
    db.migrate()

    def write(n):
        for i in range(20):
            with db.atomic() as conn:
                conn.execute("INSERT INTO probe (v) VALUES (?)", (f"{n}-{i}",))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.execute("SELECT count(*) AS n FROM probe").fetchone()["n"] == 80
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_operational_errors_inside_atomic_become_store_errors(tmp_path, component):
    """A locked or broken statement inside atomic() is a retryable StoreError, rolled back."""
    from agent.errors import StoreError

    db = Database(tmp_path / "a.db")
    db.migrate()
    with pytest.raises(StoreError):
        with db.atomic() as conn:
            conn.execute("INSERT INTO probe (v) VALUES ('x')")
            conn.execute("INSERT INTO no_such_table VALUES (1)")
    assert db.execute("SELECT count(*) AS n FROM probe").fetchone()["n"] == 0


def test_durable_blocks_commit_with_synchronous_full(tmp_path, component):
    """atomic(durable=True) commits with synchronous=FULL (synced to disk) and goes back to NORMAL after."""
    db = Database(tmp_path / "a.db")
    db.migrate()
    statements: list[str] = []
    db.connection().set_trace_callback(statements.append)
    with db.atomic(durable=True) as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        conn.execute("INSERT INTO probe (v) VALUES ('x')")
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again
    assert [s for s in statements if "synchronous =" in s or s in ("BEGIN IMMEDIATE", "COMMIT")] == [
        "PRAGMA synchronous = FULL", "BEGIN IMMEDIATE", "COMMIT", "PRAGMA synchronous = NORMAL"]
    with pytest.raises(RuntimeError):
        with db.atomic(durable=True):
            raise RuntimeError("boom")
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_the_signed_row_is_written_durably(tmp_path):
    """mark_signed commits with synchronous=FULL (it survives power loss, and so does every earlier commit)."""
    from agent.budget import BudgetBook
    from agent.ledger import SpendLedger
    from wallets.types import OutputRef, RequiredOutput

    db = Database(tmp_path / "agent.db")
    db.migrate()
    ledger = SpendLedger(db, BudgetBook(db, []))
    levels: list[int] = []
    conn = db.connection()
    conn.set_trace_callback(lambda s: s == "COMMIT" and levels.append(-1))
    real_atomic = db.atomic

    def spy(**kwargs):
        cm = real_atomic(**kwargs)
        return _Spy(cm, lambda: levels.append(conn.execute("PRAGMA synchronous").fetchone()[0]))

    db.atomic = spy  # type: ignore[method-assign]
    row = ledger.reserve(invoice_id="i", host="h", route="/chat", job_id=None,
                         outputs=[RequiredOutput("addr_test1qx", 1_000_000)], amounts={"lovelace": 1_000_000},
                         fee_estimate_lovelace=1)
    ledger.mark_signed(row.id, tx_id="ab" * 32, cbor=b"\x84", fee_lovelace=1, inputs=[OutputRef("f" * 64, 0)],
                       ttl_slot=9, cost_lovelace=1_000_001)
    ledger.mark_submitted(row.id)
    ledger.mark_settled(row.id)
    inside = [v for v in levels if v != -1]
    assert inside == [1, 2, 1, 1]  # reserve NORMAL, signed FULL, submitted and settled NORMAL


class _Spy:
    def __init__(self, cm, on_enter):
        self.cm, self.on_enter = cm, on_enter

    def __enter__(self):
        conn = self.cm.__enter__()
        self.on_enter()
        return conn

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)
