"""``[wallet] lanes`` in ``run``: at a new block the runner lets the wallet split for the queue's depth.

On the sandbox devnet (blocks only when the test makes one): a wallet of one UTxO with twelve paid
jobs queued gets eight lanes from one transaction to itself; the jobs are then each paid once and
the chain agrees with the spend ledger plus the split's fee.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from agent.lanes import lane_tender
from agent.queue import MemoryJobStore
from agent.runner import JobOutcome, Runner


class Done:
    def execute(self, job: Any, *, worker_id: str) -> JobOutcome:
        return JobOutcome(result={"ok": True})


def test_the_watcher_tends_lanes_with_the_queue_depth_at_each_new_block():
    """At each new tip, the lanes hook gets the number of queued and running jobs (not before the first change)."""
    store = MemoryJobStore()
    for n in range(5):
        store.enqueue("chat", {"message": str(n)}, now=time.time())
    depths: list[int] = []
    called = threading.Event()

    def lanes(depth: int) -> None:
        depths.append(depth)
        called.set()

    tips = iter([1, 1, 2])
    done = threading.Event()

    def tip() -> int:
        try:
            return next(tips)
        except StopIteration:
            done.set()
            return 2

    runner = Runner(store, Done(), tip=tip, tip_poll_s=0.001, lanes=lanes)
    runner.watch_chain(done)
    assert called.wait(30) and depths == [5]


def test_a_failing_lanes_hook_is_a_warning_not_a_crash(caplog):
    """Lanes are an optimisation: an error there is logged, the runner goes on."""
    def lanes(depth: int) -> None:
        raise RuntimeError("chain refused")

    runner = Runner(MemoryJobStore(), Done(), lanes=lanes)
    runner.tend_lanes(wait=True)
    assert any("lanes: not rearranged: chain refused" in r.getMessage() for r in caplog.records)


def test_a_deep_queue_on_one_utxo_gets_eight_lanes_and_every_job_is_paid_once(slow_agent_home):
    from agent.executor import TApiExecutor

    home = slow_agent_home
    home.configure(lanes=8)
    before = home.balance()
    assert len(home.devnet.node.utxos_at([home.address])) == 1
    with home.open() as agent:
        assert agent.config.wallet.lanes == 8
        jobs = [agent.jobs.enqueue("chat", {"message": f"m{n}"}, now=time.time()) for n in range(12)]
        tender = lane_tender(agent)
        executor = TApiExecutor(agent)
        runner = Runner(agent.jobs, executor, workers=1, concurrency=12, lease_s=60,
                        tip=lambda: agent.chain.tip(), tip_poll_s=0.05, lanes=tender)
        runner.tend_lanes(wait=True)
        assert home.devnet.node.mempool() == []  # the wallet is not unlocked yet: lanes wait for a payment
        agent.payer()
        runner.tend_lanes(wait=True)
        [(split_id, _)] = home.devnet.node.mempool()
        [split_row] = [r for r in agent.ledger.rows() if r.host == "wallet"]
        assert split_row.tx_id == split_id and split_row.state == "submitted" and "lanes" in split_row.tags
        assert split_row.invoice_id.startswith("wallet:split:") and split_row.cost_lovelace == split_row.fee_lovelace
        home.devnet.produce_block()
        mine = home.devnet.node.utxos_at([home.address])
        assert len(mine) == 8 and all(ref.tx_id == split_id for ref, _ in mine)
        split_fee = before - sum(out.lovelace for _, out in mine)
        assert split_fee == split_row.fee_lovelace
        thread = threading.Thread(target=runner.run, kwargs={"until_idle": True, "poll_s": 0.05})
        thread.start()
        try:
            deadline = time.monotonic() + 120
            while agent.jobs.counts()["done"] < 12 and time.monotonic() < deadline:
                assert thread.is_alive()
                if home.devnet.node.mempool():
                    home.devnet.produce_block()
                time.sleep(0.02)  # polls a condition; no time needs to pass for it
            thread.join(120)
        finally:
            runner.stop()
            thread.join(10)
            executor.close()
        assert [agent.jobs.get(j.id).state for j in jobs] == ["done"] * 12
        rows = [r for r in agent.ledger.rows() if r.paid and r.host != "wallet"]
        assert sorted(r.job_id for r in rows) == [j.id for j in jobs]
        assert agent.ledger.get(split_row.id).state == "settled"  # seen confirmed by the sender
        spent = sum(r.cost_lovelace for r in agent.ledger.rows() if r.paid)
        lane_rows = [r for r in agent.ledger.rows() if r.host == "wallet"]
        print([(r.invoice_id, r.state, r.fee_lovelace) for r in lane_rows])
        assert all(r.state in ("settled", "submitted", "released") for r in lane_rows)
    assert before - home.balance() == spent  # the spend ledger agrees with the chain, lane fees included
    assert spent == 12 * 2_000_000 + sum(r.fee_lovelace for r in rows + lane_rows if r.paid)


class LostAnswer:
    """A chain whose submissions are lost before reaching the node (as a crash right after signing)."""

    def __init__(self, chain: Any) -> None:
        self._chain = chain

    def submit(self, cbor: bytes) -> str:
        from wallets.errors import ChainUnavailableError

        raise ChainUnavailableError("connection to ws://127.0.0.1:1 lost while waiting; its outcome is unknown")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chain, name)


def test_a_split_whose_submission_was_lost_is_sent_again_byte_for_byte_by_recovery(slow_agent_home):
    """The split is signed and recorded, its submission lost, the process ends: the next start's
    recovery submits the very same transaction (nothing signed twice), and the ledger agrees with the chain."""
    from agent.lanes import LedgerJournal
    from wallets.errors import ChainUnavailableError
    from wallets.lanes import LaneKeeper

    home = slow_agent_home
    before = home.balance()
    with home.open() as agent:
        payer = agent.payer()
        journal = LedgerJournal(agent.ledger, agent.chain, owner=payer.owner, clock=payer.clock)
        real = payer.sender._chain
        payer.sender._chain = LostAnswer(real)
        keeper = LaneKeeper(payer.sender, agent.chain, lanes=4, journal=journal)
        try:
            keeper.tend(10)
        except ChainUnavailableError:
            pass
        else:
            raise AssertionError("the lost submission was not reported")
        finally:
            payer.sender._chain = real
        [row] = [r for r in agent.ledger.rows() if r.host == "wallet"]
        assert row.state == "signed" and row.cbor and home.devnet.node.mempool() == []
    with home.open() as agent:
        counts = agent.recover()
        assert counts["resubmitted"] == 1, counts
        [(tx_id, cbor)] = home.devnet.node.mempool()
        assert tx_id == row.tx_id and cbor == row.cbor  # the same bytes, never signed again
        assert agent.ledger.get(row.id).state == "submitted"
        payer = agent.payer()
        journal = LedgerJournal(agent.ledger, agent.chain, owner=payer.owner, clock=payer.clock)
        assert journal.left_unsettled() == [str(row.id)]
        LaneKeeper(payer.sender, agent.chain, lanes=4, journal=journal).adopt(journal.left_unsettled())
        home.devnet.produce_block()
        assert len(home.devnet.node.utxos_at([home.address])) == 4
        payer.sender.refresh()
        again = agent.ledger.get(row.id)
        assert again.state == "settled" and again.paid  # a lane tx of an earlier run settles once seen
    assert before - home.balance() == row.fee_lovelace


def test_a_split_that_landed_while_the_agent_was_down_is_settled_by_recovery(slow_agent_home):
    """The split is sent and the process ends before it sees the block: the next start's recovery
    finds it on chain and settles it (a split has no server to answer; being in a block is all).

    Seen in the lanes crash soak: a final `run` with nothing left to do never tended lanes, and
    the split stayed `submitted` in the ledger although the chain held it.
    """
    from agent.lanes import LedgerJournal
    from wallets.lanes import LaneKeeper

    home = slow_agent_home
    before = home.balance()
    with home.open() as agent:
        payer = agent.payer()
        journal = LedgerJournal(agent.ledger, agent.chain, owner=payer.owner, clock=payer.clock)
        assert LaneKeeper(payer.sender, agent.chain, lanes=4, journal=journal).tend(10) is not None
        [row] = [r for r in agent.ledger.rows() if r.host == "wallet"]
        assert row.state == "submitted"
    home.devnet.produce_block()
    with home.open() as agent:
        counts = agent.recover()
        assert counts["kept"] == 1, counts
        assert agent.ledger.get(row.id).state == "settled"
        assert agent.ledger.unfinished() == []
    assert before - home.balance() == row.fee_lovelace
