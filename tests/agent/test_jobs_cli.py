"""The unattended agent from the CLI: queue jobs, run them against the sandbox, read what happened."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import pytest

from agent.cli import main
from tests.fixtures.agent_home import PASSPHRASE


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch):
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", PASSPHRASE)
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cardano_agent", False):
            root.removeHandler(handler)
            handler.close()


def cli(capsys, *argv):
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys, *argv):
    code, out, err = cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_queue_run_and_inspect_paid_jobs(agent_home, capsys):
    """Jobs added from the CLI run until idle, get paid answers, and show their payments and results."""
    home = str(agent_home.home)
    chat = cli_json(capsys, "job", "add", "chat", "--message", "What is Cardano?", "--tag", "demo", "--home", home)
    ta = cli_json(capsys, "job", "add", "token-analysis", "--token", "SNEK", "--home", home)
    img = cli_json(capsys, "job", "add", "images-generate", "--prompt", "a node in space", "--home", home)
    assert [chat["state"], ta["state"], img["state"]] == ["queued"] * 3

    code, out, err = cli(capsys, "run", "--until-idle", "--workers", "2", "--home", home)
    assert code == 0, err
    assert "3 done, 0 failed" in out

    jobs = cli_json(capsys, "job", "list", "--home", home)
    assert {j["state"] for j in jobs} == {"done"}
    shown = cli_json(capsys, "job", "show", str(img["id"]), "--home", home)
    assert shown["payments"][0]["state"] == "settled"
    assert shown["payments"][0]["amount_lovelace"] == 4_000_000
    result = json.loads(open(shown["result_path"]).read())
    assert open(result["image_files"][0], "rb").read(4) == b"\x89PNG"

    code, out, _ = cli(capsys, "job", "list", "--home", home)
    assert out.splitlines()[0].split() == ["ID", "KIND", "STATE", "TRIES", "TAGS", "REQUEST", "LAST", "ERROR"]
    status = cli_json(capsys, "status", "--home", home)
    assert status["queue"]["done"] == 3
    assert status["total_paid_lovelace"] == sum(
        p["amount_lovelace"] + p["fee_lovelace"] for j in jobs
        for p in cli_json(capsys, "job", "show", str(j["id"]), "--home", home)["payments"])
    assert status["wallet"]["balance_lovelace"] == agent_home.balance()


def test_refused_job_fails_with_its_reason_and_pays_nothing(agent_home_factory, capsys):
    """A job whose invoice breaks the policy ends `failed` with the reason; the balance does not move."""
    home = agent_home_factory(max_per_call_ada="1")
    before = home.balance()
    job = cli_json(capsys, "job", "add", "chat", "--message", "too dear", "--home", str(home.home))
    code, out, _ = cli(capsys, "run", "--until-idle", "--home", str(home.home))
    assert code == 1 and "1 failed" in out
    failed = cli_json(capsys, "job", "show", str(job["id"]), "--home", str(home.home))
    assert failed["state"] == "failed" and "over the per-call maximum of 1.000000 ADA" in failed["last_error"]
    assert "Error" not in failed["last_error"]  # words, no Python class names
    assert home.balance() == before


def test_scheduled_report_is_written_once(agent_home_factory, capsys):
    """An interval schedule enqueues a token analysis that writes reports/<schedule>/<date>.json and .md."""
    home = agent_home_factory(extra="""
        [[schedules]]
        name = "tokens"
        every = "1d"
        job = "token-analysis"
        params = { token = "SNEK" }
        report = true
        """)
    code, out, err = cli(capsys, "run", "--until-idle", "--home", str(home.home))
    assert code == 0, err
    reports = sorted((home.home / "reports" / "tokens").iterdir())
    assert [p.suffix for p in reports] == [".json", ".md"]
    assert reports[0].stem == datetime.now(timezone.utc).strftime("%Y-%m-%d") or reports[0].stem.startswith(
        datetime.now(timezone.utc).strftime("%Y-%m-%d"))
    assert reports[1].read_text().startswith("# tokens: token-analysis SNEK")
    cli(capsys, "run", "--until-idle", "--home", str(home.home))
    assert len(cli_json(capsys, "job", "list", "--home", str(home.home))) == 1


def test_cancel_and_retry(agent_home, capsys):
    """A queued job can be cancelled and queued again."""
    home = str(agent_home.home)
    job = cli_json(capsys, "job", "add", "chat", "--message", "later", "--home", home)
    assert cli_json(capsys, "job", "cancel", str(job["id"]), "--home", home)["state"] == "cancelled"
    assert cli_json(capsys, "job", "retry", str(job["id"]), "--home", home)["state"] == "queued"


@pytest.mark.parametrize("argv,needle", [
    (["job", "add", "dance"], "unknown job kind 'dance'"),
    (["job", "add", "chat"], "missing field 'message'"),
    (["job", "add", "token-analysis", "--token", "SNEK", "--policy-id", "xyz"], "56 hex"),
    (["job", "add", "chat", "--message", "hi", "--budget", "nope"], "no budget named 'nope'"),
    (["job", "show", "999"], "999"),
])
def test_bad_job_input_is_one_line_and_non_zero(agent_home, capsys, argv, needle):
    """Unknown kinds, missing fields, unknown budgets and ids: one `error:` line, non-zero exit, nothing queued."""
    code, out, err = cli(capsys, *argv, "--home", str(agent_home.home))
    assert code != 0
    assert err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1
    assert cli_json(capsys, "job", "list", "--home", str(agent_home.home)) == []


def test_invalid_config_names_key_and_line_and_runs_nothing(agent_home, capsys):
    """A bad window in agent.toml stops `run` with one line naming file, line and key."""
    agent_home.configure(extra="""
        [[budgets]]
        name = "daily"
        limit_ada = 5
        window = "2 weeks"
        """)
    code, out, err = cli(capsys, "run", "--until-idle", "--home", str(agent_home.home))
    assert code == 2
    assert "agent.toml:" in err and "window" in err and len(err.strip().splitlines()) == 1


def test_two_runners_never_enqueue_a_firing_twice(tmp_path):
    """Two schedulers on one home, each with its own connection and the real SQLite queue: one job."""
    from agent.config import ScheduleSpec
    from agent.queue import SqliteJobStore
    from agent.scheduler import Scheduler
    from agent.store import Database

    specs = [ScheduleSpec(name="morning", kind="chat", cron="0 7 * * *", params={"message": "gm"})]
    a, b = Database(tmp_path / "agent.db"), Database(tmp_path / "agent.db")
    a.migrate()
    first = Scheduler(a, SqliteJobStore(a), specs)
    second = Scheduler(b, SqliteJobStore(b), specs)
    t0 = datetime(2026, 11, 29, 6, 0, tzinfo=timezone.utc).timestamp()
    first.run_once(t0)
    second.run_once(t0)
    first.run_once(t0 + 3601)
    second.run_once(t0 + 3601)
    second.run_once(t0 + 3602)
    assert len(SqliteJobStore(a).list()) == 1


def test_a_job_passes_through_paying_states_and_keeps_its_request_id(agent_home):
    """While a job pays it is `paying`, then `awaiting_settlement`; its X-Request-Id is kept on the job."""
    from agent.executor import TApiExecutor
    from agent.runner import Runner

    seen: list[str] = []
    with agent_home.open() as agent:
        job = agent.jobs.enqueue("chat", {"message": "watch my states"}, now=0)
        real_set_state = agent.jobs.set_state

        def spy(job_id, state, **kw):
            seen.append(state)
            return real_set_state(job_id, state, **kw)

        agent.jobs.set_state = spy
        executor = TApiExecutor(agent)
        try:
            Runner(agent.jobs, executor, lease_s=0).run_once()
        finally:
            executor.close()
        done = agent.jobs.get(job.id)
    assert seen == ["running", "paying", "awaiting_settlement"]
    assert done.state == "done" and done.request_id and done.request_id.startswith(f"job{job.id}-")


def test_call_pays_and_prints_the_answer(agent_home, capsys):
    """`call chat` pays one invoice and prints the reply; `--stream` prints the streamed text."""
    home = str(agent_home.home)
    before = agent_home.balance()
    code, out, err = cli(capsys, "call", "chat", "--message", "What is Cardano?", "--home", home)
    assert code == 0, err
    assert out.strip()
    code, out, err = cli(capsys, "call", "chat", "--message", "Stream it", "--stream", "--home", home)
    assert code == 0, err
    assert out.strip()
    data = cli_json(capsys, "call", "token-analysis", "--token", "SNEK", "--home", home)
    assert data["report"]
    assert before - agent_home.balance() > 2 * 2_000_000 + 3_000_000
