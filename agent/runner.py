"""Workers that take jobs from the queue, run them, and record the outcome; plus the scheduler.

One step is :meth:`Runner.run_once`: fire due schedules, claim one job, execute it, record
done / retry-later / failed. :meth:`Runner.run` runs that step in N worker threads until told
to stop (SIGTERM) or, with ``until_idle``, until nothing is left to do. A worker that dies
leaves a lease that expires, and another worker takes the job again; while a job runs, its
lease is renewed in the background.

On :meth:`Runner.stop` (SIGTERM) no new job is claimed; the jobs in hand get
``stop_grace_s`` to reach a durable state (their waits are cut short by the agent's
``stopping`` event, see :class:`agent.errors.StopRequestedError`), then :meth:`Runner.run`
returns whatever is still busy. A job stopped mid-way keeps its lease; the next start takes
it back (its owner is gone) and resumes its payment from the ledger.

Waiting costs nothing: a job whose payment is sent and awaits settlement raises
:class:`JobParked`; the runner *parks* it (``awaiting_settlement``, durable, lease released,
due again at ``retry_at``) and the worker goes on with other jobs. A watcher thread following
the chain tip makes parked jobs due at each new block; resumed, a job presents the proof it
already holds (never a new payment). ``concurrency`` bounds the calls in flight (held by a
worker or parked); ``workers`` is only how many run at once.

Errors are told apart by type: transient ones (a 5xx, a timeout, the chain or the database
unavailable) are retried with exponential backoff and jitter up to the job's attempt limit;
everything else fails the job at once with its one-line reason.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Protocol

from agent.errors import (
    AgentError,
    ApprovalRequiredError,
    BudgetExceededError,
    StopRequestedError,
    StoreError,
    TransientApiError,
)
from agent.faults import crash_point
from agent.queue import LeaseLostError

log = logging.getLogger(__name__)


class JobStoreLike(Protocol):
    """The part of ``agent.queue.JobStore`` the runner uses."""

    def claim(self, worker_id: str, *, now: float, lease_s: float, fresh: bool = True) -> Any: ...
    def park(self, job_id: Any, *, retry_at: float, now: float, worker_id: str | None = None) -> Any: ...
    def wake_parked(self, *, now: float, only: Any = None) -> int: ...
    def parked_ids(self) -> list[Any]: ...
    def heartbeat(self, job_id: Any, worker_id: str, *, now: float, lease_s: float) -> Any: ...
    def complete(self, job_id: Any, *, result: Any, result_path: str | None, now: float,
                 worker_id: str | None = None) -> Any: ...
    def fail(self, job_id: Any, error: str, *, now: float, retry_at: float | None,
             worker_id: str | None = None) -> Any: ...
    def counts(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What an executed job produced: a small JSON summary and where the full result is."""

    result: dict[str, Any]
    result_path: str | None = None


class JobParked(Exception):
    """Raised by an executor: the job's payment is sent and settles later; park it, free the worker.

    Not a failure: the job keeps its state and proof, and is claimed again at ``retry_after_s``
    or sooner when a new block comes (:meth:`Runner.watch_chain`).
    """

    def __init__(self, reason: str, *, retry_after_s: float) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class JobExecutor(Protocol):
    """Runs one job (the API call, paying if asked) and returns its outcome or raises."""

    def execute(self, job: Any, *, worker_id: str) -> JobOutcome: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff, half jitter: after attempt n wait within ``[d/2, d]``, ``d = min(max_s, base_s * 2**(n-1))``."""

    base_s: float = 2.0
    max_s: float = 300.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        from wallets.backoff import backoff_s

        return backoff_s(attempt, base_s=self.base_s, max_s=self.max_s, jitter=0.5, rng=rng)


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying later: 5xx/timeouts, chain or database unavailable."""
    from agent.errors import PaymentInFlightError
    from wallets.errors import ChainUnavailableError, InputsSpentError

    return isinstance(exc, (TransientApiError, StoreError, ChainUnavailableError, InputsSpentError,
                            PaymentInFlightError, TimeoutError, ConnectionError))


OUTAGE_MAX_WAIT_S = 300.0
"""The longest pause between two tries while the chain or the API is down."""
OUTAGE_MIN_WAIT_S = 2.0


