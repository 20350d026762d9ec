"""``cardano-agent budget show``, ``spend``, ``payments``, ``approvals``, ``approve`` and ``deny``.

These commands only read and decide what is in the agent home (``agent.toml`` and the
database): none of them needs the wallet passphrase or a chain connection. Amounts are integer
lovelace inside and ADA with six decimals on screen; ``--json`` keeps the integers.
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from agent.errors import ConfigError
from agent.views import iso, payment_view

if TYPE_CHECKING:
    from agent.app import Agent
    from agent.approvals import Approval, Approvals
    from agent.ledger import PaymentRow

ORDER = 40
LOVELACE = "lovelace"
DEFAULT_SINCE = "30d"
RECENT_PAYMENTS = 5
GROUPINGS = ("day", "route", "budget", "payee")
LEDGER_STATES = ("reserved", "signed", "submitted", "settled", "refused", "unsettled", "released")

clock: Callable[[], float] = time.time
"""Epoch seconds; tests replace it instead of waiting for time to pass."""



def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the budget, spend, payments and approval commands."""
    group = sub.add_parser("budget", parents=[common], help="budgets and what is left of them",
                           description="Show each configured budget and its use.")
    cmds = group.add_subparsers(dest="budget_command", metavar="BUDGET_COMMAND")
    group.set_defaults(func=lambda args: (group.print_help(), 2)[1])
    p = cmds.add_parser("show", parents=[common], help="limit, spent, reserved and remaining per budget",
                        description="Per budget and asset: the limit, what was spent in the current window, "
                                    "what unfinished payments hold, what remains, and USED% = (spent + "
                                    "reserved) / limit.")
    p.set_defaults(func=cmd_budget_show)

    p = sub.add_parser("spend", parents=[common], help="what was paid, grouped by day, route, budget or payee",
                       description="Report paid invoices (submitted, settled or unsettled) and their fees.")
    p.add_argument("--since", default=DEFAULT_SINCE, metavar="WHEN",
                   help=f"a duration (24h, 7d, 2w, 90m), all, or a UTC date like 2026-11-01 (default {DEFAULT_SINCE})")
    p.add_argument("--by", choices=GROUPINGS, default="day", help="grouping (default day)")
    p.add_argument("--plot", type=Path, metavar="FILE",
                   help="also draw spend over time against the budget limits as a PNG (needs matplotlib)")
    p.set_defaults(func=cmd_spend)

    p = sub.add_parser("payments", parents=[common], help="the spend ledger, newest first",
                       description="List ledger rows: every invoice paid, refused or in flight.")
    p.add_argument("--state", choices=LEDGER_STATES, help="only rows in this state")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="at most N rows (default 20)")
    p.set_defaults(func=cmd_payments)

    p = sub.add_parser("approvals", parents=[common], help="payments waiting for approve/deny",
                       description="List parked payments and the pinned payees per API host.")
    p.set_defaults(func=cmd_approvals)

    p = sub.add_parser("approve", parents=[common], help="approve a parked payment (its job runs again)")
    p.add_argument("id", metavar="ID", help="approval id from `cardano-agent approvals`")
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("deny", parents=[common], help="deny a parked payment: it is never paid")
    p.add_argument("id", metavar="ID", help="approval id from `cardano-agent approvals`")
    p.set_defaults(func=cmd_deny)


# -- opening the home ----------------------------------------------------------------------------


def _agent(home: Path) -> "Agent":
    """The agent home these commands read and decide in (no wallet, no chain: both open lazily).

    Never creates a home by reading one: a typo in ``--home`` is one line, not empty tables.
    """
    from agent.app import Agent
    from agent.cli import require_home

    return Agent.open(require_home(home))


# -- small formatting helpers ------------------------------------------------------------------


def _amount(asset: str, units: int) -> str:
    """ADA for lovelace, plain smallest units for a native token."""
    from agent.output import format_ada

    return format_ada(units) if asset == LOVELACE else str(units)


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _short(text: str | None, keep: int = 12) -> str:
    if not text:
        return "-"
    return text if len(text) <= keep + 2 else text[:keep] + ".."


