"""Waiting costs nothing: a paid call waiting for settlement is parked, not held by a worker.

Unit tests drive :class:`agent.runner.Runner` one step at a time on both job stores; the
end-to-end tests pay on the sandbox devnet (blocks only when the test makes one) and check
the ledger: ten jobs in flight on one worker before a single block, each paid once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from agent.queue import AWAITING, MemoryJobStore, SqlJobStore, is_parked
from agent.runner import JobOutcome, JobParked, Runner
from tests.fixtures.postgres import open_db


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    if request.param == "memory":
        yield MemoryJobStore()
        return
    for db in open_db(request, request.param, tmp_path):
        yield SqlJobStore(db)


class ParkOnce:
    """Parks every job the first time it runs (its payment "sent"); completes it when resumed."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, str]] = []

    def execute(self, job: Any, *, worker_id: str) -> JobOutcome:
        self.runs.append((job.id, job.state))
        if job.state != AWAITING:
            raise JobParked("payment sent, waiting for a block", retry_after_s=30)
        return JobOutcome({"ok": job.id})


def test_a_parked_job_frees_its_worker_and_resumes_once_woken(store):
    """Parked: awaiting_settlement without a lease, due at retry_at; woken by a block, resumed, no new attempt."""
    clock = Clock()
    a = store.enqueue("chat", {"message": "a"}, now=clock())
    b = store.enqueue("chat", {"message": "b"}, now=clock())
    executor = ParkOnce()
    runner = Runner(store, executor, clock=clock, lease_s=60, concurrency=10)
    assert runner.run_once().id == a.id
    parked = store.get(a.id)
    assert is_parked(parked) and parked.run_at == clock() + 30 and parked.attempts == 1
    assert runner.run_once().id == b.id  # the one worker went on with the next job
    assert runner.run_once() is None  # both wait; nothing due
    assert runner.in_flight == 2 and store.counts()[AWAITING] == 2
    assert store.next_run_at() == clock() + 30
    assert store.wake_parked(now=clock()) == 2  # a new block
    assert {runner.run_once().id, runner.run_once().id} == {a.id, b.id}
    assert [store.get(j.id).state for j in (a, b)] == ["done", "done"]
    assert store.get(a.id).attempts == 1  # resuming is no new attempt
    assert executor.runs == [(a.id, "running"), (b.id, "running"), (a.id, AWAITING), (b.id, AWAITING)]
    assert runner.in_flight == 0 and runner.stats.parked == 2 and runner.stats.done == 2


def test_concurrency_bounds_calls_in_flight_not_workers(store):
    """With concurrency 3, a fourth job is not started while three are parked; a parked one still resumes."""
    clock = Clock()
    jobs = [store.enqueue("chat", {"message": str(n)}, now=clock()) for n in range(5)]
    runner = Runner(store, ParkOnce(), clock=clock, lease_s=60, concurrency=3)
    assert [runner.run_once().id for _ in range(3)] == [j.id for j in jobs[:3]]
    assert runner.run_once() is None  # three in flight: no new call
    assert store.counts()["queued"] == 2
    store.wake_parked(now=clock())
    assert runner.run_once().id == jobs[0].id  # resumed, done: a slot frees
    assert runner.run_once().id == jobs[1].id
    assert runner.run_once().id == jobs[2].id
    assert runner.run_once().id == jobs[3].id  # now fresh jobs start again
    assert runner.in_flight == 1


def test_a_parked_job_finished_elsewhere_frees_its_slot(store):
    """A job this runner parked, resumed and finished by another runner (another host of a fleet),
    no longer counts against this runner's concurrency: fresh jobs start again.

    Seen in the fleet bench: each host's slots filled with jobs the other host had finished, and
    both hosts stopped taking queued jobs for good.
    """
    clock = Clock()
    a, b, c = (store.enqueue("chat", {"message": m}, now=clock()) for m in "abc")
    host0 = Runner(store, ParkOnce(), clock=clock, lease_s=60, concurrency=1, name="host0")
    host1 = Runner(store, ParkOnce(), clock=clock, lease_s=60, concurrency=1, name="host1")
    assert host0.run_once().id == a.id  # parked by host0
    assert host0.run_once() is None  # its one slot is taken
    store.wake_parked(now=clock())
    assert host1.run_once().id == a.id  # resumed and finished by host1
    assert store.get(a.id).state == "done"
    assert host0.run_once().id == b.id  # host0's slot is free again
    assert host0.in_flight == 1 and host1.in_flight == 0
    store.wake_parked(now=clock())
    assert host1.run_once().id == b.id and host0.run_once().id == c.id


