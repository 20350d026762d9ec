"""The agent as a library: ``Agent.open(home)`` assembles config, wallet, chain, budgets and ledger.

Everything is opened lazily: reading the queue or the budgets needs neither the passphrase
nor the chain; only paying unlocks the wallet and connects to Ogmios.

    from agent import Agent, TClient
    agent = Agent.open(home="~/.cardano-agent")
    t = TClient(agent)
    print(t.chat("What is Cardano?").reply)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from agent.approvals import Approvals, PayeePins
from agent.budget import BudgetBook
from agent.config import AgentConfig, load_config
from agent.errors import ConfigError
from agent.ledger import SpendLedger
from agent.logs import register_secret
from agent.queue import SqlJobStore
from agent.store import Database

if TYPE_CHECKING:
    from agent.payer import WalletPayer
    from agent.runner import Runner, RunStats
    from wallets.chain import Chain

log = logging.getLogger(__name__)

PASSPHRASE_ENV = "CARDANO_AGENT_PASSPHRASE"
CLOCK_SKEW_WARN_S = 60
"""``status`` warns when the local clock is this far behind the chain."""


def open_chain(config: Any, *, timeout_s: float = 10.0) -> Chain:
    """The ``wallets.chain.Chain`` that ``[chain]`` configures: ``OgmiosChain`` or ``BlockfrostChain``.

    Blockfrost's project id comes from ``BLOCKFROST_PROJECT_ID``; a devnet home without one uses
    the sandbox's. Off the devnet a latest block older than ten minutes means Blockfrost's index
    lags, and paying waits (retryably) rather than trusting it; and absence (a transaction in no
    block, an output unspent) is concluded only from an index at most a minute behind the clock,
    well inside recovery's expiry grace (``agent.recovery.EXPIRY_GRACE_SLOTS``).

    Raises:
        BlockfrostAuthError: the Blockfrost backend without a project id.
    """
    if config.backend == "blockfrost":
        from wallets.blockfrost import SANDBOX_PROJECT_ID, BlockfrostChain

        project_id = config.blockfrost_project_id or (SANDBOX_PROJECT_ID if config.network == "devnet" else "")
        public = config.network != "devnet"  # the sandbox indexes every block at once
        return BlockfrostChain(config.blockfrost_url, project_id, network=config.network, timeout_s=timeout_s,
                               max_tip_lag_s=600.0 if public else None,
                               evidence_max_lag_s=60.0 if public else None)
    from wallets.ogmios import OgmiosChain

    return OgmiosChain(config.ogmios_url, timeout_s=timeout_s)


OGMIOS_URL_ENV = "CARDANO_AGENT_OGMIOS_URL"
"""An Ogmios URL that beats ``[chain]`` in agent.toml for the wallet commands."""


def resolve_ogmios_url(home: Path, url: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The Ogmios URL: ``url`` (given explicitly), then ``$CARDANO_AGENT_OGMIOS_URL``, then ``agent.toml``.

    Raises:
        ConfigError: none of them is set, the URL is not ws:// or wss://, or agent.toml does not parse.
    """
    env = os.environ if env is None else env
    url = url or env.get(OGMIOS_URL_ENV) or load_config(home, env).chain.ogmios_url or None
    if not url:
        raise ConfigError(
            f"no Ogmios URL: pass --ogmios-url, set {OGMIOS_URL_ENV}, or set ogmios_url under [chain] "
            f"in {home / 'agent.toml'}"
        )
    if not url.startswith(("ws://", "wss://")):
        raise ConfigError(f"the Ogmios URL must start with ws:// or wss://, got {url!r}")
    return url


def chain_for_home(home: Path, *, ogmios_url: str | None = None, env: Mapping[str, str] | None = None) -> Chain:
    """The chain a home's wallet commands talk to: an Ogmios URL given (or in the environment) wins;
    else ``[chain]`` of agent.toml decides (Blockfrost or Ogmios)."""
    env = os.environ if env is None else env
    if not ogmios_url and not env.get(OGMIOS_URL_ENV):
        chain = load_config(home, env).chain
        if chain.backend == "blockfrost":
            return open_chain(chain)
    from wallets.ogmios import OgmiosChain

    return OgmiosChain(resolve_ogmios_url(home, ogmios_url, env))


