"""Payee pins per API host and payments parked for a human (``cardano-agent approve``/``deny``).

:class:`PayeePins` remembers which addresses each API host has been paid at; the policy
(:func:`agent.policy.check_invoice`) refuses an invoice paying anywhere else until approved.
:class:`Approvals` holds parked payments: the invoice, who asked for it and a small summary.
Approving a parked payee change adds its ``new_payees`` to the host's pins, so the next
invoice to the new address passes. Hosts are compared lower-case.

An approval is bound to the exact terms it was asked for (:func:`invoice_terms`: host,
chain, every output's address, asset and amount, expiry): an invoice reusing an approved id
with anything different is parked again. A job's approval covers a re-issued invoice for
that job only with the same host, chain and outputs.

The first payment to a host pins its payees with one atomic insert-if-absent
(:meth:`PayeePins.claim_first`), so two concurrent first contacts, in threads or processes
sharing a home, cannot both pin: the loser sees the winner's payees and is parked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from agent.errors import AgentError, StoreError
from agent.store import Database, register_migrations

if TYPE_CHECKING:
    from agent.x402 import Invoice

PENDING, APPROVED, DENIED = "pending", "approved", "denied"
NEW_PAYEES_KEY = "new_payees"
"""Summary key of a parked payee change: the addresses to pin for the host once approved."""

register_migrations("approvals", [
    """
    CREATE TABLE payee_pins (
        host      TEXT NOT NULL,
        address   TEXT NOT NULL,
        pinned_at REAL NOT NULL,
        PRIMARY KEY (host, address)
    );
    CREATE TABLE approvals (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        invoice_id TEXT    NOT NULL UNIQUE,
        host       TEXT    NOT NULL,
        route      TEXT,
        job_id     INTEGER,
        summary    TEXT    NOT NULL,
        state      TEXT    NOT NULL CHECK (state IN ('pending', 'approved', 'denied')),
        created_at REAL    NOT NULL,
        decided_at REAL
    );
    CREATE INDEX approvals_by_state ON approvals (state);
    CREATE INDEX approvals_by_job ON approvals (job_id);
    """,
    # Approvals bound to terms: one invoice id may be parked again with other terms.
    # Rows from before have no terms ('') and so match no invoice: they ask again.
    """
    CREATE TABLE approvals_v2 (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        invoice_id TEXT    NOT NULL,
        terms      TEXT    NOT NULL DEFAULT '',
        host       TEXT    NOT NULL,
        route      TEXT,
        job_id     INTEGER,
        summary    TEXT    NOT NULL,
        state      TEXT    NOT NULL CHECK (state IN ('pending', 'approved', 'denied')),
        created_at REAL    NOT NULL,
        decided_at REAL,
        UNIQUE (invoice_id, terms)
    );
    INSERT INTO approvals_v2 (id, invoice_id, terms, host, route, job_id, summary, state, created_at, decided_at)
        SELECT id, invoice_id, '', host, route, job_id, summary, state, created_at, decided_at FROM approvals;
    DROP TABLE approvals;
    ALTER TABLE approvals_v2 RENAME TO approvals;
    CREATE INDEX approvals_by_state ON approvals (state);
    CREATE INDEX approvals_by_job ON approvals (job_id);
    """,
])


EXPIRY_FIELDS = ("expiresAt", "timeout", "maxTimeoutSeconds")
"""The invoice's own words on its expiry; a relative timeout is bound as stated, not as an instant."""


def invoice_terms(invoice: "Invoice", host: str) -> dict[str, Any]:
    """The terms an approval binds: host, chain, each output (address, asset, amount) and expiry.

    The expiry is what the invoice says (``expiresAt``, ``timeout``, ``maxTimeoutSeconds``),
    so the same invoice presented again later has the same terms; without any, the instant.
    """
    raw: Any = invoice.raw
    stated = raw.get("detail") if isinstance(raw, Mapping) and isinstance(raw.get("detail"), Mapping) else raw
    expiry: dict[str, str] = {}
    if isinstance(stated, Mapping):
        expiry = {k: str(stated[k]) for k in EXPIRY_FIELDS if stated.get(k) is not None}
    return {
        "host": host.lower(),
        "chain": invoice.network.name,
        "outputs": sorted([out.address, out.asset, int(out.amount)] for out in invoice.outputs),
        "expiry": expiry or {"at": invoice.expires_at.isoformat()},
        "expires_at": invoice.expires_at.isoformat(),  # shown, not matched: a timeout makes it move
    }


