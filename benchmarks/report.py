"""The bench's figures, their targets, and the table printed at the end of a run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

FIGURES = ("payment", "throughput", "fee", "memory", "startup", "capacity", "fleet", "backends", "blocks")
"""Figure keys, in issue 7's order; each is a module ``benchmarks.<key>`` with ``measure(quick)``."""

TITLES = {
    "payment": "1. Payment overhead (402 → retry)",
    "throughput": "2. Throughput through the runner",
    "fee": "3. Fee ÷ ledger minimum fee",
    "memory": "4. Peak RSS of `cardano-agent run`",
    "startup": "5. Start-up wall time",
    "capacity": "6. Sandbox capacity (devnet, full validation)",
    "fleet": "7. Fleet: SQLite vs PostgreSQL, 1 vs 2 hosts x 8 workers",
    "backends": "8. Ogmios vs Blockfrost backend (payment, 8 workers, HTTP requests)",
    "blocks": "9. Paid calls at real block times vs the chain's capacity; agent CPU per call",
}


@dataclass(frozen=True, slots=True)
class Check:
    """One target: the figure and field it reads, a test, and the target as people read it.

    ``invalid_if`` looks at the whole figure and returns why the value cannot be judged (the
    sandbox, not the agent, set it), or None.
    """

    figure: str
    field: str
    target: str
    test: Callable[[Any], bool]
    invalid_if: Callable[[Mapping[str, Any]], str | None] | None = None


def _sandbox_bound(fig: Mapping[str, Any]) -> str | None:
    rtt = fig.get("twin_health_rtt_ms")
    if rtt is not None and rtt > 10:
        return f"the twin's own round trip is {rtt:.0f} ms, so the ratio measures the sandbox's stall"
    return None


TARGETS: tuple[Check, ...] = (
    Check("payment", "agent_p50_ms", "≤ 10 ms", lambda v: v <= 10),
    Check("payment", "speedup_p50", "≥ 5× naive", lambda v: v >= 5),
    Check("throughput", "speedup", "≥ 3× (8 vs 1 worker)", lambda v: v >= 3, invalid_if=_sandbox_bound),
    Check("throughput", "failed", "= 0", lambda v: v == 0),
    Check("throughput", "double_spent", "= 0", lambda v: v == 0),
    Check("throughput", "ledger_mismatch_lovelace", "= 0", lambda v: v == 0),
    Check("fee", "max_ratio", "≤ 1.001", lambda v: v <= 1.001),
    Check("memory", "peak_rss_mb", "≤ 150 MB", lambda v: v <= 150),
    Check("memory", "paying_peak_rss_mb", "≤ 150 MB", lambda v: v <= 150),
    Check("startup", "help_s", "≤ 0.3 s", lambda v: v <= 0.3),
    Check("fleet", "failed", "= 0", lambda v: v == 0),
    Check("fleet", "double_spent", "= 0", lambda v: v == 0),
    Check("fleet", "ledger_mismatch_lovelace", "= 0", lambda v: v == 0),
    Check("backends", "failed", "= 0", lambda v: v == 0),
    Check("backends", "double_spent", "= 0", lambda v: v == 0),
    Check("backends", "missing_on_chain", "= 0", lambda v: v == 0),
    Check("blocks", "vs_capacity", "≤ 1.5× the capacity limit", lambda v: v <= 1.5),
    Check("blocks", "cpu_ms_per_call", "≤ 3 ms", lambda v: v <= 3),
    Check("blocks", "failed", "= 0", lambda v: v == 0),
    Check("blocks", "double_spent", "= 0", lambda v: v == 0),
    Check("blocks", "missing_on_chain", "= 0", lambda v: v == 0),
    Check("blocks", "ledger_mismatch_lovelace", "= 0", lambda v: v == 0),
)


def checks(figures: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every target of the figures run, with its value and whether it was met (``None``: the figure failed)."""
    out = []
    for check in TARGETS:
        if check.figure not in figures:
            continue
        fig = figures[check.figure]
        value = fig.get(check.field)
        met = None if value is None else bool(check.test(value))
        row = {"figure": check.figure, "field": check.field, "value": value, "target": check.target, "met": met}
        reason = check.invalid_if(fig) if check.invalid_if and value is not None else None
        if reason:
            row["met"] = None
            row["invalid"] = reason
        out.append(row)
    return out


def verdict(row: Mapping[str, Any]) -> str:
    """``met``, ``MISSED``, ``INVALID`` (value set by the sandbox) or ``NOT MEASURED`` (figure failed)."""
    if row.get("invalid"):
        return "INVALID"
    return {True: "met", False: "MISSED", None: "NOT MEASURED"}[row["met"]]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) < 10:
            return f"{value:.6f}".rstrip("0").rstrip(".")
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def render_table(result: Mapping[str, Any]) -> str:
    """The human table: every figure's values, then each target's :func:`verdict`."""
    figures = result["figures"]
    lines = []
    meta = result.get("machine", {})
    lines.append(f"cardano-pay-agent bench ({'quick' if result.get('quick') else 'full'}) "
                 f"{result.get('date', '')} · {meta.get('nproc', '?')} CPU {meta.get('cpu', '?')} · "
                 f"Python {meta.get('python', '?')} · load {meta.get('loadavg_at_start', '?')}")
    for key in (k for k in FIGURES if k in figures):
        fig = figures[key]
        lines.append("")
        lines.append(TITLES[key] + (f"  [{fig['seconds']:.1f} s]" if "seconds" in fig else ""))
        if "error" in fig:
            lines.append(f"  NOT MEASURED: {fig['error']}")
            continue
        width = max((len(k) for k in fig if k != "seconds"), default=0)
        for name, value in fig.items():
            if name == "seconds":
                continue
            if isinstance(value, Mapping):
                value = ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
            lines.append(f"  {name.ljust(width)}  {_fmt(value)}")
    lines.append("")
    lines.append("Targets")
    for row in result["checks"]:
        value = "-" if row["value"] is None else _fmt(row["value"])
        line = f"  {verdict(row):<12} {row['figure']}.{row['field']} = {value}  (target {row['target']})"
        if row.get("invalid"):
            line += f": {row['invalid']}"
        lines.append(line)
    return "\n".join(lines)
