"""UTxO reservations: which inputs belong to in-flight payments, and whose change may be chained on.

A payment reserves its inputs before it is signed and keeps them until its transaction is
confirmed (or the payment is abandoned), so concurrent payments never pick the same input.
Once submitted, its change outputs are recorded as *pending*: usable as inputs by the next
payment while the transaction is still in the mempool. ``MemoryReservations`` keeps this in
memory; the agent persists the same interface in SQLite (``agent/sql_reservations.py``).
"""

from __future__ import annotations

import threading
from typing import Collection, Protocol, Sequence, runtime_checkable

from wallets.errors import WalletError
from wallets.types import OutputRef, Utxo


class ReservationConflict(WalletError):
    """Another owner already holds one of the inputs: select again without them."""

    def __init__(self, refs: Collection[OutputRef], *, holder: str | None = None) -> None:
        shown = ", ".join(str(r) for r in sorted(refs, key=lambda r: (r.tx_id, r.index)))
        super().__init__(f"inputs already reserved by another payment: {shown}")
        self.refs = frozenset(refs)
        self.holder = holder


@runtime_checkable
class UtxoReservations(Protocol):
    """Where reservations and pending change live; implementations must be safe across threads."""

    def reserve(self, owner: str, refs: Collection[OutputRef]) -> None:
        """Reserve every ref for ``owner``, all or nothing; ReservationConflict if another owner holds one."""
        ...

    def release(self, owner: str) -> None:
        """Drop ``owner``'s reservations and its pending records."""
        ...

    def reserved_refs(self) -> set[OutputRef]:
        """Every reserved ref, whoever holds it."""
        ...

    def owners(self) -> set[str]:
        """Every owner holding reservations or pending change (to reconcile after a restart)."""
        ...

    def record_pending(self, owner: str, tx_id: str, change: Sequence[Utxo]) -> None:
        """``owner``'s transaction ``tx_id`` was submitted; its ``change`` is usable until confirmed."""
        ...

    def pending_change(self) -> list[Utxo]:
        """Change outputs of submitted, unconfirmed transactions."""
        ...

    def clear_pending(self, tx_id: str) -> None:
        """``tx_id`` confirmed (or dropped): forget its pending change."""
        ...


class MemoryReservations:
    """In-memory ``UtxoReservations`` for one process; a lock makes each call atomic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: dict[OutputRef, str] = {}
        self._pending: dict[str, tuple[str, tuple[Utxo, ...]]] = {}

    def reserve(self, owner: str, refs: Collection[OutputRef]) -> None:
        """Reserve every ref for ``owner``, all or nothing; ReservationConflict if another owner holds one."""
        with self._lock:
            taken = {r for r in refs if self._holder.get(r, owner) != owner}
            if taken:
                holder = self._holder[next(iter(taken))]
                raise ReservationConflict(taken, holder=holder)
            for ref in refs:
                self._holder[ref] = owner

    def release(self, owner: str) -> None:
        """Drop ``owner``'s reservations and its pending records."""
        with self._lock:
            for ref in [r for r, o in self._holder.items() if o == owner]:
                del self._holder[ref]
            for tx_id in [t for t, (o, _) in self._pending.items() if o == owner]:
                del self._pending[tx_id]

    def reserved_refs(self) -> set[OutputRef]:
        """Every reserved ref, whoever holds it."""
        with self._lock:
            return set(self._holder)

    def owner_of(self, ref: OutputRef) -> str | None:
        """Who holds ``ref``, or None."""
        with self._lock:
            return self._holder.get(ref)

    def owners(self) -> set[str]:
        """Every owner holding reservations or pending change (to reconcile after a restart)."""
        with self._lock:
            return set(self._holder.values()) | {o for o, _ in self._pending.values()}

    def record_pending(self, owner: str, tx_id: str, change: Sequence[Utxo]) -> None:
        """``owner``'s transaction ``tx_id`` was submitted; its ``change`` is usable until confirmed."""
        with self._lock:
            self._pending[tx_id] = (owner, tuple(change))

    def pending_change(self) -> list[Utxo]:
        """Change outputs of submitted, unconfirmed transactions."""
        with self._lock:
            return [u for _, change in self._pending.values() for u in change]

    def clear_pending(self, tx_id: str) -> None:
        """``tx_id`` confirmed (or dropped): forget its pending change."""
        with self._lock:
            self._pending.pop(tx_id, None)

    def __repr__(self) -> str:
        with self._lock:
            return f"MemoryReservations(reserved={len(self._holder)}, pending={len(self._pending)})"
