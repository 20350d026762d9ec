"""UTxO reservations in the agent database, so a restarted agent knows which inputs are in flight.

:class:`SqliteReservations` implements ``wallets.reservations.UtxoReservations`` over
:mod:`agent.store` (SQLite or PostgreSQL). Each reserve is one transaction holding the
database's write lock: several workers, processes or hosts sharing one database never take the
same input, and a payment signed before a crash still owns its inputs and its pending change
after the restart.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Sequence

from agent.store import Database, register_migrations
from wallets.reservations import ReservationConflict
from wallets.types import OutputRef, Utxo

register_migrations("reservations", [
    """
    CREATE TABLE utxo_reservations (
        wallet      TEXT    NOT NULL,
        tx_id       TEXT    NOT NULL,
        output_index INTEGER NOT NULL,
        owner       TEXT    NOT NULL,
        reserved_at REAL    NOT NULL,
        PRIMARY KEY (wallet, tx_id, output_index)
    );
    CREATE INDEX utxo_reservations_by_owner ON utxo_reservations (wallet, owner);
    CREATE TABLE pending_change (
        wallet      TEXT NOT NULL,
        tx_id       TEXT NOT NULL,
        owner       TEXT NOT NULL,
        change      TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        PRIMARY KEY (wallet, tx_id)
    );
    CREATE INDEX pending_change_by_owner ON pending_change (wallet, owner);
    """,
    # Bumped by every write, so a reader keeps its copy while nothing changed (one row to read).
    """
    CREATE TABLE reservation_generations (
        wallet     TEXT    PRIMARY KEY,
        generation INTEGER NOT NULL
    );
    INSERT INTO reservation_generations (wallet, generation)
        SELECT wallet, 1 FROM utxo_reservations UNION SELECT wallet, 1 FROM pending_change;
    """,
])


def _utxo_json(u: Utxo) -> dict[str, Any]:
    return {"tx_id": u.ref.tx_id, "index": u.ref.index, "address": u.address,
            "lovelace": int(u.lovelace), "assets": {k: int(v) for k, v in u.assets.items()}}


def _utxo(d: dict[str, Any]) -> Utxo:
    return Utxo(OutputRef(d["tx_id"], int(d["index"])), d["address"], int(d["lovelace"]),
                {k: int(v) for k, v in d["assets"].items()})


class _View:
    """What this process last read of one wallet's reservations, at one generation."""

    __slots__ = ("generation", "holders", "pending", "_listing", "_change")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.holders: dict[OutputRef, str] = {}
        self.pending: dict[str, tuple[str, float, list[Utxo]]] = {}  # tx_id -> (owner, recorded_at, change)
        self._listing: list[tuple[float, str]] | None = None
        self._change: tuple[Utxo, ...] | None = None  # every pending change output, in recording order

    def order(self) -> list[tuple[float, str]]:
        """Pending transactions as (recorded_at, tx_id), in recording order."""
        if self._listing is None:
            self._listing = sorted((at, tx_id) for tx_id, (_, at, _) in self.pending.items())
        return self._listing

    def change(self) -> tuple[Utxo, ...]:
        """Every pending change output in recording order (kept until the pending records change)."""
        if self._change is None:
            self._change = tuple(u for _, tx_id in self.order() for u in self.pending[tx_id][2])
        return self._change

    def hold(self, refs: Collection[OutputRef], owner: str) -> None:
        for ref in refs:
            self.holders.setdefault(ref, owner)

    def drop_owner(self, owner: str) -> None:
        for ref in [r for r, o in self.holders.items() if o == owner]:
            del self.holders[ref]
        for tx_id in [t for t, (o, _, _) in self.pending.items() if o == owner]:
            self.drop_pending(tx_id)

    def put_pending(self, tx_id: str, owner: str, at: float, change: list[Utxo]) -> None:
        self.pending[tx_id] = (owner, at, change)
        self._listing = self._change = None

    def drop_pending(self, tx_id: str) -> None:
        if self.pending.pop(tx_id, None) is not None:
            self._listing = self._change = None


