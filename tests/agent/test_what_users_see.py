"""What a person meets by hand (issue 17): each test drives the CLI as a user would and checks
what they see (output, exit code) and what state is left behind."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from agent.cli import main
from tests.fixtures.agent_home import PASSPHRASE

TX_ID = re.compile(r"\b[0-9a-f]{64}\b")


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch):
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("CARDANO_AGENT_OGMIOS_URL", raising=False)
    monkeypatch.delenv("CARDANO_AGENT_API_URL", raising=False)
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cardano_agent", False):
            root.removeHandler(handler)
            handler.close()


def cli(capsys, *argv):
    os.environ.setdefault("CARDANO_AGENT_PASSPHRASE", PASSPHRASE)  # `run` takes it out of its environment
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys, *argv):
    code, out, err = cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


# -- 1. `call` is a first-class path --------------------------------------------------------------


def test_call_saves_the_image_and_says_what_it_cost(agent_home, capsys):
    """`call images-generate` saves the PNG (path on stdout), prints amount, fee and the full tx id on
    stderr, and logs the payment to agent.log; --json returns the same figures."""
    home = agent_home.home
    before = agent_home.balance()
    code, out, err = cli(capsys, "call", "images-generate", "--prompt", "cat", "--home", home)
    assert code == 0, err
    path = Path(out.strip().removeprefix("image saved to "))
    assert path.read_bytes()[:4] == b"\x89PNG" and path.is_relative_to(home)
    paid = re.search(r"paid 4\.000000 ADA \+ fee (0\.\d{6}) ADA \(payment \d+, tx ([0-9a-f]{64})\)", err)
    assert paid, err
    assert "paid invoice" in (home / "agent.log").read_text()

    data = cli_json(capsys, "call", "chat", "--message", "hi", "--home", home)
    assert data["reply"] and data["paid_lovelace"] == 2_000_000 and data["fee_lovelace"] > 0
    (payment,) = data["payments"]
    assert TX_ID.fullmatch(payment["tx_id"]) and payment["amount_lovelace"] == 2_000_000
    fee1 = int(paid.group(1).replace(".", ""))
    assert before - agent_home.balance() <= 6_000_000 + fee1 + data["fee_lovelace"]


def test_call_above_the_approval_threshold_pays_nothing_and_says_how_to_queue_it(agent_home, capsys):
    """A one-off call above approve_above_ada exits 1, pays nothing, leaves no stale approval, and
    prints the `job add` command (quoted, paste-able) that queues it instead."""
    agent_home.configure(extra="approve_above_ada = 1\n")
    before = agent_home.balance()
    code, out, err = cli(capsys, "call", "chat", "--message", "What is Cardano, in one paragraph?",
                         "--home", agent_home.home)
    assert code == 1 and out == ""
    assert "cardano-agent job add chat --message 'What is Cardano, in one paragraph?'" in err
    assert "paid nothing" in err and "Error" not in err
    assert cli_json(capsys, "approvals", "--home", agent_home.home)["pending"] == []
    assert agent_home.balance() == before


def test_ctrl_c_after_paying_says_what_was_paid(agent_home, capsys, monkeypatch):
    """Ctrl-C once the payment is out: exit 130 and a line with the amount, the tx id and what
    becomes of the payment (kept in the ledger, never paid again)."""
    from agent.executor import TApiExecutor

    original = TApiExecutor.call

    def paid_then_interrupted(self, client, kind, request, request_id):
        original(self, client, kind, request, request_id)
        raise KeyboardInterrupt

    monkeypatch.setattr(TApiExecutor, "call", paid_then_interrupted)
    code, out, err = cli(capsys, "call", "chat", "--message", "hi", "--home", agent_home.home)
    assert code == 130
    assert re.search(r"interrupted after paying 2\.000000 ADA \+ fee 0\.\d{6} ADA \(payment \d+, tx [0-9a-f]{64}\)",
                     err), err
    assert "never paid again" in err


# -- 2. outages are a pause -----------------------------------------------------------------------


def test_run_with_the_chain_down_keeps_the_job_queued_and_status_says_since_when(agent_home, capsys):
    """Ogmios down: `run --until-idle` exits 0, the job stays queued with no attempt used, and
    `status` says "waiting for the chain at <url> since …"; `wallet show` still shows the address."""
    home = agent_home.home
    agent_home.configure()
    text = (home / "agent.toml").read_text()
    (home / "agent.toml").write_text(re.sub(r'ogmios_url = "[^"]+"', 'ogmios_url = "ws://127.0.0.1:9"', text))
    job = cli_json(capsys, "job", "add", "chat", "--message", "hi", "--home", home)
    code, out, err = cli(capsys, "run", "--until-idle", "--home", home)
    assert code == 0, err
    assert "waiting for the chain at ws://127.0.0.1:9 since" in out
    shown = cli_json(capsys, "job", "show", job["id"], "--home", home)
    assert shown["state"] == "queued" and shown["attempts"] == 0 and shown["payments"] == []
    code, out, _ = cli(capsys, "status", "--home", home)
    assert re.search(r"1 job\(s\) waiting for the chain at ws://127\.0\.0\.1:9 since \d{4}-\d\d-\d\dT", out), out
    assert "balance unavailable: chain unreachable at ws://127.0.0.1:9" in out

    code, out, err = cli(capsys, "wallet", "show", "main", "--home", home)
    assert code == 0, err
    assert agent_home.address in out and "balance unavailable: chain unreachable at ws://127.0.0.1:9" in out


# -- 3. one unit for people ------------------------------------------------------------------------


def test_amounts_typed_by_people_are_ada_or_suffixed_lovelace():
    """"2.5" is 2.5 ADA, "2ada" too; lovelace needs its suffix; anything else is refused."""
    from agent.output import parse_amount

    assert parse_amount("2.5") == 2_500_000 and parse_amount("2ada") == 2_000_000
    assert parse_amount("2500000lovelace") == 2_500_000 and parse_amount("1_000_000 lovelace") == 1_000_000
    for bad in ("1.5lovelace", "-1", "1.0000001", "ten"):
        with pytest.raises(ValueError):
            parse_amount(bad)


def test_refusal_messages_are_in_ada():
    """A budget refusal reads in ADA with six decimals, not raw lovelace."""
    from agent.errors import BudgetExceededError

    text = str(BudgetExceededError("daily", 50_000_000, 49_904_773, 4_184_861))
    assert text == ("budget 'daily' would be exceeded: 49.904773 ADA already used + 4.184861 ADA for this "
                    "payment > the limit of 50.000000 ADA")


def test_sandbox_fund_takes_ada_and_a_wallet_name_and_the_homes_ogmios_url(agent_home, capsys):
    """`sandbox fund NAME 3` pays 3 ADA to the wallet NAME of --home, through the Ogmios URL in its agent.toml."""
    before = agent_home.balance()
    code, out, err = cli(capsys, "sandbox", "fund", "main", "3", "--home", agent_home.home)
    assert code == 0, err
    assert TX_ID.fullmatch(out.strip())
    assert agent_home.balance() == before + 3_000_000


# -- 4. states that say what is happening -----------------------------------------------------------


def test_a_job_above_the_threshold_awaits_approval_then_pays_once_approved(agent_home, capsys):
    """The job is `awaiting_approval` (run exits 0), `approve` queues it, the next run pays; the
    payments list no longer carries a stale "run approve" reason."""
    home = agent_home.home
    agent_home.configure(extra="approve_above_ada = 1\n")
    job = cli_json(capsys, "job", "add", "chat", "--message", "hi", "--home", home)
    code, out, err = cli(capsys, "run", "--until-idle", "--home", home)
    assert code == 0, err
    waiting = cli_json(capsys, "job", "show", job["id"], "--home", home)
    assert waiting["state"] == "awaiting_approval" and waiting["attempts"] == 0
    (approval,) = cli_json(capsys, "approvals", "--home", home)["pending"]
    assert f"cardano-agent approve {approval['id']}" in waiting["last_error"]
    assert "Error" not in waiting["last_error"]
    code, out, _ = cli(capsys, "status", "--home", home)
    assert "awaiting_approval 1" in out and "1 job(s) awaiting approval" in out

    code, out, _ = cli(capsys, "approve", approval["id"], "--home", home)
    assert code == 0 and f"job {job['id']} queued again" in out
    assert cli_json(capsys, "job", "show", job["id"], "--home", home)["state"] == "queued"
    code, out, err = cli(capsys, "run", "--until-idle", "--home", home)
    assert code == 0 and "1 done" in out, err
    done = cli_json(capsys, "job", "show", job["id"], "--home", home)
    assert done["state"] == "done" and [p["state"] for p in done["payments"]][-1] == "settled"
    code, out, _ = cli(capsys, "payments", "--home", home)
    assert "run `cardano-agent approve" not in out and f"approved ({approval['id']})" in out


def test_a_denied_payment_cancels_its_waiting_job(agent_home, capsys):
    """`deny` on a job awaiting approval cancels the job: it will never pay."""
    home = agent_home.home
    agent_home.configure(extra="approve_above_ada = 1\n")
    job = cli_json(capsys, "job", "add", "chat", "--message", "hi", "--home", home)
    cli(capsys, "run", "--until-idle", "--home", home)
    (approval,) = cli_json(capsys, "approvals", "--home", home)["pending"]
    code, out, _ = cli(capsys, "deny", approval["id"], "--home", home)
    assert code == 0 and f"job {job['id']} cancelled" in out
    assert cli_json(capsys, "job", "show", job["id"], "--home", home)["state"] == "cancelled"


def test_an_over_budget_job_awaits_the_window_instead_of_failing(agent_home, capsys):
    """A second 2 ADA chat against a 3 ADA/1h budget is `awaiting_budget` until the first payment
    leaves the window; `run` exits 0 and says until when."""
    home = agent_home.home
    agent_home.configure(extra='[[budgets]]\nname = "hourly"\nlimit_ada = 3\nwindow = "1h"\n')
    first = cli_json(capsys, "job", "add", "chat", "--message", "one", "--home", home)
    second = cli_json(capsys, "job", "add", "chat", "--message", "two", "--home", home)
    code, out, err = cli(capsys, "run", "--until-idle", "--home", home)
    assert code == 0, err
    assert re.search(rf"job {second['id']} awaiting budget until \d{{4}}-\d\d-\d\d \d\d:\d\d UTC", out), out
    paid = cli_json(capsys, "job", "show", first["id"], "--home", home)
    waiting = cli_json(capsys, "job", "show", second["id"], "--home", home)
    assert paid["state"] == "done" and waiting["state"] == "awaiting_budget"
    assert "ADA already used" in waiting["last_error"] and "lovelace" not in waiting["last_error"]
    from datetime import datetime

    run_at = datetime.fromisoformat(waiting["run_at"]).timestamp()
    charged = datetime.fromisoformat(paid["updated_at"]).timestamp()
    assert 3600 - 5 <= run_at - charged <= 3600 + 5


def test_recovery_says_nothing_when_nothing_happened_and_words_when_it_did(agent_home, capsys):
    """A clean start prints no "recovered" line; the text for a real recovery is words, not a dict."""
    from agent.commands.jobs import _recovery_text

    code, _, err = cli(capsys, "run", "--until-idle", "--home", agent_home.home)
    assert code == 0 and "recovered" not in err
    text = _recovery_text(1, {"kept": 1, "resubmitted": 0, "released": 2})
    assert "{" not in text and "1 payment(s) found on the chain and kept" in text and "2 payment(s)" in text


# -- 6. sessions do not leak ------------------------------------------------------------------------


def test_each_chat_job_gets_its_own_named_session(agent_home, capsys):
    """Two chat jobs without --session-id get two different sessions, shown in `job show`."""
    home = agent_home.home
    a = cli_json(capsys, "job", "add", "chat", "--message", "one", "--home", home)
    b = cli_json(capsys, "job", "add", "chat", "--message", "two", "--home", home)
    c = cli_json(capsys, "job", "add", "chat", "--message", "three", "--session-id", "mine", "--home", home)
    sessions = [a["request"]["session_id"], b["request"]["session_id"], c["request"]["session_id"]]
    assert sessions[0].startswith("job-") and sessions[0] != sessions[1] and sessions[2] == "mine"


def test_scheduled_chats_do_not_share_a_session(tmp_path):
    """Each firing of a chat schedule carries a fresh session named after the schedule."""
    from agent.config import ScheduleSpec
    from agent.queue import SqliteJobStore
    from agent.scheduler import Scheduler
    from agent.store import Database

    db = Database.in_home(tmp_path)
    jobs = SqliteJobStore(db)
    spec = ScheduleSpec("hello", "chat", every_s=60, params={"message": "hi"})
    scheduler = Scheduler(db, jobs, [spec])
    scheduler.run_once(1_000_000.0)
    scheduler.run_once(1_000_060.0)
    sessions = [j.request["session_id"] for j in jobs.list()]
    assert len(sessions) == 2 and len(set(sessions)) == 2 and all(s.startswith("hello-") for s in sessions)


# -- 7. schedules ----------------------------------------------------------------------------------


def test_next_fire_is_last_fire_plus_interval_and_does_not_move(tmp_path):
    """NEXT is the last firing + the interval (the same a minute later), and "every 1h" reads so."""
    from agent.config import ScheduleSpec
    from agent.queue import SqliteJobStore
    from agent.scheduler import Scheduler
    from agent.store import Database

    db = Database.in_home(tmp_path)
    scheduler = Scheduler(db, SqliteJobStore(db), [ScheduleSpec("tick", "chat", every_s=3600,
                                                                params={"message": "hi"})])
    t0 = 1_700_000_000.0
    scheduler.run_once(t0)
    (row,) = scheduler.describe(t0 + 60)
    (later,) = scheduler.describe(t0 + 600)
    assert row["rule"] == "every 1h"
    assert row["next_fire"] == later["next_fire"]
    from datetime import datetime

    assert datetime.fromisoformat(row["next_fire"]).timestamp() == t0 + 3600


def test_any_duration_is_accepted_in_budget_windows_schedules_and_since(tmp_path, capsys):
    """"2w", "7d", "90m" and "1h30m" work in [[budgets]] window, every and --since alike."""
    from agent.config import format_duration, load_config, parse_duration

    assert [parse_duration(t) for t in ("2w", "7d", "90m", "1h30m")] == [1_209_600, 604_800, 5400, 5400]
    assert [format_duration(s) for s in (3600, 5400, 1_209_600, 86_400 * 30)] == ["1h", "1h30m", "2w", "30d"]
    (tmp_path / "agent.toml").write_text('[[budgets]]\nname = "w"\nlimit_ada = 5\nwindow = "2w"\n\n'
                                         '[[schedules]]\nname = "s"\nevery = "1h30m"\njob = "chat"\n'
                                         'params = { message = "hi" }\n')
    config = load_config(tmp_path, env={})
    assert config.budgets[0].window_s == 1_209_600 and config.schedules[0].every_s == 5400
    budgets = cli_json(capsys, "budget", "show", "--home", tmp_path)
    assert budgets[0]["window"] == "2w"
    assert cli_json(capsys, "spend", "--since", "90m", "--home", tmp_path)["total"]["count"] == 0


# -- 8. homes ------------------------------------------------------------------------------------


def test_a_missing_home_is_named_not_created(tmp_path, capsys):
    """`--home /nowhere status` says there is no agent home and how to make one; nothing is created."""
    missing = tmp_path / "nohome"
    for argv in (["status"], ["job", "list"], ["spend"], ["budget", "show"], ["run", "--until-idle"]):
        code, out, err = cli(capsys, *argv, "--home", missing)
        assert code == 2 and out == ""
        assert err.strip() == f"error: no agent home at {missing}; run `cardano-agent init --home {missing}`"
    assert not missing.exists()


def test_an_unusable_home_is_one_line_not_a_traceback(capsys):
    """A home the system refuses (/sys) is one `error:` line and exit 1 or 2, never a traceback."""
    for argv in (["status", "--home", "/sys/x"], ["init", "--home", "/sys/x/y"]):
        code, out, err = cli(capsys, *argv)
        assert code in (1, 2) and "Traceback" not in err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_a_mainnet_wallet_needs_a_real_passphrase(tmp_path, capsys, monkeypatch, fast_keystore):
    """One character is refused for mainnet (nothing written); devnet accepts it."""
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", "x")
    code, _, err = cli(capsys, "wallet", "create", "w", "--network", "mainnet", "--home", tmp_path)
    assert code != 0 and "at least 12 characters" in err
    assert not list((tmp_path / "wallets").glob("*")) if (tmp_path / "wallets").exists() else True
    code, _, err = cli(capsys, "wallet", "create", "w", "--network", "devnet", "--home", tmp_path)
    assert code == 0, err


# -- 10. reading -----------------------------------------------------------------------------------


def test_long_text_is_cut_at_a_word_with_an_ellipsis():
    """Table cells cut at a word boundary and end with "…"."""
    from agent.commands.jobs import _clip

    text = "the chain at ws://127.0.0.1:1337 is unreachable and the job waits for it to come back"
    clipped = _clip(text, 40)
    assert clipped.endswith("…") and len(clipped) <= 40 and text.startswith(clipped[:-1])
    assert _clip("short", 40) == "short"


def test_job_show_status_and_reports_read_well(agent_home, capsys):
    """`job show` prints full tx ids; the status wallet line fits 100 columns; status --json and
    budget show --json describe budgets the same way."""
    home = agent_home.home
    agent_home.configure(extra='[[budgets]]\nname = "daily"\nlimit_ada = 50\nwindow = "1d"\n')
    job = cli_json(capsys, "job", "add", "chat", "--message", "hi", "--home", home)
    assert cli(capsys, "run", "--until-idle", "--home", home)[0] == 0
    code, out, _ = cli(capsys, "job", "show", job["id"], "--home", home)
    tx = cli_json(capsys, "job", "show", job["id"], "--home", home)["payments"][0]["tx_id"]
    assert tx in out
    code, out, _ = cli(capsys, "status", "--home", home)
    (wallet_line,) = [ln for ln in out.splitlines() if ln.startswith("wallet")]
    # (a 2 s chain query can time out on a loaded machine: then the line says so, still short)
    assert len(wallet_line) <= 100 and ("ADA in" in wallet_line or "balance unavailable" in wallet_line)
    status = cli_json(capsys, "status", "--home", home)
    budgets = cli_json(capsys, "budget", "show", "--home", home)
    # the same shape and values (``since`` moves with the instant each command ran)
    def same(rows):
        return [{k: v for k, v in r.items() if k != "since"} for r in rows]

    assert same(status["budgets"]) == same(budgets) and budgets[0]["window"] == "1d"
    assert status["time"].endswith("+00:00") and budgets[0]["since"].endswith("+00:00")


def test_report_field_names_read_as_words_with_units():
    """`liquidityLovelace: 926874468` renders as "Liquidity (ADA): 926.874468"."""
    from agent.jobs import render_markdown

    text = render_markdown("t", {"liquidityLovelace": 926_874_468, "holder_count": 12, "priceUSD": 1})
    assert "- **Liquidity (ADA)**: 926.874468" in text
    assert "- **Holder count**: 12" in text and "Liquiditylovelace" not in text


def test_one_firing_logs_schedule_fired_once_with_three_workers(tmp_path, caplog):
    """Three workers stepping at the same instant log "schedule fired" once for one firing."""
    import threading

    from agent.config import ScheduleSpec
    from agent.queue import SqliteJobStore
    from agent.scheduler import Scheduler
    from agent.store import Database

    db = Database.in_home(tmp_path)
    scheduler = Scheduler(db, SqliteJobStore(db), [ScheduleSpec("tick", "chat", every_s=3600,
                                                                params={"message": "hi"})])
    caplog.set_level(logging.INFO, logger="agent.scheduler")
    go = threading.Barrier(3)

    def step(n: int) -> None:
        go.wait()
        scheduler.run_once(1_700_000_000.0 + n * 0.001)

    threads = [threading.Thread(target=step, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum("fired" in r.getMessage() for r in caplog.records) == 1


def test_log_json_writes_only_json_lines(tmp_path):
    """After a text log, `run --log-json` starts a fresh agent.log in which every line is JSON."""
    from agent.logs import setup_logging

    setup_logging(tmp_path, console=False)
    logging.getLogger("agent.test").info("a text line")
    setup_logging(tmp_path, console=False, json_lines=True)
    logging.getLogger("agent.test").info("a json line")
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = (tmp_path / "agent.log").read_text().splitlines()
    assert lines and all(json.loads(line)["message"] for line in lines)
    assert "a text line" in (tmp_path / "agent.log.1").read_text()


def test_spend_plot_honours_by_and_zooms_to_the_data(tmp_path):
    """The plot starts just before the first payment (not 7 days back) and draws the --by groups."""
    from agent.spendplot import zoom_start

    now = 1_700_000_000.0
    start = zoom_start([now - 3600, now - 60], since=now - 7 * 86_400, until=now)
    assert now - 4000 < start < now - 3600
    assert zoom_start([], since=now - 7 * 86_400, until=now) == now - 7 * 86_400


# -- 5. the fee promise on a small balance -----------------------------------------------------------


def test_no_change_possible_is_refused_unattended_and_nothing_is_paid(agent_home_factory, capsys):
    """A 2.5 ADA wallet paying a 2 ADA chat would give ~0.33 ADA extra to the fee: the job is refused
    with a sentence saying so, and the wallet keeps every lovelace."""
    home = agent_home_factory(funds=2_500_000)
    job = cli_json(capsys, "job", "add", "chat", "--message", "hi", "--home", home.home)
    code, out, err = cli(capsys, "run", "--until-idle", "--home", home.home)
    assert code == 1
    failed = cli_json(capsys, "job", "show", job["id"], "--home", home.home)
    assert failed["state"] == "failed"
    assert re.search(r"no change possible: 0\.\d{6} ADA would go to the fee", failed["last_error"])
    assert "max_fee_overpay_ada" in failed["last_error"]
    assert home.balance() == 2_500_000


def test_no_change_possible_is_paid_when_allowed(agent_home_factory, capsys):
    """With [policy] max_fee_overpay_ada = 1 the same payment goes through: the whole 2.5 ADA leaves."""
    home = agent_home_factory(funds=2_500_000, max_per_call_ada="10\nmax_fee_overpay_ada = 1")
    job = cli_json(capsys, "job", "add", "chat", "--message", "hi", "--home", home.home)
    code, out, err = cli(capsys, "run", "--until-idle", "--home", home.home)
    assert code == 0, out + err
    done = cli_json(capsys, "job", "show", job["id"], "--home", home.home)
    assert done["state"] == "done" and done["payments"][-1]["fee_lovelace"] == 500_000
    assert home.balance() == 0


def test_the_need_figure_is_what_the_builder_can_do(agent_home_factory, capsys):
    """Too little even without change: "need" is the amount plus the no-change fee, and the figure
    with change back is given beside it."""
    home = agent_home_factory(funds=2_100_000)
    job = cli_json(capsys, "job", "add", "chat", "--message", "hi", "--home", home.home)
    cli(capsys, "run", "--until-idle", "--home", home.home)
    error = cli_json(capsys, "job", "show", job["id"], "--home", home.home)["last_error"]
    match = re.search(r"need 2\.(\d{6}) ADA \((\d+\.\d{6}) ADA to get change back\), have 2\.100000 ADA", error)
    assert match, error
    assert 100_000 < int(match.group(1)) < 250_000 and float(match.group(2)) > 3
    assert home.balance() == 2_100_000


def test_a_payee_change_names_its_approval_and_the_job_waits_for_it(agent_home_factory, twin_factory, capsys):
    """A job whose invoice pays a new address awaits approval N, and its reason says `approve N`;
    approving pins the payee and the job then pays; nothing is paid before."""
    from dataclasses import replace

    import httpx

    from sandbox.billing import DEFAULT_PAY_TO, GLOBEX_ADDRESS, TwinConfig

    home = agent_home_factory()
    other = twin_factory(replace(TwinConfig(), pay_to=GLOBEX_ADDRESS), on=home.devnet)
    text = (home.home / "agent.toml").read_text()
    (home.home / "agent.toml").write_text(text.replace(home.twin.url.rstrip("/"), other.url.rstrip("/")))
    with home.open() as agent:
        agent.pins.pin(httpx.URL(other.url).netloc.decode(), [DEFAULT_PAY_TO], 0)
    before = home.balance()
    job = cli_json(capsys, "job", "add", "chat", "--message", "hi", "--home", home.home)
    code, out, err = cli(capsys, "run", "--until-idle", "--home", home.home)
    assert code == 0, err
    waiting = cli_json(capsys, "job", "show", job["id"], "--home", home.home)
    (approval,) = cli_json(capsys, "approvals", "--home", home.home)["pending"]
    assert waiting["state"] == "awaiting_approval"
    assert f"run `cardano-agent approve {approval['id']}`" in waiting["last_error"]
    assert home.balance() == before
    assert cli(capsys, "approve", approval["id"], "--home", home.home)[0] == 0
    code, out, err = cli(capsys, "run", "--until-idle", "--home", home.home)
    assert code == 0 and "1 done" in out, err


def test_wallet_send_and_split_read_in_ada_for_people():
    """`wallet split`/`send` print "each 49.956545 ADA", not "lovelace_each 49956545"."""
    from agent.commands.wallet import _person_field

    assert _person_field("lovelace_each", 49_956_545) == ("each", "49.956545 ADA")
    assert _person_field("amount_lovelace", 2_500_000) == ("amount", "2.500000 ADA")
    assert _person_field("outputs", 4) == ("outputs", 4)