def outage_of(exc: BaseException) -> str | None:
    """What is down, in words (``the chain at ws://…``, ``the API at http://…``), or None.

    An outage pauses a job (it stays queued, no attempt used); other transient failures
    count against its attempts.
    """
    import re

    from wallets.errors import ChainUnavailableError, MempoolFullError

    text = str(exc)
    url = re.search(r"(?:wss?|https?)://[^\s)'\"]+", text)
    where = f" at {url.group(0).rstrip('.,:;')}" if url else ""
    if isinstance(exc, MempoolFullError):
        return f"room in the mempool of the chain{where}"
    if isinstance(exc, ChainUnavailableError):
        return f"the chain{where}"
    if isinstance(exc, TransientApiError) and exc.status == 0:
        return f"the API{where}"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "the network"
    return None


def outage_wait_s(outage_s: float, rng: random.Random) -> float:
    """Seconds before the next try: about half the outage so far, between 2 s and 5 minutes."""
    cap = min(OUTAGE_MAX_WAIT_S, max(OUTAGE_MIN_WAIT_S, outage_s / 2))
    return cap / 2 + rng.uniform(0, cap / 2)


def describe_error(exc: BaseException) -> str:
    """A failure as one line of words for a person (no Python class names)."""
    from wallets.errors import WalletError

    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    if isinstance(exc, (AgentError, WalletError)) or type(exc).__module__.startswith("sandbox."):
        return first or "failed (no detail)"
    return f"unexpected error: {first}" if first else f"unexpected error ({type(exc).__name__})"


