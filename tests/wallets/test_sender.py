"""PaymentSender over MemoryChain: reservations, mempool chaining, waiting, confirmations, refusals."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Collection

import pytest

from sandbox.memchain import MemoryChain
from tests.threads import run_threads
from tests.wallets.test_payment import KeySigner, fresh_address
from wallets.errors import (
    ChainUnavailableError,
    FeeTooSmallError,
    InputsSpentError,
    InsufficientFundsError,
    submit_error,
)
from wallets.reservations import MemoryReservations, ReservationConflict
from wallets.sender import PaymentSender
from wallets.types import OutputRef, RequiredOutput

TTL = 10_000


def ada(address: str, lovelace: int) -> list[RequiredOutput]:
    """One ADA output."""
    return [RequiredOutput(address, lovelace)]


@pytest.fixture
def signer() -> KeySigner:
    """The paying wallet."""
    return KeySigner()


def test_back_to_back_from_one_utxo_within_one_block(signer: KeySigner) -> None:
    """Ten payments from a single UTxO chain on each other's change in the mempool and all confirm."""
    chain = MemoryChain(auto_confirm=False)
    chain.fund(signer.address, 100_000_000)
    payee = fresh_address()
    sender = PaymentSender(chain, signer)
    payments = [sender.pay(ada(payee, 2_000_000), ttl_slot=TTL, owner=f"p{i}") for i in range(10)]
    assert chain.accepted == [p.tx_id for p in payments]
    for prev, nxt in zip(payments, payments[1:]):
        assert nxt.inputs == (prev.change[0].ref,)
    assert chain.produce_block() == [p.tx_id for p in payments]
    assert sum(u.lovelace for u in chain.utxos_at(payee)) == 20_000_000
    sender.refresh()
    assert sender.in_flight() == {} and sender.reservations.reserved_refs() == set()
    assert sender.reservations.pending_change() == []


@pytest.mark.parametrize("auto_confirm", [True, False])
def test_concurrent_payments_never_share_an_input(signer: KeySigner, auto_confirm: bool) -> None:
    """Twenty payments launched at once from four UTxOs are all accepted, each input spent once."""
    chain = MemoryChain(auto_confirm=auto_confirm)
    for _ in range(4):
        chain.fund(signer.address, 50_000_000)
    payee = fresh_address()
    sender = PaymentSender(chain, signer, poll_s=0.01)
    done: list[Any] = []
    errors = run_threads(20, lambda i: done.append(sender.pay(ada(payee, 3_000_000), ttl_slot=TTL, owner=f"t{i}")))
    assert errors == [] and len(done) == 20 and len(chain.accepted) == 20
    spent = Counter(ref for p in done for ref in p.inputs)
    assert max(spent.values()) == 1
    chain.produce_block()
    assert sum(u.lovelace for u in chain.utxos_at(payee)) == 60_000_000
    assert sum(u.lovelace for u in chain.utxos_at(signer.address)) == 200_000_000 - sum(p.cost_lovelace for p in done)


def test_waits_for_an_in_flight_payment_instead_of_failing(signer: KeySigner) -> None:
    """With the only UTxO reserved by a payment not yet submitted, the next build waits and chains on its change."""
    chain = MemoryChain(auto_confirm=False)
    chain.fund(signer.address, 40_000_000)
    payee = fresh_address()
    sender = PaymentSender(chain, signer, poll_s=0.01)
    first = sender.build(ada(payee, 2_000_000), ttl_slot=TTL, owner="first")
    waiting = threading.Event()
    real_wait = sender._cond.wait

    def spy_wait(timeout: float | None = None) -> bool:
        waiting.set()
        return real_wait(timeout)

    sender._cond.wait = spy_wait  # type: ignore[method-assign]
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(sender.build(ada(payee, 3_000_000), ttl_slot=TTL,
                                                                   owner="second")))
    t.start()
    assert waiting.wait(timeout=10)
    sender.submit(first, owner="first")
    t.join(timeout=10)
    assert result and result[0].inputs == (first.change[0].ref,)


def test_gives_up_waiting_after_the_deadline(signer: KeySigner) -> None:
    """If no in-flight payment frees funds before wait_s, build raises InsufficientFundsError."""
    chain = MemoryChain(auto_confirm=False)
    chain.fund(signer.address, 40_000_000)
    ticks = iter(range(1000))
    sender = PaymentSender(chain, signer, wait_s=3, poll_s=0.001, clock=lambda: float(next(ticks)))
    sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="holder")
    with pytest.raises(InsufficientFundsError):
        sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="late")