class SqliteReservations:
    """``UtxoReservations`` for one wallet, persisted in the agent database.

    Every write bumps the wallet's generation (``reservation_generations``) in its own
    transaction. Reads keep a copy of the wallet's rows and re-read them only when the
    generation moved under another writer (another process, host or instance); this instance's
    own writes update the copy directly. A payment's selection thus reads one small row instead
    of every reservation and pending change in flight, whose number grows with the calls
    waiting for their block.

    Args:
        db: the agent database (migrated).
        wallet: the wallet's name (or address): reservations of different wallets never mix.
    """

    def __init__(self, db: Database, wallet: str) -> None:
        self.db = db
        self.wallet = wallet
        self._lock = threading.RLock()
        self._view: _View | None = None

    # --- writes: each bumps the generation, then updates the kept copy (or drops it) ---

    def _write(self, body: Callable[[Any], Callable[[_View], None]]) -> None:
        """Run ``body`` in one transaction that also bumps the wallet's generation; once committed,
        apply the change ``body`` returns to the kept copy if the copy was current, else drop it."""
        with self._lock:
            nested = self.db.in_transaction()
            with self.db.atomic() as conn:
                change = body(conn)
                generation = int(conn.execute(
                    "INSERT INTO reservation_generations (wallet, generation) VALUES (?, 1)"
                    " ON CONFLICT (wallet) DO UPDATE SET generation = reservation_generations.generation + 1"
                    " RETURNING generation", (self.wallet,)).fetchone()["generation"])
            view = self._view
            if view is not None and not nested and view.generation == generation - 1:
                change(view)
                view.generation = generation
            else:
                self._view = None  # another writer came between (or an outer transaction may roll back)

    def reserve(self, owner: str, refs: Collection[OutputRef]) -> None:
        """Reserve every ref for ``owner``, all or nothing; ReservationConflict if another owner holds one."""
        wanted = set(refs)

        def body(conn: Any) -> Callable[[_View], None]:
            taken: set[OutputRef] = set()
            holder: str | None = None
            for ref in wanted:
                row = conn.execute(
                    "SELECT owner FROM utxo_reservations WHERE wallet = ? AND tx_id = ? AND output_index = ?",
                    (self.wallet, ref.tx_id, ref.index),
                ).fetchone()
                if row is not None and row["owner"] != owner:
                    taken.add(ref)
                    holder = row["owner"]
            if taken:
                raise ReservationConflict(taken, holder=holder)
            now = time.time()
            conn.executemany(
                "INSERT INTO utxo_reservations (wallet, tx_id, output_index, owner, reserved_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(self.wallet, r.tx_id, r.index, owner, now) for r in wanted],
            )
            return lambda view: view.hold(wanted, owner)

        self._write(body)

    def release(self, owner: str) -> None:
        """Drop ``owner``'s reservations and its pending records."""
        def body(conn: Any) -> Callable[[_View], None]:
            conn.execute("DELETE FROM utxo_reservations WHERE wallet = ? AND owner = ?", (self.wallet, owner))
            conn.execute("DELETE FROM pending_change WHERE wallet = ? AND owner = ?", (self.wallet, owner))
            return lambda view: view.drop_owner(owner)

        self._write(body)

    def record_pending(self, owner: str, tx_id: str, change: Sequence[Utxo]) -> None:
        """``owner``'s transaction ``tx_id`` was submitted; its ``change`` is usable until confirmed."""
        kept = list(change)
        payload = json.dumps([_utxo_json(u) for u in kept])

        def body(conn: Any) -> Callable[[_View], None]:
            at = float(conn.execute(
                "INSERT INTO pending_change (wallet, tx_id, owner, change, recorded_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (wallet, tx_id) DO UPDATE SET owner = excluded.owner, change = excluded.change"
                " RETURNING recorded_at",
                (self.wallet, tx_id, owner, payload, time.time()),
            ).fetchone()["recorded_at"])
            return lambda view: view.put_pending(tx_id, owner, at, kept)

        self._write(body)

    def clear_pending(self, tx_id: str) -> None:
        """``tx_id`` confirmed (or dropped): forget its pending change."""
        def body(conn: Any) -> Callable[[_View], None]:
            conn.execute("DELETE FROM pending_change WHERE wallet = ? AND tx_id = ?", (self.wallet, tx_id))
            return lambda view: view.drop_pending(tx_id)

        self._write(body)

    # --- reads: from the kept copy, re-read when the generation moved ---

    def _current(self) -> _View:
        """The copy at the database's current generation (one row read when nothing changed)."""
        with self._lock:
            row = self.db.execute("SELECT generation FROM reservation_generations WHERE wallet = ?",
                                  (self.wallet,)).fetchone()
            generation = int(row["generation"]) if row else 0
            view = self._view
            if view is not None and view.generation == generation:
                return view
            # Read after the generation: rows at least as new as it, so a later write is never missed.
            view = _View(generation)
            for r in self.db.execute("SELECT tx_id, output_index, owner FROM utxo_reservations WHERE wallet = ?",
                                     (self.wallet,)):
                view.holders[OutputRef(r["tx_id"], int(r["output_index"]))] = r["owner"]
            for r in self.db.execute("SELECT tx_id, owner, change, recorded_at FROM pending_change WHERE wallet = ?",
                                     (self.wallet,)):
                view.pending[r["tx_id"]] = (r["owner"], float(r["recorded_at"]),
                                            [_utxo(d) for d in json.loads(r["change"])])
            self._view = view
            return view

    def reserved_refs(self) -> set[OutputRef]:
        """Every reserved ref of this wallet, whoever holds it."""
        with self._lock:
            return set(self._current().holders)

    def owner_of(self, ref: OutputRef) -> str | None:
        """Who holds ``ref``, or None."""
        with self._lock:
            return self._current().holders.get(ref)

    def owners(self) -> set[str]:
        """Every owner holding reservations or pending change (to reconcile after a restart)."""
        with self._lock:
            view = self._current()
            return set(view.holders.values()) | {owner for owner, _, _ in view.pending.values()}

    def pending_change(self) -> list[Utxo]:
        """Change outputs of submitted, unconfirmed transactions, in the order they were recorded."""
        with self._lock:
            return list(self._current().change())

    def pending_tx_ids(self) -> list[str]:
        """Transactions submitted and not yet cleared (including those without change)."""
        with self._lock:
            return [tx_id for _, tx_id in self._current().order()]

    def __repr__(self) -> str:
        return f"SqliteReservations(wallet={self.wallet!r})"


def reservations_in_home(home: Path, wallet: str) -> tuple[SqliteReservations, Database]:
    """The agent's UTxO reservations for ``wallet`` in ``home``'s database, and that database to close after.

    What a short-lived process (``wallet send``, ``wallet split``) reserves through, so a
    running agent never picks the same inputs.
    """
    db = Database.for_home(home)
    return SqliteReservations(db, wallet), db


def pending_in_home(home: Path, keys: Iterable[str]) -> list[str]:
    """Transactions the agent submitted for any of ``keys`` (wallet names or addresses) and still tracks
    as unconfirmed, sorted. A home where the agent never ran has no database: nothing of ours is pending."""
    import os

    from agent.config import STORE_URL_ENV, load_config
    from agent.store import DB_FILENAME

    url = os.environ.get(STORE_URL_ENV) or (load_config(home).store.url if (home / "agent.toml").exists() else None)
    if not url and not (home / DB_FILENAME).exists():
        return []
    db = Database.open(home, url)
    try:
        return sorted({u.ref.tx_id for key in keys for u in SqliteReservations(db, key).pending_change()})
    finally:
        db.close()
