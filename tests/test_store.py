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
