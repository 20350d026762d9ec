"""The one module that owns the database: engines, transactions and numbered migrations.

Two engines share one contract (:class:`Database`): SQLite in the agent home (the embedded
default, :class:`SqliteDatabase`) and PostgreSQL for fleets of agents on several hosts
(:class:`agent.postgres.PostgresDatabase`). ``Database(target)`` picks the engine from its
argument: a ``postgresql://`` URL or a file path. Every store above this module writes plain
SQL with ``?`` placeholders and asks :attr:`Database.dialect` for the few phrases that differ.

Each component (budgets, spend ledger, job queue, reservations, ...) registers its own
numbered migrations with :func:`register_migrations`; :meth:`Database.migrate` applies the
missing ones per component, recorded in ``schema_versions``. Steps are written in SQLite's
types (``INTEGER``, ``REAL``, ``BLOB``, ``INTEGER PRIMARY KEY AUTOINCREMENT``); the PostgreSQL
dialect maps them to ``BIGINT``, ``DOUBLE PRECISION``, ``BYTEA`` and an identity column. A
database whose schema is newer than this code is refused, naming both versions.

Transactions: ``atomic()`` is one transaction; ``immediate=True`` (the default) takes the write
lock at the start: ``BEGIN IMMEDIATE`` on SQLite, a transaction-level advisory lock shared by
every host on PostgreSQL. So a read-check-write such as a budget reservation never interleaves
with another writer, on one host or many. Job claims use row locks instead (``SKIP LOCKED``).

Durability: SQLite runs WAL with ``synchronous=NORMAL`` (a commit is atomic but may be lost
on power loss), except blocks opened with ``atomic(durable=True)``, which commit with
``synchronous=FULL`` (the WAL is synced before the commit returns, so that commit and every
one before it survive power loss). The spend ledger's ``signed`` row is written that way: it
must be on disk before its transaction can leave the machine. PostgreSQL commits are durable.
"""

from __future__ import annotations

import abc
import logging
import re
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from agent.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
DB_FILENAME = "agent.db"

_MIGRATIONS: dict[str, list[str]] = {}


class IntegrityError(StoreError):
    """A constraint refused a write (a unique key taken, a check failed): not retryable as is."""


class SchemaTooNewError(ConfigError):
    """The database was migrated by a newer agent than this one: refuse to touch it."""

    def __init__(self, component: str, found: int, known: int) -> None:
        super().__init__(
            f"the database schema of {component!r} is version {found}, newer than this agent "
            f"knows (version {known}): upgrade cardano-pay-agent on this host"
        )
        self.component = component
        self.found = found
        self.known = known


def register_migrations(component: str, steps: Sequence[str]) -> None:
    """Declare ``component``'s schema as numbered steps (step i is version i + 1).

    Steps are append-only: never edit a released step, add a new one. Write them with
    SQLite's type names; the PostgreSQL dialect translates them.
    """
    _MIGRATIONS[component] = list(steps)


ID_BATCH = 500
"""Ids per ``IN (...)`` list: well under SQLite's and PostgreSQL's limits on parameters."""


def id_batches(ids: Iterable[int]) -> Iterator[tuple[list[int], str]]:
    """``ids`` in batches for ``WHERE id IN (...)``: each batch and its placeholders (``?, ?, ?``)."""
    listed = [int(i) for i in ids]
    for at in range(0, len(listed), ID_BATCH):
        batch = listed[at:at + ID_BATCH]
        yield batch, ", ".join("?" * len(batch))