class ParkAlways:
    """Parks every time: the server keeps answering "pending, retry in 1 s"."""

    def execute(self, job: Any, *, worker_id: str) -> JobOutcome:
        raise JobParked("payment sent, waiting for a block", retry_after_s=1)


@pytest.mark.parametrize("watching", ["nothing", "tip", "landed"])
def test_with_a_tip_watcher_a_call_parked_again_waits_longer_for_its_fallback_retry(store, watching):
    """A block wakes parked calls at once; the server's 1 s hint only backs that up, so it doubles
    each time the same call parks again (capped). Without a watcher the hint is followed as given.
    With a landed reader (a block wakes exactly the calls it carries) the fallback starts later.

    Seen in the block-time bench: a thousand calls waiting for 20 s blocks were re-sent every
    second, 19 times each, and the server spent the run answering "pending".
    """
    from agent.runner import PARKED_RETRY_CAP_S, PARKED_RETRY_LANDED_S

    clock = Clock()
    job = store.enqueue("chat", {"message": "x"}, now=clock())
    runner = Runner(store, ParkAlways(), clock=clock, lease_s=60, concurrency=1,
                    tip=(lambda: 0) if watching != "nothing" else None,
                    landed=(lambda ids: set(ids)) if watching == "landed" else None)
    waits = []
    for _ in range(8):
        assert runner.run_once().id == job.id
        waits.append(store.get(job.id).run_at - clock())
        clock.t = store.get(job.id).run_at
    if watching == "tip":
        assert waits == [1, 2, 4, 8, 16, 32, PARKED_RETRY_CAP_S, PARKED_RETRY_CAP_S]
    elif watching == "landed":
        first = PARKED_RETRY_LANDED_S
        assert waits == [min(first * 2 ** n, PARKED_RETRY_CAP_S) for n in range(8)]
    else:
        assert waits == [1] * 8
    assert runner.in_flight == 1


def _tip_reads(clock: Clock, *, every_s: float, reads: list[int], done: threading.Event) -> Any:
    """A tip reader for ``watch_chain``: each read moves ``clock`` by ``every_s`` and answers the
    next of ``reads``; past the last it answers the last again and sets ``done``."""
    answers = iter(reads)

    def tip() -> int:
        clock.t += every_s
        value = next(answers, None)
        if value is None:
            done.set()
            return reads[-1]
        return value

    return tip


@pytest.mark.parametrize("block_s", [20.0, 2.0])
def test_the_landed_fallback_waits_for_two_blocks_of_the_interval_the_watcher_measured(store, block_s):
    """With a landed reader, the block carrying a payment wakes its call; a fallback retry sooner
    would only hear "pending". On 20 s blocks the 8 s fallback fired before the block, so calls
    parked about twice each; now the first fallback is twice the measured block interval
    (never less than PARKED_RETRY_LANDED_S), then grows to the cap."""
    from agent.runner import PARKED_RETRY_CAP_S, PARKED_RETRY_LANDED_S

    clock = Clock()
    job = store.enqueue("chat", {"message": "x"}, now=clock())
    done = threading.Event()
    tip = _tip_reads(clock, every_s=block_s, reads=[0, 1, 2, 3, 4], done=done)  # each read a new block
    runner = Runner(store, ParkAlways(), clock=clock, lease_s=60, concurrency=1, tip=tip, tip_poll_s=0,
                    landed=lambda ids: set())
    assert runner.block_interval_s is None
    runner.watch_chain(done)
    assert runner.block_interval_s == pytest.approx(block_s)
    waits = []
    for _ in range(3):
        assert runner.run_once().id == job.id
        waits.append(store.get(job.id).run_at - clock())
        clock.t = store.get(job.id).run_at  # no block came meanwhile
    assert waits[0] == pytest.approx(max(PARKED_RETRY_LANDED_S, 2 * block_s))
    assert waits[0] < waits[1] <= waits[2] == PARKED_RETRY_CAP_S  # longer each time, to the cap
    assert store.get(job.id).state == AWAITING


