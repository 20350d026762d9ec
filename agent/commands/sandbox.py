"""``cardano-agent sandbox``: run the local devnet (``up``) and pay from its faucet (``fund``).

``sandbox up`` starts its services in order (see :data:`SERVICES`: the devnet, the Blockfrost
API on ``--blockfrost-port`` and the Kupo API on ``--kupo-port`` if given, then the T API twin
on ``--api-port``), prints one line with their URLs when every one is ready, and stops them in
reverse order on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


ORDER = 90
DEFAULT_OGMIOS_URL = "ws://127.0.0.1:1337"


@dataclass
class Running:
    """What ``sandbox up`` has started so far: named URLs, the devnet, and how to stop each one."""

    urls: dict[str, str] = field(default_factory=dict)
    handles: dict[str, Any] = field(default_factory=dict)
    stoppers: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        """Stop every service, last started first."""
        while self.stoppers:
            self.stoppers.pop()()


def _start_devnet(args: argparse.Namespace, running: Running) -> None:
    from sandbox.errors import require_web_extra

    require_web_extra("the devnet's Ogmios server")
    from sandbox.devnet import Devnet

    devnet = Devnet.start(host=args.host, ogmios_port=args.ogmios_port, block_time_s=args.block_time,
                          fund=dict(args.fund), state_dir=args.state_dir)
    running.handles["devnet"] = devnet
    running.urls["ogmios"] = devnet.ogmios_url
    running.stoppers.append(devnet.stop)


def _start_blockfrost(args: argparse.Namespace, running: Running) -> None:
    """The Blockfrost-compatible API over the devnet's ledger, if ``--blockfrost-port`` is given."""
    import os

    from sandbox.blockfrost_api import DEFAULT_PROJECT_ID, BlockfrostServer

    if args.blockfrost_port is None:
        return
    from sandbox.errors import require_web_extra

    require_web_extra("the Blockfrost API")
    project_id = os.environ.get("BLOCKFROST_PROJECT_ID") or DEFAULT_PROJECT_ID
    server = BlockfrostServer.start(running.handles["devnet"].node, host=args.host, port=args.blockfrost_port,
                                    project_id=project_id)
    running.handles["blockfrost"] = server
    running.urls["blockfrost"] = server.url
    running.stoppers.append(server.stop)


def _start_kupo(args: argparse.Namespace, running: Running) -> None:
    if args.kupo_port is None:
        return
    from sandbox.kupo_api import KupoApi

    kupo = KupoApi.start(running.handles["devnet"].node, host=args.host, port=args.kupo_port)
    running.handles["kupo"] = kupo
    running.urls["kupo"] = kupo.url
    running.stoppers.append(kupo.stop)


def _start_twin(args: argparse.Namespace, running: Running) -> None:
    from sandbox.errors import require_web_extra

    require_web_extra("the T API twin")
    from sandbox.billing import load_twin_config
    from sandbox.twin import ApiTwin

    twin = ApiTwin.start(load_twin_config(args.api_config), running.urls["ogmios"], host=args.host,
                         port=args.api_port)
    running.handles["api"] = twin
    running.urls["api"] = twin.url
    running.stoppers.append(twin.stop)


def _start_x402(args: argparse.Namespace, running: Running) -> None:
    if getattr(args, "x402_port", None) is None:
        return
    from sandbox.x402_server import X402Server

    server = X402Server.start(running.handles["devnet"], host=args.host, port=args.x402_port)
    running.handles["x402"] = server
    running.urls["x402"] = server.url
    running.stoppers.append(server.stop)


SERVICES: list[Callable[[argparse.Namespace, Running], None]] = [_start_devnet, _start_blockfrost, _start_kupo,
                                                                  _start_twin, _start_x402]
"""Service starters run in order by ``sandbox up``; each records its URL and its stopper."""


def _amount(text: str) -> int:
    """An amount in ADA (``100``, ``2.5``) or, with the suffix, in lovelace (``2500000lovelace``)."""
    from agent.output import parse_amount

    try:
        lovelace = parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if lovelace <= 0:
        raise argparse.ArgumentTypeError(f"the amount must be positive, got {text!r}")
    return lovelace


def _fund_pair(text: str) -> tuple[str, int]:
    address, sep, amount = text.partition("=")
    if not sep or not address:
        raise argparse.ArgumentTypeError(f"expected ADDR=ADA, got {text!r}")
    return address, _amount(amount)


