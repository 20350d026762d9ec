"""The spend ledger: one row per invoice the agent meets, from reservation to settlement.

States and the only legal moves::

    reserved ──► signed ──► submitted ──► settled
       │           │            │  └────► unsettled ──► settled
       ├──► refused ◄┘          │
       └──► released ◄──────────┘ (also from signed)

``refused`` rows are also written directly by :meth:`SpendLedger.record_refusal` for invoices
the policy or a budget turned down. ``released``/``refused`` mean nothing left the wallet;
``submitted``/``settled``/``unsettled`` mean it did. At most one *live* row (any state but
``refused``/``released``) exists per invoice id, enforced by a unique index: never pay twice.

A ``submitted`` row is released only by :meth:`SpendLedger.release_unlanded`, which takes the
definitive evidence that its transaction can never land (its TTL passed and the chain, read
from the slot it was signed at, does not hold it); :meth:`SpendLedger.release` refuses it.

Durability: :meth:`SpendLedger.mark_signed` commits with ``synchronous=FULL`` (synced to
disk before the transaction can be submitted), which also makes every earlier commit durable;
other moves are safe to lose on power loss, since recovery re-derives them from the chain.

Each unfinished row has an ``owner``: the live process (``host:pid:n``) paying it. Crash
recovery takes over (:meth:`SpendLedger.take_over`) only rows whose owner is gone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Collection, Iterable, Mapping, NamedTuple, Sequence

from agent.budget import BudgetBook
from agent.errors import PaymentError, StoreError
from agent.store import Database, IntegrityError, id_batches, register_migrations
from wallets.types import LOVELACE, OutputRef

RESERVED, SIGNED, SUBMITTED, SETTLED = "reserved", "signed", "submitted", "settled"
REFUSED, UNSETTLED, RELEASED = "refused", "unsettled", "released"
STATES = (RESERVED, SIGNED, SUBMITTED, SETTLED, REFUSED, UNSETTLED, RELEASED)
UNFINISHED = (RESERVED, SIGNED, SUBMITTED)
PAID = (SUBMITTED, SETTLED, UNSETTLED)

_MOVES: dict[str, frozenset[str]] = {
    RESERVED: frozenset({SIGNED, REFUSED, RELEASED}),
    SIGNED: frozenset({SUBMITTED, REFUSED, RELEASED}),
    SUBMITTED: frozenset({SUBMITTED, SETTLED, UNSETTLED}),
    UNSETTLED: frozenset({SETTLED}),
    SETTLED: frozenset(),
    REFUSED: frozenset(),
    RELEASED: frozenset(),
}

_SOURCES: dict[str, tuple[str, ...]] = {
    target: tuple(sorted(state for state, moves in _MOVES.items() if target in moves))
    for target in {t for moves in _MOVES.values() for t in moves}
}
"""For each state, the states a payment may move to it from."""

register_migrations("ledger", [
    """
    CREATE TABLE payments (
        id                    INTEGER PRIMARY KEY AUTOINCREMENT,
        invoice_id            TEXT    NOT NULL,
        host                  TEXT    NOT NULL,
        route                 TEXT,
        job_id                INTEGER,
        tags                  TEXT    NOT NULL DEFAULT '[]',
        outputs               TEXT    NOT NULL DEFAULT '[]',
        amounts               TEXT    NOT NULL DEFAULT '{}',
        fee_estimate_lovelace INTEGER NOT NULL DEFAULT 0,
        fee_lovelace          INTEGER,
        cost_lovelace         INTEGER,
        tx_id                 TEXT,
        cbor                  BLOB,
        inputs                TEXT    NOT NULL DEFAULT '[]',
        ttl_slot              INTEGER,
        state                 TEXT    NOT NULL,
        reason                TEXT,
        created_at            REAL    NOT NULL,
        updated_at            REAL    NOT NULL,
        signed_at             REAL,
        submitted_at          REAL,
        settled_at            REAL
    );
    CREATE UNIQUE INDEX payments_live_invoice ON payments (invoice_id)
        WHERE state NOT IN ('refused', 'released');
    CREATE INDEX payments_by_state ON payments (state);
    CREATE INDEX payments_by_created ON payments (created_at);
    CREATE INDEX payments_by_job ON payments (job_id);
    """,
    # The invoice's expiry, so crash recovery can tell "resubmit the same transaction" from
    # "release and start again" without the server.
    "ALTER TABLE payments ADD COLUMN expires_at REAL;",
    # Partner billing: one payment may buy a prepaid batch of calls, so its cost per call is
    # cost / batch_target (``cardano-agent credits``).
    "ALTER TABLE payments ADD COLUMN partner TEXT;\n"
    "ALTER TABLE payments ADD COLUMN batch_target INTEGER NOT NULL DEFAULT 1;",
    # Crash recovery from evidence: who pays the row (a live process owns it), and the chain
    # point (tip) when it was signed, from which chain sync looks for its transaction.
    "ALTER TABLE payments ADD COLUMN owner TEXT;\n"
    "ALTER TABLE payments ADD COLUMN sync_slot INTEGER;\n"
    "ALTER TABLE payments ADD COLUMN sync_id TEXT;",
    # Recovery judges a payment chained on another's change by that payment (SpendLedger.by_tx).
    "CREATE INDEX payments_by_tx ON payments (tx_id);",
])


def _rowid(cur: Any) -> int:
    """The id of the row an ``INSERT ... RETURNING id`` just wrote."""
    row = cur.fetchone()
    if row is None:
        raise StoreError("insert did not return a row id")
    return int(row[0])


class LedgerStateError(PaymentError):
    """A payment row asked to make a move its state does not allow (or that does not exist)."""


class DuplicatePaymentError(PaymentError):
    """The invoice already has a live payment row; paying it again is refused."""

    def __init__(self, invoice_id: str, payment_id: int | None) -> None:
        super().__init__(f"invoice {invoice_id!r} already has payment {payment_id}; never paying twice")
        self.invoice_id = invoice_id
        self.payment_id = payment_id


@dataclass(frozen=True)
class PaymentRow:
    """One ledger row. Amounts are integers (lovelace or token units); times are epoch seconds."""

    id: int
    invoice_id: str
    host: str
    route: str | None
    job_id: int | None
    tags: tuple[str, ...]
    outputs: tuple[dict[str, Any], ...]
    amounts: dict[str, int]
    fee_estimate_lovelace: int
    fee_lovelace: int | None
    cost_lovelace: int | None
    tx_id: str | None
    cbor: bytes | None = field(repr=False)
    inputs: tuple[OutputRef, ...]
    ttl_slot: int | None
    state: str
    reason: str | None
    created_at: float
    updated_at: float
    signed_at: float | None
    submitted_at: float | None
    settled_at: float | None
    expires_at: float | None = None
    partner: str | None = None
    batch_target: int = 1
    owner: str | None = None
    sync_slot: int | None = None
    sync_id: str | None = None

    @property
    def paid(self) -> bool:
        """True if the transaction left the wallet (submitted, settled or unsettled)."""
        return self.state in PAID

    @property
    def amount_lovelace(self) -> int:
        """Lovelace paid to others: the actual cost minus the fee once signed, else the invoice amount."""
        if self.cost_lovelace is not None:
            return self.cost_lovelace - (self.fee_lovelace or 0)
        return int(self.amounts.get(LOVELACE, 0))


class ReportLine(NamedTuple):
    """One line of a spend report."""

    key: str
    count: int  # type: ignore[assignment]  # the field deliberately shadows tuple.count
    amount_lovelace: int
    fee_lovelace: int


def _output_dict(out: Any) -> dict[str, Any]:
    if isinstance(out, Mapping):
        d = dict(out)
    else:
        d = {k: getattr(out, k) for k in ("address", "amount", "asset", "role") if hasattr(out, k)}
    d.setdefault("asset", LOVELACE)
    d.setdefault("role", None)
    if "address" not in d or "amount" not in d:
        raise ValueError(f"an output needs an address and an amount: {out!r}")
    d["amount"] = int(d["amount"])
    return d


def _tag_list(tags: Collection[str]) -> list[str]:
    return [tags] if isinstance(tags, str) else sorted({str(t) for t in tags})


def _ref_text(ref: Any) -> str:
    if isinstance(ref, OutputRef):
        return str(ref)
    if isinstance(ref, str) and "#" in ref:
        return ref
    if isinstance(ref, Sequence) and len(ref) == 2:
        return f"{ref[0]}#{int(ref[1])}"
    raise ValueError(f"not an output reference: {ref!r}")


def _parse_ref(text: str) -> OutputRef:
    tx_id, _, index = text.rpartition("#")
    return OutputRef(tx_id, int(index))


def _row(r: Any) -> PaymentRow:
    return PaymentRow(
        id=r["id"], invoice_id=r["invoice_id"], host=r["host"], route=r["route"],
        job_id=r["job_id"], tags=tuple(json.loads(r["tags"])),
        outputs=tuple(json.loads(r["outputs"])),
        amounts={k: int(v) for k, v in json.loads(r["amounts"]).items()},
        fee_estimate_lovelace=r["fee_estimate_lovelace"], fee_lovelace=r["fee_lovelace"],
        cost_lovelace=r["cost_lovelace"], tx_id=r["tx_id"],
        cbor=bytes(r["cbor"]) if r["cbor"] is not None else None,
        inputs=tuple(_parse_ref(t) for t in json.loads(r["inputs"])),
        ttl_slot=r["ttl_slot"], state=r["state"], reason=r["reason"],
        created_at=r["created_at"], updated_at=r["updated_at"], signed_at=r["signed_at"],
        submitted_at=r["submitted_at"], settled_at=r["settled_at"], expires_at=r["expires_at"],
        partner=r["partner"], batch_target=r["batch_target"], owner=r["owner"],
        sync_slot=r["sync_slot"], sync_id=r["sync_id"],
    )


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


class SpendLedger:
    """Every payment the agent makes or refuses, with its budget charges.

    Args:
        db: the agent database (migrated).
        budgets: the budget book whose limits every reservation is checked against.
    """

    def __init__(self, db: Database, budgets: BudgetBook) -> None:
        self.db = db
        self.budgets = budgets

    # -- writing ---------------------------------------------------------------------------

    def reserve(self, *, invoice_id: str, host: str, route: str | None, job_id: int | None,
                tags: Collection[str] = (), outputs: Iterable[Any],
                amounts: Mapping[str, int], fee_estimate_lovelace: int,
                now: float | None = None, expires_at: float | None = None,
                partner: str | None = None, batch_target: int = 1, owner: str | None = None) -> PaymentRow:
        """Check every matching budget and record the intent to pay, in one transaction.

        ``expires_at`` (epoch seconds) is the invoice's expiry, kept for crash recovery.
        ``owner`` is the live process paying it (recovery leaves it alone while that lives).

        Raises:
            BudgetExceededError: a matching budget cannot fit the charge; nothing is written.
            DuplicatePaymentError: the invoice already has a live row.
        """
        at = _now(now)
        outs = [_output_dict(o) for o in outputs]
        clean = {str(a): int(q) for a, q in amounts.items()}
        if any(q < 0 for q in clean.values()) or fee_estimate_lovelace < 0:
            raise ValueError("amounts and fees must not be negative")
        with self.db.atomic() as conn:
            live = conn.execute(
                "SELECT id FROM payments WHERE invoice_id = ? AND state NOT IN ('refused', 'released')",
                (invoice_id,),
            ).fetchone()
            if live is not None:
                raise DuplicatePaymentError(invoice_id, live["id"])
            try:
                cur = conn.execute(
                    "INSERT INTO payments (invoice_id, host, route, job_id, tags, outputs, amounts,"
                    " fee_estimate_lovelace, state, created_at, updated_at, expires_at, partner, batch_target,"
                    " owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'reserved', ?, ?, ?, ?, ?, ?) RETURNING *",
                    (invoice_id, host, route, job_id, json.dumps(_tag_list(tags)),
                     json.dumps(outs), json.dumps(clean), int(fee_estimate_lovelace), at, at,
                     expires_at, partner, max(1, int(batch_target)), owner),
                )
                inserted = cur.fetchone()
            except IntegrityError as exc:
                raise DuplicatePaymentError(invoice_id, None) from exc
            if inserted is None:
                raise StoreError("insert did not return a row id")
            row = _row(inserted)
            self.budgets.charge(conn, row.id, route=route, tags=tags, amounts=clean,
                                fee_lovelace=int(fee_estimate_lovelace), now=at)
            return row

    def record_refusal(self, invoice_id: str, host: str, route: str | None, job_id: int | None,
                       reason: str, amounts: Mapping[str, int] | None = None,
                       now: float | None = None, *, outputs: Iterable[Any] = (),
                       tags: Collection[str] = ()) -> PaymentRow:
        """Record an invoice that was refused before anything was reserved (nothing paid)."""
        at = _now(now)
        with self.db.atomic() as conn:
            cur = conn.execute(
                "INSERT INTO payments (invoice_id, host, route, job_id, tags, outputs, amounts,"
                " state, reason, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'refused', ?, ?, ?) RETURNING id",
                (invoice_id, host, route, job_id, json.dumps(_tag_list(tags)),
                 json.dumps([_output_dict(o) for o in outputs]),
                 json.dumps({str(a): int(q) for a, q in (amounts or {}).items()}),
                 reason, at, at),
            )
            return _row(self._fetch(conn, _rowid(cur)))

    def mark_signed(self, payment_id: int, *, tx_id: str, cbor: bytes, fee_lovelace: int,
                    inputs: Iterable[Any], ttl_slot: int, cost_lovelace: int,
                    now: float | None = None, sync_point: tuple[int, str] | None = None) -> PaymentRow:
        """Make the signed transaction durable (before submitting it) and charge its actual cost.

        ``sync_point`` is the chain tip (slot, block id) before the transaction could exist:
        recovery reads the chain from there to learn whether it landed.

        Raises:
            BudgetExceededError: the actual cost no longer fits a budget; the row stays
                ``reserved`` and must be released, never submitted.
        """
        at = _now(now)
        with self.db.atomic(durable=True) as conn:  # synced: the signed tx must outlive a power loss
            row = self._move(conn, payment_id, SIGNED)
            actual = dict(row.amounts)
            actual[LOVELACE] = int(cost_lovelace) - int(fee_lovelace)
            self.budgets.charge(conn, payment_id, route=row.route, tags=row.tags, amounts=actual,
                                fee_lovelace=int(fee_lovelace), now=at)
            return _row(conn.execute(
                "UPDATE payments SET state = 'signed', tx_id = ?, cbor = ?, fee_lovelace = ?,"
                " inputs = ?, ttl_slot = ?, cost_lovelace = ?, signed_at = ?, updated_at = ?,"
                " sync_slot = ?, sync_id = ? WHERE id = ? RETURNING *",
                (tx_id, bytes(cbor), int(fee_lovelace), json.dumps([_ref_text(r) for r in inputs]),
                 int(ttl_slot), int(cost_lovelace), at, at,
                 None if sync_point is None else int(sync_point[0]),
                 None if sync_point is None else str(sync_point[1]), payment_id),
            ).fetchone())

    def mark_submitted(self, payment_id: int, *, now: float | None = None) -> PaymentRow:
        """The signed transaction went to the chain (or to the server): its charges become spend."""
        at = _now(now)
        with self.db.atomic() as conn:
            row = self._moved(conn, payment_id, SUBMITTED, "submitted_at = COALESCE(submitted_at, ?), updated_at = ?",
                              (at, at))
            self.budgets.commit(conn, payment_id)
            return row

    def mark_settled(self, payment_id: int, *, now: float | None = None) -> PaymentRow:
        """The server accepted the payment."""
        at = _now(now)
        with self.db.atomic() as conn:
            return self._moved(conn, payment_id, SETTLED, "settled_at = ?, updated_at = ?", (at, at))

    def mark_refused(self, payment_id: int, reason: str, *, now: float | None = None) -> PaymentRow:
        """Policy or budget refused the payment before it was submitted: nothing paid, charges dropped."""
        return self._end(payment_id, REFUSED, reason, now)

    def release(self, payment_id: int, reason: str, *, now: float | None = None) -> PaymentRow:
        """The transaction was never submitted: charges dropped (LedgerStateError once submitted)."""
        return self._end(payment_id, RELEASED, reason, now)

    def release_unlanded(self, payment_id: int, evidence: str, *, now: float | None = None) -> PaymentRow:
        """A signed or submitted transaction can never land, as ``evidence`` shows: charges dropped.

        Only for definitive evidence (the TTL passed and the chain read from the signing point
        holds no such transaction); never on a submit error.
        """
        if not evidence:
            raise LedgerStateError(f"payment {payment_id}: releasing a sent payment needs evidence")
        return self._end(payment_id, RELEASED, f"never landed: {evidence}", now, allow={SUBMITTED})

    def take_over(self, payment_id: int, *, owner: str, previous: str | None,
                  now: float | None = None) -> bool:
        """Make ``owner`` the owner of an unfinished row still owned by ``previous``; False if it moved on."""
        at = _now(now)
        with self.db.atomic() as conn:
            cur = conn.execute(
                "UPDATE payments SET owner = ?, updated_at = ? WHERE id = ?"
                " AND (owner = ? OR (owner IS NULL AND ? IS NULL))"
                " AND state IN ('reserved', 'signed', 'submitted')", (owner, at, payment_id, previous, previous))
            return cur.rowcount == 1

    def mark_unsettled(self, payment_id: int, reason: str, *, now: float | None = None) -> PaymentRow:
        """The server refused a payment that was made: the charge stays, the invoice is never paid again."""
        at = _now(now)
        with self.db.atomic() as conn:
            self._move(conn, payment_id, UNSETTLED)
            conn.execute(
                "UPDATE payments SET state = 'unsettled', reason = ?, updated_at = ? WHERE id = ?",
                (reason, at, payment_id),
            )
            return _row(self._fetch(conn, payment_id))

    def _end(self, payment_id: int, state: str, reason: str, now: float | None, *,
             allow: Collection[str] = ()) -> PaymentRow:
        at = _now(now)
        with self.db.atomic() as conn:
            row = _row(self._fetch(conn, payment_id))
            if row.state not in allow:
                self._move(conn, payment_id, state)
            self.budgets.drop(conn, payment_id)
            conn.execute(
                "UPDATE payments SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                (state, reason, at, payment_id),
            )
            return _row(self._fetch(conn, payment_id))

    @staticmethod
    def _fetch(conn: Any, payment_id: int) -> Any:
        r = conn.execute("SELECT * FROM payments WHERE id = ?", (payment_id,)).fetchone()
        if r is None:
            raise LedgerStateError(f"no payment {payment_id}")
        return r

    def _moved(self, conn: Any, payment_id: int, target: str, sets: str, params: tuple[Any, ...]) -> PaymentRow:
        """Move to ``target`` in one guarded UPDATE (only from a state that allows it); the row as written.

        When the guard matches nothing, :meth:`_move` reads the row and says why.
        """
        sources = _SOURCES[target]
        r = conn.execute(
            f"UPDATE payments SET state = ?, {sets} WHERE id = ? AND state IN ({', '.join('?' * len(sources))})"
            " RETURNING *", (target, *params, payment_id, *sources)).fetchone()
        if r is None:
            self._move(conn, payment_id, target)  # raises: unknown, or a move its state does not allow
            raise LedgerStateError(f"payment {payment_id} changed while moving to {target}")
        return _row(r)

    def _move(self, conn: Any, payment_id: int, target: str) -> PaymentRow:
        row = _row(self._fetch(conn, payment_id))
        if target not in _MOVES[row.state]:
            raise LedgerStateError(
                f"payment {payment_id} is {row.state}; it cannot become {target}"
            )
        return row

    # -- reading ---------------------------------------------------------------------------

    def get(self, payment_id: int) -> PaymentRow:
        """Return payment ``payment_id`` (LedgerStateError if none)."""
        return _row(self._fetch(self.db, payment_id))

    def by_invoice(self, invoice_id: str) -> PaymentRow | None:
        """Return the live row for ``invoice_id``, else its latest row, else None."""
        r = self.db.execute(
            "SELECT * FROM payments WHERE invoice_id = ?"
            " ORDER BY state IN ('refused', 'released'), id DESC LIMIT 1", (invoice_id,),
        ).fetchone()
        return _row(r) if r else None

    def by_tx(self, tx_id: str) -> PaymentRow | None:
        """Return the row whose transaction is ``tx_id`` (the latest, should a signed one be signed again), or None."""
        r = self.db.execute("SELECT * FROM payments WHERE tx_id = ? ORDER BY id DESC LIMIT 1", (tx_id,)).fetchone()
        return _row(r) if r else None

    def by_job(self, job_id: int) -> list[PaymentRow]:
        """Return every row of job ``job_id``, oldest first."""
        return [_row(r) for r in self.db.execute(
            "SELECT * FROM payments WHERE job_id = ? ORDER BY id", (job_id,))]

    def sent_for_jobs(self, job_ids: Iterable[int]) -> list[PaymentRow]:
        """Rows of ``job_ids`` signed or submitted with a transaction id (sent, not yet settled)."""
        return [_row(r) for batch, marks in id_batches(job_ids) for r in self.db.execute(
            f"SELECT * FROM payments WHERE job_id IN ({marks})"
            " AND state IN ('signed', 'submitted') AND tx_id IS NOT NULL ORDER BY id", batch)]

    def unfinished(self) -> list[PaymentRow]:
        """Return rows still reserved, signed or submitted (to resolve after a restart), oldest first."""
        return [_row(r) for r in self.db.execute(
            "SELECT * FROM payments WHERE state IN ('reserved', 'signed', 'submitted') ORDER BY id")]

    def rows(self, since: float | None = None, until: float | None = None) -> list[PaymentRow]:
        """Return rows created in ``[since, until)``, oldest first."""
        return [_row(r) for r in self.db.execute(
            "SELECT * FROM payments WHERE (? IS NULL OR created_at >= ?)"
            " AND (? IS NULL OR created_at < ?) ORDER BY created_at, id",
            (since, since, until, until))]

    def total_paid(self, asset: str = LOVELACE) -> int:
        """Return what left the wallet in paid rows: lovelace includes fees; tokens are the invoice amounts."""
        total = 0
        for r in self.db.execute(
            "SELECT * FROM payments WHERE state IN ('submitted', 'settled', 'unsettled')"
        ):
            row = _row(r)
            if asset == LOVELACE:
                total += row.cost_lovelace or 0
            else:
                total += row.amounts.get(asset, 0)
        return total

    def report(self, since: float | None = None, *, group_by: str = "day",
               until: float | None = None) -> list[ReportLine]:
        """Summarise paid rows created since ``since`` by ``day`` (UTC), ``route``, ``budget`` or ``payee``.

        ``payee`` sums the lovelace of outputs per address; the fee is attributed to the first
        output (``payTo``). ``budget`` lists every budget a payment was charged to.
        """
        if group_by not in ("day", "route", "budget", "payee"):
            raise ValueError(f"cannot group spend by {group_by!r}")
        groups: dict[str, list[int]] = {}

        def add(key: str, amount: int, fee: int, count: int = 1) -> None:
            g = groups.setdefault(key, [0, 0, 0])
            g[0] += count
            g[1] += amount
            g[2] += fee

        for row in self.rows(since, until):
            if not row.paid:
                continue
            fee = row.fee_lovelace or 0
            if group_by == "day":
                add(datetime.fromtimestamp(row.created_at, timezone.utc).date().isoformat(),
                    row.amount_lovelace, fee)
            elif group_by == "route":
                add(row.route or "-", row.amount_lovelace, fee)
            elif group_by == "budget":
                for name in sorted(self.budgets.charges_of(self.db, row.id)):
                    add(name, row.amount_lovelace, fee)
            else:
                per_payee: dict[str, int] = {}
                for out in row.outputs:
                    lovelace = out["amount"] if out.get("asset", LOVELACE) == LOVELACE else 0
                    per_payee[out["address"]] = per_payee.get(out["address"], 0) + lovelace
                for i, (address, lovelace) in enumerate(per_payee.items()):
                    add(address, lovelace, fee if i == 0 else 0)
        return [ReportLine(k, *v) for k, v in sorted(groups.items())]
