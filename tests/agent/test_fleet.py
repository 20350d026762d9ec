"""A fleet: several agents ("hosts", each with its own home and connection pool) on one PostgreSQL.

Each host here is a separate ``Database`` (its own pool, its own connections): nothing is
shared between them but the PostgreSQL database, as between machines.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from agent.budget import BudgetBook, BudgetSpec
from agent.errors import BudgetExceededError
from agent.ledger import DuplicatePaymentError, SpendLedger
from agent.queue import SqlJobStore
from agent.sql_reservations import SqliteReservations
from agent.scheduler import Scheduler
from agent.store import Database
from tests.threads import run_threads
from wallets.reservations import ReservationConflict
from wallets.types import OutputRef, RequiredOutput

T0 = 1_700_000_000.0
PAY_TO = "addr_test1vz2fxv2umyhttkxyxp8x0dlpdt3k6cwng5pxj3jhsydzerspjrlsz"


@pytest.fixture
def hosts(pg_shared_url):
    """Three migrated, emptied connections to one PostgreSQL database, as three hosts would have."""
    from tests.fixtures.postgres import empty_tables

    empty_tables(pg_shared_url)
    dbs = [Database(pg_shared_url) for _ in range(3)]
    yield dbs
    for db in dbs:
        db.close()


def test_one_budget_across_hosts(hosts):
    """Three hosts with 12 threads each against one budget for 10: exactly 10 reservations in all."""
    spec = BudgetSpec("ten", {"lovelace": 10 * 1_200_000}, window_s=86_400)
    ledgers = [SpendLedger(db, BudgetBook(db, [spec])) for db in hosts]
    ok: list[int] = []

    def reserve(i: int) -> None:
        try:
            ledgers[i % 3].reserve(invoice_id=f"inv-{i}", host="api", route="/chat", job_id=None,
                                   outputs=[RequiredOutput(PAY_TO, 1_000_000)],
                                   amounts={"lovelace": 1_000_000}, fee_estimate_lovelace=200_000, now=T0)
            ok.append(i)
        except BudgetExceededError:
            pass

    assert run_threads(36, reserve) == []
    assert len(ok) == 10
    assert ledgers[0].budgets.usage(T0)[0].reserved == 12_000_000


def test_an_invoice_is_reserved_once_across_hosts(hosts):
    """Every host racing to pay one invoice: one live row, the others DuplicatePaymentError."""
    ledgers = [SpendLedger(db, BudgetBook(db, [])) for db in hosts]
    won: list[int] = []
    dup: list[int] = []

    def reserve(i: int) -> None:
        try:
            ledgers[i % 3].reserve(invoice_id="inv-same", host="api", route="/chat", job_id=None,
                                   outputs=[RequiredOutput(PAY_TO, 1_000_000)],
                                   amounts={"lovelace": 1_000_000}, fee_estimate_lovelace=0, now=T0)
            won.append(i)
        except DuplicatePaymentError:
            dup.append(i)

    assert run_threads(12, reserve) == []
    assert len(won) == 1 and len(dup) == 11


def test_a_utxo_is_reserved_by_one_payment_across_hosts(hosts):
    """Hosts racing for the same inputs of one wallet: each input ends up with exactly one owner."""
    refs = [OutputRef("ab" * 32, i) for i in range(4)]
    res = [SqliteReservations(db, "main") for db in hosts]
    got: list[tuple[str, frozenset[OutputRef]]] = []

    def take(i: int) -> None:
        want = {refs[i % 4], refs[(i + 1) % 4]}
        try:
            res[i % 3].reserve(f"payment-{i}", want)
            got.append((f"payment-{i}", frozenset(want)))
        except ReservationConflict:
            pass

    assert run_threads(24, take) == []
    held = [ref for _, want in got for ref in want]
    assert len(held) == len(set(held))
    assert {res[0].owner_of(r) for r in refs} - {None} == {o for o, _ in got}


def test_a_job_is_claimed_by_one_worker_across_hosts(hosts):
    """Workers of three hosts claiming 60 jobs at once: every job claimed exactly once."""
    stores = [SqlJobStore(db) for db in hosts]
    for i in range(60):
        stores[0].enqueue("chat", {"i": i}, now=T0)
    claimed: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        while (job := stores[i % 3].claim(f"host{i % 3}:1-{i}", now=T0, lease_s=60)) is not None:
            with lock:
                claimed.append(job.id)

    assert run_threads(12, work) == []
    assert sorted(claimed) == sorted({j.id for j in stores[1].list(limit=100)})


@dataclass
class Every:
    name: str = "tick"
    kind: str = "chat"
    cron: str | None = None
    every_s: int | None = 60
    params: dict | None = None
    tags: tuple = ()
    budget: str | None = None
    misfire: str = "run_once"


def test_schedules_fire_once_per_fleet(hosts):
    """Three hosts running the same schedules at the same instants create one job per fire time."""
    start = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc).timestamp()
    schedulers = [Scheduler(db, SqlJobStore(db), [Every(), Every(name="daily", every_s=None,
                                                           cron="0 13 * * *")]) for db in hosts]
    schedulers[0].run_once(start)  # the fleet's first sight of the schedules anchors them

    def tick(i: int) -> None:
        for minute in range(1, 91):
            schedulers[i % 3].run_once(start + minute * 60)

    assert run_threads(6, tick) == []
    jobs = SqlJobStore(hosts[0]).list(limit=1000)
    keys = [j.unique_key for j in jobs]
    assert len(keys) == len(set(keys))
    assert sum(1 for k in keys if k and k.startswith("schedule:tick:")) == 91
    assert sum(1 for k in keys if k and k.startswith("schedule:daily:")) == 1


def test_32_calls_from_two_hosts_against_a_budget_for_10(agent_home_factory, pg_shared_url, tmp_path):
    """Two agent homes (two hosts) sharing one PostgreSQL and one wallet, 16 calls each at once,
    against a budget that fits 10: exactly 10 paid, 22 refused, ledger == chain."""
    from agent.tapi import TClient
    from sandbox.billing import DEFAULT_PAY_TO
    from tests.fixtures.postgres import empty_tables

    empty_tables(pg_shared_url)
    home_a = agent_home_factory(funds=0, name="hostA", extra=f"""
        [store]
        url = "{pg_shared_url}"

        [[budgets]]
        name = "ten-calls"
        limit_ada = 22
        window = "none"
        """)
    home_b = tmp_path / "hostB"
    shutil.copytree(home_a.home, home_b)
    for _ in range(8):
        home_a.devnet.fund(home_a.address, 40_000_000)
    before = home_a.balance()
    pay_to_before = home_a.balance(DEFAULT_PAY_TO)
    outcomes: list[str] = []
    lock = threading.Lock()
    from agent.app import Agent
    from tests.fixtures.agent_home import PASSPHRASE

    with home_a.open() as a, Agent.open(home_b, passphrase=PASSPHRASE, env={}) as b:
        assert a.db.engine == b.db.engine == "postgresql" and a.db is not b.db
        agents = [a, b]
        for agent in agents:
            agent.payer()

        def call(n: int) -> None:
            with TClient(agents[n % 2]) as t:
                try:
                    t.chat(f"call {n}")
                    result = "paid"
                except BudgetExceededError:
                    result = "budget"
            with lock:
                outcomes.append(result)

        assert run_threads(32, call, timeout_s=300) == []
        rows = [r for r in a.ledger.rows() if r.paid]
        fees = sum(r.fee_lovelace or 0 for r in rows)
    assert outcomes.count("paid") == 10 and outcomes.count("budget") == 22
    assert len(rows) == 10 and all(r.state == "settled" for r in rows)
    assert len({r.tx_id for r in rows}) == 10 and len({r.invoice_id for r in rows}) == 10
    assert home_a.balance(DEFAULT_PAY_TO) - pay_to_before == 10 * 2_000_000
    assert before - home_a.balance() == 10 * 2_000_000 + fees