def _terms_key(terms: Mapping[str, Any] | None) -> str:
    """What an approval is matched on: the terms without the computed ``expires_at`` instant."""
    if terms is None:
        return ""
    return json.dumps({k: v for k, v in terms.items() if k != "expires_at"}, sort_keys=True, separators=(",", ":"))


def _same_payment(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same host, chain and outputs (expiry aside): a job's re-issued invoice for the same thing."""
    return all(a.get(k) == b.get(k) for k in ("host", "chain", "outputs")) and bool(a.get("outputs"))


def _rowid(cur: Any) -> int:
    """The id of the row an ``INSERT ... RETURNING id`` just wrote."""
    row = cur.fetchone()
    if row is None:
        raise StoreError("insert did not return a row id")
    return int(row[0])


class ApprovalError(AgentError):
    """An approval that does not exist, or was already decided."""


@dataclass(frozen=True)
class Approval:
    """A parked payment and its decision."""

    id: int
    invoice_id: str
    host: str
    route: str | None
    job_id: int | None
    summary: dict[str, Any]
    state: str
    created_at: float
    decided_at: float | None
    terms: dict[str, Any] | None = None
    """The invoice terms approved (:func:`invoice_terms`); None for an approval from before terms."""


def _approval(r: Any) -> Approval:
    terms = json.loads(r["terms"]) if r["terms"] else None
    return Approval(id=r["id"], invoice_id=r["invoice_id"], host=r["host"], route=r["route"],
                    job_id=r["job_id"], summary=json.loads(r["summary"]), state=r["state"],
                    created_at=r["created_at"], decided_at=r["decided_at"], terms=terms)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in an approval summary")


class PayeePins:
    """The addresses each API host has been paid at."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def pinned(self, host: str) -> frozenset[str] | None:
        """Return the addresses pinned for ``host``, or None if it was never pinned."""
        rows = self.db.execute("SELECT address FROM payee_pins WHERE host = ?", (host.lower(),)).fetchall()
        return frozenset(r["address"] for r in rows) if rows else None

    def pin(self, host: str, addresses: Iterable[str], now: float) -> frozenset[str]:
        """Replace ``host``'s pins with ``addresses`` and return them."""
        wanted = frozenset(addresses)
        if not wanted:
            raise ValueError(f"pinning {host!r} needs at least one address")
        with self.db.atomic() as conn:
            self._pin(conn, host, wanted, now, replace=True)
        return wanted

    def claim_first(self, host: str, addresses: Iterable[str], now: float) -> frozenset[str]:
        """Pin ``addresses`` for ``host`` unless it is pinned already; return the host's pins after.

        One ``BEGIN IMMEDIATE`` transaction: of two first contacts racing (threads or
        processes), exactly one pins; the other gets the winner's payees back.
        """
        wanted = frozenset(addresses)
        if not wanted:
            raise ValueError(f"pinning {host!r} needs at least one address")
        with self.db.atomic() as conn:
            rows = conn.execute("SELECT address FROM payee_pins WHERE host = ?", (host.lower(),)).fetchall()
            if rows:
                return frozenset(r["address"] for r in rows)
            self._pin(conn, host, wanted, now, replace=False)
        return wanted

    def add(self, host: str, addresses: Iterable[str], now: float) -> frozenset[str]:
        """Add ``addresses`` to ``host``'s pins (keeping the others) and return the new set."""
        with self.db.atomic() as conn:
            self._pin(conn, host, frozenset(addresses), now, replace=False)
        return self.pinned(host) or frozenset()

    @staticmethod
    def _pin(conn: Any, host: str, addresses: frozenset[str], now: float, *, replace: bool) -> None:
        if replace:
            conn.execute("DELETE FROM payee_pins WHERE host = ?", (host.lower(),))
        conn.executemany(
            "INSERT INTO payee_pins (host, address, pinned_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(host.lower(), a, now) for a in sorted(addresses)],
        )

    def hosts(self) -> dict[str, frozenset[str]]:
        """Return every pinned host with its addresses."""
        out: dict[str, set[str]] = {}
        for r in self.db.execute("SELECT host, address FROM payee_pins ORDER BY host"):
            out.setdefault(r["host"], set()).add(r["address"])
        return {h: frozenset(a) for h, a in out.items()}


class Approvals:
    """Payments parked until a human approves or denies them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def park(self, *, invoice_id: str, host: str, route: str | None, job_id: int | None,
             summary: Mapping[str, Any], now: float, terms: Mapping[str, Any] | None = None) -> int:
        """Park the payment of ``invoice_id`` on ``terms`` and return its approval id.

        An invoice is parked once per terms: parking it again on the same terms returns the
        existing id, whatever its state (look at :meth:`status` to see whether it was
        decided); the same id on other terms is a new approval.
        """
        body = json.dumps(dict(summary), sort_keys=True, default=_jsonable)
        key = _terms_key(terms)
        with self.db.atomic() as conn:
            found = conn.execute("SELECT id FROM approvals WHERE invoice_id = ? AND terms = ?",
                                 (invoice_id, key)).fetchone()
            if found is not None:
                return int(found["id"])
            cur = conn.execute(
                "INSERT INTO approvals (invoice_id, terms, host, route, job_id, summary, state, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?) RETURNING id",
                (invoice_id, key, host.lower(), route, job_id, body, now),
            )
            return _rowid(cur)

    def approved_for(self, *, invoice_id: str, terms: Mapping[str, Any], job_id: int | None = None) -> bool:
        """Did a human approve paying exactly ``terms``?

        Either this invoice on these very terms, or (for a job) an approval of the same job
        for the same host, chain and outputs, whatever its invoice id and expiry.
        """
        exact = self.db.execute("SELECT state FROM approvals WHERE invoice_id = ? AND terms = ?",
                                (invoice_id, _terms_key(terms))).fetchone()
        if exact is not None:
            return bool(exact["state"] == APPROVED)
        if job_id is None:
            return False
        return any(a.state == APPROVED and a.terms is not None and _same_payment(a.terms, terms)
                   for a in self.for_job(job_id))

    def for_job(self, job_id: int) -> list[Approval]:
        """Every approval parked by job ``job_id``, oldest first."""
        return [_approval(r) for r in self.db.execute(
            "SELECT * FROM approvals WHERE job_id = ? ORDER BY id", (job_id,))]

    def approve(self, approval_id: int, now: float) -> Approval:
        """Approve a pending payment; a payee change adds its new payees to the host's pins."""
        with self.db.atomic() as conn:
            current = self._decide(conn, approval_id, APPROVED, now)
            new_payees = current.summary.get(NEW_PAYEES_KEY)
            if new_payees:
                PayeePins._pin(conn, current.host, frozenset(new_payees), now, replace=False)
            return self._get(conn, approval_id)

    def deny(self, approval_id: int, now: float) -> Approval:
        """Deny a pending payment: it is never paid."""
        with self.db.atomic() as conn:
            self._decide(conn, approval_id, DENIED, now)
            return self._get(conn, approval_id)

    def _decide(self, conn: Any, approval_id: int, state: str, now: float) -> Approval:
        current = self._get(conn, approval_id)
        if current.state != PENDING:
            raise ApprovalError(f"approval {approval_id} was already {current.state}")
        conn.execute("UPDATE approvals SET state = ?, decided_at = ? WHERE id = ?", (state, now, approval_id))
        return current

    def get(self, approval_id: int) -> Approval:
        """Return approval ``approval_id`` (ApprovalError if none)."""
        return self._get(self.db, approval_id)

    @staticmethod
    def _get(conn: Any, approval_id: int) -> Approval:
        r = conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        if r is None:
            raise ApprovalError(f"no approval {approval_id}")
        return _approval(r)

    def pending(self) -> list[Approval]:
        """Return the approvals waiting for a decision, oldest first."""
        return [_approval(r) for r in self.db.execute(
            "SELECT * FROM approvals WHERE state = 'pending' ORDER BY id")]

    def for_invoice(self, invoice_id: str) -> Approval | None:
        """Return the latest approval of ``invoice_id`` (on any terms), or None if it was never parked."""
        r = self.db.execute("SELECT * FROM approvals WHERE invoice_id = ? ORDER BY id DESC LIMIT 1",
                            (invoice_id,)).fetchone()
        return _approval(r) if r else None

    def status(self, *, invoice_id: str | None = None, job_id: int | None = None) -> str | None:
        """Return ``pending``/``approved``/``denied`` for an invoice, or for a job's latest parked payment."""
        if (invoice_id is None) == (job_id is None):
            raise ValueError("status needs exactly one of invoice_id or job_id")
        if invoice_id is not None:
            found = self.for_invoice(invoice_id)
            return found.state if found else None
        r = self.db.execute(
            "SELECT state FROM approvals WHERE job_id = ? ORDER BY id DESC LIMIT 1", (job_id,)
        ).fetchone()
        return r["state"] if r else None
