"""Crash recovery from evidence: who owns an unfinished payment, and whether its transaction landed.

Ownership: every payment row records the live process paying it (``host:pid:n``, one ``n`` per
payer in the process). Recovery takes over only rows whose owner is gone: a process of this
host that no longer exists, a payer of this process that was closed, a process of another
host whose lease in the shared store ran out (``agent.workers``), or, for another host's
process that holds no lease, a row untouched for :data:`FOREIGN_OWNER_STALE_S`.

Evidence: :func:`judge` says what the chain knows about a signed transaction, from the
mempool and from chain sync read from the point the row was signed at (never from the mere
absence of unspent outputs, which a payee's sweep or a chained payment removes):

- ``landed``: a block holds it (or one of its outputs is on the ledger);
- ``pending``: it waits in the mempool;
- ``never``: it can never land: another transaction on the chain spent one of its inputs,
  or one of its inputs is change of a payment of ours that never landed, or that landed and
  whose change was spent before this transaction was signed (``parent_of``), or its TTL has passed (the chain read reaches a block at or past it, or the clock is
  :data:`EXPIRY_GRACE_SLOTS` past it) while it is in no block from the signing point and not
  in the mempool;
- ``absent``: no block holds it and it is not in the mempool, but its TTL is open (it may
  still be submitted, byte for byte);
- ``unknown``: the chain could not be read, or holds no history from the signing point.

Rows signed before signing points were recorded are judged by their inputs instead: one still
unspent proves the transaction is in no block (a landed transaction spent them all).

Only ``never`` lets a payment go (its budget charge dropped, its invoice payable again).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from wallets.errors import ChainError
from wallets.types import OutputRef

if TYPE_CHECKING:
    from agent.workers import ProcessRegistry
    from wallets.chain import Chain

log = logging.getLogger(__name__)

LANDED, PENDING, NEVER, ABSENT, UNKNOWN = "landed", "pending", "never", "absent", "unknown"
EXPIRY_GRACE_SLOTS = 120
"""Past its TTL by the clock, a transaction counts as never landing only once the chain read
reaches a block at or past the TTL, or this many slots later (a block made just before the TTL
may take that long to reach the node or the backend's index)."""
FOREIGN_OWNER_STALE_S = 3600.0
"""A row owned by a process of another host is taken over once untouched this long."""

_counter = itertools.count(1)
_live: set[str] = set()
_live_lock = threading.Lock()


def new_owner() -> str:
    """A fresh owner id for a payer of this process (``host:pid:n``), registered as alive."""
    from agent.workers import process_name

    owner = f"{process_name()}:{next(_counter)}"
    with _live_lock:
        _live.add(owner)
    return owner


def forget_owner(owner: str) -> None:
    """The payer ``owner`` is closed: its unfinished rows may be recovered (by this process too)."""
    with _live_lock:
        _live.discard(owner)


def owner_is_gone(owner: str | None, *, updated_at: float, now: float,
                  registry: ProcessRegistry | None = None) -> bool:
    """True if nothing alive pays rows of ``owner`` any more (rows without an owner predate owners).

    ``registry`` (an ``agent.workers.ProcessRegistry`` on the shared store) answers for another
    host's process that holds a lease there: gone once its lease ran out, never while it runs.
    """
    if not owner:
        return True
    from agent.workers import this_host

    host, _, rest = owner.partition(":")
    pid_text, _, _n = rest.partition(":")
    if host != this_host():
        verdict = registry.judge(owner, now=now) if registry is not None else None
        if verdict is not None:
            return verdict
        return now - updated_at > FOREIGN_OWNER_STALE_S
    if not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        with _live_lock:
            return owner not in _live
    from agent.workers import pid_exists

    return not pid_exists(pid)


class SignedTx(Protocol):
    """What :func:`judge` reads of a payment: its signed transaction and the chain point it was signed at.

    ``agent.ledger.PaymentRow`` is one. Read-only properties, so frozen rows qualify.
    """

    @property
    def tx_id(self) -> str | None: ...
    @property
    def inputs(self) -> Sequence[OutputRef]: ...
    @property
    def outputs(self) -> Sequence[object]: ...
    @property
    def ttl_slot(self) -> int | None: ...
    @property
    def sync_slot(self) -> int | None: ...
    @property
    def sync_id(self) -> str | None: ...


class ParentPayment(SignedTx, Protocol):
    """A payment whose change another one spends (``parent_of``): also its id, state and why it was released."""

    @property
    def id(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def reason(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Evidence:
    """A verdict on a signed transaction (one of the module's five) and what showed it."""

    verdict: str
    detail: str

    @property
    def out_there(self) -> bool:
        """True if the transaction left the wallet: it is in a block or in the mempool."""
        return self.verdict in (LANDED, PENDING)


def judge(chain: Chain, row: SignedTx, *, slot_now: int,
          parent_of: Callable[[str], ParentPayment | None] | None = None) -> Evidence:
    """What the chain says about ``row``'s signed transaction (see the module docstring).

    Args:
        chain: a ``wallets.chain.Chain``.
        row: a :class:`SignedTx` (an ``agent.ledger.PaymentRow``): ``tx_id``, ``inputs``,
            ``ttl_slot`` and its signing point (``sync_slot``, ``sync_id``).
        slot_now: the ledger's current slot (by the chain's clock).
        parent_of: the payment row whose transaction has a given id, or None; lets a transaction
            chained on a payment's change be judged by that payment's fate.
    """
    evidence = _judge(chain, row, slot_now=slot_now)
    if evidence.verdict != ABSENT or parent_of is None or not row.inputs:
        return evidence
    return _judge_by_parents(chain, row, slot_now=slot_now, parent_of=parent_of) or evidence


def _judge_by_parents(chain: Chain, row: SignedTx, *, slot_now: int,
                      parent_of: Callable[[str], ParentPayment | None]) -> Evidence | None:
    """An absent transaction with an input gone from the ledger: can that input ever be spent by it?

    The input is change of one of our payments (a chained payment). If that payment can never
    land, the input will never exist. If it is in a block, the input was spent by another
    transaction: this one is in no block from its signing point, and was not in one before it
    was signed. The ledger is read *before* this transaction is looked for again, so a block
    made in between cannot pass for that other transaction.
    """
    try:
        live = {u.ref for u in chain.utxos_by_refs(list(row.inputs))}
    except ChainError:
        return None
    gone = [ref for ref in row.inputs if ref not in live]
    if not gone:
        return None
    again = _judge(chain, row, slot_now=slot_now)
    if again.verdict != ABSENT:
        return again
    for ref in gone:
        parent = parent_of(ref.tx_id)
        if parent is None or parent.tx_id == row.tx_id:
            continue
        if parent.state == "released":
            return Evidence(NEVER, f"its input {ref} is change of payment {parent.id}, which never landed "
                                   f"({parent.reason}); {again.detail}")
        fate = _judge(chain, parent, slot_now=slot_now)
        if fate.verdict == LANDED:
            return Evidence(NEVER, f"its input {ref}, change of payment {parent.id} ({fate.detail}), was spent "
                                   f"by another transaction; {again.detail}")
        if fate.verdict == NEVER:
            return Evidence(NEVER, f"its input {ref} is change of payment {parent.id}, which can never land "
                                   f"({fate.detail}); {again.detail}")
    return None


def _judge(chain: Chain, row: SignedTx, *, slot_now: int) -> Evidence:
    tx_id = row.tx_id
    if tx_id is None:
        return Evidence(UNKNOWN, "no transaction was signed")
    try:
        if chain.in_mempool(tx_id):
            return Evidence(PENDING, "in the mempool")
        # Positive evidence needs no history: an output of the transaction on the ledger.
        if chain.utxos_by_refs([OutputRef(tx_id, i) for i in range(len(row.outputs) + 1)]):
            return Evidence(LANDED, "an output of it is on the ledger")
    except ChainError as exc:
        return Evidence(UNKNOWN, f"the chain could not be read: {exc}")
    if row.sync_id is None or row.sync_slot is None:
        return _judge_by_inputs(chain, row, slot_now=slot_now)
    try:
        found = chain.find_transaction(tx_id, since=(row.sync_slot, row.sync_id), inputs=row.inputs)
    except ChainError as exc:  # IntersectionNotFoundError included: no conclusion either way
        return Evidence(UNKNOWN, f"the chain could not be read from slot {row.sync_slot}: {exc}")
    if found.block is not None:
        return Evidence(LANDED, f"in block {found.block[1][:16]} at slot {found.block[0]}")
    if found.spent_by:
        ref, other = next(iter(found.spent_by.items()))
        return Evidence(NEVER, f"its input {ref} was spent by transaction {other} "
                               f"(chain read from slot {row.sync_slot} to {found.tip_slot})")
    if row.ttl_slot is not None and (found.tip_slot >= row.ttl_slot
                                     or slot_now >= row.ttl_slot + EXPIRY_GRACE_SLOTS):
        return Evidence(NEVER, f"TTL slot {row.ttl_slot} passed (now slot {max(slot_now, found.tip_slot)}); "
                               f"in no block from slot {row.sync_slot} and not in the mempool")
    return Evidence(ABSENT, f"in no block from slot {row.sync_slot} to {found.tip_slot}, not in the mempool")


def _judge_by_inputs(chain: Chain, row: SignedTx, *, slot_now: int) -> Evidence:
    """Without a signing point (rows written before chain sync): an input still unspent proves it is not in a block.

    A transaction that landed spent every one of its inputs, so one of them unspent on the
    ledger, read after the tip, means no block up to that tip holds it; past its TTL, never.
    """
    try:
        tip_slot = chain.tip().slot
        unspent = chain.utxos_by_refs(list(row.inputs)) if row.inputs else []
    except ChainError as exc:
        return Evidence(UNKNOWN, f"the chain could not be read: {exc}")
    if not unspent:
        return Evidence(UNKNOWN, "no signing point recorded, and its inputs are spent: only history could tell")
    held = unspent[0].ref
    if row.ttl_slot is not None and (tip_slot >= row.ttl_slot or slot_now >= row.ttl_slot + EXPIRY_GRACE_SLOTS):
        return Evidence(NEVER, f"TTL slot {row.ttl_slot} passed and its input {held} is still unspent")
    return Evidence(ABSENT, f"its input {held} is still unspent; not in the mempool")