def _asset_pair(text: str) -> tuple[str, int]:
    asset, sep, amount = text.partition("=")
    if not sep or not amount.isdigit() or int(amount) <= 0:
        raise argparse.ArgumentTypeError(f"expected POLICY.NAME=QTY, got {text!r}")
    return asset, int(amount)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``sandbox up`` and ``sandbox fund``."""
    group = sub.add_parser("sandbox", parents=[common], help="run the local devnet (Ogmios v6) and the T API twin")
    cmds = group.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND")

    up = cmds.add_parser("up", parents=[common], help="run the devnet and the T API twin until SIGINT/SIGTERM")
    up.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    up.add_argument("--ogmios-port", type=int, default=1337, metavar="PORT", help="Ogmios port (default 1337)")
    up.add_argument("--blockfrost-port", type=int, default=None, metavar="PORT",
                    help="also serve a Blockfrost-compatible API (/api/v0) on this port (0: any free port); "
                         "it accepts $BLOCKFROST_PROJECT_ID, else the sandbox's project id")
    up.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                    help="persist the chain here; a restart continues from it")
    up.add_argument("--block-time", type=float, default=1.0, metavar="S",
                    help="seconds between blocks, empty ones too (20: mainnet-like; 0: one block per "
                         "transaction at once)")
    up.add_argument("--kupo-port", type=int, default=None, metavar="PORT",
                    help="also serve a Kupo-compatible API on this port (e.g. 1442; 0: any free port)")
    up.add_argument("--api-port", type=int, default=8402, metavar="PORT",
                    help="T API twin port (default 8402; 0: any free port)")
    up.add_argument("--api-config", type=Path, default=None, metavar="FILE",
                    help="T API twin billing config (TOML; default: built-in prices, keys and partners)")
    up.add_argument("--x402-port", type=int, default=None, metavar="PORT",
                    help="also serve an x402 v2 resource server + facilitator on the devnet (0: any free port)")
    up.add_argument("--fund", type=_fund_pair, action="append", default=[], metavar="ADDR=ADA",
                    help="genesis funds for an address, in ADA (or 5000000lovelace); repeatable")
    up.set_defaults(func=_up)

    fund = cmds.add_parser("fund", parents=[common], help="pay an address from the devnet faucet")
    fund.add_argument("address", help="bech32 devnet address (addr_test1…), or the name of a wallet in --home")
    fund.add_argument("amount", type=_amount, metavar="ADA",
                      help="amount in ADA, up to 6 decimals (or lovelace with a suffix: 5000000lovelace)")
    fund.add_argument("--asset", type=_asset_pair, action="append", default=[], metavar="POLICY.NAME=QTY",
                      help="also send this native token (repeatable)")
    fund.add_argument("--ogmios-url", default=None,
                      help="devnet Ogmios URL (default: $CARDANO_AGENT_OGMIOS_URL, else [chain] ogmios_url "
                           f"in the home's agent.toml, else {DEFAULT_OGMIOS_URL})")
    fund.set_defaults(func=_fund)
    group.set_defaults(func=lambda args: (group.print_help(), 2)[1])


def _up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    running = Running()
    try:
        for start in SERVICES:
            start(args, running)
            if stop.is_set():
                return 0
        if args.json:
            print(json.dumps({"ready": True, **running.urls}), flush=True)
        else:
            print("sandbox ready: " + " ".join(f"{k}={v}" for k, v in running.urls.items()), flush=True)
        stop.wait()
        return 0
    finally:
        running.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fund(args: argparse.Namespace) -> int:
    from sandbox.devnet import FAUCET_ADDRESS, build_faucet_tx
    from sandbox.errors import SandboxError
    from sandbox.utxo_ledger import LedgerParams
    from wallets.ogmios import OgmiosChain

    args.lovelace = args.amount
    if not args.address.startswith("addr"):
        from wallets.keystore import Keystore

        args.address = Keystore(args.home / "wallets").info(args.address).address
    with OgmiosChain(_ogmios_url(args)) as chain:
        utxos = chain.utxos_at(FAUCET_ADDRESS)
        if not utxos:
            raise SandboxError("the faucet has no funds on this devnet")
        pp = chain.protocol_params()
        params = LedgerParams(min_fee_coefficient=pp.min_fee_coefficient, min_fee_constant=pp.min_fee_constant)
        best = max(utxos, key=lambda u: u.lovelace)
        cbor, _change = build_faucet_tx([(best.ref, best.lovelace, dict(best.assets))], to_address=args.address,
                                        lovelace=args.lovelace, assets=dict(args.asset), params=params)
        tx_id = chain.submit(cbor)
    if args.json:
        print(json.dumps({"transaction": tx_id, "address": args.address, "lovelace": args.lovelace}))
    else:
        print(tx_id)
    return 0


def _ogmios_url(args: argparse.Namespace) -> str:
    """``--ogmios-url``, else the environment, else the home's agent.toml, else the default."""
    if args.ogmios_url:
        return str(args.ogmios_url)
    env = os.environ.get("CARDANO_AGENT_OGMIOS_URL")
    if env:
        return env
    if (args.home / "agent.toml").is_file():
        from agent.config import load_config

        return load_config(args.home).chain.ogmios_url
    return DEFAULT_OGMIOS_URL
