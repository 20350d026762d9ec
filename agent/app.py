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
from typing import Any, Callable, Mapping

from agent.approvals import Approvals, PayeePins
from agent.budget import BudgetBook
from agent.config import AgentConfig, load_config
from agent.errors import ConfigError
from agent.ledger import SpendLedger
from agent.logs import register_secret
from agent.queue import SqliteJobStore
from agent.store import Database

log = logging.getLogger(__name__)

PASSPHRASE_ENV = "CARDANO_AGENT_PASSPHRASE"


class Agent:
    """One agent home: its configuration, database, wallet and chain connection.

    Use :meth:`open`; close with :meth:`close` (or use it as a context manager).
    """

    def __init__(self, config: AgentConfig, db: Database, *, passphrase: str | Callable[[], str] | None = None,
                 chain: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.home = config.home
        self.db = db
        self.clock = clock
        self.jobs = SqliteJobStore(db)
        self.budgets = BudgetBook(db, config.budgets)
        self.ledger = SpendLedger(db, self.budgets)
        self.pins = PayeePins(db)
        self.approvals = Approvals(db)
        self._passphrase = passphrase
        self._chain = chain
        self._owns_chain = chain is None
        self._wallet: Any = None
        self._payer: Any = None
        self._auths: dict[str | None, Any] = {}
        self._lock = threading.RLock()

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
        return cls(config, Database.in_home(home_path), passphrase=passphrase, chain=chain, clock=clock)

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
    def chain(self) -> Any:
        """The chain connection (Ogmios at ``[chain] ogmios_url``), opened on first use."""
        with self._lock:
            if self._chain is None:
                from wallets.ogmios import OgmiosChain

                self._chain = OgmiosChain(self.config.chain.ogmios_url)
            return self._chain

    def payer(self) -> Any:
        """The ``PaymentHandler`` that pays invoices from the wallet (``agent.payer.WalletPayer``)."""
        with self._lock:
            if self._payer is None:
                from agent.payer import WalletPayer
                from agent.reservations import SqliteReservations
                from wallets.networks import get_network
                from wallets.sender import PaymentSender

                wallet = self.wallet()
                sender = PaymentSender(self.chain, wallet,
                                       reservations=SqliteReservations(self.db, self.config.wallet.name))
                self._payer = WalletPayer(
                    sender=sender, chain=self.chain, ledger=self.ledger, policy=self.config.policy,
                    pins=self.pins, approvals=self.approvals, network=get_network(self.config.chain.network),
                    proof=self.config.api.proof, partner=self.config.api.partner, clock=self.clock)
            return self._payer

    def x402_auth(self, *, partner: str | None = None) -> Any:
        """An ``httpx.Auth`` that pays 402s from this agent's wallet (one per partner, reused)."""
        from agent.auth import X402Auth

        partner = partner if partner is not None else self.config.api.partner
        with self._lock:
            if partner not in self._auths:
                payer = self.payer()
                self._auths[partner] = X402Auth(payer, partner=partner, wallet_address=payer.wallet_address)
            return self._auths[partner]

    def async_x402_auth(self, *, partner: str | None = None) -> Any:
        """The async twin of :meth:`x402_auth`, for ``httpx.AsyncClient``."""
        from agent.auth import AsyncX402Auth

        payer = self.payer()
        return AsyncX402Auth(payer, partner=partner or self.config.api.partner, wallet_address=payer.wallet_address)

    def client(self, *, partner: str | None = None, **kwargs: Any) -> Any:
        """A ``TClient`` for ``[api] base_url``: api-key mode if a key is set, else paying x402."""
        from agent.tapi import TClient

        api = self.config.api
        partner = partner if partner is not None else api.partner
        if api.api_key and not partner:
            return TClient(api.base_url, api_key=api.api_key, timeout_s=api.timeout_s, **kwargs)
        return TClient(api.base_url, auth=self.x402_auth(partner=partner), partner=partner,
                       wallet_address=self.wallet_address, timeout_s=api.timeout_s, **kwargs)

    def recover(self) -> dict[str, int]:
        """Resolve unfinished payments left by a crash (see ``WalletPayer.recover``).

        With nothing unfinished, no payment is in flight in any process on this home, so every
        UTxO reservation left behind is stale: they are cleared without unlocking the wallet.
        """
        if self.ledger.unfinished():
            return self.payer().recover()
        from agent.reservations import SqliteReservations

        reservations = SqliteReservations(self.db, self.config.wallet.name)
        for owner in reservations.owners():
            reservations.release(owner)
        return {"kept": 0, "resubmitted": 0, "released": 0}

    def close(self) -> None:
        """Close the chain connection and the database."""
        if self._chain is not None and self._owns_chain:
            try:
                self._chain.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing the chain connection failed", exc_info=True)
        self.db.close()
