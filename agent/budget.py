"""Budgets: which payments a budget covers, rolling windows, and their charges in the database.

The arithmetic (:func:`budget_matches`, :func:`window_start`, :func:`charge_for`) is pure.
:class:`BudgetBook` keeps one ``budget_charges`` row per (payment, budget, asset) and checks
limits; the spend ledger calls :meth:`BudgetBook.charge` inside its own ``BEGIN IMMEDIATE``
transaction (the database's write lock, on one host or many), so the check and the write
can never interleave with another payment.

A charge is *open* while its payment is reserved or signed (it counts whatever its age) and
*committed* once the transaction is submitted (it counts while inside the rolling window).
Released and refused payments drop their charges.

``BudgetSpec`` itself is parsed from ``agent.toml`` by :mod:`agent.config`; every function here
accepts any object of that shape (:class:`BudgetRule`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping, Protocol, Sequence

from agent.errors import BudgetExceededError
from agent.store import Database, register_migrations

LOVELACE = "lovelace"

OPEN = "open"
COMMITTED = "committed"

register_migrations("budget", [
    """
    CREATE TABLE budget_charges (
        payment_id INTEGER NOT NULL,
        budget     TEXT    NOT NULL,
        asset      TEXT    NOT NULL,
        amount     INTEGER NOT NULL CHECK (amount >= 0),
        state      TEXT    NOT NULL CHECK (state IN ('open', 'committed')),
        charged_at REAL    NOT NULL,
        PRIMARY KEY (payment_id, budget, asset)
    );
    CREATE INDEX budget_charges_by_budget ON budget_charges (budget, asset, state, charged_at);
    """,
])


class BudgetRule(Protocol):
    """The shape of ``agent.config.BudgetSpec`` that budgets need."""

    # Read-only, so frozen dataclasses such as BudgetSpec satisfy it.
    @property
    def name(self) -> str: ...
    @property
    def limits(self) -> Mapping[str, int]: ...
    @property
    def window_s(self) -> int | None: ...
    @property
    def scope(self) -> str: ...
    @property
    def include_fees(self) -> bool: ...


@dataclass(frozen=True)
class BudgetUsage:
    """One budget's use of one asset at an instant.

    ``spent`` is committed in the window, ``reserved`` is held by unfinished payments,
    ``window`` the window length in seconds (None: since the beginning) and ``since`` its start.
    """

    name: str
    asset: str
    limit: int
    spent: int
    reserved: int
    remaining: int
    window: int | None
    since: float | None


def __getattr__(name: str) -> Any:
    # ``BudgetSpec`` lives in agent.config (parsed with the rest of agent.toml); re-exported
    # lazily so importing the budget book does not import the configuration parser.
    if name == "BudgetSpec":
        from agent.config import BudgetSpec

        return BudgetSpec
    raise AttributeError(f"module 'agent.budget' has no attribute {name!r}")


def budget_matches(spec: BudgetRule, *, route: str | None, tags: Collection[str]) -> bool:
    """Return True if a payment for ``route`` carrying ``tags`` counts against ``spec``.

    Scopes: ``"all"``; ``"route:<glob>"`` (shell-style, case-sensitive, e.g. ``route:/chat*``);
    ``"tag:<tag>"`` (the job carries that tag).
    """
    scope = spec.scope
    if scope == "all":
        return True
    kind, sep, arg = scope.partition(":")
    if not sep:
        raise ValueError(f"budget {spec.name!r}: unknown scope {scope!r}")
    if kind == "route":
        return route is not None and fnmatch.fnmatchcase(route, arg)
    if kind == "tag":
        return arg in set(tags)
    raise ValueError(f"budget {spec.name!r}: unknown scope {scope!r}")


def window_start(now: float, window_s: int | float | None) -> float | None:
    """Return the start of the rolling window ending at ``now`` (None: no window, all time)."""
    if window_s is None:
        return None
    return now - window_s


def charge_for(spec: BudgetRule, amounts: Mapping[str, int], fee_lovelace: int) -> dict[str, int]:
    """Return what a payment of ``amounts`` plus ``fee_lovelace`` costs ``spec``, per asset.

    The fee is added to lovelace unless ``spec.include_fees`` is false. Zero entries are dropped.
    """
    charge = {asset: int(q) for asset, q in amounts.items() if int(q) != 0}
    if any(q < 0 for q in charge.values()) or fee_lovelace < 0:
        raise ValueError("amounts and fees must not be negative")
    if getattr(spec, "include_fees", True) and fee_lovelace:
        charge[LOVELACE] = charge.get(LOVELACE, 0) + int(fee_lovelace)
    return charge


class BudgetBook:
    """The budgets from the configuration and their charges in the database.

    Args:
        db: the agent database (migrated).
        specs: the configured budgets (``agent.config.BudgetSpec`` or any :class:`BudgetRule`).
    """

    def __init__(self, db: Database, specs: Iterable[BudgetRule]) -> None:
        self.db = db
        self.specs: tuple[BudgetRule, ...] = tuple(specs)
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate budget names: {sorted(names)}")

    def matching(self, *, route: str | None, tags: Collection[str]) -> list[BudgetRule]:
        """Return the budgets a payment for ``route`` with ``tags`` counts against."""
        return [s for s in self.specs if budget_matches(s, route=route, tags=tags)]

    def spec(self, name: str) -> BudgetRule:
        """Return the budget called ``name`` (KeyError if none)."""
        for s in self.specs:
            if s.name == name:
                return s
        raise KeyError(name)

    def charge(self, conn: Any, payment_id: int, *, route: str | None,
               tags: Collection[str], amounts: Mapping[str, int], fee_lovelace: int,
               now: float) -> dict[str, dict[str, int]]:
        """Check every matching budget and write open charges for ``payment_id``.

        Must run inside the caller's ``db.atomic()`` transaction. The payment's own earlier
        charges (if any) are replaced, so this also re-charges a payment at its actual cost.

        Returns:
            ``{budget: {asset: amount}}`` as written.

        Raises:
            BudgetExceededError: one budget would go past its limit for one asset; nothing
                is written (the caller's transaction rolls back).
        """
        planned: dict[str, dict[str, int]] = {}
        for spec in self.matching(route=route, tags=tags):
            charge = charge_for(spec, amounts, fee_lovelace)
            for asset, amount in charge.items():
                limit = spec.limits.get(asset)
                if limit is None:
                    continue
                spent, reserved = self._used(conn, spec, asset, now, exclude_payment=payment_id)
                if spent + reserved + amount > limit:
                    raise BudgetExceededError(spec.name, int(limit), spent + reserved, amount, asset)
            planned[spec.name] = charge
        previous = conn.execute(
            "SELECT state, charged_at FROM budget_charges WHERE payment_id = ? LIMIT 1", (payment_id,)
        ).fetchone()
        state = previous["state"] if previous else OPEN
        charged_at = previous["charged_at"] if previous else now
        conn.execute("DELETE FROM budget_charges WHERE payment_id = ?", (payment_id,))
        conn.executemany(
            "INSERT INTO budget_charges (payment_id, budget, asset, amount, state, charged_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(payment_id, name, asset, amount, state, charged_at)
             for name, charge in planned.items() for asset, amount in charge.items()],
        )
        return planned

    @staticmethod
    def commit(conn: Any, payment_id: int) -> None:
        """Turn ``payment_id``'s open charges into committed spend (its transaction was submitted)."""
        conn.execute(
            "UPDATE budget_charges SET state = 'committed' WHERE payment_id = ?", (payment_id,)
        )

    @staticmethod
    def drop(conn: Any, payment_id: int) -> None:
        """Remove ``payment_id``'s charges (it was never paid)."""
        conn.execute("DELETE FROM budget_charges WHERE payment_id = ?", (payment_id,))

    @staticmethod
    def charges_of(conn: Any, payment_id: int) -> dict[str, dict[str, int]]:
        """Return ``{budget: {asset: amount}}`` charged to ``payment_id``."""
        out: dict[str, dict[str, int]] = {}
        for row in conn.execute(
            "SELECT budget, asset, amount FROM budget_charges WHERE payment_id = ?", (payment_id,)
        ):
            out.setdefault(row["budget"], {})[row["asset"]] = int(row["amount"])
        return out

    def _used(self, conn: Any, spec: BudgetRule, asset: str, now: float, *,
              exclude_payment: int | None = None) -> tuple[int, int]:
        since = window_start(now, spec.window_s)
        row = conn.execute(
            "SELECT"
            " COALESCE(SUM(CASE WHEN state = 'committed' AND (? IS NULL OR charged_at >= ?)"
            "                   THEN amount END), 0) AS spent,"
            " COALESCE(SUM(CASE WHEN state = 'open' THEN amount END), 0) AS reserved"
            " FROM budget_charges WHERE budget = ? AND asset = ? AND (? IS NULL OR payment_id <> ?)",
            (since, since, spec.name, asset, exclude_payment, exclude_payment),
        ).fetchone()
        return int(row["spent"]), int(row["reserved"])

    def usage(self, now: float) -> list[BudgetUsage]:
        """Return each budget's use of each limited asset at ``now``, in configuration order."""
        out: list[BudgetUsage] = []
        conn = self.db
        for spec in self.specs:
            for asset, limit in spec.limits.items():
                spent, reserved = self._used(conn, spec, asset, now)
                out.append(BudgetUsage(
                    name=spec.name, asset=asset, limit=int(limit), spent=spent, reserved=reserved,
                    remaining=max(0, int(limit) - spent - reserved), window=spec.window_s,
                    since=window_start(now, spec.window_s),
                ))
        return out

    def spend_series(self, name: str, asset: str = LOVELACE) -> Sequence[tuple[float, int]]:
        """Return ``(charged_at, amount)`` of ``name``'s committed charges, oldest first (for plots)."""
        return [
            (row["charged_at"], int(row["amount"]))
            for row in self.db.execute(
                "SELECT charged_at, amount FROM budget_charges"
                " WHERE budget = ? AND asset = ? AND state = 'committed' ORDER BY charged_at",
                (name, asset),
            )
        ]

    def frees_at(self, name: str, asset: str, *, requested: int, now: float) -> float | None:
        """When budget ``name`` will have room for ``requested`` more of ``asset``, or None if never.

        Committed charges leave a rolling window as it moves on, oldest first; open charges
        (payments in flight) are counted as staying. None for a budget without a window, or a
        request larger than the limit itself.
        """
        spec = self.spec(name)
        limit = spec.limits.get(asset)
        if limit is None or spec.window_s is None or requested > limit:
            return None
        spent, reserved = self._used(self.db, spec, asset, now)
        used = spent + reserved
        if used + requested <= limit:
            return now
        start = window_start(now, spec.window_s) or 0.0
        for at, amount in self.spend_series(name, asset):
            if at < start:
                continue
            used -= amount
            if used + requested <= limit:
                return at + spec.window_s + 1.0
        return None
