"""HTML for the console's pages, rendered from the dicts ``Agent`` methods return.

Only formatting happens here (ADA with six decimals, escaping, bar widths from
``percent_used``); every figure comes from ``agent.app.Agent``. Every value is escaped.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlencode

from agent.output import format_ada

NAV = (("/", "Overview"), ("/jobs", "Jobs"), ("/payments", "Payments"), ("/approvals", "Approvals"),
       ("/schedules", "Schedules"))

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1c2430;background:#f5f7fa}
header{background:#0b3a66;color:#fff;padding:.6em 1.2em;display:flex;gap:1.4em;align-items:center}
header a{color:#cfe3ff;text-decoration:none}header a.on{color:#fff;font-weight:600}
header .brand{font-weight:700;margin-right:1em}main{padding:1em 1.4em;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff;margin:.5em 0 1.2em}
th,td{border-bottom:1px solid #e1e6ee;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#eef2f7;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{background:#fff;padding:.8em 1.1em;border-radius:6px;
box-shadow:0 1px 2px #0002;min-width:12em}.card .v{font-size:1.5em;font-weight:600}
.bar{background:#e6ebf2;border-radius:3px;height:.9em;width:12em;display:inline-block;vertical-align:middle}
.bar i{display:block;height:100%;border-radius:3px;background:#2f7d4f}.bar i.warn{background:#c98a00}
.bar i.over{background:#b3261e}code{font-size:12px;word-break:break-all}
.msg{padding:.5em .8em;border-radius:4px;margin:.5em 0}.ok{background:#e3f4e8}.err{background:#fbe4e2}
button{padding:.3em .9em;border-radius:4px;border:1px solid #888;cursor:pointer}
button.approve{background:#2f7d4f;color:#fff;border-color:#2f7d4f}button.deny{background:#b3261e;color:#fff;
border-color:#b3261e}form.inline{display:inline}.muted{color:#6b7685}pre{background:#fff;padding:.6em;
overflow:auto}.old{color:#b3261e}.new{color:#2f7d4f}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def ada(lovelace: int | None) -> str:
    """Lovelace as ADA text, ``-`` for None."""
    return "-" if lovelace is None else format_ada(int(lovelace))


def amount(asset: str, units: int | None) -> str:
    """ADA for lovelace, smallest units for a token."""
    if units is None:
        return "-"
    return format_ada(units) + " ADA" if asset == "lovelace" else f"{units} {asset[:16]}"


def layout(title: str, path: str, body: str, *, read_only: bool, message: str | None = None,
           error: str | None = None) -> str:
    """The page frame: navigation, an optional message, and ``body``."""
    nav = "".join(f'<a href="{href}" class="{"on" if href == path else ""}">{name}</a>' for href, name in NAV)
    mode = '<span class="muted">read-only</span>' if read_only else ""
    notice = ""
    if message:
        notice += f'<div class="msg ok" id="message">{_e(message)}</div>'
    if error:
        notice += f'<div class="msg err" id="error">{_e(error)}</div>'
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)} · cardano-agent</title>"
            f"<meta name=viewport content='width=device-width'><style>{CSS}</style></head><body>"
            f'<header><span class="brand">cardano-agent</span>{nav}{mode}</header>'
            f"<main><h1>{_e(title)}</h1>{notice}{body}</main></body></html>")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = (),
          table_id: str = "") -> str:
    """An HTML table; cells are already-escaped HTML."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="{"num" if i in numeric else ""}">{c}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>'
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def bar(percent: float) -> str:
    """A horizontal bar filled to ``percent`` (capped at 100)."""
    cls = "over" if percent >= 100 else "warn" if percent >= 80 else ""
    return f'<span class="bar"><i class="{cls}" style="width:{min(100.0, max(0.0, percent)):.1f}%"></i></span>'


def spend_svg(lines: Sequence[Mapping[str, Any]], *, width: int = 640, height: int = 160) -> str:
    """A bar chart of spend per day (total lovelace incl. fees) as inline SVG."""
    if not lines:
        return '<p class="muted">Nothing paid yet.</p>'
    peak = max(int(x["total_lovelace"]) for x in lines) or 1
    step = width / len(lines)
    bars = []
    bar_w = max(1.0, min(step - 4, 48.0))
    for i, x in enumerate(lines):
        h = (height - 40) * int(x["total_lovelace"]) / peak
        bars.append(f'<rect x="{i * step + (step - bar_w) / 2:.1f}" y="{height - 20 - h:.1f}" width="{bar_w:.1f}" '
                    f'height="{h:.1f}" fill="#2f7d4f"><title>{_e(x["key"])}: {ada(x["total_lovelace"])} ADA'
                    f'</title></rect><text x="{i * step + step / 2:.1f}" y="{height - 5}" font-size="10" '
                    f'text-anchor="middle">{_e(str(x["key"])[5:])}</text>')
    return (f'<svg id="spend-plot" width="{width}" height="{height}" role="img" aria-label="spend per day">'
            f'<text x="2" y="12" font-size="11">peak {ada(peak)} ADA/day</text>{"".join(bars)}</svg>')


def overview(status: Mapping[str, Any], budgets: Sequence[Mapping[str, Any]], spend: Mapping[str, Any]) -> str:
    """Balance, total paid, queue, budgets with bars and the spend plot."""
    wallet = status["wallet"]
    balance = (f'<span id="balance">{ada(wallet["balance_lovelace"])}</span> ADA'
               if "balance_lovelace" in wallet else f'<span class="muted">{_e(wallet.get("error", "-"))}</span>')
    queue = status["queue"]
    cards = (f'<div class="cards"><div class="card">Wallet <b>{_e(wallet.get("name"))}</b><div class="v">{balance}'
             f'</div><code id="address">{_e(wallet.get("address", ""))}</code></div>'
             f'<div class="card">Paid in all<div class="v"><span id="total-paid">'
             f'{ada(status["total_paid_lovelace"])}</span> ADA</div></div>'
             f'<div class="card">Queue<div class="v" id="queue-queued">{queue.get("queued", 0)}</div>queued · '
             f'<span id="queue-active">{sum(queue.get(s, 0) for s in ("running", "paying", "awaiting_settlement"))}'
             f'</span> active · <span id="queue-failed">{queue.get("failed", 0)}</span> failed</div>'
             f'<div class="card">Approvals<div class="v"><a href="/approvals" id="pending-count">'
             f'{len(status["pending_approvals"])}</a></div>waiting</div></div>')
    rows = [(_e(b["name"]), _e(b["scope"]), _e(b["window"]), _e(amount(b["asset"], b["limit"])),
             f'<span class="spent">{_e(amount(b["asset"], b["spent"]))}</span>',
             _e(amount(b["asset"], b["reserved"])), _e(amount(b["asset"], b["remaining"])),
             f'{bar(b["percent_used"])} {b["percent_used"]:.1f}%') for b in budgets]
    budget_table = table(["Budget", "Scope", "Window", "Limit", "Spent", "Reserved", "Remaining", "Used"],
                         rows, numeric=(3, 4, 5, 6), table_id="budgets")
    queue_rows = [(_e(state), str(n)) for state, n in queue.items()]
    failures = [(_job_link(j["id"]), _e(j["kind"]), _e(j["updated_at"]), _e((j["last_error"] or "")[:120]))
                for j in status["recent_failures"]]
    unfinished = [(str(p["id"]), _e(p["state"]), _e(p["route"] or "-"), ada(p["amount_lovelace"]), _tx(p["tx_id"]))
                  for p in status["unfinished_payments"]]
    return (cards + "<h2>Budgets</h2>" + budget_table + "<h2>Spend per day (last 30 days)</h2>"
            + spend_svg(spend["lines"]) + "<h2>Queue</h2>" + table(["State", "Jobs"], queue_rows, numeric=(1,),
                                                                   table_id="queue")
            + "<h2>Payments in flight</h2>" + table(["Payment", "State", "Route", "Amount", "Transaction"],
                                                    unfinished, numeric=(3,), table_id="unfinished")
            + "<h2>Recent failures</h2>" + table(["Job", "Kind", "When", "Error"], failures, table_id="failures"))


def _job_link(job_id: Any) -> str:
    return "-" if job_id is None else f'<a href="/jobs/{int(job_id)}">{int(job_id)}</a>'


def _tx(tx_id: str | None) -> str:
    return f"<code>{_e(tx_id)}</code>" if tx_id else "-"


def jobs_page(jobs: Sequence[Mapping[str, Any]], *, state: str | None, tag: str | None,
              states: Sequence[str]) -> str:
    """The job list with a state/tag filter."""
    options = "".join(f'<option value="{s}"{" selected" if s == state else ""}>{s}</option>' for s in states)
    form = (f'<form method="get" action="/jobs">State <select name="state"><option value="">any</option>{options}'
            f'</select> Tag <input name="tag" value="{_e(tag or "")}"> <button>Filter</button></form>')
    rows = [(_job_link(j["id"]), _e(j["kind"]), f'<span class="state">{_e(j["state"])}</span>',
             f'{j["attempts"]}/{j["max_attempts"]}', _e(", ".join(j["tags"])), _e(j["updated_at"]),
             _e((j["last_error"] or "")[:80])) for j in jobs]
    return form + table(["Job", "Kind", "State", "Tries", "Tags", "Updated", "Last error"], rows, table_id="jobs")


def job_page(job: Mapping[str, Any]) -> str:
    """One job: its fields, its payments, its approvals and its result."""
    fields = [("State", f'<span id="job-state">{_e(job["state"])}</span>'), ("Kind", _e(job["kind"])),
              ("Attempts", f'{job["attempts"]}/{job["max_attempts"]}'), ("Tags", _e(", ".join(job["tags"]))),
              ("Budget", _e(job["budget"] or "-")), ("Request", f'<code>{_e(json.dumps(job["request"]))}</code>'),
              ("Created", _e(job["created_at"])), ("Updated", _e(job["updated_at"])),
              ("Result file", _e(job["result_path"] or "-")), ("Last error", _e(job["last_error"] or "-"))]
    info = table(["Field", "Value"], fields)
    pays = table(["Payment", "State", "Invoice", "Amount", "Fee", "Transaction"],
                 [(str(p["id"]), _e(p["state"]), f'<code>{_e(p["invoice_id"])}</code>', ada(p["amount_lovelace"]),
                   ada(p["fee_lovelace"]), _tx(p["tx_id"])) for p in job["payments"]],
                 numeric=(3, 4), table_id="job-payments")
    approvals = table(["Approval", "State", "Invoice", "Decided"],
                      [(str(a["id"]), _e(a["state"]), f'<code>{_e(a["invoice_id"])}</code>', _e(a["decided_at"] or "-"))
                       for a in job["approvals"]])
    result = f'<pre id="job-result">{_e(json.dumps(job["result"], indent=2))}</pre>' if job["result"] else \
        '<p class="muted" id="job-result">no result yet</p>'
    return info + "<h2>Payments</h2>" + pays + "<h2>Approvals</h2>" + approvals + "<h2>Result</h2>" + result


def payments_page(payments: Sequence[Mapping[str, Any]], *, state: str | None, states: Sequence[str]) -> str:
    """The ledger, newest first, each row with its transaction id."""
    links = " · ".join(f'<a href="/payments?{urlencode({"state": s})}">{s}</a>' if s != state else f"<b>{s}</b>"
                       for s in states)
    rows = [(str(p["id"]), _e(p["created_at"]), _e(p["route"] or "-"), _job_link(p["job_id"]),
             f'<span class="state">{_e(p["state"])}</span>', ada(p["amount_lovelace"]), ada(p["fee_lovelace"]),
             _tx(p["tx_id"]), _e(p["reason"] or "")) for p in payments]
    return (f'<p><a href="/payments">all</a> · {links}</p>'
            + table(["ID", "Time", "Route", "Job", "State", "Amount", "Fee", "Transaction", "Reason"], rows,
                    numeric=(5, 6), table_id="payments"))


def approvals_page(data: Mapping[str, Any], *, csrf: str, read_only: bool) -> str:
    """Pending approvals with one-click approve/deny; a payee change shows old and new addresses."""
    rows = []
    for a in data["pending"]:
        if a["kind"] == "payee_change":
            what = ("payee change<br>old: " + ("<br>".join(f'<code class="old">{_e(x)}</code>' for x in a["old_payees"])
                                               or "-")
                    + "<br>new: " + "<br>".join(f'<code class="new">{_e(x)}</code>' for x in a["new_payees"]))
        else:
            payees = a["summary"].get("payees") or []
            what = (f'{ada(a["cost_lovelace"])} ADA to ' + ", ".join(f"<code>{_e(x)}</code>" for x in payees))
        if read_only:
            buttons = '<span class="muted">read-only</span>'
        else:
            buttons = "".join(
                f'<form class="inline" method="post" action="/approvals/{int(a["id"])}/{verb}">'
                f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
                f'<button class="{verb}" id="{verb}-{int(a["id"])}">{verb.capitalize()}</button></form> '
                for verb in ("approve", "deny"))
        rows.append((str(a["id"]), _e(a["host"]), _e(a["route"] or "-"), _job_link(a["job_id"]), what,
                     _e(a["expires_at"] or "-"), buttons))
    pins = [(_e(host), "<br>".join(f"<code>{_e(x)}</code>" for x in addrs)) for host, addrs in data["pins"].items()]
    return (table(["ID", "Host", "Route", "Job", "Payment", "Invoice expires", ""], rows, table_id="approvals")
            + "<h2>Pinned payees</h2>" + table(["Host", "Addresses"], pins))


def schedules_page(schedules: Sequence[Mapping[str, Any]]) -> str:
    """Each schedule: rule, next fire, last fire and its last report (latest job)."""
    rows = []
    for s in schedules:
        last = s.get("last_job")
        report = "-" if not last else (f'{_job_link(last["id"])} {_e(last["state"])}'
                                       + (f' · <code>{_e(last["result_path"])}</code>' if last["result_path"] else ""))
        rows.append((_e(s["name"]), _e(s["kind"]), _e(s["rule"]), _e(s["next_fire"] or "-"),
                     _e(s["last_fire"] or "-"), report))
    return table(["Schedule", "Kind", "Rule", "Next fire", "Last fire", "Last report"], rows, table_id="schedules")


def login_page(*, error: str | None = None) -> str:
    """Ask for the console token (sent as a form field, kept as an HttpOnly cookie)."""
    body = ('<form method="post" action="/login"><p>This console needs its token '
            "(<code>CARDANO_AGENT_CONSOLE_TOKEN</code>).</p>"
            '<input type="password" name="token" autocomplete="off"> <button>Sign in</button></form>')
    return layout("Sign in", "/login", body, read_only=False, error=error)
