"""``cardano-agent init``: write a fully commented agent.toml into the agent home."""

from __future__ import annotations

import argparse
import os
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
# The Ogmios endpoint of a node on that network. CARDANO_AGENT_OGMIOS_URL overrides it.
ogmios_url = "{ogmios_url}"

[wallet]
# The keystore wallet to pay from (create it with `cardano-agent wallet create`).
name = "default"

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
[[schedules]]
name = "snek-daily"
cron = "0 7 * * *"
job = "token-analysis"
tags = ["reports"]
# Charge this schedule's jobs to a named budget as well.
budget = "reports"
# After downtime: "run_once" runs one missed firing, "skip" waits for the next one.
misfire = "run_once"
# Write reports/<schedule>/<date>.json and a readable .md beside it.
report = true

[schedules.params]
token = "SNEK"
policy_id = "279c909f348e533da5808898f87f9a14bb2c3dfbbacccd631d927a3f"
asset_name_hex = "534e454b"
network = "cardano"
"""


def render_template(network: str) -> str:
    """Return the commented agent.toml for a home on ``network``."""
    from agent.config import DEFAULT_OGMIOS_URL, default_api_url

    return TEMPLATE.format(network=network, base_url=default_api_url(network), ogmios_url=DEFAULT_OGMIOS_URL)


def write_config(home: Path, *, network: str = "devnet", force: bool = False) -> Path:
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
        tmp.write_text(render_template(network), encoding="utf-8")
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
    parser.add_argument("--force", action="store_true", help="overwrite an existing agent.toml")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the file, check it loads, and say where it is."""
    from agent.config import load_config
    from agent.output import emit

    path = write_config(args.home, network=args.network, force=args.force)
    config = load_config(args.home, env={})
    data = {"path": str(path), "network": config.chain.network, "api": config.api.base_url,
            "budgets": [b.name for b in config.budgets], "schedules": [s.name for s in config.schedules]}
    emit(args.json, data, lambda d: print(
        f"wrote {d['path']} ({d['network']}); edit it to set payees, budgets and schedules"))
    return 0
