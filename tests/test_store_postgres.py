"""The store contract on both engines, and what only PostgreSQL has: URLs, passwords, lost servers."""

from __future__ import annotations

import pytest

from agent import store
from agent.errors import ConfigError, StoreError
from agent.store import Database, IntegrityError, SchemaTooNewError, redact_url
from tests.fixtures.postgres import ENGINES, open_db
from tests.pgcluster import PASSWORD


@pytest.fixture
def component():
    store.register_migrations("_probe", [
        "CREATE TABLE probe (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL, t REAL, b BLOB);",
        "ALTER TABLE probe ADD COLUMN w INTEGER NOT NULL DEFAULT 0;\nCREATE INDEX probe_v ON probe(v);",
    ])
    yield "_probe"
    store._MIGRATIONS.pop("_probe", None)


@pytest.fixture(params=ENGINES)
def fresh(request, tmp_path, component):
    """A new, unmigrated database on each engine (its own database on PostgreSQL)."""
    if request.param == "sqlite":
        db = Database(tmp_path / "a.db")
        yield db
        db.close()
        return
    url = request.getfixturevalue("pg_url")
    db = Database(url)
    yield db
    db.close()


def test_engine_is_picked_from_the_target(tmp_path):
    """A file path opens SQLite; a postgresql:// URL opens PostgreSQL (without connecting)."""
    from agent.postgres import PostgresDatabase

    assert Database(tmp_path / "x.db").engine == "sqlite"
    pg = Database("postgresql://agent:pw@127.0.0.1:1/agent")
    assert isinstance(pg, PostgresDatabase) and pg.engine == "postgresql"
    assert "pw" not in repr(pg) and "pw" not in pg.describe()


def test_migrations_apply_once_and_types_are_wide(fresh):
    """Each step runs once; ids, 64-bit integers, exact floats and bytes round-trip on both engines."""
    fresh.migrate()
    fresh.migrate()
    assert fresh.schema_versions()["_probe"] == 2
    big = 45_000_000_000_000_000  # lovelace: past 32 bits
    t = 1_764_547_200.123456
    with fresh.atomic() as conn:
        row = conn.execute("INSERT INTO probe (v, w, t, b) VALUES (?, ?, ?, ?) RETURNING id",
                           ("x", big, t, b"\x00\xff")).fetchone()
    assert row[0] == row["id"] == 1
    got = fresh.execute("SELECT * FROM probe").fetchone()
    assert (got["w"], got["t"], bytes(got["b"])) == (big, t, b"\x00\xff")


def test_atomic_rolls_back_and_nested_joins(fresh):
    """An error inside atomic() leaves no trace; a nested block is part of the outer one."""
    fresh.migrate()
    with pytest.raises(RuntimeError):
        with fresh.atomic():
            with fresh.atomic() as conn:
                conn.execute("INSERT INTO probe (v) VALUES ('inner')")
            raise RuntimeError("outer fails")
    assert fresh.execute("SELECT count(*) AS n FROM probe").fetchone()["n"] == 0


def test_errors_are_the_stores(fresh):
    """A broken statement is a StoreError; a constraint is an IntegrityError; both roll back."""
    fresh.migrate()
    with pytest.raises(StoreError):
        with fresh.atomic() as conn:
            conn.execute("INSERT INTO probe (v) VALUES ('x')")
            conn.execute("INSERT INTO no_such_table VALUES (1)")
    with pytest.raises(IntegrityError):
        with fresh.atomic() as conn:
            conn.execute("INSERT INTO probe (v) VALUES ('y')")
            conn.execute("INSERT INTO probe (v) VALUES (NULL)")
    assert fresh.execute("SELECT count(*) AS n FROM probe").fetchone()["n"] == 0


def test_schema_newer_than_the_code_is_refused(fresh):
    """A database migrated by a newer agent is refused, naming both versions; nothing is changed."""
    fresh.migrate()
    fresh.execute("UPDATE schema_versions SET version = 7 WHERE component = '_probe'")
    with pytest.raises(SchemaTooNewError) as err:
        fresh.migrate()
    assert "version 7" in str(err.value) and "version 2" in str(err.value)
    assert isinstance(err.value, ConfigError)
    assert fresh.schema_versions()["_probe"] == 7


