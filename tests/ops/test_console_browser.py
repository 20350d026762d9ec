"""The console in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Approve a parked payment and see its job finish; deny one and see nothing paid; the overview's
figures equal ``cardano-agent status --json``. A screenshot of each page is kept under
``tmp/artifacts/console/`` (or ``$ARTIFACTS_DIR/console``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from agent.output import format_ada

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR") or Path(__file__).resolve().parents[2] / "tmp" / "artifacts") / "console"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,900")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium "
                              "chromium-driver; .ci/run installs them)"),
]


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium comes with the test extra")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _text(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def _click(driver, element_id: str) -> str:
    """Click a button and wait for the page it leads to; return its message (or fail with its error)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, element_id).click()
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#message, #error"))
    errors = driver.find_elements(By.CSS_SELECTOR, "#error")
    assert not errors, errors[0].text
    return _text(driver, "#message")


def _run_until_idle(agent) -> None:
    from agent.executor import TApiExecutor
    from agent.runner import Runner

    executor = TApiExecutor(agent)
    try:
        runner = Runner(agent.jobs, executor, lease_s=60)
        while runner.run_once() is not None:
            pass
    finally:
        executor.close()


@pytest.fixture
def console_for():
    from agent.console.server import ConsoleServer, ConsoleSettings

    started = []

    def start(agent, **options):
        server = ConsoleServer(agent, ConsoleSettings(port=0, **options)).start()
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


SCHEDULE = """
[[schedules]]
name = "snek-daily"
cron = "0 9 * * *"
job = "token-analysis"
params = { token = "SNEK" }
"""


def test_approve_in_the_browser_and_the_job_finishes(agent_home_factory, browser, console_for):
    """A payment above approve_above_ada parks its job; one click on Approve queues it again and it
    finishes paid; every page is screenshotted."""
    from selenium.webdriver.common.by import By

    home = agent_home_factory(extra="approve_above_ada = 1\n" + SCHEDULE)
    with home.open() as agent:
        job = agent.enqueue("chat", {"message": "worth approving"})
        _run_until_idle(agent)
        (parked,) = agent.approvals.pending()
        assert agent.jobs.get(job["id"]).state == "awaiting_approval"
        server = console_for(agent)

        browser.get(server.url + "/approvals")
        _shot(browser, "approvals")
        assert f"approved {parked.id}; job {job['id']} queued again" in _click(browser, f"approve-{parked.id}")
        assert agent.approvals.get(parked.id).state == "approved"

        _run_until_idle(agent)
        browser.get(f"{server.url}/jobs/{job['id']}")
        assert _text(browser, "#job-state") == "done"
        (row,) = [r for r in agent.ledger.by_job(job["id"]) if r.paid]
        assert row.tx_id in _text(browser, "#job-payments")
        assert "reply" in _text(browser, "#job-result")
        _shot(browser, "job")
        for page in ("", "jobs", "payments", "schedules"):
            browser.get(f"{server.url}/{page}")
            _shot(browser, page or "overview")
        assert "snek-daily" in _text(browser, "#schedules")
        browser.get(server.url + "/payments")
        assert row.tx_id in _text(browser, "#payments")


def test_deny_in_the_browser_pays_nothing(agent_home_factory, browser, console_for):
    """Denying a parked payment in the browser: it is never paid; run again, the job's new invoice asks
    again (it waits for approval); the wallet keeps its ADA."""
    from selenium.webdriver.common.by import By

    home = agent_home_factory(extra="approve_above_ada = 1\n")
    before = home.balance()
    with home.open() as agent:
        job = agent.enqueue("chat", {"message": "not worth it"})
        _run_until_idle(agent)
        (parked,) = agent.approvals.pending()
        server = console_for(agent)
        browser.get(server.url + "/approvals")
        assert f"denied {parked.id}" in _click(browser, f"deny-{parked.id}")
        agent.jobs.retry(job["id"], agent.clock())  # even run again, a denied payment is not paid
        _run_until_idle(agent)
        assert agent.approvals.get(parked.id).state == "denied"
        assert agent.jobs.get(job["id"]).state == "awaiting_approval"
        assert [a.id for a in agent.approvals.pending()] != [parked.id]
        assert [r for r in agent.ledger.rows() if r.paid] == []
        browser.get(server.url + "/approvals")
        assert f"approve-{parked.id}" not in browser.page_source
    assert home.balance() == before


def test_overview_figures_equal_status_json(agent_home_factory, browser, console_for, capsys):
    """Balance, total paid, queue and budget spend on the overview equal `cardano-agent status --json`."""
    from selenium.webdriver.common.by import By

    from agent.cli import main

    home = agent_home_factory(extra='[[budgets]]\nname = "daily"\nlimit_ada = 20\nwindow = "1d"\n')
    with home.open() as agent:
        agent.enqueue("chat", {"message": "one"})
        agent.enqueue("token-analysis", {"token": "SNEK"})
        _run_until_idle(agent)
        agent.enqueue("chat", {"message": "still queued"})
        server = console_for(agent)
        browser.get(server.url + "/")
        _shot(browser, "overview-status")
        shown = {"balance": _text(browser, "#balance"), "total": _text(browser, "#total-paid"),
                 "queued": _text(browser, "#queue-queued"), "failed": _text(browser, "#queue-failed"),
                 "spent": [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#budgets .spent")]}
    capsys.readouterr()
    assert main(["status", "--json", "--home", str(home.home)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert shown["balance"] == format_ada(status["wallet"]["balance_lovelace"])
    assert shown["total"] == format_ada(status["total_paid_lovelace"])
    assert int(shown["queued"]) == status["queue"]["queued"] == 1
    assert int(shown["failed"]) == status["queue"]["failed"]
    assert shown["spent"] == [format_ada(b["spent"]) + " ADA" for b in status["budgets"]]
    assert status["total_paid_lovelace"] > 0