def test_hopeless_payment_fails_at_once(signer: KeySigner) -> None:
    """A payment the whole wallet cannot cover fails immediately even while others are in flight."""
    chain = MemoryChain(auto_confirm=False)
    chain.fund(signer.address, 40_000_000)
    sender = PaymentSender(chain, signer, wait_s=3600, clock=lambda: 0.0)
    sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="holder")
    with pytest.raises(InsufficientFundsError):
        sender.build(ada(fresh_address(), 90_000_000), ttl_slot=TTL, owner="greedy")


def test_release_frees_inputs(signer: KeySigner) -> None:
    """release(owner) of an abandoned payment makes its inputs selectable again."""
    chain = MemoryChain()
    ref = chain.fund(signer.address, 40_000_000)
    sender = PaymentSender(chain, signer, wait_s=0)
    abandoned = sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="gone")
    assert abandoned.inputs == (ref,) and sender.reservations.reserved_refs() == {ref}
    sender.release("gone")
    again = sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="next")
    assert again.inputs == (ref,)


class ConflictOnce(MemoryReservations):
    """Another process grabs the first inputs this process tries to reserve."""

    def __init__(self) -> None:
        super().__init__()
        self.conflicts = 0

    def reserve(self, owner: str, refs: Collection[OutputRef]) -> None:
        if not self.conflicts:
            self.conflicts += 1
            super().reserve("other-process", refs)
            raise ReservationConflict(refs, holder="other-process")
        super().reserve(owner, refs)


def test_reservation_conflict_reselects(signer: KeySigner) -> None:
    """When another process wins the race for the chosen inputs, other inputs are selected."""
    chain = MemoryChain()
    a = chain.fund(signer.address, 40_000_000)
    b = chain.fund(signer.address, 30_000_000)
    store = ConflictOnce()
    sender = PaymentSender(chain, signer, reservations=store)
    p = sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="me")
    assert store.conflicts == 1 and p.inputs == (b,) and store.owner_of(a) == "other-process"


def test_two_senders_share_one_store(signer: KeySigner) -> None:
    """Two senders over one reservation store (two workers) never pick the same input."""
    chain = MemoryChain(auto_confirm=False)
    for _ in range(6):
        chain.fund(signer.address, 20_000_000)
    store = MemoryReservations()
    senders = [PaymentSender(chain, signer, reservations=store) for _ in range(2)]
    built = [senders[i % 2].build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner=f"w{i}") for i in range(6)]
    assert len({ref for p in built for ref in p.inputs}) == 6


def test_inputs_spent_are_dropped(signer: KeySigner) -> None:
    """On InputsSpentError the spent input is not selected again, the owner is released, the error surfaces."""
    chain = MemoryChain()
    a = chain.fund(signer.address, 40_000_000)
    b = chain.fund(signer.address, 30_000_000)
    sender = PaymentSender(chain, signer, wait_s=0)
    p = sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="x")
    assert p.inputs == (a,)
    data = {"unknownOutputReferences": [{"transaction": {"id": a.tx_id}, "index": a.index}]}
    chain.fail_next("submit", submit_error(3117, "spent elsewhere", data))
    with pytest.raises(InputsSpentError):
        sender.submit(p, owner="x")
    assert sender.reservations.reserved_refs() == set()
    retry = sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="x")
    assert retry.inputs == (b,)


def test_stale_pending_change_refused_once_is_not_offered_again(signer: KeySigner) -> None:
    """A dead process's pending change, spent since, is offered by the shared store: after one 3117, never again.

    Seen in the crash soak: a second `run` chained on change another (killed) process had
    recorded as pending; that change had been spent by the killed process's next payment. The
    spent reference was forgotten at the next selection (it is not on the ledger either), so
    the same dead input was picked again and again.
    """
    chain = MemoryChain(auto_confirm=False)
    chain.fund(signer.address, 40_000_000)
    store = MemoryReservations()
    dead = PaymentSender(chain, signer, reservations=store, wait_s=0)
    parent = dead.pay(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="dead")
    chain.produce_block()
    [change] = parent.change
    chain.confirm_elsewhere("ee" * 32, [change.ref])  # its next payment, confirmed; the process is gone
    chain.fund(signer.address, 30_000_000)
    live = PaymentSender(chain, signer, reservations=store, wait_s=0)
    first = live.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="c1")
    assert first.inputs == (change.ref,)  # the bigger coin, offered by the dead process's record
    with pytest.raises(InputsSpentError):
        live.submit(first, owner="c1")
    for n in range(3):
        again = live.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner=f"c{n + 2}")
        assert change.ref not in again.inputs, f"dead change picked again (build {n + 2})"
        live.release(f"c{n + 2}")


