"""The one module that owns SQLite: connections, transactions and numbered migrations.

Each component (budgets, spend ledger, job queue, reservations, ...) registers its own
numbered migrations with :func:`register_migrations`; :meth:`Database.migrate` applies the
missing ones per component, recorded in ``schema_versions``. Connections are per thread
(SQLite connections must not be shared across threads) and use WAL with a busy timeout, so
several workers and processes can share one home.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from agent.errors import StoreError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
DB_FILENAME = "agent.db"

_MIGRATIONS: dict[str, list[str]] = {}


def register_migrations(component: str, steps: Sequence[str]) -> None:
    """Declare ``component``'s schema as numbered steps (step i is version i + 1).

    Steps are append-only: never edit a released step, add a new one.
    """
    _MIGRATIONS[component] = list(steps)


class Database:
    """A SQLite database file with one connection per thread.

    Args:
        path: the database file, or ``":memory:"`` for a private in-memory database
            (then every thread shares one connection guarded by a lock).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._memory = self.path == ":memory:"
        self._shared: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def in_home(cls, home: Path) -> "Database":
        """Open (creating if needed) the agent database in ``home`` and apply migrations."""
        db = cls(Path(home) / DB_FILENAME)
        db.migrate()
        return db

    def connection(self) -> sqlite3.Connection:
        """Return this thread's connection, opening it on first use."""
        if self._memory:
            if self._shared is None:
                self._shared = self._open()
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=not self._memory,
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not self._memory:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        return conn

    @contextmanager
    def atomic(self, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """Run a block in one transaction: committed on success, rolled back on any error.

        ``immediate`` takes the write lock at the start (``BEGIN IMMEDIATE``), so a
        read-check-write sequence such as a budget reservation cannot interleave with
        another writer. Nested calls join the outer transaction.
        """
        conn = self.connection()
        with self._lock if self._memory else _nullcontext():
            if conn.in_transaction:
                yield conn
                return
            try:
                conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            except sqlite3.OperationalError as exc:
                raise StoreError(f"database busy: {exc}") from exc
            try:
                yield conn
            except sqlite3.OperationalError as exc:
                # Locked or full database inside the block: retryable, and nothing was written.
                conn.execute("ROLLBACK")
                raise StoreError(f"database error: {exc}") from exc
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreError(f"could not commit: {exc}") from exc

    def execute(self, sql: str, params: Sequence | dict = ()) -> sqlite3.Cursor:
        """Run one statement outside an explicit transaction (autocommit)."""
        try:
            return self.connection().execute(sql, params)
        except sqlite3.OperationalError as exc:
            raise StoreError(str(exc)) from exc

    def migrate(self) -> None:
        """Apply every registered migration step not yet recorded, component by component."""
        _import_components()
        with self.atomic() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions ("
                " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            for component, steps in sorted(_MIGRATIONS.items()):
                row = conn.execute(
                    "SELECT version FROM schema_versions WHERE component = ?", (component,)
                ).fetchone()
                current = row["version"] if row else 0
                for number, sql in enumerate(steps[current:], start=current + 1):
                    log.debug("migrating %s to version %d", component, number)
                    for statement in _split_sql(sql):
                        conn.execute(statement)
                if len(steps) > current:
                    conn.execute(
                        "INSERT INTO schema_versions (component, version) VALUES (?, ?)"
                        " ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                        (component, len(steps)),
                    )

    def close(self) -> None:
        """Close this thread's connection (and the shared one for ``:memory:``)."""
        conn = self._shared if self._memory else getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._shared = None
        self._local = threading.local()


# Modules that register migrations; imported on migrate so every table exists.
COMPONENT_MODULES: list[str] = [
    "agent.approvals",
    "agent.budget",
    "agent.ledger",
    "agent.queue",
    "agent.reservations",
    "agent.scheduler",
    "agent.x402v2_payer",
]


def _import_components() -> None:
    import importlib

    for name in COMPONENT_MODULES:
        importlib.import_module(name)


def _split_sql(script: str) -> list[str]:
    """Split a migration step into statements (sqlite3's execute runs one at a time)."""
    statements, buf = [], []
    for line in script.splitlines():
        buf.append(line)
        candidate = "\n".join(buf).strip()
        if candidate.endswith(";") and sqlite3.complete_statement(candidate):
            statements.append(candidate)
            buf = []
    rest = "\n".join(buf).strip()
    if rest:
        statements.append(rest)
    return statements


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield
