"""The PostgreSQL engine of :class:`agent.store.Database`: one database shared by a fleet of agents.

psycopg 3 with a connection pool (psycopg-pool). Statements are the stores' own SQL with ``?``
placeholders, bound on the client side (``ClientCursor``) so they mean what they mean on
SQLite. ``atomic()`` takes a transaction-level advisory lock (:data:`WRITE_LOCK`) when
``immediate``: the same one-writer-at-a-time guarantee as SQLite's ``BEGIN IMMEDIATE``, held
against every agent on every host that shares the database. Job claims skip it and lock rows
(``FOR UPDATE SKIP LOCKED``), so claiming never waits for a payment being recorded.

Errors: a database that cannot be reached, or is lost mid-transaction, raises
:class:`agent.errors.StoreError` (retryable: the transaction rolled back; reconnecting is the
pool's job). A wrong password, an unknown role or database raises
:class:`StoreConnectError` (a ``ConfigError``: final). Messages never carry the password.
"""

from __future__ import annotations

import functools
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from agent.errors import ConfigError, StoreError
from agent.store import Database, Dialect, IntegrityError, password_of as _password_of, redact_url, sqlite_ddl_to_postgres

log = logging.getLogger(__name__)

WRITE_LOCK = 0x43415244  # "CARD": the advisory lock every immediate transaction takes
MIGRATE_LOCK = 0x43415245
CONNECT_TIMEOUT_S = 5
POOL_TIMEOUT_S = 15.0
POOL_MAX_SIZE = 20


class StoreConnectError(ConfigError):
    """The database refused us for good: wrong password, unknown role or database, bad URL."""


@dataclass(frozen=True)
class _PostgresDialect(Dialect):
    def json_elements(self, column: str) -> str:
        return f"json_array_elements_text(({column})::json)"

    def ddl(self, sql: str) -> str:
        return sqlite_ddl_to_postgres(sql)


POSTGRES = _PostgresDialect("postgresql", for_update=" FOR UPDATE", skip_locked=" FOR UPDATE SKIP LOCKED",
                            row_locks=True)


@functools.lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """Turn ``?`` placeholders into psycopg's ``%s`` (and a literal ``%`` into ``%%``), outside quotes."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


class _Row(tuple):
    """A row readable by column name or position, like ``sqlite3.Row``."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> "_Row":
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Any:
    desc = cursor.description
    if desc is None:
        return None
    index = {c.name: i for i, c in enumerate(desc)}
    return lambda values: _Row(values, index)