def test_refused_submit_releases_but_lost_connection_keeps(signer: KeySigner) -> None:
    """A ledger refusal frees the inputs; a lost connection keeps them reserved (the tx may be in)."""
    chain = MemoryChain()
    chain.fund(signer.address, 40_000_000)
    sender = PaymentSender(chain, signer, wait_s=0)
    p = sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="x")
    chain.fail_next("submit", submit_error(3122, "fee too small", {}))
    with pytest.raises(FeeTooSmallError):
        sender.submit(p, owner="x")
    assert sender.reservations.reserved_refs() == set()
    q = sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="y")
    chain.fail_next("submit", ChainUnavailableError("gone"))
    with pytest.raises(ChainUnavailableError):
        sender.submit(q, owner="y")
    assert sender.reservations.reserved_refs() == set(q.inputs)


def test_dropped_transaction_frees_its_inputs(signer: KeySigner) -> None:
    """A tx out of the mempool and past its TTL is dropped; its inputs return and its change goes."""
    chain = MemoryChain(auto_confirm=False)
    ref = chain.fund(signer.address, 40_000_000)
    sender = PaymentSender(chain, signer)
    p = sender.pay(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="x")
    assert sender.reservations.pending_change() == list(p.change)
    chain.drop_mempool()
    sender.refresh()
    assert sender.in_flight() == {p.tx_id: "x"}  # not past its TTL: it may still be (re)submitted
    chain.advance(TTL + 1)
    sender.refresh()
    assert sender.in_flight() == {} and sender.reservations.reserved_refs() == set()
    assert sender.reservations.pending_change() == []
    again = sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="y")
    assert again.inputs == (ref,)


def test_confirmation_releases_without_mempool_queries(signer: KeySigner) -> None:
    """Once a payment's change shows on the ledger, it is settled from the UTxO query alone."""
    chain = MemoryChain(auto_confirm=False)
    chain.fund(signer.address, 40_000_000)
    sender = PaymentSender(chain, signer)
    p = sender.pay(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="x")
    chain.produce_block()
    sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="y")
    assert p.tx_id not in sender.in_flight() and chain.calls["in_mempool"] == 0
    assert sender.reservations.reserved_refs() == {p.change[0].ref}


def test_track_resumes_a_payment_after_restart(signer: KeySigner) -> None:
    """A payment submitted by an earlier process is tracked until confirmed, its inputs kept meanwhile."""
    chain = MemoryChain(auto_confirm=False)
    chain.fund(signer.address, 40_000_000)
    old = PaymentSender(chain, signer)
    p = old.pay(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="job-1")
    fresh = PaymentSender(chain, signer)
    fresh.track("job-1", p.tx_id, inputs=p.inputs, change=p.change)
    assert fresh.reservations.reserved_refs() == set(p.inputs)
    chain.produce_block()
    fresh.refresh()
    assert fresh.in_flight() == {} and fresh.reservations.reserved_refs() == set()


def test_tracked_unsubmitted_payment_keeps_its_inputs(signer: KeySigner) -> None:
    """A tracked payment the API server has not submitted yet keeps its inputs while another build waits."""
    chain = MemoryChain(auto_confirm=False)
    ref = chain.fund(signer.address, 40_000_000)
    ticks = iter(range(1000))
    sender = PaymentSender(chain, signer, wait_s=3, poll_s=0.001, clock=lambda: float(next(ticks)))
    p = sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="cbor-proof")
    sender.track("cbor-proof", p.tx_id, inputs=p.inputs, change=p.change, ttl_slot=TTL)
    with pytest.raises(InsufficientFundsError):
        sender.build(ada(fresh_address(), 39_000_000), ttl_slot=TTL, owner="big")
    assert chain.calls["in_mempool"] == 0  # not past its TTL: never judged dropped
    assert sender.in_flight() == {p.tx_id: "cbor-proof"} and ref in sender.reservations.reserved_refs()
    chain.submit(p.cbor)  # the server submits it after all
    chain.produce_block()
    sender.refresh()
    assert sender.in_flight() == {}


def test_inputs_are_reserved_before_signing(signer: KeySigner) -> None:
    """The reservation (the intent) is written before the key signs; a failing signer frees it again."""
    chain = MemoryChain()
    ref = chain.fund(signer.address, 40_000_000)
    seen: list[set[OutputRef]] = []

    class Watching:
        address = signer.address

        def sign(self, tx_body_hash: bytes) -> tuple[bytes, bytes]:
            seen.append(sender.reservations.reserved_refs())
            if len(seen) > 1:
                raise RuntimeError("hardware wallet unplugged")
            return signer.sign(tx_body_hash)

    sender = PaymentSender(chain, Watching(), wait_s=0)
    sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="a")
    assert seen == [{ref}]
    sender.release("a")
    with pytest.raises(RuntimeError):
        sender.build(ada(fresh_address(), 2_000_000), ttl_slot=TTL, owner="b")
    assert seen[1] == {ref} and sender.reservations.reserved_refs() == set()