@dataclass
class RunStats:
    """Counts of what a run did, for the progress line and the final summary."""

    done: int = 0
    parked: int = 0
    retried: int = 0
    failed: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Runner:
    """Claims and executes jobs. Pass everything in; nothing here reads config or the clock itself.

    Args:
        store: the job store.
        executor: runs one job.
        scheduler: optional; its ``run_once(now)`` is called before each claim.
        workers: worker threads for :meth:`run`.
        lease_s: how long a claimed job stays ours without a heartbeat.
        backoff: retry delays for transient failures.
        clock: epoch seconds (injected so tests control time).
        rng: jitter source.
        stop_grace_s: after :meth:`stop`, how long :meth:`run` waits for the jobs in hand.
        concurrency: calls in flight at most (held by a worker or parked); default ``workers``.
        tip: optional chain-tip reader (any value that changes at each block); with it,
            :meth:`run` starts a watcher thread that wakes parked jobs at each new block.
        tip_poll_s: how often the watcher reads the tip.
        landed: ``(parked job ids) -> ids or None``: at a new block, which parked calls' payments
            the chain now shows (only those are woken; the rest wait for the block that carries
            theirs, or their fallback retry); None, or without it: wake every parked call.
        block_interval_s: the chain's nominal time between blocks, if known: the watcher's
            measured mean starts from it (see :meth:`_park_delay_s`).
        budget_frees_at: ``(error, now) -> epoch or None``: when a refused budget has room again
            (None: never, e.g. a budget without a window); without it, over-budget jobs fail.
    """

    def __init__(self, store: JobStoreLike, executor: JobExecutor, *, scheduler: Any = None,
                 workers: int = 1, lease_s: float = 120.0, backoff: Backoff = Backoff(),
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 name: str = "runner", stop_grace_s: float = 10.0, concurrency: int | None = None,
                 tip: Callable[[], Any] | None = None, tip_poll_s: float = 0.25,
                 budget_frees_at: Callable[[BudgetExceededError, float], float | None] | None = None,
                 lanes: Callable[[int], Any] | None = None,
                 landed: Callable[[list[Any]], set[Any] | None] | None = None,
                 block_interval_s: float | None = None) -> None:
        if workers < 1:
            raise AgentError("workers must be at least 1")
        if concurrency is not None and concurrency < 1:
            raise AgentError("concurrency must be at least 1")
        self.store = store
        self.executor = executor
        self.scheduler = scheduler
        self.workers = workers
        self.lease_s = lease_s
        self.backoff = backoff
        self.clock = clock
        self.rng = rng or random.Random()
        self.name = name
        self.stop_grace_s = stop_grace_s
        self.budget_frees_at = budget_frees_at
        self.stats = RunStats()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._abandoned = threading.Event()
        """Set when :meth:`run` returned with jobs still in hand: they are left for the next start."""
        self.concurrency = concurrency if concurrency is not None else workers
        self.tip = tip
        self.tip_poll_s = tip_poll_s
        self._wake = threading.Event()
        self._flight_lock = threading.Lock()
        self._in_flight: set[Any] = set()  # jobs this runner holds or parked
        self._parked: set[Any] = set()  # of those, the parked ones (another runner may resume them)
        self._parks: dict[Any, int] = {}  # how often each call in flight parked (its fallback retry grows)
        self._slots_taken = 0  # claims under way that may start a new call
        self.leases = LeaseKeeper(self)
        self.lanes = lanes  # called with the queue depth at each new block (wallets.lanes.LaneKeeper.tend)
        self.landed = landed
        self._lanes_busy = threading.Lock()
        self._lanes_thread: threading.Thread | None = None
        self.block_interval_s: float | None = block_interval_s
        """The watcher's running mean of the time between blocks (from the nominal interval given,
        else None until two blocks were seen)."""
        self._watch_since: float | None = None  # when the watcher started, then when it saw the last block
        self._first_block_s: float | None = None  # watch start to first block: a lower bound of one interval

    @property
    def in_flight(self) -> int:
        """Calls in flight: jobs held by a worker or parked by this runner."""
        with self._flight_lock:
            return len(self._in_flight)

    # -- one step -----------------------------------------------------------------------
    def run_once(self, now: float | None = None, *, worker_id: str | None = None) -> Any:
        """Fire due schedules, then claim and run one due job. Return the job, or None if idle."""
        now = self.clock() if now is None else now
        worker_id = worker_id or f"{self.name}-0"
        if self.scheduler is not None:
            self.scheduler.run_once(now)
        job = self._claim(worker_id, now)
        if job is None:
            return None
        crash_point("after_claim")
        try:
            parked = self._execute(job, worker_id)
        except BaseException:
            self._release_slot(job.id)
            raise
        if parked:
            with self._flight_lock:
                self._parked.add(job.id)
        else:
            self._release_slot(job.id)
        return job

    def _claim(self, worker_id: str, now: float) -> Any:
        """Claim a job; a fresh one only while fewer than ``concurrency`` calls are in flight.

        At the limit with nothing else to do, the jobs this runner parked are checked against
        the store first: one resumed and finished by another runner (another host of a fleet)
        no longer holds a slot here.
        """
        for attempt in range(2):
            with self._flight_lock:
                fresh = len(self._in_flight) + self._slots_taken < self.concurrency
                self._slots_taken += fresh
            try:
                job = self.store.claim(worker_id, now=now, lease_s=self.lease_s, fresh=fresh)
                if job is not None:
                    with self._flight_lock:
                        self._in_flight.add(job.id)
                        self._parked.discard(job.id)
            finally:
                with self._flight_lock:
                    self._slots_taken -= fresh
            if job is not None or fresh or attempt or not self._forget_parked_elsewhere():
                return job
        return None

    def _forget_parked_elsewhere(self) -> bool:
        """Drop from the calls in flight the jobs we parked that are no longer parked; True if any."""
        with self._flight_lock:
            ours = set(self._parked)
        if not ours:
            return False
        gone = ours - set(self.store.parked_ids())
        with self._flight_lock:
            gone &= self._parked  # one our own worker resumed meanwhile is held, not gone
            self._parked -= gone
            self._in_flight -= gone
            for job_id in gone:
                self._parks.pop(job_id, None)
        return bool(gone)

    def _release_slot(self, job_id: Any) -> None:
        with self._flight_lock:
            self._in_flight.discard(job_id)
            self._parked.discard(job_id)
            self._parks.pop(job_id, None)

    def _park_delay_s(self, job_id: Any, hint_s: float) -> float:
        """How long a parked call waits before it is tried again without a new block.

        Without a tip watcher, the server's hint. With one, a new block wakes every parked job
        at once, so the hint is only the fallback for a server that settles without a block;
        it doubles each time the same call parks again (up to :data:`PARKED_RETRY_CAP_S`),
        so a thousand calls waiting for a 20 s block are not re-sent every second. With a
        ``landed`` reader it starts at :data:`PARKED_RETRY_LANDED_S`, or at twice the block
        interval the watcher measured if that is longer: the block that carries the payment
        wakes the call, so a fallback before it would only hear "pending" again (on 20 s
        blocks it did, about once per call).
        """
        hint_s = max(0.0, hint_s)
        if self.tip is None:
            return hint_s
        with self._flight_lock:
            parks = self._parks.get(job_id, 0)
            self._parks[job_id] = parks + 1
        # With ``landed`` a block wakes exactly the calls whose payment it carries: the fallback
        # only covers a payment landed unseen (its outputs already spent), so it starts later.
        base_s = hint_s
        if self.landed is not None:
            base_s = max(hint_s, PARKED_RETRY_LANDED_S, BLOCKS_BEFORE_FALLBACK * self._block_estimate_s())
        return max(hint_s, min(base_s * 2 ** min(parks, 16), PARKED_RETRY_CAP_S))

    def _park(self, job: Any, worker_id: str, parked: JobParked) -> None:
        now = self.clock()
        retry_at = now + self._park_delay_s(job.id, parked.retry_after_s)
        self.store.park(job.id, retry_at=retry_at, now=now, worker_id=worker_id)
        crash_point("after_park")
        with self._stats_lock:
            self.stats.parked += 1
        log.info("job %s parked: %s; resumes at the next block or in %.1fs", job.id, parked, retry_at - now)

    def _execute(self, job: Any, worker_id: str) -> bool:
        """Run ``job`` and record its outcome; True if it was parked (still in flight)."""
        log.info("job %s (%s) started by %s, attempt %s", job.id, job.kind, worker_id, job.attempts)
        parked: JobParked | None = None
        with self.leases.holding(job.id, worker_id):
            try:
                outcome = self.executor.execute(job, worker_id=worker_id)
            except JobParked as exc:
                parked = exc
            except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
                try:
                    self._record_failure(job, exc, worker_id)
                except LeaseLostError as lost:
                    self._lost(job, lost)
                return False
        if parked is not None:
            try:
                self._park(job, worker_id, parked)  # durable: when stopping, the next start resumes it
            except LeaseLostError as lost:
                self._lost(job, lost)
                return False
            return True
        try:
            self.store.complete(job.id, result=outcome.result, result_path=outcome.result_path, now=self.clock(),
                                worker_id=worker_id)
        except LeaseLostError as lost:
            self._lost(job, lost)
            return False
        with self._stats_lock:
            self.stats.done += 1
        log.info("job %s done", job.id)
        return False

    @staticmethod
    def _lost(job: Any, exc: Exception) -> None:
        # Our lease ran out (a stalled heartbeat) and another worker, maybe on another host,
        # holds the job now: its outcome is that worker's to record, never ours.
        log.warning("job %s: %s; leaving it to the worker that holds it", job.id, exc)

    def _record_failure(self, job: Any, exc: Exception, worker_id: str | None = None) -> None:
        message = describe_error(exc)
        if isinstance(exc, StopRequestedError) or self._abandoned.is_set():
            # A job abandoned at the end of the grace time fails only because the process is
            # closing around it (clients closed): that is no verdict on the job either.
            # Not a failure: the job keeps its lease and resumes at the next start.
            log.info("job %s stopped mid-way (%s); it resumes at the next start", job.id, message)
            return
        now = self.clock()
        if self._wait(job, exc, message, now):
            return
        if is_transient(exc) and job.attempts < job.max_attempts:
            retry_at = now + self.backoff.delay(job.attempts, self.rng)
            log.warning("job %s: %s; retrying in %.1fs", job.id, message, retry_at - now)
            self.store.fail(job.id, message, now=now, retry_at=retry_at, worker_id=worker_id)
            with self._stats_lock:
                self.stats.retried += 1
            return
        if not isinstance(exc, (AgentError,)) and not _is_package_error(exc):
            log.exception("job %s failed with an unexpected error", job.id)
        else:
            log.error("job %s failed: %s", job.id, message)
        self.store.fail(job.id, message, now=now, retry_at=None, worker_id=worker_id)
        with self._stats_lock:
            self.stats.failed += 1
            self.stats.errors.append(f"job {job.id}: {message}")

    def _wait(self, job: Any, exc: Exception, message: str, now: float) -> bool:
        """Park ``job`` if ``exc`` means "not now" rather than "failed"; True if it was parked."""
        from agent.errors import PaymentInFlightError
        from agent.queue import (AWAITING_APPROVAL, AWAITING_BUDGET, IN_FLIGHT_PREFIX, OUTAGE_PREFIX, QUEUED,
                                 in_flight_since, outage_since)

        wait = getattr(self.store, "wait", None)
        if wait is None:
            return False
        approval_id = getattr(exc, "approval_id", None)
        if isinstance(exc, ApprovalRequiredError) or (approval_id and getattr(exc, "reason", "") == "payee_changed"):
            wait(job.id, AWAITING_APPROVAL, message, now=now)
            log.info("job %s awaits approval %s", job.id, approval_id)
            self._note(f"job {job.id} awaits approval: cardano-agent approve {approval_id}")
            return True
        if isinstance(exc, BudgetExceededError) and self.budget_frees_at is not None:
            frees = self.budget_frees_at(exc, now)
            if frees is None:
                return False
            until = datetime.fromtimestamp(frees, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            wait(job.id, AWAITING_BUDGET, f"{message}; waiting until {until}, when the window has room",
                 now=now, run_at=frees)
            log.info("job %s awaits budget %s until %s", job.id, exc.budget, until)
            self._note(f"job {job.id} awaits budget {exc.budget!r} until {until}")
            return True
        if isinstance(exc, PaymentInFlightError):
            # Not a failed try: the payment may still land, and the chain decides within its TTL.
            # Failing the job after a few quick retries would lose a job whose payment lands.
            since = in_flight_since(job.last_error) or _iso(now)
            delay = outage_wait_s(now - _epoch(since, now), self.rng)
            wait(job.id, QUEUED, f"{IN_FLIGHT_PREFIX}{since}: {message}", now=now, run_at=now + delay)
            log.info("job %s waits for its payment's fate on chain (since %s): %s", job.id, since, message)
            self._note(f"job {job.id} waits for the chain to show whether its payment landed")
            return True
        what = outage_of(exc)
        if what is None:
            return False
        previous = job.last_error or ""
        began = outage_since(previous) if previous.startswith(OUTAGE_PREFIX + what) else None
        since = began or _iso(now)
        delay = outage_wait_s(now - _epoch(since, now), self.rng)
        wait(job.id, QUEUED, f"{OUTAGE_PREFIX}{what} since {since}: {message}", now=now, run_at=now + delay)
        if what.startswith("room in the mempool"):
            log.warning("job %s: no %s (since %s); trying again in %.0fs", job.id, what[5:], since, delay)
            self._note(f"job {job.id} waits for {what} (full since {since}); it stays queued")
        else:
            log.warning("job %s: %s is unreachable (since %s); trying again in %.0fs", job.id, what, since, delay)
            self._note(f"job {job.id} waits for {what} (unreachable since {since}); it stays queued")
        return True

    def _note(self, line: str) -> None:
        with self._stats_lock:
            self.stats.waiting += 1
            self.stats.notes.append(line)

    # -- threads ------------------------------------------------------------------------
    def stop(self) -> None:
        """Claim no more jobs; :meth:`run` returns once the jobs in hand end or ``stop_grace_s`` passes."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Make parked jobs due now and wake idle workers (a new block came).

        With ``landed``, only the parked calls whose payment the chain now shows: re-sending
        the others would only hear "pending" again.
        """
        try:
            only = None
            if self.landed is not None:
                parked = self.store.parked_ids()
                if not parked:
                    return
                try:
                    only = self.landed(parked)
                except Exception as exc:  # noqa: BLE001 - not knowing, wake them all
                    log.debug("settlement watcher: could not tell which payments landed: %s", exc)
            self.store.wake_parked(now=self.clock(), only=only)
        except StoreError as exc:
            log.warning("could not wake parked jobs: %s", exc)
        finally:
            self._wake.set()

    def watch_chain(self, done: threading.Event | None = None) -> None:
        """Follow the chain tip until stopped (or ``done``); at each new block, wake the parked jobs."""
        assert self.tip is not None
        done = done or threading.Event()
        last: Any = None
        last_at: float | None = None  # when the last new block was seen (not the first tip read)
        watch_start = self._watch_since = self.clock()
        while not self._stop.is_set() and not done.is_set():
            try:
                tip = self.tip()
            except Exception as exc:  # noqa: BLE001 - parked jobs still resume at their retry_at
                log.debug("settlement watcher: tip unavailable: %s", exc)
                tip = last
            if tip != last:
                if last is not None:
                    now = self.clock()
                    if last_at is not None:
                        self._saw_interval(now - last_at)
                    else:
                        self._first_block_s = max(0.0, now - watch_start)
                    last_at = self._watch_since = now
                    self.wake()
                    self.tend_lanes()
                last = tip
            done.wait(self.tip_poll_s)

    def _block_estimate_s(self) -> float:
        """How far apart blocks are, as far as the watcher can tell: the mean interval, or before two
        blocks were seen a lower bound (the wait for the first one); and at least the time the
        watcher has waited since its last block (0 without a watcher)."""
        since = self._watch_since
        waited = self.clock() - since if since is not None else 0.0
        known = self.block_interval_s if self.block_interval_s is not None else self._first_block_s
        return max(known or 0.0, waited)

    def _saw_interval(self, seconds: float) -> None:
        """Fold one block interval into the running mean (recent blocks weigh more)."""
        seconds = max(0.0, seconds)
        old = self.block_interval_s
        self.block_interval_s = seconds if old is None else old + BLOCK_INTERVAL_WEIGHT * (seconds - old)

    def tend_lanes(self, *, wait: bool = False) -> None:
        """Let the wallet split or merge its lanes for the queue's depth, in a thread of its own (one at a time).

        A split waits like any payment when the mempool is full: it must not hold up the watcher.
        """
        if self.lanes is None or self._stop.is_set() or not self._lanes_busy.acquire(blocking=False):
            return
        tend = self.lanes

        def body() -> None:
            try:
                counts = self.store.counts()
                tend(counts.get("queued", 0) + counts.get("running", 0))
            except Exception as exc:  # noqa: BLE001 - lanes are an optimisation: payments go on without them
                log.warning("lanes: not rearranged: %s", exc)
            finally:
                self._lanes_busy.release()

        thread = threading.Thread(target=body, name=f"{self.name}-lanes", daemon=True)
        self._lanes_thread = thread
        thread.start()
        if wait:
            thread.join()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, until_idle: bool = False, poll_s: float = 0.5,
            on_progress: Callable[[dict[str, int], RunStats], None] | None = None) -> RunStats:
        """Run the workers until :meth:`stop` (or, with ``until_idle``, until the queue is empty)."""
        threads = [threading.Thread(target=self._worker, args=(f"{self.name}-{n}", until_idle, poll_s),
                                    name=f"{self.name}-{n}", daemon=True)
                   for n in range(self.workers)]
        watch_done = threading.Event()
        if self.tip is not None:
            threading.Thread(target=self.watch_chain, args=(watch_done,), name=f"{self.name}-watch",
                             daemon=True).start()
        for t in threads:
            t.start()
        stop_deadline: float | None = None
        try:
            while any(t.is_alive() for t in threads):
                if on_progress is not None:
                    on_progress(self.store.counts(), self.stats)
                for t in threads:
                    t.join(timeout=poll_s if stop_deadline is None else min(poll_s, 0.05))
                if self._stop.is_set():
                    now = time.monotonic()
                    stop_deadline = stop_deadline if stop_deadline is not None else now + self.stop_grace_s
                    if now >= stop_deadline:
                        busy = sum(t.is_alive() for t in threads)
                        self._abandoned.set()
                        if busy:
                            log.warning("stopping with %d job(s) still in hand after %.0fs; they resume at "
                                        "the next start", busy, self.stop_grace_s)
                        break
        except KeyboardInterrupt:
            self.stop()
            for t in threads:
                t.join(timeout=self.stop_grace_s)
        watch_done.set()
        lanes = self._lanes_thread
        if lanes is not None and lanes.is_alive():
            lanes.join(self.stop_grace_s)  # a split or merge under way ends recorded (else recovery resolves it)
        if on_progress is not None:
            on_progress(self.store.counts(), self.stats)
        return self.stats

    def _worker(self, worker_id: str, until_idle: bool, poll_s: float) -> None:
        from wallets.backoff import backoff_s

        failures = 0
        while not self._stop.is_set():
            try:
                job = self.run_once(worker_id=worker_id)
                failures = 0
            except StoreError as exc:
                # Busy, or the database is unreachable: wait longer each time (up to a minute),
                # then try again; the job's durable state decides what happens next.
                failures += 1
                wait_s = backoff_s(min(failures, 7), base_s=2 * poll_s, max_s=60.0)
                log.warning("%s: database unavailable (%s); retrying in %.1fs", worker_id, exc, wait_s)
                self._stop.wait(wait_s)
                continue
            if job is not None:
                continue
            if until_idle and _idle(self.store.counts(), self.store, self.clock()):
                return
            if self._wake.wait(poll_s):
                self._wake.clear()


