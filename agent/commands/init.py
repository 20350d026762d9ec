"""``cardano-agent init``: write a fully commented agent.toml into the agent home."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ORDER = 0

TEMPLATE = """\
# cardano-pay-agent configuration ({network}).
# Every key below is optional unless marked "required"; removing one restores its default.
# ADA amounts may have up to 6 decimals and become exact integer lovelace.
# Secrets never go in this file: the T API key comes from the environment variable T_API_KEY,
# the wallet passphrase from CARDANO_AGENT_PASSPHRASE (or a prompt).

[api]
# The x402 API the agent calls. CARDANO_AGENT_API_URL overrides it.
base_url = "{base_url}"
# Partner name sent as X-Partner (partner pricing, revenue splits, prepaid batches).
# partner = "acme"
# How payment is proved on the retry: "hash" submits the transaction through Ogmios and
# sends its id; "cbor" sends the signed transaction and lets the server submit it.
proof = "hash"
# Seconds to wait for one HTTP answer.
timeout_s = 30

[chain]
# The wallet's network: mainnet, preprod, preview or devnet (the local sandbox).
# An invoice for any other chain is refused.
network = "{network}"
# How the agent reaches the chain: "ogmios" (a cardano-node of your own behind Ogmios, or a
# hosted Ogmios) or "blockfrost" (the hosted Blockfrost API: no node needed; its project id
# comes from the environment variable BLOCKFROST_PROJECT_ID, never from this file).
backend = "{backend}"
# The Ogmios endpoint of a node on that network. CARDANO_AGENT_OGMIOS_URL overrides it.
ogmios_url = "{ogmios_url}"
# The Blockfrost API of that network (default: Blockfrost's public endpoint; on devnet the
# sandbox's, `cardano-agent sandbox up --blockfrost-port 3000`).
{blockfrost_comment}blockfrost_url = "{blockfrost_url}"

[store]
# Where the queue, spend ledger, budgets, reservations and approvals live. Default: SQLite in
# the home (one host). A fleet of agents on several hosts sharing one budget, one queue and
# one wallet uses one PostgreSQL database: `cardano-agent init --store postgresql://...`.
# The password comes from PGPASSWORD, ~/.pgpass or CARDANO_AGENT_STORE_URL, never this file.
{store_line}

[wallet]
# The keystore wallet to pay from (create it with `cardano-agent wallet create`).
name = "default"
# While payments queue up, `run` splits a UTxO so the wallet has up to this many lanes to pay
# from at once, and merges small leftovers when idle (transactions to the wallet itself). 0: never.
# lanes = 8

[policy]
# Refuse any single payment whose cost (outputs to others plus the fee) is above this.
max_per_call_ada = 10
# Payments costing more than this wait for `cardano-agent approve ID` (or `deny ID`).
# approve_above_ada = 5
# Remember each API host's payees on the first payment and refuse a change until approved.
pin_payees = true
# Native tokens an invoice may ask for, as "<policy id hex>.<asset name hex>"; ADA is always allowed.
allowed_assets = []

# Allowed payees per API host ("host" or "host:port"); a host not listed is not restricted
# (pinning still applies). Every payTo and split address of an invoice must be listed.
[policy.payees]
# "api-v2.fluxpointstudios.com" = ["addr1..."]

# Budgets: every payment is checked against each budget whose scope matches it, and refused
# if one would be exceeded. Repeat [[budgets]] for more.
[[budgets]]
# required, unique
name = "daily"
# Limit in ADA (fees included unless include_fees = false) ...
limit_ada = 50
# ... and/or per asset in the smallest unit: limits = {{ "<policy>.<name>" = 1000 }}
# Rolling window: "1h", "1d", "30d", or "none" (all time).
window = "1d"
# What counts: "all", "route:/chat*" (a route pattern) or "tag:reports" (jobs tagged so).
scope = "all"
include_fees = true

[[budgets]]
name = "reports"
limit_ada = 20
window = "30d"
scope = "tag:reports"