def test_a_block_wakes_only_the_parked_calls_whose_payment_landed(store):
    """With ``landed``, a new block makes due only the parked calls it names; when it cannot
    tell (an error) every parked call is woken, as without it."""
    clock = Clock()
    a, b, c = (store.enqueue("chat", {"message": m}, now=clock()) for m in "abc")
    answers: list[Any] = [{a.id}, RuntimeError("chain down")]
    asked: list[list[int]] = []

    def landed(ids: list[int]) -> Any:
        asked.append(list(ids))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    runner = Runner(store, ParkOnce(), clock=clock, lease_s=60, concurrency=3, tip=lambda: 0, landed=landed)
    assert [runner.run_once().id for _ in range(3)] == [a.id, b.id, c.id]
    assert store.parked_ids() == [a.id, b.id, c.id]
    runner.wake()
    assert asked == [[a.id, b.id, c.id]]
    assert [store.get(j.id).run_at == clock() for j in (a, b, c)] == [True, False, False]
    assert runner.run_once().id == a.id and store.get(a.id).state == "done"
    assert runner.run_once() is None  # b and c wait for their block (or their fallback retry)
    runner.wake()  # the reader failed: every parked call is woken
    assert asked[-1] == [b.id, c.id] and all(store.get(j.id).run_at == clock() for j in (b, c))


def test_a_parked_job_is_not_heartbeaten_nor_expired(store):
    """A parked job has no lease: expiring dead owners' leases and claims of expired leases skip it."""
    clock = Clock()
    job = store.enqueue("chat", {"message": "x"}, now=clock())
    Runner(store, ParkOnce(), clock=clock, lease_s=60).run_once()
    assert store.expire_leases(lambda owner: True, now=clock()) == 0
    clock.t += 29
    assert store.claim("other", now=clock(), lease_s=60) is None
    clock.t += 1
    resumed = store.claim("other", now=clock(), lease_s=60)
    assert resumed.id == job.id and resumed.state == AWAITING and resumed.lease_owner == "other"


def test_run_with_one_worker_parks_ten_and_the_watcher_wakes_them(store):
    """Threads: 1 worker, concurrency 10; all ten are parked before the 'block'; the tip watcher wakes them."""
    jobs = [store.enqueue("chat", {"message": str(n)}, now=time.time()) for n in range(10)]
    tip = {"block": 0}
    all_parked = threading.Event()

    class Executor(ParkOnce):
        def execute(self, job: Any, *, worker_id: str) -> JobOutcome:
            try:
                return super().execute(job, worker_id=worker_id)
            except JobParked as exc:
                exc.retry_after_s = 3600  # only the watcher can bring it back in time
                raise
            finally:
                if sum(1 for _, state in self.runs if state != AWAITING) == 10:
                    all_parked.set()

    runner = Runner(store, Executor(), workers=1, concurrency=10, lease_s=60, tip=lambda: tip["block"],
                    tip_poll_s=0.01)
    thread = threading.Thread(target=runner.run, kwargs={"until_idle": True, "poll_s": 0.01})
    thread.start()
    try:
        assert all_parked.wait(60)
        deadline = time.monotonic() + 60
        while store.counts()[AWAITING] < 10 and time.monotonic() < deadline:
            time.sleep(0.01)  # waits for the last park to be recorded, not for time to pass
        assert store.counts()[AWAITING] == 10 and store.counts()["done"] == 0
        tip["block"] = 1
        thread.join(60)
    finally:
        runner.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert [store.get(j.id).state for j in jobs] == ["done"] * 10


# -- on the sandbox ledger ------------------------------------------------------------------------