ACTIVE_STATES = ("queued", "running", "paying", "awaiting_settlement")
PARKED_RETRY_CAP_S = 60.0
"""With a tip watcher, the longest a parked call waits for a retry without a new block."""
PARKED_RETRY_LANDED_S = 8.0
"""With a landed reader too, the first fallback retry of a parked call (then doubling to the cap)."""
BLOCKS_BEFORE_FALLBACK = 2.0
"""With a landed reader, the first fallback retry waits at least this many mean block intervals."""
BLOCK_INTERVAL_WEIGHT = 0.25
"""Weight of the newest interval in the watcher's running mean of block intervals."""


def process_worker_name() -> str:
    """A worker-name prefix that says which process on which host holds a lease: ``host:pid``."""
    from agent.workers import process_name

    return process_name()


def lease_owner_is_dead(owner: str, *, host: str | None = None) -> bool:
    """True if ``owner`` (``host:pid-n``) is a worker of a process on this host that no longer exists.

    Workers of other hosts are never judged dead here: their leases simply run out.
    """
    host = host or socket.gethostname()
    owner_host, sep, rest = owner.rpartition(":")
    if not sep or owner_host != host:
        return False
    pid_text = rest.split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    from agent.workers import pid_exists

    return not pid_exists(pid)


def _idle(counts: dict[str, int], store: Any = None, now: float | None = None) -> bool:
    """Nothing left to do now: no job active, and every queued one paused by an outage.

    Jobs awaiting an approval or a budget window are not work for this run; a job paused
    because the chain or the API is down stays queued for the next run (``--until-idle``
    does not wait out an outage).
    """
    if any(counts.get(state, 0) for state in ACTIVE_STATES if state != "queued"):
        return False
    queued = counts.get("queued", 0)
    if not queued:
        return True
    if store is None or not hasattr(store, "list"):
        return False
    from agent.queue import OUTAGE_PREFIX

    paused = [j for j in store.list(state="queued", limit=queued + 1)
              if (j.last_error or "").startswith(OUTAGE_PREFIX) and (now is None or j.run_at > now)]
    return len(paused) >= queued


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def _epoch(iso: str, default: float) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return default


