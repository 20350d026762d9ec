"""JSON-ready views of jobs, payments, budgets and approvals: one shape for the CLI, console and MCP.

Pure functions over the stores' frozen rows. Amounts stay integer lovelace (or token units);
times become ISO 8601 UTC strings. Nothing here reads a key, a mnemonic or a passphrase.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

LOVELACE = "lovelace"
WINDOW_LABELS: dict[int | None, str] = {3600: "1h", 86_400: "1d", 30 * 86_400: "30d", None: "none"}


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (seconds precision), None stays None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def percent_used(used: int, limit: int) -> float:
    """Return ``used`` as a percentage of ``limit`` with one decimal (100.0 for a zero limit in use)."""
    if limit <= 0:
        return 100.0 if used > 0 else 0.0
    return round(used * 100 / limit, 1)


def job_view(job: Any) -> dict[str, Any]:
    """A job as the CLI's ``job show --json`` prints it."""
    return {
        "id": job.id, "kind": job.kind, "state": job.state, "tags": list(job.tags), "budget": job.budget,
        "attempts": job.attempts, "max_attempts": job.max_attempts, "request": job.request,
        "run_at": iso(job.run_at), "created_at": iso(job.created_at), "updated_at": iso(job.updated_at),
        "result": job.result, "result_path": job.result_path, "last_error": job.last_error,
    }


def payment_view(row: Any) -> dict[str, Any]:
    """A ledger row (never its signed CBOR)."""
    return {"id": row.id, "created_at": iso(row.created_at), "invoice_id": row.invoice_id,
            "host": row.host, "route": row.route, "job_id": row.job_id, "tags": list(row.tags),
            "state": row.state, "paid": row.paid, "amount_lovelace": row.amount_lovelace,
            "fee_lovelace": row.fee_lovelace, "cost_lovelace": row.cost_lovelace,
            "amounts": dict(row.amounts), "outputs": [dict(o) for o in row.outputs],
            "tx_id": row.tx_id, "reason": row.reason, "submitted_at": iso(row.submitted_at),
            "settled_at": iso(row.settled_at)}


def usage_view(usage: Any, scope: str) -> dict[str, Any]:
    """One budget's use of one asset, with ``percent_used`` = (spent + reserved) / limit."""
    used = usage.spent + usage.reserved
    from agent.config import format_duration

    return {"name": usage.name, "scope": scope, "window": format_duration(usage.window),
            "window_s": usage.window, "since": iso(usage.since), "asset": usage.asset, "limit": usage.limit,
            "spent": usage.spent, "reserved": usage.reserved, "remaining": usage.remaining,
            "percent_used": percent_used(used, usage.limit)}


def approval_view(approval: Any, *, pinned: frozenset[str] | None = None) -> dict[str, Any]:
    """A parked payment; for a payee change, ``old_payees`` (pinned now) and ``new_payees``."""
    summary: Mapping[str, Any] = approval.summary
    out = {"id": approval.id, "invoice_id": approval.invoice_id, "host": approval.host, "route": approval.route,
           "job_id": approval.job_id, "state": approval.state, "summary": dict(summary),
           "created_at": iso(approval.created_at), "decided_at": iso(approval.decided_at)}
    new = summary.get("new_payees")
    out["kind"] = "payee_change" if new else "amount"
    out["new_payees"] = sorted(new) if new else []
    out["old_payees"] = sorted(pinned or ()) if new else []
    out["cost_lovelace"] = summary.get("cost_lovelace")
    expires_at = expiry_epoch(approval)
    out["expires_at"] = iso(expires_at)
    return out


def expiry_epoch(approval: Any) -> float | None:
    """When a parked invoice expires (epoch seconds), from its terms or summary; None if unknown."""
    terms = getattr(approval, "terms", None) or {}
    raw = terms.get("expires_at") or approval.summary.get("expires_at")
    if raw is None:
        return None
    if isinstance(raw, (int, float)):
        return float(raw)
    try:
        when = datetime.fromisoformat(str(raw))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def budget_views(budgets: Any, now: float) -> list[dict[str, Any]]:
    """Every budget's use per asset at ``now`` (``budgets``: an ``agent.budget.BudgetBook``)."""
    scopes = {s.name: s.scope for s in budgets.specs}
    return [usage_view(u, scopes[u.name]) for u in budgets.usage(now)]


def spend_summary(ledger: Any, since: float | None, group_by: str) -> dict[str, Any]:
    """Paid rows since ``since`` grouped by day/route/budget/payee, and the total counting each payment once."""
    lines = ledger.report(since, group_by=group_by)
    # A payment can be charged to several budgets (or pay several payees): total it by day.
    once = lines if group_by in ("day", "route") else ledger.report(since, group_by="day")
    total = {"count": sum(x.count for x in once), "amount_lovelace": sum(x.amount_lovelace for x in once),
             "fee_lovelace": sum(x.fee_lovelace for x in once)}
    total["total_lovelace"] = total["amount_lovelace"] + total["fee_lovelace"]
    return {"group_by": group_by,
            "lines": [{"key": x.key, "count": x.count, "amount_lovelace": x.amount_lovelace,
                       "fee_lovelace": x.fee_lovelace, "total_lovelace": x.amount_lovelace + x.fee_lovelace}
                      for x in lines],
            "total": total}
