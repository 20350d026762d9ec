"""CLI: `credits`: prepaid partner batches bought, their cost per call, and what is left of them."""

from __future__ import annotations

import argparse
from typing import Any

from agent.output import emit, format_ada, table

ORDER = 45


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("credits", help="prepaid partner batches: cost per call and remaining credits",
                       parents=[common])
    p.add_argument("--partner", help="only this partner")
    p.add_argument("--offline", action="store_true", help="do not ask the API for the remaining credits")
    p.set_defaults(func=cmd_credits)


def batch_purchases(rows: list[Any], partner: str | None = None) -> list[dict[str, Any]]:
    """Group paid partner payments by partner: batches bought, calls bought, cost and cost per call."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        if not row.paid or not row.partner or (partner and row.partner != partner):
            continue
        g = groups.setdefault(row.partner, {"partner": row.partner, "payments": 0, "calls_bought": 0,
                                            "cost_lovelace": 0})
        g["payments"] += 1
        g["calls_bought"] += row.batch_target
        g["cost_lovelace"] += row.cost_lovelace or 0
    for g in groups.values():
        g["cost_per_call_lovelace"] = g["cost_lovelace"] // max(1, g["calls_bought"])
    return sorted(groups.values(), key=lambda g: g["partner"])


def cmd_credits(args: argparse.Namespace) -> int:
    from agent.app import Agent

    with Agent.open(args.home) as agent:
        groups = batch_purchases(agent.ledger.rows(), args.partner)
        configured = {agent.config.api.partner} if agent.config.api.partner else set()
        partners: list[str] = [args.partner] if args.partner else sorted({str(g["partner"]) for g in groups}
                                                                         | configured)
        wallet = None
        try:
            wallet = agent.wallet_address
        except Exception:  # noqa: BLE001 - without a wallet there is no balance to ask for
            pass
        balances: dict[str, dict[str, Any]] = {}
        if not args.offline and wallet:
            from agent.tapi import TClient

            with TClient(agent.config.api.base_url, timeout_s=5.0) as client:
                for name in partners:
                    try:
                        b = client.payment_balance(name, wallet)
                        balances[name] = {"remaining": b.remaining, "total": b.total,
                                          "expires_at": b.expires_at.isoformat() if b.expires_at else None}
                    except Exception as exc:  # noqa: BLE001 - shown per partner, not fatal
                        balances[name] = {"error": f"{type(exc).__name__}: {str(exc)[:80]}"}
    rows = []
    by_partner = {g["partner"]: g for g in groups}
    for name in partners:
        g = by_partner.get(name, {"partner": name, "payments": 0, "calls_bought": 0, "cost_lovelace": 0,
                                  "cost_per_call_lovelace": 0})
        rows.append({**g, **balances.get(name, {})})

    def human(data: list[dict[str, Any]]) -> None:
        table([[d["partner"], d["payments"], d["calls_bought"], format_ada(d["cost_lovelace"]),
                format_ada(d["cost_per_call_lovelace"]),
                d.get("remaining", "-") if "error" not in d else "?", d.get("total", "-") if "error" not in d else "?"]
               for d in data], ["PARTNER", "PAYMENTS", "CALLS BOUGHT", "COST ADA", "PER CALL", "REMAINING", "OF"])
        for d in data:
            if "error" in d:
                print(f"{d['partner']}: could not ask the API: {d['error']}")

    emit(args.json, rows, human)
    return 0