def is_postgres_url(target: object) -> bool:
    """True if ``target`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe to print or log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(unparseable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':***' if sep else ''}@{hostport}"
    query = "&".join(
        ("password=***" if q.lower().startswith("password=") else q) for q in parts.query.split("&")
    ) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def password_of(url: str) -> str | None:
    """The password written in ``url`` (to redact it), if any."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.password:
        return parts.password
    for q in parts.query.split("&"):
        if q.lower().startswith("password="):
            return q.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class Dialect:
    """The SQL phrases that differ between engines; the stores ask for them by name."""

    name: str
    for_update: str = ""
    """Appended to a SELECT whose rows the transaction will rewrite (row lock)."""
    skip_locked: str = ""
    """Appended to a claim's SELECT: skip rows another transaction holds."""
    row_locks: bool = False
    """True if claims lock rows rather than the whole database."""

    def json_elements(self, column: str) -> str:
        """A table of the text elements of the JSON array in ``column`` (one column, ``value``)."""
        return f"json_each({column})"

    def ddl(self, sql: str) -> str:
        """A migration step as this engine speaks it."""
        return sql


SQLITE = Dialect("sqlite")


class Database(abc.ABC):
    """The agent database, SQLite or PostgreSQL; ``Database(target)`` picks the engine.

    Args:
        target: a file path, ``":memory:"``, or a ``postgresql://`` URL.
    """

    dialect: Dialect = SQLITE

    def __new__(cls, target: Any = None, *args: Any, **kwargs: Any) -> "Database":
        if cls is Database:
            if is_postgres_url(target):
                from agent.postgres import PostgresDatabase

                cls = PostgresDatabase
            else:
                cls = SqliteDatabase
        return super().__new__(cls)

    @classmethod
    def in_home(cls, home: Path) -> "Database":
        """Open (creating if needed) the SQLite database in ``home`` and apply migrations."""
        db = SqliteDatabase(Path(home) / DB_FILENAME)
        db.migrate()
        return db

    @classmethod
    def open(cls, home: Path, url: str | None = None) -> "Database":
        """Open the configured database (``url``, else SQLite in ``home``), migrated."""
        if url:
            db = database_at(url)
            try:
                db.migrate()
            except BaseException:
                db.close()
                raise
            return db
        return cls.in_home(home)

    @classmethod
    def for_home(cls, home: Path, env: Any = None) -> "Database":
        """Open the database ``home``'s configuration names (``[store] url`` or the env), migrated."""
        import os

        from agent.config import load_config

        config = load_config(Path(home), os.environ if env is None else env)
        return cls.open(Path(home), config.store.url)

    @property
    @abc.abstractmethod
    def target(self) -> str:
        """What ``Database(target)`` reopens: the file path or the URL (may hold a password)."""

    @property
    def engine(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.dialect.name

    @abc.abstractmethod
    def atomic(self, *, immediate: bool = True, durable: bool = False) -> Any:
        """Context manager: one transaction, committed on success, rolled back on any error.

        ``immediate`` takes the write lock at the start, so a read-check-write sequence
        cannot interleave with another writer. ``durable``: the commit is on disk (it
        survives power loss) when the block returns. Nested calls join the outer transaction,
        whose commit decides.
        """

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence | dict = ()) -> Any:
        """Run one statement (in this thread's open transaction, else on its own)."""

    @abc.abstractmethod
    def in_transaction(self) -> bool:
        """True inside an ``atomic`` block of this thread (a nested block's commit is not its own)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the engine's connections."""

    def describe(self) -> str:
        """Where the data lives, safe to print (never a password)."""
        return self.engine

    def migrate(self) -> None:
        """Apply every registered migration step not yet recorded, component by component.

        Raises:
            SchemaTooNewError: a component's recorded version is past the steps this code has.
        """
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
                current = int(row["version"]) if row else 0
                if current > len(steps):
                    raise SchemaTooNewError(component, current, len(steps))
                for number, sql in enumerate(steps[current:], start=current + 1):
                    log.debug("migrating %s to version %d", component, number)
                    for statement in split_sql(self.dialect.ddl(sql)):
                        conn.execute(statement)
                if len(steps) > current:
                    conn.execute(
                        "INSERT INTO schema_versions (component, version) VALUES (?, ?)"
                        " ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                        (component, len(steps)),
                    )

    def schema_versions(self) -> dict[str, int]:
        """Return the recorded version of every component's schema."""
        return {r["component"]: int(r["version"])
                for r in self.execute("SELECT component, version FROM schema_versions")}