def test_ten_paid_jobs_in_flight_on_one_worker_before_one_block(slow_agent_home):
    """One worker, concurrency 10: ten chat calls are paid and parked before any block; one block
    settles them all; each job paid exactly once (devnet ledger), every call answered."""
    from agent.executor import TApiExecutor

    home = slow_agent_home
    before = home.balance()
    with home.open() as agent:
        jobs = [agent.jobs.enqueue("chat", {"message": f"m{n}"}, now=time.time()) for n in range(10)]
        executor = TApiExecutor(agent)
        runner = Runner(agent.jobs, executor, workers=1, concurrency=10, lease_s=60,
                        tip=lambda: agent.chain.tip(), tip_poll_s=0.05)
        thread = threading.Thread(target=runner.run, kwargs={"until_idle": True, "poll_s": 0.05})
        thread.start()
        try:
            def parked() -> int:
                return sum(is_parked(j) for j in agent.jobs.list(state=AWAITING))

            deadline = time.monotonic() + 120
            while parked() < 10 and time.monotonic() < deadline:
                assert thread.is_alive()
                time.sleep(0.02)  # polls a condition; no time needs to pass for it
            assert parked() == 10 and agent.jobs.counts()["done"] == 0
            assert len(home.devnet.node.mempool()) == 10  # all ten payments sent before one block
            home.devnet.produce_block()
            thread.join(120)
        finally:
            runner.stop()
            thread.join(10)
            executor.close()
        assert not thread.is_alive()
        assert [agent.jobs.get(j.id).state for j in jobs] == ["done"] * 10
        rows = [r for r in agent.ledger.rows() if r.paid]
        assert sorted(r.job_id for r in rows) == [j.id for j in jobs]  # one payment per job
        assert all(r.state == "settled" for r in rows)
        fees = sum(r.fee_lovelace for r in rows)
        assert runner.stats.parked >= 10 and runner.stats.failed == 0
    assert before - home.balance() == 10 * 2_000_000 + fees  # the chain agrees: ten payments


def test_a_parked_job_resumed_in_a_new_process_presents_the_stored_proof(slow_agent_home):
    """Parked, then the process ends; a new runner (fresh auth memory) resumes with the ledger's proof: paid once."""
    from agent.executor import TApiExecutor

    home = slow_agent_home
    before = home.balance()
    with home.open() as agent:
        job = agent.jobs.enqueue("chat", {"message": "park me"}, now=time.time())
        executor = TApiExecutor(agent)
        try:
            assert Runner(agent.jobs, executor, lease_s=60).run_once().id == job.id
        finally:
            executor.close()
        parked = agent.jobs.get(job.id)
        assert is_parked(parked) and parked.request_id
        [row] = [r for r in agent.ledger.rows() if r.paid]
        assert row.state == "submitted"
    home.devnet.produce_block()
    with home.open() as agent:
        agent.jobs.wake_parked(now=time.time())
        executor = TApiExecutor(agent)
        try:
            assert Runner(agent.jobs, executor, lease_s=60).run_once().id == job.id
        finally:
            executor.close()
        assert agent.jobs.get(job.id).state == "done"
        [again] = [r for r in agent.ledger.rows() if r.paid]
        assert again.id == row.id and again.state == "settled"
    assert before - home.balance() == 2_000_000 + row.fee_lovelace


# -- the concurrency cap ---------------------------------------------------------------------------