def _window_label(window_s: int | None) -> str:
    from agent.config import format_duration

    return format_duration(window_s)


def parse_since(text: str, now: float) -> float | None:
    """Turn ``--since`` into epoch seconds: any duration (``24h``, ``7d``, ``2w``, ``90m``) before ``now``,
    ``all`` (None), or a UTC date.

    Raises:
        ConfigError: anything else, or a date in the future.
    """
    raw = text.strip()
    if raw.lower() == "all":
        return None
    from agent.config import parse_duration

    if raw[:1].isdigit() and raw[-1:].isalpha():
        try:
            return now - parse_duration(raw)
        except ValueError:
            pass
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(
            f"--since: expected a duration (24h, 7d, 2w), all, or a date like 2026-11-01, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    since = when.timestamp()
    if since > now:
        raise ConfigError(f"--since {text} is in the future")
    return since


# -- budget show -------------------------------------------------------------------------------


def cmd_budget_show(args: argparse.Namespace) -> int:
    """Print each budget's limit, committed spend in its window, open reservations and what is left."""
    from agent.output import emit, table
    from agent.views import budget_views

    with _agent(args.home) as agent:
        rows = budget_views(agent.budgets, clock())

    def human(data: list[dict[str, Any]]) -> None:
        if not data:
            print("(none configured)")
            return
        table([(d["name"], d["scope"], d["window"], "ADA" if d["asset"] == LOVELACE else _short(d["asset"], 20),
                _amount(d["asset"], d["limit"]), _amount(d["asset"], d["spent"]),
                _amount(d["asset"], d["reserved"]), _amount(d["asset"], d["remaining"]),
                f"{d['percent_used']:.1f}") for d in data],
              ["BUDGET", "SCOPE", "WINDOW", "ASSET", "LIMIT", "SPENT", "RESERVED", "REMAINING", "USED%"])

    emit(args.json, rows, human)
    return 0


# -- spend ---------------------------------------------------------------------------------------


def _with_approval(d: dict[str, Any], approvals: Approvals) -> dict[str, Any]:
    """Say where a payment parked for a person stands now, not what it said when it was parked."""
    d["display_state"], d["display_reason"] = d["state"], d["reason"] or ""
    reason = d["reason"] or ""
    if d["state"] != "refused" or not reason.startswith(("approval_required", "payee_changed")):
        return d
    approval = approvals.for_invoice(d["invoice_id"])
    if approval is None:
        return d
    d["approval"] = {"id": approval.id, "state": approval.state}
    what = "payee change" if reason.startswith("payee_changed") else "payment"
    if approval.state == "pending":
        d["display_state"] = "awaiting_approval"
        d["display_reason"] = f"{what} awaits approval {approval.id}: cardano-agent approve {approval.id}"
    elif approval.state == "approved":
        d["display_reason"] = f"{what} approved ({approval.id}); nothing paid on this invoice, the job pays a new one"
    else:
        d["display_reason"] = f"{what} denied ({approval.id}); never paid"
    return d


def _fee_cell(row: PaymentRow) -> str:
    from agent.output import format_ada

    return format_ada(row.fee_lovelace) if row.fee_lovelace is not None else "-"


def cmd_spend(args: argparse.Namespace) -> int:
    """Print the spend report (and the last few payments); ``--plot`` also draws it as a PNG."""
    from agent.output import emit, format_ada, table
    from agent.views import spend_summary

    now = clock()
    since = parse_since(args.since, now)
    with _agent(args.home) as agent:
        report = spend_summary(agent.ledger, since, args.by)
        total = report["total"]
        plot = None
        if args.plot is not None:
            bars = [(str(x["key"]), int(x["total_lovelace"])) for x in report["lines"]]
            if args.by == "day":
                bars.sort()
            plot = str(draw_plot(agent, args.plot, since=since, until=now, label=args.since, bars=bars,
                                 bars_title=f"Paid per {args.by}"))
        data = {"since": iso(since), "until": iso(now), "group_by": args.by,
                "lines": report["lines"], "total": total, "plot": plot}

        def human(d: dict[str, Any]) -> None:
            window = "all time" if since is None else f"since {_when(since)} UTC"
            print(f"Spend {window}, by {args.by}")
            rows: list[tuple[Any, ...]] = [
                (x["key"], x["count"], format_ada(x["amount_lovelace"]), format_ada(x["fee_lovelace"]),
                 format_ada(x["total_lovelace"])) for x in d["lines"]]
            rows.append(("TOTAL", total["count"], format_ada(total["amount_lovelace"]),
                         format_ada(total["fee_lovelace"]), format_ada(total["total_lovelace"])))
            table(rows, [args.by.upper(), "COUNT", "AMOUNT (ADA)", "FEE (ADA)", "TOTAL (ADA)"])
            if args.by in ("budget", "payee"):
                print(f"(a payment can appear under several {args.by}s; TOTAL counts each payment once)")
            recent = agent.ledger.rows(since)[-RECENT_PAYMENTS:][::-1]
            if recent:
                print(f"\nLast {len(recent)} payment{'s' if len(recent) != 1 else ''}:")
                table([(_when(r.created_at), r.route or "-", _short(r.invoice_id, 16), r.state,
                        format_ada(r.amount_lovelace), _fee_cell(r), _short(r.tx_id)) for r in recent],
                      ["TIME (UTC)", "ROUTE", "INVOICE", "STATE", "AMOUNT (ADA)", "FEE (ADA)", "TX"])
            if plot:
                print(f"\nplot written to {plot}")

        emit(args.json, data, human)
        return 0


def draw_plot(agent: "Agent", path: Path, *, since: float | None, until: float, label: str,
              bars: list[tuple[str, int]] | None = None, bars_title: str = "") -> Path:
    """Draw each budget's lovelace spend curve against its limit (or all payments if no budget),
    zoomed to the payments, and below it ``bars``: the spend per ``--by`` group."""
    from agent import spendplot

    series = {s.name: list(agent.budgets.spend_series(s.name, LOVELACE)) for s in agent.budgets.specs}
    paid = [(r.submitted_at or r.created_at, r.cost_lovelace or 0)
            for r in agent.ledger.rows() if r.paid]
    starts = [t for points in series.values() for t, _ in points] + [t for t, _ in paid]
    start = spendplot.zoom_start((t for t in starts if since is None or t >= since), since=since, until=until)
    start = min(start, until)
    lines = [
        spendplot.SpendLine(
            label=spec.name + (" (all time)" if spec.window_s is None
                               else f" ({_window_label(spec.window_s)} window)"),
            points=spendplot.budget_curve(series[spec.name], window_s=spec.window_s, since=start, until=until),
            limit_lovelace=spec.limits.get(LOVELACE))
        for spec in agent.budgets.specs
    ]
    if not lines and paid:
        lines = [spendplot.SpendLine(label="all payments (running total)",
                                     points=spendplot.budget_curve(paid, window_s=None, since=start, until=until))]
    title = "Spend against budgets, all time" if since is None else f"Spend against budgets, --since {label}"
    return spendplot.draw_spend(Path(path).expanduser(), lines, since=start, until=until, title=title,
                                bars=bars or (), bars_title=bars_title)


# -- payments ------------------------------------------------------------------------------------


def cmd_payments(args: argparse.Namespace) -> int:
    """Print ledger rows, newest first."""
    from agent.output import emit, format_ada, table

    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    with _agent(args.home) as agent:
        rows = [r for r in reversed(agent.ledger.rows()) if args.state is None or r.state == args.state]
        rows = rows[:args.limit]

        shown = [_with_approval(payment_view(r), agent.approvals) for r in rows]

        def human(data: list[dict[str, Any]]) -> None:
            table([(d["id"], _when(r.created_at), r.route or "-", _short(r.invoice_id, 16), d["display_state"],
                    format_ada(r.amount_lovelace), _fee_cell(r), _short(r.tx_id), d["display_reason"])
                   for d, r in zip(data, rows)],
                  ["ID", "TIME", "ROUTE", "INVOICE", "STATE", "AMOUNT (ADA)", "FEE (ADA)", "TX", "REASON"])

        emit(args.json, shown, human)
        return 0


# -- approvals -----------------------------------------------------------------------------------


def _summary_text(summary: Mapping[str, Any]) -> str:
    parts = []
    if "cost_lovelace" in summary:
        parts.append(f"cost {_amount(LOVELACE, int(summary['cost_lovelace']))} ADA")
    if summary.get("new_payees"):
        parts.append("payee change to " + ", ".join(_short(a, 20) for a in summary["new_payees"]))
    elif summary.get("payees"):
        parts.append("to " + ", ".join(_short(a, 20) for a in summary["payees"]))
    for asset, units in (summary.get("amounts") or {}).items():
        if asset != LOVELACE:
            parts.append(f"{units} {_short(asset, 20)}")
    return "; ".join(parts) or "-"


def _approval_dict(a: Approval) -> dict[str, Any]:
    return {"id": a.id, "invoice_id": a.invoice_id, "host": a.host, "route": a.route, "job_id": a.job_id,
            "state": a.state, "summary": a.summary, "created_at": iso(a.created_at),
            "decided_at": iso(a.decided_at)}


def cmd_approvals(args: argparse.Namespace) -> int:
    """Print the payments waiting for a decision and the pinned payees per host."""
    from agent.output import emit, table

    with _agent(args.home) as agent:
        pending = agent.approvals.pending()
        pins = agent.pins.hosts()
        data = {"pending": [_approval_dict(a) for a in pending],
                "pins": {host: sorted(addrs) for host, addrs in pins.items()}}

        def human(d: dict[str, Any]) -> None:
            table([(a.id, a.host, a.route or "-", a.job_id if a.job_id is not None else "-",
                    _summary_text(a.summary)) for a in pending],
                  ["ID", "HOST", "ROUTE", "JOB", "SUMMARY"])
            if pins:
                print("\nPinned payees:")
                table([(host, addr) for host, addrs in sorted(pins.items()) for addr in sorted(addrs)],
                      ["HOST", "ADDRESS"])

        emit(args.json, data, human)
        return 0


def _approval_id(text: str) -> int:
    from agent.approvals import ApprovalError

    raw = text.strip().lstrip("#")
    if not raw.isdigit():
        raise ApprovalError(f"not an approval id: {text!r} (see `cardano-agent approvals`)")
    return int(raw)


def _decide(args: argparse.Namespace, decide: Callable[["Agent", int], dict[str, Any]]) -> dict[str, Any]:
    """Approve or deny the approval ``args.id`` names; the decision and its job, as ``Agent.approve`` returns them."""
    approval_id = _approval_id(args.id)
    with _agent(args.home) as agent:
        return decide(agent, approval_id)


def _decided(approval: Mapping[str, Any]) -> str:
    """``<id> (<host> <route>)``: the approval as the decision lines name it."""
    return f"{approval['id']} ({approval['host']} {approval['route'] or ''}".rstrip() + ")"


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve a parked payment and queue its job again if it had given up."""
    from agent.output import emit

    data = _decide(args, lambda agent, approval_id: agent.approve(approval_id, now=clock()))
    approval, job = data["approval"], data["job"]

    def human(d: dict[str, Any]) -> None:
        print(f"approved {_decided(approval)}")
        if job is None:
            return
        if job["state"] is None:
            print(f"job {job['id']} no longer exists; nothing to run again")
        elif job["requeued"]:
            print(f"job {job['id']} queued again; it will pay on its next run")
        elif job["state"] == "done":
            print(f"job {job['id']} already finished; nothing to run again")
        else:
            print(f"job {job['id']} is {job['state']}; it will pay when it next reaches the invoice")

    emit(args.json, data, human)
    return 0


def cmd_deny(args: argparse.Namespace) -> int:
    """Deny a parked payment; its job is left as it is."""
    from agent.output import emit

    data = _decide(args, lambda agent, approval_id: agent.deny(approval_id, now=clock()))
    approval, job = data["approval"], data["job"]

    def human(d: dict[str, Any]) -> None:
        print(f"denied {_decided(approval)}: it will never be paid")
        if job is not None:
            print(f"job {job['id']} " + ("cancelled" if job["state"] == "cancelled"
                                         else f"left {job['state'] or 'as it was'}"))

    emit(args.json, data, human)
    return 0
