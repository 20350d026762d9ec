"""UTxO reservations in the agent database, so a restarted agent knows which inputs are in flight.

:class:`SqliteReservations` implements ``wallets.reservations.UtxoReservations`` over
:mod:`agent.store` (SQLite or PostgreSQL). Each reserve is one transaction holding the
database's write lock: several workers, processes or hosts sharing one database never take the
same input, and a payment signed before a crash still owns its inputs and its pending change
after the restart.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Collection, Iterable, Sequence

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
])


def _utxo_json(u: Utxo) -> dict[str, Any]:
    return {"tx_id": u.ref.tx_id, "index": u.ref.index, "address": u.address,
            "lovelace": int(u.lovelace), "assets": {k: int(v) for k, v in u.assets.items()}}


def _utxo(d: dict[str, Any]) -> Utxo:
    return Utxo(OutputRef(d["tx_id"], int(d["index"])), d["address"], int(d["lovelace"]),
                {k: int(v) for k, v in d["assets"].items()})


class SqliteReservations:
    """``UtxoReservations`` for one wallet, persisted in the agent database.

    Args:
        db: the agent database (migrated).
        wallet: the wallet's name (or address): reservations of different wallets never mix.
    """

    def __init__(self, db: Database, wallet: str) -> None:
        self.db = db
        self.wallet = wallet

    def reserve(self, owner: str, refs: Collection[OutputRef]) -> None:
        """Reserve every ref for ``owner``, all or nothing; ReservationConflict if another owner holds one."""
        wanted = set(refs)
        with self.db.atomic() as conn:
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

    def release(self, owner: str) -> None:
        """Drop ``owner``'s reservations and its pending records."""
        with self.db.atomic() as conn:
            conn.execute("DELETE FROM utxo_reservations WHERE wallet = ? AND owner = ?", (self.wallet, owner))
            conn.execute("DELETE FROM pending_change WHERE wallet = ? AND owner = ?", (self.wallet, owner))

    def reserved_refs(self) -> set[OutputRef]:
        """Every reserved ref of this wallet, whoever holds it."""
        return {
            OutputRef(r["tx_id"], r["output_index"])
            for r in self.db.execute(
                "SELECT tx_id, output_index FROM utxo_reservations WHERE wallet = ?", (self.wallet,))
        }

    def owner_of(self, ref: OutputRef) -> str | None:
        """Who holds ``ref``, or None."""
        row = self.db.execute(
            "SELECT owner FROM utxo_reservations WHERE wallet = ? AND tx_id = ? AND output_index = ?",
            (self.wallet, ref.tx_id, ref.index),
        ).fetchone()
        return row["owner"] if row else None

    def owners(self) -> set[str]:
        """Every owner holding reservations or pending change (to reconcile after a restart)."""
        return {r["owner"] for r in self.db.execute(
            "SELECT owner FROM utxo_reservations WHERE wallet = ?"
            " UNION SELECT owner FROM pending_change WHERE wallet = ?", (self.wallet, self.wallet))}

    def record_pending(self, owner: str, tx_id: str, change: Sequence[Utxo]) -> None:
        """``owner``'s transaction ``tx_id`` was submitted; its ``change`` is usable until confirmed."""
        payload = json.dumps([_utxo_json(u) for u in change])
        with self.db.atomic() as conn:
            conn.execute(
                "INSERT INTO pending_change (wallet, tx_id, owner, change, recorded_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (wallet, tx_id) DO UPDATE SET owner = excluded.owner, change = excluded.change",
                (self.wallet, tx_id, owner, payload, time.time()),
            )

    def pending_change(self) -> list[Utxo]:
        """Change outputs of submitted, unconfirmed transactions, in the order they were recorded."""
        out: list[Utxo] = []
        for r in self.db.execute(
            "SELECT change FROM pending_change WHERE wallet = ? ORDER BY recorded_at, tx_id", (self.wallet,)
        ):
            out.extend(_utxo(d) for d in json.loads(r["change"]))
        return out

    def pending_tx_ids(self) -> list[str]:
        """Transactions submitted and not yet cleared (including those without change)."""
        return [r["tx_id"] for r in self.db.execute(
            "SELECT tx_id FROM pending_change WHERE wallet = ? ORDER BY recorded_at, tx_id", (self.wallet,))]

    def clear_pending(self, tx_id: str) -> None:
        """``tx_id`` confirmed (or dropped): forget its pending change."""
        self.db.execute("DELETE FROM pending_change WHERE wallet = ? AND tx_id = ?", (self.wallet, tx_id))

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