def tighten_home(home: Path) -> None:
    """Make the home owner-only: the directory 0700, agent.toml and the database files 0600.

    A home made by an older version, or by hand under a permissive umask, is tightened on
    open; a file this user cannot change (another owner, a read-only mount) is left alone.
    """
    import stat

    from agent.store import DB_FILENAME

    targets = [(home, 0o700)] + [(home / name, 0o600) for name in
                                 ("agent.toml", DB_FILENAME, f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm")]
    for path, mode in targets:
        try:
            current = stat.S_IMODE(path.stat().st_mode)
            if current & 0o077:
                os.chmod(path, current & mode)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("could not restrict %s to its owner: %s", path, exc.strerror or exc)


class Agent:
    """One agent home: its configuration, database, wallet and chain connection.

    Use :meth:`open`; close with :meth:`close` (or use it as a context manager).
    """

    def __init__(self, config: AgentConfig, db: Database, *, passphrase: str | Callable[[], str] | None = None,
                 chain: Chain | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.home = config.home
        self.db = db
        self.clock = clock
        self.jobs = SqlJobStore(db)
        self.budgets = BudgetBook(db, config.budgets)
        self.ledger = SpendLedger(db, self.budgets)
        self.pins = PayeePins(db)
        self.approvals = Approvals(db)
        self._passphrase = passphrase
        self._chain = chain
        self._owns_chain = chain is None
        self._wallet: Any = None
        self._payer: WalletPayer | None = None
        self._auths: dict[str | None, Any] = {}
        self._lock = threading.RLock()
        self.stopping = threading.Event()
        """Set on SIGTERM: waits (pending settlement, retry backoff) end and no new payment starts."""
        self._runner: Runner | None = None

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or raise StopRequestedError as soon as the agent is stopping."""
        from agent.errors import StopRequestedError

        if self.stopping.wait(max(0.0, seconds)):
            raise StopRequestedError("the agent is stopping: wait cut short; the job resumes at the next start")

    @classmethod
    def open(cls, home: str | Path = "~/.cardano-agent", *, passphrase: str | Callable[[], str] | None = None,
             env: Mapping[str, str] | None = None, chain: Any = None,
             clock: Callable[[], float] = time.time) -> "Agent":
        """Open the agent in ``home``: load ``agent.toml`` and the database (created if missing).

        Args:
            home: the agent home directory.
            passphrase: the wallet passphrase, or a function asked for it when paying first
                needs it; default ``$CARDANO_AGENT_PASSPHRASE``.
            env: environment for overrides (default ``os.environ``).
            chain: a ``wallets.chain.Chain`` to use instead of connecting to Ogmios.
            clock: epoch seconds.
        """
        env = os.environ if env is None else env
        home_path = Path(home).expanduser()
        config = load_config(home_path, env)
        if passphrase is None and env.get(PASSPHRASE_ENV):
            passphrase = env[PASSPHRASE_ENV]
        if config.api.api_key:
            register_secret(config.api.api_key)
        if config.chain.blockfrost_project_id:
            register_secret(config.chain.blockfrost_project_id)
        tighten_home(home_path)
        db = Database.open(home_path, config.store.url)
        tighten_home(home_path)  # the database files now exist
        return cls(config, db, passphrase=passphrase, chain=chain, clock=clock)

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Agent(home={str(self.home)!r}, network={self.config.chain.network!r}, wallet={self.config.wallet.name!r})"

    # -- wallet and chain -----------------------------------------------------------------
    @property
    def keystore(self) -> Any:
        from wallets.keystore import Keystore

        return Keystore(self.home / "wallets")

    @property
    def wallet_address(self) -> str:
        """The configured wallet's address (read from the keystore header, no passphrase)."""
        return self.keystore.info(self.config.wallet.name).address

    def wallet(self) -> Any:
        """The unlocked wallet (asks for the passphrase once)."""
        with self._lock:
            if self._wallet is None:
                info = self.keystore.info(self.config.wallet.name)
                if info.network != self.config.chain.network:
                    raise ConfigError(f"wallet {info.name!r} is on {info.network}, but agent.toml [chain] "
                                      f"network is {self.config.chain.network}")
                secret = self._passphrase() if callable(self._passphrase) else self._passphrase
                if not secret:
                    raise ConfigError(f"paying needs the passphrase of wallet {info.name!r}: "
                                      f"set {PASSPHRASE_ENV} or run interactively")
                register_secret(secret)
                self._wallet = self.keystore.unlock(info.name, secret)
            return self._wallet

    @property
    def chain(self) -> Chain:
        """The chain connection (``[chain] backend``: Ogmios or Blockfrost), opened on first use."""
        with self._lock:
            if self._chain is None:
                self._chain = open_chain(self.config.chain)
            return self._chain

    def payer(self) -> WalletPayer:
        """The ``PaymentHandler`` that pays invoices from the wallet (``agent.payer.WalletPayer``)."""
        with self._lock:
            if self._payer is None:
                from agent.payer import WalletPayer
                from agent.sql_reservations import SqliteReservations
                from wallets.networks import get_network
                from wallets.sender import PaymentSender

                wallet = self.wallet()
                sender = PaymentSender(self.chain, wallet,
                                       reservations=SqliteReservations(self.db, self.config.wallet.name))
                self._payer = WalletPayer(
                    sender=sender, chain=self.chain, ledger=self.ledger, policy=self.config.policy,
                    pins=self.pins, approvals=self.approvals, network=get_network(self.config.chain.network),
                    proof=self.config.api.proof, partner=self.config.api.partner, clock=self.clock,
                    stopping=self.stopping)
            return self._payer

    def opened_payer(self) -> WalletPayer | None:
        """The payer if a payment has opened it already (the wallet unlocked), else None; never unlocks."""
        with self._lock:
            return self._payer

    def x402_auth(self, *, partner: str | None = None) -> Any:
        """An ``httpx.Auth`` that pays 402s from this agent's wallet (one per partner, reused)."""
        from agent.auth import X402Auth

        partner = partner if partner is not None else self.config.api.partner
        with self._lock:
            if partner not in self._auths:
                payer = self.payer()
                self._auths[partner] = X402Auth(payer, partner=partner, wallet_address=payer.wallet_address,
                                                max_body_bytes=self.config.api.max_body_bytes, sleep=self.sleep)
            return self._auths[partner]

    def x402_scheme(self, *, host: str = "x402-sdk") -> Any:
        """A scheme for the official x402 SDK: ``x402Client().register("cardano:*", agent.x402_scheme())``."""
        from agent.x402v2_sdk import AgentCardanoScheme

        return AgentCardanoScheme(self.payer(), host=host)

    def async_x402_auth(self, *, partner: str | None = None) -> Any:
        """The async twin of :meth:`x402_auth`, for ``httpx.AsyncClient``."""
        from agent.auth import AsyncX402Auth

        payer = self.payer()
        return AsyncX402Auth(payer, partner=partner or self.config.api.partner, wallet_address=payer.wallet_address,
                             max_body_bytes=self.config.api.max_body_bytes)

    def client(self, *, partner: str | None = None, **kwargs: Any) -> Any:
        """A ``TClient`` for ``[api] base_url``: api-key mode if a key is set, else paying x402."""
        from agent.tapi import TClient

        api = self.config.api
        partner = partner if partner is not None else api.partner
        kwargs.setdefault("sleep", self.sleep)
        if api.api_key and not partner:
            return TClient(api.base_url, api_key=api.api_key, timeout_s=api.timeout_s,
                           max_body_bytes=api.max_body_bytes, **kwargs)
        return TClient(api.base_url, auth=self.x402_auth(partner=partner), partner=partner,
                       wallet_address=self.wallet_address, timeout_s=api.timeout_s,
                       max_body_bytes=api.max_body_bytes, **kwargs)

    def recover(self) -> dict[str, int]:
        """Resolve unfinished payments a crash left (see ``WalletPayer.recover``).

        Only rows whose owner is gone are touched. With none, the wallet stays locked and
        only reservations of payments that finished (no unfinished row) are cleared; they are
        read before the rows, so a payment another process starts meanwhile keeps its own.
        """
        from agent.recovery import owner_is_gone
        from agent.workers import ProcessRegistry

        now = self.clock()
        registry = ProcessRegistry(self.db)
        if self._payer is not None or any(owner_is_gone(r.owner, updated_at=r.updated_at, now=now, registry=registry)
                                          for r in self.ledger.unfinished()):
            return self.payer().recover()
        from agent.sql_reservations import SqliteReservations

        reservations = SqliteReservations(self.db, self.config.wallet.name)
        owners = reservations.owners()
        live = {str(r.id) for r in self.ledger.unfinished()}
        for owner in owners - live:
            reservations.release(owner)
        busy = len(live)
        return {"kept": 0, "resubmitted": 0, "released": 0, "unresolved": 0, "busy": busy}

    # -- running unattended ---------------------------------------------------------------
    def run(self, *, workers: int = 1, concurrency: int | None = None, until_idle: bool = False,
            lease_s: float = 120.0, stop_grace_s: float = 10.0, metrics_port: int | None = None,
            on_progress: Callable[[dict[str, int], Any], None] | None = None,
            say: Callable[[str], None] | None = None, on_start: Callable[[], None] | None = None) -> RunStats:
        """Recover what a stopped process left, then run the job queue and schedules (see ``agent.service.run``).

        Returns when :meth:`stop` is called or, with ``until_idle``, when no job is left to run.
        ``say`` receives the lines meant for the operator (default: the log); ``on_start`` is called
        once start-up is over, just before the workers start (where a CLI installs its signal handlers).
        """
        from agent import service

        return service.run(self, workers=workers, concurrency=concurrency, until_idle=until_idle, lease_s=lease_s,
                           stop_grace_s=stop_grace_s, metrics_port=metrics_port, on_progress=on_progress, say=say,
                           on_start=on_start)

    def attach_runner(self, runner: Runner | None) -> None:
        """The runner :meth:`stop` stops (set while :meth:`run` runs); stopping already asked stops it at once."""
        self._runner = runner  # set, then read ``stopping``: stop() does the reverse, so neither misses the other
        if runner is not None and self.stopping.is_set():
            runner.stop()

    def stop(self) -> None:
        """Stop: waits end, no new job or payment starts; the payments in hand get the run's stop grace.

        Safe in a signal handler: it takes no lock.
        """
        self.stopping.set()
        runner = self._runner
        if runner is not None:
            runner.stop()

    # -- reading and deciding: the one library under the CLI, the console and MCP ----------
    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    def budget_usage(self, now: float | None = None) -> list[dict[str, Any]]:
        """Each budget's limit, spent, reserved, remaining and percent used, per asset."""
        from agent.views import budget_views

        return budget_views(self.budgets, self._now(now))

    def wallet_status(self, *, offline: bool = False, timeout_s: float = 2.0) -> dict[str, Any]:
        """The wallet's name, address and network (no passphrase); with the chain, its balance.

        Never raises: a missing wallet or an unreachable chain is reported in ``error``.
        """
        name = self.config.wallet.name
        try:
            info = self.keystore.info(name)
        except Exception as exc:  # noqa: BLE001 - status reports, it does not fail
            return {"name": name, "error": f"no wallet: {exc}"}
        out: dict[str, Any] = {"name": name, "address": info.address, "network": info.network}
        if offline:
            return out
        try:
            if self._chain is not None:
                utxos = self._chain.utxos_at(info.address)
            else:
                chain = open_chain(self.config.chain, timeout_s=timeout_s)
                try:
                    utxos = chain.utxos_at(info.address)
                finally:
                    chain.close()
            out["balance_lovelace"] = sum(u.lovelace for u in utxos)
            out["utxos"] = len(utxos)
        except Exception:  # noqa: BLE001
            chain_cfg = self.config.chain
            url = chain_cfg.blockfrost_url if chain_cfg.backend == "blockfrost" else chain_cfg.ogmios_url
            out["error"] = f"chain unreachable at {url}"
        return out

    def schedules(self, now: float | None = None) -> list[dict[str, Any]]:
        """Each schedule's rule, last and next firing, and its latest job (the last report)."""
        if not self.config.schedules:
            return []
        from agent.scheduler import Scheduler
        from agent.views import job_view

        specs: Any = self.config.schedules  # ScheduleSpec satisfies ScheduleLike at run time
        rows = Scheduler(self.db, self.jobs, specs).describe(self._now(now))
        for row in rows:
            found = self.db.execute(
                "SELECT id FROM jobs WHERE unique_key LIKE ? ORDER BY id DESC LIMIT 1",
                (f"schedule:{row['name']}:%",)).fetchone()
            row["last_job"] = job_view(self.jobs.get(int(found["id"]))) if found else None
        return rows

    def status(self, *, now: float | None = None, offline: bool = False) -> dict[str, Any]:
        """Queue, budgets, wallet, schedules, failures, unfinished payments and pending approvals."""
        from agent.views import job_view

        now = self._now(now)
        payments = [{"id": r.id, "state": r.state, "invoice_id": r.invoice_id, "route": r.route,
                     "amount_lovelace": r.amount_lovelace, "fee_lovelace": r.fee_lovelace, "tx_id": r.tx_id,
                     "reason": r.reason} for r in self.ledger.unfinished()]
        from agent.queue import waiting_summary
        from agent.views import iso

        return {
            "time": iso(now),
            "queue": self.jobs.counts(),
            "waiting": waiting_summary(self.jobs),
            "budgets": self.budget_usage(now),
            "wallet": self.wallet_status(offline=offline),
            "schedules": self.schedules(now),
            "recent_failures": [job_view(j) for j in self.jobs.list(state="failed", limit=5)],
            "unfinished_payments": payments,
            "pending_approvals": [{"id": a.id, "host": a.host, "route": a.route, "job_id": a.job_id}
                                  for a in self.approvals.pending()],
            "total_paid_lovelace": self.ledger.total_paid(),
            "clock": self.clock_status(offline=offline),
            "store": self.db.describe(),
            "workers": self.fleet(now),
        }

    def fleet(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every live agent process on every host sharing this database, with the jobs its workers hold."""
        from agent.queue import ACTIVE
        from agent.workers import ProcessRegistry

        now = self._now(now)
        held: dict[str, list[int]] = {}
        for state in ACTIVE:
            for job in self.jobs.list(state=state, limit=1000):
                if job.lease_owner and (job.lease_expires_at or 0) > now:
                    held.setdefault(job.lease_owner.split("-", 1)[0], []).append(job.id)
        return [{"name": p.name, "host": p.host, "pid": p.pid, "workers": p.workers,
                 "started_at": p.started_at, "beat_at": p.beat_at, "lease_until": p.lease_until,
                 "jobs": sorted(held.get(p.name, []))}
                for p in ProcessRegistry(self.db).live(now)]

    def clock_status(self, *, offline: bool = False) -> dict[str, Any]:
        """How far the local clock is behind the chain (the start of the tip's slot), warned past a minute.

        The tip only says the chain has reached at least its slot, so a clock behind it is
        certain; a clock ahead of it may only mean blocks are rare, and is not reported.
        """
        if offline:
            return {}
        try:
            chain = open_chain(self.config.chain, timeout_s=2.0)
            try:
                tip = chain.tip()
                chain_time = chain.slot_time(tip.slot) if tip.slot > 0 else None
            finally:
                chain.close()
        except Exception as exc:  # noqa: BLE001 - status reports, it does not fail
            return {"error": f"chain unreachable: {type(exc).__name__}"}
        if chain_time is None:
            return {}
        behind_s = int(chain_time - time.time())
        out: dict[str, Any] = {"behind_chain_s": max(0, behind_s)}
        if behind_s > CLOCK_SKEW_WARN_S:
            out["warning"] = (f"the local clock is {behind_s} s behind the chain: fix the system time (NTP); "
                              "invoices are judged by the chain's time meanwhile")
        return out

    def payments(self, *, state: str | None = None, limit: int = 20, job_id: int | None = None) -> list[dict[str, Any]]:
        """Ledger rows, newest first (optionally one state or one job's)."""
        from agent.views import payment_view

        rows = self.ledger.by_job(job_id) if job_id is not None else self.ledger.rows()
        picked = [r for r in reversed(rows) if state is None or r.state == state]
        return [payment_view(r) for r in picked[:max(0, limit)]]

    def spend(self, *, since: float | None = None, group_by: str = "day") -> dict[str, Any]:
        """Paid rows since ``since`` grouped by day/route/budget/payee, with the total (each payment once)."""
        from agent.views import spend_summary

        return spend_summary(self.ledger, since, group_by)

    def list_jobs(self, *, state: str | None = None, tag: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Jobs, newest first, optionally of one state and/or tag."""
        from agent.views import job_view

        return [job_view(j) for j in self.jobs.list(state=state, tag=tag, limit=limit)]

    def job_detail(self, job_id: int) -> dict[str, Any]:
        """One job with its payments and its approvals (JobError if there is none)."""
        from agent.views import approval_view, job_view

        job = self.jobs.get(job_id)
        approvals = [approval_view(a) for a in self.approvals.for_job(job_id)]
        return {**job_view(job), "payments": self.payments(job_id=job_id, limit=1_000), "approvals": approvals}

    def enqueue(self, kind: str, request: Mapping[str, Any], *, tags: list[str] | tuple[str, ...] = (),
                budget: str | None = None, max_attempts: int = 5, now: float | None = None) -> dict[str, Any]:
        """Validate and queue a job; return it. JobError for an unknown kind, field or budget."""
        from agent.errors import JobError
        from agent.jobs import validate_request
        from agent.views import job_view

        partner = request.get("partner")
        clean = validate_request(kind, {k: v for k, v in request.items() if k != "partner"})
        if partner:
            clean["partner"] = partner
        if budget and budget not in {b.name for b in self.config.budgets}:
            raise JobError(f"no budget named {budget!r} in agent.toml")
        if max_attempts < 1:
            raise JobError("max_attempts must be at least 1")
        job = self.jobs.enqueue(kind, clean, tags=list(tags), budget=budget, max_attempts=max_attempts,
                                now=self._now(now))
        return job_view(job)

    def pending_approvals(self) -> dict[str, Any]:
        """Payments waiting for a human (a payee change shows old and new payees) and the pins per host."""
        from agent.views import approval_view

        pins = self.pins.hosts()
        pending = []
        for a in self.approvals.pending():
            new = frozenset(a.summary.get("new_payees") or ())
            pending.append(approval_view(a, pinned=(pins.get(a.host) or frozenset()) - new))
        return {"pending": pending, "pins": {host: sorted(addrs) for host, addrs in pins.items()}}

    def approve(self, approval_id: int, *, now: float | None = None) -> dict[str, Any]:
        """Approve a parked payment and queue its job again if it had given up.

        Raises:
            ApprovalError: no such approval, already decided, or its invoice has expired
                (nothing is changed then).
        """
        from agent.approvals import ApprovalError
        from agent.errors import JobError
        from agent.views import approval_view, expiry_epoch, iso

        now = self._now(now)
        current = self.approvals.get(approval_id)
        expires_at = expiry_epoch(current)
        if current.state == "pending" and expires_at is not None and expires_at <= now:
            hint = f"; `cardano-agent job retry {current.job_id}` fetches a fresh invoice" if current.job_id else ""
            raise ApprovalError(f"approval {approval_id}: invoice {current.invoice_id} expired at "
                                f"{iso(float(expires_at))}; nothing approved{hint}")
        approval = self.approvals.approve(approval_id, now)
        job: dict[str, Any] | None = None
        if approval.job_id is not None:
            try:
                found = self.jobs.get(approval.job_id)
            except JobError:
                job = {"id": approval.job_id, "state": None, "requeued": False}
            else:
                requeued = found.state in ("failed", "cancelled", "awaiting_approval")
                if found.state == "awaiting_approval":
                    found = self.jobs.release(found.id, now)
                elif requeued:
                    found = self.jobs.retry(found.id, now)
                job = {"id": found.id, "state": found.state, "requeued": requeued}
        return {"approval": approval_view(approval), "job": job}

    def deny(self, approval_id: int, *, now: float | None = None) -> dict[str, Any]:
        """Deny a parked payment: it is never paid; a job awaiting it is cancelled, others are left."""
        from agent.errors import JobError
        from agent.views import approval_view

        approval = self.approvals.deny(approval_id, self._now(now))
        job = None
        if approval.job_id is not None:
            try:
                state: str | None = self.jobs.get(approval.job_id).state
                if state == "awaiting_approval":  # its payment will never be made: the job stops
                    state = self.jobs.cancel(approval.job_id, self._now(now)).state
            except JobError:
                state = None
            job = {"id": approval.job_id, "state": state}
        return {"approval": approval_view(approval), "job": job}

    # -- paying calls made on request (MCP), each answer with what it cost -------------------
    def paid_with_tag(self, tag: str) -> dict[str, Any]:
        """What the payments tagged ``tag`` cost: lovelace (outputs and fees), ADA text, the rows."""
        from agent.output import format_ada

        rows = [r for r in self.ledger.rows() if tag in r.tags]
        total = sum(r.cost_lovelace or 0 for r in rows if r.paid)
        return {"lovelace": total, "ada": format_ada(total),
                "payments": [{"id": r.id, "state": r.state, "route": r.route, "invoice_id": r.invoice_id,
                              "amount_lovelace": r.amount_lovelace, "fee_lovelace": r.fee_lovelace,
                              "tx_id": r.tx_id, "reason": r.reason} for r in rows]}

    def _tagged_call(self, fn: Callable[[str], Any], tags: tuple[str, ...]) -> dict[str, Any]:
        import uuid

        from agent.errors import AgentError
        from agent.payer import JobContext, job_context

        call_tag = f"call:{uuid.uuid4().hex[:16]}"
        try:
            with job_context(JobContext(tags=(*tags, call_tag))):
                result = fn(call_tag)
        except AgentError as exc:
            exc.paid = self.paid_with_tag(call_tag)  # type: ignore[attr-defined]
            raise
        return {"result": result, "paid": self.paid_with_tag(call_tag)}

    def call_api(self, kind: str, request: Mapping[str, Any], *, tags: tuple[str, ...] = ("mcp",)) -> dict[str, Any]:
        """Call the T API route of job ``kind`` now, paying under policy and budgets.

        Returns ``{"result": ..., "paid": paid_with_tag(...)}``; a refusal raises the package
        error with ``paid`` attached (nothing, for a policy or budget refusal).
        """
        from agent.executor import TApiExecutor
        from agent.jobs import validate_request

        partner = request.get("partner")
        clean = validate_request(kind, {k: v for k, v in request.items() if k != "partner"})
        executor = TApiExecutor(self)

        def call(call_tag: str) -> Any:
            client = executor.client_for(partner)
            data = executor.call(client, kind, clean, call_tag.replace(":", "-"))
            images = data.pop("images", None)
            if images:
                data["images"] = f"{len(images)} PNG image(s) (queue a job to keep them)"
            return data

        try:
            return self._tagged_call(call, tags)
        finally:
            executor.close()

    def fetch_paid(self, url: str, *, method: str = "GET", json_body: Any = None,
                   headers: Mapping[str, str] | None = None, tags: tuple[str, ...] = ("mcp",)) -> dict[str, Any]:
        """Request any x402 URL (T or v2 dialect) as an ``http`` job would, paying a 402 under
        policy and budgets; return ``{"result": status/headers/body, "paid": ...}``.

        Raises:
            JobError: a malformed URL, method, header or body (nothing is sent).
        """
        request: dict[str, Any] = {"url": url, "method": method}
        if headers:
            request["headers"] = dict(headers)
        if json_body is not None:
            request["json"] = json_body
        return self.call_api("http", request, tags=tags)

    def close(self) -> None:
        """Close the chain connection and the database (rows the payer left become recoverable)."""
        if self._payer is not None:
            self._payer.close()
        if self._chain is not None and self._owns_chain:
            try:
                self._chain.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing the chain connection failed", exc_info=True)
        self.db.close()