@pytest.fixture
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Sets the passphrase now; call it again before each `run` (which takes it out of the environment)."""
    from tests.fixtures.agent_home import PASSPHRASE

    def put() -> None:
        monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", PASSPHRASE)

    put()
    return put


def test_concurrency_beyond_the_wallet_is_capped_with_one_line(agent_home, passphrase_env, capsys):
    """500 ADA at a 10 ADA per-call maximum: --concurrency 500 runs with 50, saying why in one line."""
    from agent.cli import main

    code = main(["run", "--until-idle", "--concurrency", "500", "--home", str(agent_home.home)])
    err = capsys.readouterr().err
    assert code == 0
    [line] = [x for x in err.splitlines() if "--concurrency" in x]
    assert line == ("--concurrency 500 capped to 50: the wallet holds 500 ADA, enough for 50 call(s) in flight "
                    "at the per-call maximum of 10 ADA")
    passphrase_env()
    assert main(["run", "--until-idle", "--concurrency", "20", "--home", str(agent_home.home)]) == 0
    assert "capped" not in capsys.readouterr().err


def test_concurrency_beyond_a_budget_is_capped(agent_home_factory, passphrase_env, capsys):
    """An all-calls budget with 30 ADA left at a 10 ADA maximum allows three calls in flight."""
    from agent.cli import main

    home = agent_home_factory(extra="""
        [[budgets]]
        name = "daily"
        limit_ada = 30
        window = "1d"
        """)
    assert main(["run", "--until-idle", "--concurrency", "8", "--home", str(home.home)]) == 0
    err = capsys.readouterr().err
    assert "--concurrency 8 capped to 3: budget daily has 30 ADA left" in err


@pytest.mark.parametrize("value", ["0", "-3"])
def test_concurrency_below_one_is_one_clear_line(agent_home, passphrase_env, capsys, value):
    from agent.cli import main

    assert main(["run", "--until-idle", "--concurrency", value, "--home", str(agent_home.home)]) != 0
    err = capsys.readouterr().err
    assert "--concurrency must be at least 1" in err and "Traceback" not in err


def test_the_landed_reader_names_parked_calls_whose_payment_is_on_the_ledger(slow_agent_home):
    """landed_reader (what `run` gives the runner over Ogmios): a call whose payment waits in the
    mempool is not woken by a block that does not carry it; once it is on the ledger, it is; a
    parked call without a payment in flight always is."""
    from agent.executor import TApiExecutor
    from agent.service import landed_reader

    home = slow_agent_home
    with home.open() as agent:
        paid = agent.jobs.enqueue("chat", {"message": "paid"}, now=time.time())
        executor = TApiExecutor(agent)
        try:
            runner = Runner(agent.jobs, executor, concurrency=2, lease_s=60, tip=lambda: agent.chain.tip())
            assert runner.run_once().id == paid.id
            assert is_parked(agent.jobs.get(paid.id))
            other = agent.jobs.enqueue("chat", {"message": "no payment"}, now=time.time())
            landed = landed_reader(agent)
            assert landed is not None
            assert landed([paid.id, other.id]) == {other.id}  # its payment is in the mempool
            home.devnet.produce_block()
            assert landed([paid.id, other.id]) == {paid.id, other.id}
        finally:
            executor.close()


def test_before_two_blocks_the_wait_for_the_first_bounds_the_interval(store):
    """Until the watcher has seen a whole interval, the time it waited for its first block (and
    since its last) is a lower bound: calls parked early in a run do not retry before their block."""
    from agent.runner import PARKED_RETRY_LANDED_S

    clock = Clock()
    job = store.enqueue("chat", {"message": "x"}, now=clock())
    done = threading.Event()
    # The tip, unchanged once, then a block 15 s after the watcher started.
    tip = _tip_reads(clock, every_s=5, reads=[0, 0, 1], done=done)
    runner = Runner(store, ParkAlways(), clock=clock, lease_s=60, concurrency=1, tip=tip, tip_poll_s=0,
                    landed=lambda ids: set())
    runner.watch_chain(done)
    assert runner.block_interval_s is None  # one block seen: no whole interval yet
    assert runner.run_once().id == job.id
    assert store.get(job.id).run_at - clock() == pytest.approx(max(PARKED_RETRY_LANDED_S, 2 * 15))


def test_the_nominal_block_interval_sets_the_fallback_before_any_block_is_seen(store):
    """`cardano-agent run` starts the watcher from the networks' nominal 20 s between blocks: a run
    paying hundreds of calls before its first block does not retry them (to hear "pending") in
    8 s; the measured mean then takes over, block by block."""
    from agent.service import NOMINAL_BLOCK_INTERVAL_S

    clock = Clock()
    job = store.enqueue("chat", {"message": "x"}, now=clock())
    runner = Runner(store, ParkAlways(), clock=clock, lease_s=60, concurrency=1, tip=lambda: 0,
                    landed=lambda ids: set(), block_interval_s=NOMINAL_BLOCK_INTERVAL_S)
    assert runner.run_once().id == job.id
    assert store.get(job.id).run_at - clock() == pytest.approx(2 * NOMINAL_BLOCK_INTERVAL_S)
    for _ in range(8):
        runner._saw_interval(2.0)  # blocks come every 2 s here
    assert runner.block_interval_s == pytest.approx(2.0, abs=2.0)
    assert runner.block_interval_s < NOMINAL_BLOCK_INTERVAL_S / 2