# Schedules enqueue jobs: cron = "<minute> <hour> <day> <month> <weekday>" (UTC) or
# every = "15m" / "1h" / "1d". job is chat, token-analysis or images-generate; params are the
# job's fields (as `cardano-agent job add` takes them).
# A paid schedule, off until you remove the "# " in front of its lines (each firing pays for
# one token analysis): budget charges its jobs to a named budget as well; misfire says what
# happens after downtime ("run_once" runs one missed firing, "skip" waits for the next one);
# report = true writes reports/<schedule>/<date>.json and a readable .md beside it.
# [[schedules]]
# name = "snek-daily"
# cron = "0 7 * * *"
# job = "token-analysis"
# tags = ["reports"]
# budget = "reports"
# misfire = "run_once"
# report = true
# params = {{ token = "SNEK", policy_id = "279c909f348e533da5808898f87f9a14bb2c3dfbbacccd631d927a3f", asset_name_hex = "534e454b", network = "cardano" }}
"""


def render_template(network: str, store_url: str | None = None, backend: str = "ogmios") -> str:
    """Return the commented agent.toml for a home on ``network`` (``store_url``: its password dropped)
    reaching the chain through ``backend``."""
    from agent.config import DEFAULT_OGMIOS_URL, default_api_url
    from wallets.blockfrost import default_url

    store_line = (f'url = "{strip_password(store_url)}"' if store_url
                  else '# url = "postgresql://agent@db.internal/agent"')
    return TEMPLATE.format(network=network, base_url=default_api_url(network), ogmios_url=DEFAULT_OGMIOS_URL,
                           store_line=store_line, backend=backend, blockfrost_url=default_url(network),
                           blockfrost_comment="" if backend == "blockfrost" else "# ")


def strip_password(url: str) -> str:
    """``url`` without a password (agent.toml never holds one)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}@{hostport}"
    query = "&".join(q for q in parts.query.split("&") if q and not q.lower().startswith("password="))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def write_config(home: Path, *, network: str = "devnet", force: bool = False,
                 store_url: str | None = None, backend: str = "ogmios") -> Path:
    """Write the commented agent.toml into ``home``; refuse to overwrite one without ``force``.

    Raises:
        ConfigError: the file exists and ``force`` is false, or the home cannot be written.
    """
    from agent.config import config_path
    from agent.errors import ConfigError

    path = config_path(home)
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(render_template(network, store_url, backend), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from None
    return path


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``init`` to the CLI."""
    from wallets.networks import NETWORKS

    parser = sub.add_parser("init", parents=[common], help="write a commented agent.toml into the home",
                            description="Write a fully commented agent.toml into the agent home.")
    parser.add_argument("--network", choices=list(NETWORKS), default="devnet",
                        help="the wallet's network (default devnet, the local sandbox)")
    parser.add_argument("--chain", choices=["ogmios", "blockfrost"], default="ogmios", dest="chain_backend",
                        help="how to reach the chain: ogmios (a node of your own, default) or blockfrost "
                             "(hosted API; set BLOCKFROST_PROJECT_ID)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing agent.toml")
    parser.add_argument("--store", metavar="URL", default=None,
                        help="a postgresql:// URL shared by a fleet: create or migrate its schema "
                             "(and name it in a new agent.toml, without the password)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the file, check it loads, and say where it is; with --store, migrate that database."""
    from agent.config import load_config
    from agent.output import emit

    if args.store is not None:
        return _init_store(args)
    path = write_config(args.home, network=args.network, force=args.force, backend=args.chain_backend)
    config = load_config(args.home, env={})
    data = {"path": str(path), "network": config.chain.network, "backend": config.chain.backend,
            "api": config.api.base_url,
            "budgets": [b.name for b in config.budgets], "schedules": [s.name for s in config.schedules]}
    emit(args.json, data, lambda d: print(
        f"wrote {d['path']} ({d['network']}, {d['backend']}); edit it to set payees, budgets and schedules"
        + ("; export BLOCKFROST_PROJECT_ID before paying" if d["backend"] == "blockfrost" and d["network"] != "devnet"
           else "")))
    return 0


def _init_store(args: argparse.Namespace) -> int:
    """Create or migrate the schema at ``--store``; write agent.toml naming it if there is none."""
    from agent.config import STORE_URL_ENV, config_path, load_config
    from agent.errors import ConfigError
    from agent.output import emit
    from agent.store import database_at, is_postgres_url, redact_url

    url = args.store
    if not is_postgres_url(url):
        raise ConfigError(f"--store: expected a postgresql:// URL, got {redact_url(url)!r}")
    path = config_path(args.home)
    wrote = False
    if not path.exists() or args.force:
        write_config(args.home, network=args.network, force=args.force, store_url=url)
        wrote = True
    config = load_config(args.home, env={})
    if not wrote and strip_password(config.store.url or "") != strip_password(url):
        print(f"note: {path} names {redact_url(config.store.url) if config.store.url else 'SQLite'}; "
              f"set [store] url (or {STORE_URL_ENV}) to use this database", file=sys.stderr)
    db = database_at(url)
    try:
        before = _versions(db)
        db.migrate()
        after = db.schema_versions()
    finally:
        db.close()
    data = {"path": str(path), "wrote_config": wrote, "store": redact_url(url),
            "created": not before, "migrated": {c: [before.get(c, 0), v] for c, v in sorted(after.items())
                                                if before.get(c, 0) != v}}
    emit(args.json, data, lambda d: print(
        f"{'created' if d['created'] else 'migrated' if d['migrated'] else 'checked'} the schema in {d['store']}"
        + (f"; wrote {d['path']}" if d["wrote_config"] else "")))
    return 0


def _versions(db: Any) -> dict[str, int]:
    """The schema versions recorded so far (empty for a new database)."""
    from agent.errors import StoreError

    try:
        return db.schema_versions()
    except StoreError:
        return {}