class _Result:
    """Rows fetched from a statement, readable after the connection went back to the pool."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._pos = 0
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchall(self) -> list[Any]:
        rest = self._rows[self._pos:]
        self._pos = len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class _PgConn:
    """One pooled connection as the stores see it: ``execute`` with ``?`` placeholders."""

    def __init__(self, raw: Any, db: "PostgresDatabase") -> None:
        self.raw = raw
        self._db = db

    def execute(self, sql: str, params: Sequence | dict = ()) -> _Result:
        with self._db._errors():
            # Without parameters psycopg leaves the text alone: no placeholders to translate.
            cur = self.raw.execute(to_pyformat(sql), tuple(params)) if params else self.raw.execute(sql)
            rows = cur.fetchall() if cur.description is not None else []
            return _Result(rows, cur.rowcount)

    def executemany(self, sql: str, rows: Any) -> None:
        rows = [tuple(r) for r in rows]
        if not rows:
            return
        with self._db._errors():
            with self.raw.cursor() as cur:
                cur.executemany(to_pyformat(sql), rows)


class PostgresDatabase(Database):
    """A PostgreSQL database shared by every agent configured with the same URL.

    Args:
        url: ``postgresql://user[:password]@host[:port]/dbname[?...]``; the password may
            also come from ``PGPASSWORD`` or ``~/.pgpass`` (libpq's usual sources).
        max_size: the most connections this process opens.
    """

    dialect = POSTGRES

    def __init__(self, url: str, *, max_size: int = POOL_MAX_SIZE) -> None:
        self.url = url
        self._max_size = max_size
        self._local = threading.local()
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        password = _password_of(url)
        if password:
            from agent.logs import register_secret

            register_secret(password)

    def __repr__(self) -> str:
        return f"PostgresDatabase({redact_url(self.url)!r})"

    def describe(self) -> str:
        return f"postgresql {redact_url(self.url)}"

    @property
    def target(self) -> str:
        return self.url

    # -- connections -------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        password = _password_of(self.url)
        if password:
            text = text.replace(password, "***")
        return text.replace(self.url, redact_url(self.url))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Map psycopg's errors to the store's, without the password."""
        import psycopg

        try:
            yield
        except psycopg.errors.IntegrityError as exc:
            raise IntegrityError(self._redact(_first_line(exc))) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreConnectError(f"database {redact_url(self.url)}: {self._redact(_first_line(exc))}") from None
        except psycopg.Error as exc:
            raise StoreError(f"database error: {self._redact(_first_line(exc))}") from None

    def check(self) -> None:
        """Connect once, directly, and raise a one-line error if that fails (wrong password, down)."""
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            text = self._redact(_first_line(exc))
            if _is_final(exc):
                raise StoreConnectError(f"cannot use database {redact_url(self.url)}: {text}") from None
            raise StoreError(f"database {redact_url(self.url)} unreachable: {text}") from None
        except psycopg.ProgrammingError as exc:
            raise StoreConnectError(
                f"bad database URL {redact_url(self.url)}: {self._redact(_first_line(exc))}") from None

    def _get_pool(self) -> Any:
        with self._pool_lock:
            if self._pool is None:
                self.check()
                from psycopg import ClientCursor
                from psycopg_pool import ConnectionPool

                def configure(conn: Any) -> None:
                    conn.autocommit = True
                    conn.cursor_factory = ClientCursor
                    conn.row_factory = _row_factory

                self._pool = ConnectionPool(
                    self.url, min_size=1, max_size=self._max_size, timeout=POOL_TIMEOUT_S,
                    kwargs={"connect_timeout": CONNECT_TIMEOUT_S}, configure=configure,
                    open=True, name="cardano-agent",
                )
            return self._pool

    @contextmanager
    def _connection(self) -> Iterator[_PgConn]:
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        import psycopg_pool

        pool = self._get_pool()
        try:
            cm = pool.connection()
            raw = cm.__enter__()
        except psycopg_pool.PoolTimeout as exc:
            raise StoreError(f"database {redact_url(self.url)} unreachable: {self._redact(str(exc))}") from None
        try:
            yield _PgConn(raw, self)
        except BaseException as exc:
            cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            cm.__exit__(None, None, None)

    @contextmanager
    def atomic(self, *, immediate: bool = True, durable: bool = False) -> Iterator[_PgConn]:
        """One transaction; ``immediate`` also takes the fleet-wide write lock at its start.

        ``durable`` changes nothing: a PostgreSQL commit is on disk when it returns.
        """
        if getattr(self._local, "conn", None) is not None:
            yield self._local.conn
            return
        with self._connection() as conn:
            self._local.conn = conn
            try:
                with self._errors():
                    tx = conn.raw.transaction()
                    tx.__enter__()
                try:
                    if immediate:
                        conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
                    yield conn
                except BaseException as exc:
                    try:
                        tx.__exit__(type(exc), exc, exc.__traceback__)
                    except Exception:  # noqa: BLE001 - the connection is gone; the pool drops it
                        log.debug("rollback failed", exc_info=True)
                    raise
                else:
                    with self._errors():
                        tx.__exit__(None, None, None)
            finally:
                self._local.conn = None

    def in_transaction(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    def execute(self, sql: str, params: Sequence | dict = ()) -> _Result:
        """Run one statement in this thread's transaction, else on its own (autocommit)."""
        with self._connection() as conn:
            return conn.execute(sql, params)

    def migrate(self) -> None:
        """Apply missing migrations, one host at a time (a session advisory lock)."""
        self.check()
        with self._connection() as conn:
            conn.execute("SELECT pg_advisory_lock(?)", (MIGRATE_LOCK,))
            try:
                super().migrate()
            finally:
                conn.execute("SELECT pg_advisory_unlock(?)", (MIGRATE_LOCK,))

    def close(self) -> None:
        """Close the pool (every connection of this process)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_final(exc: Any) -> bool:
    """True for refusals that retrying cannot fix: authentication, unknown role or database."""
    state = getattr(exc, "sqlstate", None)
    if state and (state.startswith("28") or state == "3D000"):
        return True
    text = str(exc)
    return any(s in text for s in ("password authentication failed", "does not exist",
                                    "no password supplied", "invalid connection option",
                                    "invalid URI", "missing \"=\""))