class LeaseKeeper:
    """One thread renews the leases of every job a runner holds, every third of the lease.

    A thread per running job cost a thread start and join per call, and hundreds of threads with
    ``--concurrency`` in the hundreds. A job's lease is renewed only while it is held: leaving
    :meth:`holding` waits for a renewal under way, so none lands after the job's outcome.
    """

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._held: dict[Any, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, job_id: Any, worker_id: str) -> Iterator[None]:
        """Renew ``job_id``'s lease (held by ``worker_id``) until the block ends."""
        if self._runner.lease_s < 3:
            yield
            return
        with self._lock:
            self._held[job_id] = worker_id
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"{self._runner.name}-leases", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(job_id, None)

    def held(self) -> dict[Any, str]:
        """The jobs whose leases are kept now: ``{job id: worker id}``."""
        with self._lock:
            return dict(self._held)

    def beat_once(self) -> int:
        """Renew every held lease now; return how many were renewed (a failed renewal only shortens it)."""
        runner = self._runner
        renewed = 0
        with self._lock:
            for job_id, worker_id in list(self._held.items()):
                try:
                    runner.store.heartbeat(job_id, worker_id, now=runner.clock(), lease_s=runner.lease_s)
                    renewed += 1
                except Exception as exc:  # noqa: BLE001 - a missed beat only shortens the lease
                    log.warning("heartbeat for job %s failed: %s", job_id, exc)
        return renewed

    def _run(self) -> None:
        pause = threading.Event()  # never set: the wait is the beat's interval
        while True:
            pause.wait(self._runner.lease_s / 3)
            with self._lock:
                if not self._held:
                    self._thread = None  # the next held job starts a new one
                    return
            self.beat_once()


def _is_package_error(exc: BaseException) -> bool:
    from wallets.errors import WalletError

    return isinstance(exc, WalletError)