def database_at(target: str | Path) -> Database:
    """The database at ``target``: a ``postgresql://`` URL or a SQLite file path (not migrated)."""
    if is_postgres_url(target):
        from agent.postgres import PostgresDatabase

        return PostgresDatabase(str(target))
    return SqliteDatabase(target)


class _SqliteConn:
    """A SQLite connection whose errors are the store's (IntegrityError, StoreError)."""

    __slots__ = ("raw",)

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence | dict = ()) -> sqlite3.Cursor:
        try:
            return self.raw.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            raise StoreError(f"database error: {exc}") from exc

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        try:
            return self.raw.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            raise StoreError(f"database error: {exc}") from exc

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction


class SqliteDatabase(Database):
    """A SQLite database file with one connection per thread.

    Args:
        path: the database file, or ``":memory:"`` for a private in-memory database
            (then every thread shares one connection guarded by a lock).
    """

    dialect = SQLITE

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._memory = self.path == ":memory:"
        self._shared: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"SqliteDatabase({self.path!r})"

    @property
    def target(self) -> str:
        return self.path

    def describe(self) -> str:
        return f"sqlite {self.path}"

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
    def atomic(self, *, immediate: bool = True, durable: bool = False) -> Iterator[_SqliteConn]:
        """Run a block in one transaction (``BEGIN IMMEDIATE`` unless ``immediate=False``).

        ``durable`` commits with ``synchronous=FULL`` (SQLite cannot change the level inside a
        transaction, so a nested block follows its outer one).
        """
        raw = self.connection()
        conn = _SqliteConn(raw)
        with self._lock if self._memory else _nullcontext():
            if raw.in_transaction:
                yield conn
                return
            full = durable and not self._memory
            if full:
                raw.execute("PRAGMA synchronous = FULL")
            try:
                yield from self._transaction(raw, conn, immediate)
            finally:
                if full:
                    try:
                        raw.execute("PRAGMA synchronous = NORMAL")
                    except sqlite3.Error:  # the connection is unusable anyway; its next use reports it
                        pass

    @staticmethod
    def _transaction(raw: sqlite3.Connection, conn: _SqliteConn, immediate: bool) -> Iterator[_SqliteConn]:
        """BEGIN, yield, COMMIT (ROLLBACK on any error); see :meth:`atomic`."""
        try:
            raw.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"database busy: {exc}") from exc
        try:
            yield conn
        except BaseException:
            # Locked or full database inside the block is a StoreError (retryable):
            # either way nothing was written.
            raw.execute("ROLLBACK")
            raise
        try:
            raw.execute("COMMIT")
        except sqlite3.Error as exc:
            raw.execute("ROLLBACK")
            raise StoreError(f"could not commit: {exc}") from exc

    def execute(self, sql: str, params: Sequence | dict = ()) -> sqlite3.Cursor:
        """Run one statement outside an explicit transaction (autocommit)."""
        return _SqliteConn(self.connection()).execute(sql, params)

    def in_transaction(self) -> bool:
        return self.connection().in_transaction

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
    "agent.sql_reservations",
    "agent.scheduler",
    "agent.workers",
    "agent.x402v2_store",
]


def _import_components() -> None:
    import importlib

    for name in COMPONENT_MODULES:
        importlib.import_module(name)


def split_sql(script: str) -> list[str]:
    """Split a migration step into statements (drivers run one statement at a time)."""
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


_split_sql = split_sql

_TYPE_WORDS = [
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
]


def sqlite_ddl_to_postgres(sql: str) -> str:
    """Translate a migration step's SQLite type names to PostgreSQL's (64-bit, exact widths)."""
    for pattern, replacement in _TYPE_WORDS:
        sql = pattern.sub(replacement, sql)
    return sql


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield
