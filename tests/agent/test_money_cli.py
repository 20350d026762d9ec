"""The money commands: budget show, spend (and --plot), payments, approvals, approve and deny."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from agent.approvals import Approvals
from agent.budget import BudgetBook
from agent.cli import main
from agent.commands import money
from agent.config import BudgetSpec, load_config
from agent.ledger import SpendLedger
from agent.queue import SqliteJobStore
from agent.spendplot import budget_curve
from agent.store import Database

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc).timestamp()
HOUR, DAY = 3600, 86_400
PAY_A = "addr_test1vq" + "a" * 50
PAY_B = "addr_test1vq" + "b" * 50

CONFIG = """\
[[budgets]]
name = "daily"
limit_ada = 50
window = "1d"

[[budgets]]
name = "chat"
limit_ada = 5
window = "none"
scope = "route:/chat*"
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An agent home with two budgets and the command clock frozen at T0."""
    (tmp_path / "agent.toml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.setattr(money, "clock", lambda: T0)
    return tmp_path


@pytest.fixture
def ledger(home):
    """The home's spend ledger, over budgets parsed from its agent.toml."""
    specs = load_config(home, {}).budgets
    assert all(isinstance(s, BudgetSpec) for s in specs)
    db = Database.in_home(home)
    return SpendLedger(db, BudgetBook(db, specs))


def pay(ledger, invoice, *, route, amount, fee, at, state="settled", job_id=None, outputs=None):
    """Walk one payment through the ledger to ``state`` (reserved, signed, submitted, settled, unsettled)."""
    outs = outputs or [{"address": PAY_A, "amount": amount}]
    row = ledger.reserve(invoice_id=invoice, host="api.example", route=route, job_id=job_id,
                         outputs=outs, amounts={"lovelace": amount}, fee_estimate_lovelace=fee, now=at)
    if state == "reserved":
        return row
    row = ledger.mark_signed(row.id, tx_id=invoice.encode().hex().ljust(64, "0"), cbor=b"\x84",
                             fee_lovelace=fee, inputs=[("ab" * 32, 0)], ttl_slot=1000,
                             cost_lovelace=amount + fee, now=at)
    if state == "signed":
        return row
    row = ledger.mark_submitted(row.id, now=at)
    if state == "settled":
        row = ledger.mark_settled(row.id, now=at + 5)
    elif state == "unsettled":
        row = ledger.mark_unsettled(row.id, "server refused", now=at + 5)
    return row


@pytest.fixture
def history(ledger):
    """A week of payments: chat and image calls, one open reservation, one refusal, one unsettled."""
    pay(ledger, "inv-old", route="/chat", amount=1_000_000, fee=170_000, at=T0 - 10 * DAY)
    pay(ledger, "inv-c1", route="/chat", amount=2_000_000, fee=200_000, at=T0 - 2 * HOUR)
    pay(ledger, "inv-i1", route="/images/generate", amount=3_000_000, fee=180_000, at=T0 - 3 * DAY,
        outputs=[{"address": PAY_A, "amount": 2_000_000}, {"address": PAY_B, "amount": 1_000_000}])
    pay(ledger, "inv-u1", route="/images/generate", amount=500_000, fee=170_000, at=T0 - 1 * HOUR,
        state="unsettled")
    pay(ledger, "inv-open", route="/chat", amount=1_000_000, fee=170_000, at=T0 - 60, state="reserved")
    ledger.record_refusal("inv-bad", "api.example", "/chat", None, "payee_changed: new payee",
                          {"lovelace": 9_000_000}, now=T0 - 30)
    return ledger


def run(capsys, *argv):
    """Run the CLI; return (exit code, stdout, stderr)."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# -- budget show -----------------------------------------------------------------------------------


def test_budget_show_numbers_match_the_ledger(home, history, capsys):
    """budget show reports spent in the window, open reservations and remaining, as the ledger has them."""
    code, out, _ = run(capsys, "budget", "show", "--home", str(home), "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    # daily (1d): inv-c1 (2.2 ADA) and inv-u1 (0.67 ADA) committed in the last day; inv-open held.
    assert rows["daily"] == {
        "name": "daily", "scope": "all", "window": "1d", "window_s": DAY,
        "since": datetime.fromtimestamp(T0 - DAY, timezone.utc).isoformat(timespec="seconds"),
        "asset": "lovelace", "limit": 50_000_000, "spent": 2_200_000 + 670_000,
        "reserved": 1_170_000, "remaining": 50_000_000 - 2_870_000 - 1_170_000, "percent_used": 8.1,
    }
    # chat (all time, /chat*): inv-old and inv-c1 spent, inv-open reserved; refusals never count.
    paid_chat = sum(r.cost_lovelace for r in history.rows() if r.paid and r.route == "/chat")
    assert rows["chat"]["spent"] == paid_chat == 3_370_000
    assert rows["chat"]["reserved"] == 1_170_000
    assert rows["chat"]["remaining"] == 5_000_000 - 3_370_000 - 1_170_000
    assert rows["chat"]["percent_used"] == 90.8


def test_budget_show_human_table(home, history, capsys):
    """The human table shows ADA with six decimals and the percentage used, one line per budget."""
    code, out, _ = run(capsys, "budget", "show", "--home", str(home))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["BUDGET", "SCOPE", "WINDOW", "ASSET", "LIMIT", "SPENT", "RESERVED",
                                "REMAINING", "USED%"]
    assert lines[1].split() == ["daily", "all", "1d", "ADA", "50.000000", "2.870000", "1.170000",
                                "45.960000", "8.1"]
    assert lines[2].split() == ["chat", "route:/chat*", "none", "ADA", "5.000000", "3.370000",
                                "1.170000", "0.460000", "90.8"]


def test_budget_show_without_budgets(tmp_path, capsys):
    """A home without budgets says so (and --json gives an empty list)."""
    assert run(capsys, "budget", "show", "--home", str(tmp_path))[:2] == (0, "(none configured)\n")
    assert json.loads(run(capsys, "budget", "show", "--home", str(tmp_path), "--json")[1]) == []


def test_budget_show_token_limits(tmp_path, monkeypatch, capsys):
    """A budget limiting a native token shows it in the token's units, beside its ADA limit."""
    token = "82888098ca0a60c75af54db1b9817832a9da4b7a32ea575c461568a2.4445564e4554"
    (tmp_path / "agent.toml").write_text(
        f'[[budgets]]\nname = "tokens"\nlimit_ada = 2\nwindow = "1h"\nlimits = {{ "{token}" = 1000 }}\n',
        encoding="utf-8")
    monkeypatch.setattr(money, "clock", lambda: T0)
    db = Database.in_home(tmp_path)
    ledger = SpendLedger(db, BudgetBook(db, load_config(tmp_path, {}).budgets))
    row = ledger.reserve(invoice_id="inv-t", host="api.example", route="/chat", job_id=None,
                         outputs=[{"address": PAY_A, "amount": 250, "asset": token}],
                         amounts={token: 250, "lovelace": 1_200_000}, fee_estimate_lovelace=180_000, now=T0 - 60)
    ledger.mark_signed(row.id, tx_id="cd" * 32, cbor=b"\x84", fee_lovelace=180_000, inputs=[("ab" * 32, 1)],
                       ttl_slot=10, cost_lovelace=1_380_000, now=T0 - 60)
    ledger.mark_submitted(row.id, now=T0 - 59)
    rows = json.loads(run(capsys, "budget", "show", "--home", str(tmp_path), "--json")[1])
    assert [(r["asset"], r["limit"], r["spent"], r["remaining"], r["percent_used"]) for r in rows] == [
        ("lovelace", 2_000_000, 1_380_000, 620_000, 69.0), (token, 1000, 250, 750, 25.0)]
    lines = run(capsys, "budget", "show", "--home", str(tmp_path))[1].splitlines()
    assert lines[2].split()[4:8] == ["1000", "250", "0", "750"]


# -- spend -----------------------------------------------------------------------------------------


def test_spend_by_day_counts_paid_rows_since(home, history, capsys):
    """spend --since 7d groups paid rows by UTC day; older, refused and open rows are left out."""
    code, out, _ = run(capsys, "spend", "--since", "7d", "--home", str(home), "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"since", "until", "group_by", "lines", "total", "plot"}
    assert data["group_by"] == "day" and data["plot"] is None
    assert data["since"] == datetime.fromtimestamp(T0 - 7 * DAY, timezone.utc).isoformat(timespec="seconds")
    assert data["lines"] == [
        {"key": "2026-11-25", "count": 1, "amount_lovelace": 3_000_000, "fee_lovelace": 180_000,
         "total_lovelace": 3_180_000},
        {"key": "2026-11-28", "count": 2, "amount_lovelace": 2_500_000, "fee_lovelace": 370_000,
         "total_lovelace": 2_870_000},
    ]
    assert data["total"] == {"count": 3, "amount_lovelace": 5_500_000, "fee_lovelace": 550_000,
                             "total_lovelace": 6_050_000}


def test_spend_totals_equal_what_left_the_wallet(home, history, capsys):
    """spend --since all totals exactly the ledger's total_paid."""
    data = json.loads(run(capsys, "spend", "--since", "all", "--home", str(home), "--json")[1])
    assert data["since"] is None
    assert data["total"]["total_lovelace"] == history.total_paid() == 7_220_000
    assert data["total"]["count"] == 4


@pytest.mark.parametrize("by, expected", [
    ("route", {"/chat": (1, 2_000_000, 200_000), "/images/generate": (2, 3_500_000, 350_000)}),
    ("budget", {"daily": (3, 5_500_000, 550_000), "chat": (1, 2_000_000, 200_000)}),
    ("payee", {PAY_A: (3, 4_500_000, 550_000), PAY_B: (1, 1_000_000, 0)}),
])
def test_spend_groupings(home, history, capsys, by, expected):
    """--by route/budget/payee groups the same payments; the TOTAL counts each payment once."""
    data = json.loads(run(capsys, "spend", "--since", "7d", "--by", by, "--home", str(home), "--json")[1])
    assert data["group_by"] == by
    assert {x["key"]: (x["count"], x["amount_lovelace"], x["fee_lovelace"]) for x in data["lines"]} == expected
    assert data["total"]["count"] == 3 and data["total"]["total_lovelace"] == 6_050_000


def test_spend_human_report_and_last_payments(home, history, capsys):
    """The human report has a TOTAL line and lists the last payments newest first, refusals included."""
    code, out, _ = run(capsys, "spend", "--since", "7d", "--by", "route", "--home", str(home))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Spend since 2026-11-21 12:00 UTC, by route")
    assert lines[1].split() == ["ROUTE", "COUNT", "AMOUNT", "(ADA)", "FEE", "(ADA)", "TOTAL", "(ADA)"]  # units in headers
    assert lines[2].split() == ["/chat", "1", "2.000000", "0.200000", "2.200000"]
    assert lines[3].split() == ["/images/generate", "2", "3.500000", "0.350000", "3.850000"]
    assert lines[4].split() == ["TOTAL", "3", "5.500000", "0.550000", "6.050000"]
    recent = out.split("Last 5 payments:\n")[1].splitlines()
    assert recent[0].split()[:3] == ["TIME", "(UTC)", "ROUTE"]
    assert [line.split()[4] for line in recent[1:]] == ["refused", "reserved", "unsettled", "settled", "settled"]
    assert "inv-bad" in recent[1] and "9.000000" in recent[1]


def test_spend_since_a_date(home, history, capsys):
    """--since takes a UTC date: payments from that midnight on."""
    data = json.loads(run(capsys, "spend", "--since", "2026-11-28", "--home", str(home), "--json")[1])
    assert data["total"]["count"] == 2
    assert data["since"] == "2026-11-28T00:00:00+00:00"


@pytest.mark.parametrize("since", ["bogus", "7", "-3d", "0d", "7y", "2026-13-01", "2027-01-01"])
def test_spend_bad_since_is_one_line_error(home, capsys, since):
    """A --since that is not 24h/7d/all/a past date is one error line and a non-zero exit."""
    code, out, err = run(capsys, "spend", f"--since={since}", "--home", str(home))
    assert code != 0
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: --since")


# -- spend --plot ----------------------------------------------------------------------------------


def test_spend_plot_writes_a_png(home, history, capsys, tmp_path):
    """--plot draws the budget curves with matplotlib into a PNG and says where."""
    target = tmp_path / "spend.png"
    code, out, _ = run(capsys, "spend", "--since", "7d", "--plot", str(target), "--home", str(home))
    assert code == 0
    assert f"plot written to {target}" in out
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Matplotlib" in data  # the PNG's Software text chunk
    assert len(data) > 10_000


def test_spend_plot_path_in_json(home, history, capsys, tmp_path):
    """With --json, the plot's path is in the document and nothing else is printed."""
    target = tmp_path / "s.png"
    data = json.loads(run(capsys, "spend", "--plot", str(target), "--home", str(home), "--json")[1])
    assert data["plot"] == str(target) and target.exists()


def test_spend_plot_without_matplotlib(home, history, capsys, tmp_path, monkeypatch):
    """Without matplotlib, --plot fails with one line naming the extra to install; no file is written."""
    for name in ("matplotlib", "matplotlib.dates", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    target = tmp_path / "spend.png"
    code, out, err = run(capsys, "spend", "--plot", str(target), "--home", str(home))
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and "pip install 'cardano-pay-agent[plot]'" in err
    assert not target.exists()


def test_spend_plot_unwritable_path(home, history, capsys, tmp_path):
    """A plot path in a missing directory is one error line, not a traceback."""
    code, _, err = run(capsys, "spend", "--plot", str(tmp_path / "no" / "such" / "dir.png"), "--home", str(home))
    assert code != 0 and err.startswith("error: cannot write") and err.count("\n") == 1


def test_budget_curve_rolls_the_window():
    """A windowed budget's curve drops a charge just after its window; no window keeps a running total."""
    charges = [(150.0, 3), (40.0, 7), (100.0, 5), (5.0, 11), (400.0, 99)]

    def after(t: float) -> float:
        return math.nextafter(t, math.inf)

    assert budget_curve(charges, window_s=60, since=90.0, until=300.0) == (
        (90.0, 7), (100.0, 12), (after(100.0), 5), (150.0, 8), (after(160.0), 3), (after(210.0), 0),
        (300.0, 0),
    )
    assert budget_curve(charges, window_s=None, since=50.0, until=300.0) == (
        (50.0, 18), (100.0, 23), (150.0, 26), (300.0, 26),
    )
    with pytest.raises(ValueError):
        budget_curve(charges, window_s=None, since=10.0, until=5.0)


# -- payments --------------------------------------------------------------------------------------


def test_payments_lists_rows_newest_first(home, history, capsys):
    """payments lists every ledger row newest first, with state, amount, fee, tx and reason."""
    code, out, _ = run(capsys, "payments", "--home", str(home))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "TIME", "ROUTE", "INVOICE", "STATE", "AMOUNT", "(ADA)", "FEE", "(ADA)", "TX",
                                "REASON"]
    assert [line.split()[0] for line in lines[1:]] == ["6", "5", "4", "2", "3", "1"]
    assert "payee_changed: new payee" in lines[1]
    data = json.loads(run(capsys, "payments", "--home", str(home), "--json", "--limit", "2")[1])
    assert [r["invoice_id"] for r in data] == ["inv-bad", "inv-open"]
    assert data[0]["paid"] is False and data[0]["tx_id"] is None and "cbor" not in data[0]


def test_payments_filters_by_state(home, history, capsys):
    """--state unsettled shows only the paid-but-refused rows, with their reason."""
    data = json.loads(run(capsys, "payments", "--state", "unsettled", "--home", str(home), "--json")[1])
    assert [(r["invoice_id"], r["state"], r["reason"], r["cost_lovelace"]) for r in data] == [
        ("inv-u1", "unsettled", "server refused", 670_000)]
    assert data[0]["tx_id"].startswith("696e762d7531")


def test_payments_bad_limit(home, capsys):
    """--limit 0 is a one-line error."""
    code, _, err = run(capsys, "payments", "--limit", "0", "--home", str(home))
    assert code != 0 and err.startswith("error: --limit") and err.count("\n") == 1


# -- approvals -------------------------------------------------------------------------------------


@pytest.fixture
def parked(ledger):
    """Two parked payments: one whose job failed waiting for approval, one whose job is still queued."""
    db = ledger.db
    jobs = SqliteJobStore(db)
    failed = jobs.enqueue("chat", {"message": "hi"}, now=T0 - 100)
    jobs.claim("w1", now=T0 - 90, lease_s=60)
    jobs.fail(failed.id, "approval required", now=T0 - 80, retry_at=None)
    queued = jobs.enqueue("chat", {"message": "again"}, now=T0 - 70)
    approvals = Approvals(db)
    first = approvals.park(invoice_id="inv-big", host="API.example", route="/chat", job_id=failed.id,
                           summary={"cost_lovelace": 6_170_000, "payees": [PAY_A],
                                    "amounts": {"lovelace": 6_000_000}}, now=T0 - 85)
    second = approvals.park(invoice_id="inv-new-payee", host="api.example", route="/chat", job_id=queued.id,
                            summary={"new_payees": [PAY_B]}, now=T0 - 60)
    return {"jobs": jobs, "approvals": approvals, "failed": failed.id, "queued": queued.id,
            "big": first, "payee": second}


def test_approvals_lists_pending(home, parked, capsys):
    """approvals lists pending ids with host, route, job and a readable summary."""
    code, out, _ = run(capsys, "approvals", "--home", str(home))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "HOST", "ROUTE", "JOB", "SUMMARY"]
    assert lines[1].split()[:4] == [str(parked["big"]), "api.example", "/chat", str(parked["failed"])]
    assert "cost 6.170000 ADA" in lines[1]
    assert "payee change to" in lines[2]
    data = json.loads(run(capsys, "approvals", "--home", str(home), "--json")[1])
    assert [a["id"] for a in data["pending"]] == [parked["big"], parked["payee"]]
    assert data["pins"] == {}


def test_approve_requeues_the_failed_job(home, parked, capsys):
    """approve decides the approval and queues its failed job again, and says so."""
    code, out, _ = run(capsys, "approve", str(parked["big"]), "--home", str(home))
    assert code == 0
    assert f"approved {parked['big']}" in out
    assert f"job {parked['failed']} queued again" in out
    assert parked["approvals"].get(parked["big"]).state == "approved"
    job = parked["jobs"].get(parked["failed"])
    assert job.state == "queued" and job.run_at == T0 and job.attempts == 0


def test_approve_leaves_a_queued_job_and_pins_the_new_payee(home, parked, capsys):
    """Approving a payee change pins the address; a job still queued is left to run (JSON says so)."""
    data = json.loads(run(capsys, "approve", f"#{parked['payee']}", "--home", str(home), "--json")[1])
    assert data["approval"]["state"] == "approved"
    assert data["job"] == {"id": parked["queued"], "state": "queued", "requeued": False}
    data = json.loads(run(capsys, "approvals", "--home", str(home), "--json")[1])
    assert data["pins"] == {"api.example": [PAY_B]}
    assert [a["id"] for a in data["pending"]] == [parked["big"]]


def test_approve_requeues_a_cancelled_job(home, parked, capsys):
    """A job cancelled while it waited is queued again by approve too."""
    parked["jobs"].cancel(parked["failed"], now=T0 - 10)
    data = json.loads(run(capsys, "approve", str(parked["big"]), "--home", str(home), "--json")[1])
    assert data["job"] == {"id": parked["failed"], "state": "queued", "requeued": True}


def test_approve_does_not_rerun_a_finished_job(home, parked, capsys):
    """A job that already finished is not run again; approve says so."""
    jobs = parked["jobs"]
    jobs.claim("w2", now=T0 - 5, lease_s=60)  # takes the queued job
    jobs.complete(parked["queued"], result={"reply": "ok"}, result_path=None, now=T0 - 4)
    code, out, _ = run(capsys, "approve", str(parked["payee"]), "--home", str(home))
    assert code == 0 and f"job {parked['queued']} already finished" in out
    assert jobs.get(parked["queued"]).state == "done"


def test_deny_leaves_the_job(home, parked, capsys):
    """deny marks the approval denied and leaves its failed job failed."""
    code, out, _ = run(capsys, "deny", str(parked["big"]), "--home", str(home))
    assert code == 0
    assert "never be paid" in out and f"job {parked['failed']} left failed" in out
    assert parked["approvals"].get(parked["big"]).state == "denied"
    assert parked["jobs"].get(parked["failed"]).state == "failed"


@pytest.mark.parametrize("command", ["approve", "deny"])
@pytest.mark.parametrize("ident, message", [("999", "no approval 999"), ("abc", "not an approval id")])
def test_unknown_or_bad_ids_are_one_line_errors(home, parked, capsys, command, ident, message):
    """An unknown or non-numeric id is one error line and a non-zero exit; nothing is decided."""
    code, out, err = run(capsys, command, ident, "--home", str(home))
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and message in err
    assert len(parked["approvals"].pending()) == 2
    assert parked["jobs"].get(parked["failed"]).state == "failed"


def test_deciding_twice_is_refused(home, parked, capsys):
    """A decided approval cannot be approved or denied again."""
    assert run(capsys, "deny", str(parked["big"]), "--home", str(home))[0] == 0
    code, _, err = run(capsys, "approve", str(parked["big"]), "--home", str(home))
    assert code != 0 and "already denied" in err
    assert parked["jobs"].get(parked["failed"]).state == "failed"


# -- staying light ---------------------------------------------------------------------------------


def test_help_and_reports_stay_light(home, history):
    """--help, spend and budget show import neither matplotlib nor pycardano (no wallet, no chain)."""
    code = (
        "import sys\n"
        "from agent.cli import main\n"
        "for argv in (['--help'], ['spend', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        f"main(['budget', 'show', '--home', {str(home)!r}])\n"
        f"main(['spend', '--home', {str(home)!r}])\n"
        f"main(['approvals', '--home', {str(home)!r}])\n"
        "heavy = [m for m in ('matplotlib', 'pycardano', 'httpx', 'ogmios') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "CARDANO_AGENT_HOME": str(home)})
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="