def test_question_marks_and_percents_in_literals_survive(any_db):
    """Placeholders are ``?`` on both engines; a literal ``?`` or ``%`` inside quotes is left alone."""
    row = any_db.execute("SELECT '100%?' AS a, ? AS b, 5 % 3 AS c", ("x",)).fetchone()
    assert (row["a"], row["b"], row["c"]) == ("100%?", "x", 2)


def test_concurrent_migrations_from_two_hosts(pg_url, component):
    """Two agents migrating one new PostgreSQL database at once both succeed; each step ran once."""
    import threading

    dbs = [Database(pg_url) for _ in range(2)]
    errors: list[BaseException] = []

    def go(db):
        try:
            db.migrate()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(d,)) for d in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert dbs[0].schema_versions()["_probe"] == 2
    for d in dbs:
        d.close()


def test_wrong_password_is_one_line_without_the_password(pg_cluster):
    """A wrong password: a ConfigError of one line that names the database but not the password."""
    url = pg_cluster.tcp_url(password="not-the-password-xyz")
    db = Database(url)
    with pytest.raises(ConfigError) as err:
        db.migrate()
    text = str(err.value)
    assert "\n" not in text and "not-the-password-xyz" not in text
    assert "password authentication failed" in text and "***" in text
    db.close()


def test_right_password_over_tcp_works(pg_cluster):
    """The password in the URL is used (and still never shown)."""
    dbname = "tcp_pw_test"
    pg_cluster.create_database(dbname)
    db = Database(pg_cluster.tcp_url(dbname))
    db.migrate()
    assert db.schema_versions()
    assert PASSWORD not in repr(db) and PASSWORD not in db.describe()
    db.close()
    pg_cluster.drop_database(dbname)


def test_database_down_is_retryable_store_error():
    """Nothing listening: a StoreError (retryable, the worker waits), not a config error."""
    from tests.pgcluster import _free_port

    db = Database(f"postgresql://agent:pw@127.0.0.1:{_free_port()}/agent")
    with pytest.raises(StoreError) as err:
        db.migrate()
    assert not isinstance(err.value, ConfigError)
    assert "\n" not in str(err.value) and ":pw@" not in str(err.value)
    db.close()


def test_connection_lost_mid_transaction_then_reconnects(pg_url, component):
    """A connection killed mid-transaction: StoreError, nothing written; the next call reconnects."""
    db = Database(pg_url)
    db.migrate()
    with pytest.raises(StoreError):
        with db.atomic() as conn:
            conn.execute("INSERT INTO probe (v) VALUES ('lost')")
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert db.execute("SELECT count(*) AS n FROM probe").fetchone()["n"] == 0
    db.close()


def test_redact_url_hides_every_password_form():
    """Passwords in the userinfo or the query string become ***."""
    assert redact_url("postgresql://a:secret@h:5432/d") == "postgresql://a:***@h:5432/d"
    assert "secret" not in redact_url("postgresql://a@h/d?password=secret&sslmode=require")
    assert redact_url("postgresql://a@h/d") == "postgresql://a@h/d"


def test_durable_atomic_commits_on_both_engines(fresh):
    """atomic(durable=True) commits like atomic(); SQLite is back to synchronous=NORMAL afterwards."""
    fresh.migrate()
    with fresh.atomic(durable=True) as conn:
        conn.execute("INSERT INTO probe (v) VALUES ('kept')")
    assert fresh.execute("SELECT count(*) AS n FROM probe").fetchone()["n"] == 1
    if fresh.engine == "sqlite":
        assert fresh.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_clusters_of_dead_test_processes_are_reaped():
    """A cluster directory whose test process died is removed; one whose owner lives is kept."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from tests.pgcluster import find_bindir, reap_orphans

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    orphan = Path(tempfile.mkdtemp(prefix="agentpg-", dir="/tmp"))
    (orphan / "owner.pid").write_text(dead)
    alive = Path(tempfile.mkdtemp(prefix="agentpg-", dir="/tmp"))
    (alive / "owner.pid").write_text(str(os.getpid()))
    try:
        reap_orphans(find_bindir() or Path("/nonexistent"))
        assert not orphan.exists() and alive.exists()
    finally:
        import shutil

        shutil.rmtree(alive, ignore_errors=True)
        shutil.rmtree(orphan, ignore_errors=True)
