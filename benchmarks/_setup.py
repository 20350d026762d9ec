"""Bench fixtures: an agent home with a funded wallet on a running devnet and T API twin.

Nothing here is timed. The keystore's scrypt cost is lowered in this process only, so that
creating and unlocking bench wallets takes milliseconds; a subprocess (``cardano-agent run``)
keeps the real cost and is therefore only ever given api-key homes (see ``benchmarks.memory``).
"""

from __future__ import annotations

import math
import re
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import wallets.keystore as _keystore

PASSPHRASE = "bench-passphrase"
BENCH_SCRYPT_N = 2**10
"""Cost used for bench wallets in this process (the real default is ``wallets.keystore._SCRYPT_N``)."""
REAL_SCRYPT_N = _keystore._SCRYPT_N
"""The keystore's own cost, read before any bench lowers it."""
HIGH_LIMIT_ADA = 10_000_000


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of ``values`` by the nearest-rank method."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (mean of the middle two for an even count)."""
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def bench_config_text(network: str = "devnet") -> str:
    """``cardano-agent init``'s agent.toml with budgets raised out of the way and no schedules.

    Budgets stay configured (so the reservation path is measured), with limits no bench reaches.
    """
    from agent.commands.init import render_template

    text = render_template(network)
    text = text.split("# Schedules enqueue jobs", 1)[0]
    return re.sub(r"(?m)^limit_ada = \d+$", f"limit_ada = {HIGH_LIMIT_ADA}", text)


def make_home(root: Path, name: str, *, wallet: bool = True, real_kdf: bool = False) -> tuple[Path, str | None]:
    """Create an agent home ``root/name`` (init + bench config) and, if asked, its wallet.

    ``real_kdf`` keeps the keystore's own scrypt cost, for a wallet a subprocess will unlock.

    Returns:
        (home, wallet address or None).
    """
    from agent.commands.init import write_config

    home = root / name
    path = write_config(home, network="devnet", force=True)
    path.write_text(bench_config_text(), encoding="utf-8")
    if not wallet:
        return home, None
    saved = _keystore._SCRYPT_N
    _keystore._SCRYPT_N = REAL_SCRYPT_N if real_kdf else BENCH_SCRYPT_N
    try:
        info, _ = _keystore.Keystore(home / "wallets").create("default", network="devnet", passphrase=PASSPHRASE)
    finally:
        _keystore._SCRYPT_N = saved
    return home, info.address


def use_blockfrost(home: Path, url: str) -> None:
    """Point a bench home's ``[chain]`` at the sandbox's Blockfrost API (``backend = "blockfrost"``)."""
    path = home / "agent.toml"
    text = path.read_text(encoding="utf-8").replace('backend = "ogmios"', 'backend = "blockfrost"')
    text = re.sub(r'(?m)^#? ?blockfrost_url = ".*"$', f'blockfrost_url = "{url}"', text)
    path.write_text(text, encoding="utf-8")


def open_agent(home: Path, env: Mapping[str, str]) -> Any:
    """``Agent.open`` on a bench home; unlocking accepts the bench scrypt cost in this process."""
    from agent.app import Agent

    _keystore._SCRYPT_N = BENCH_SCRYPT_N
    return Agent.open(home, passphrase=PASSPHRASE, env=dict(env))


@dataclass
class Sandbox:
    """A devnet and a T API twin, started together; ``env`` points an agent home at them."""

    devnet: Any
    twin: Any

    @property
    def env(self) -> dict[str, str]:
        """Environment overrides that point an agent home at this devnet and twin."""
        return {"CARDANO_AGENT_API_URL": self.twin.url, "CARDANO_AGENT_OGMIOS_URL": self.devnet.ogmios_url}


def start_sandbox(stack: ExitStack, *, fund: Mapping[str, int] | None = None, twin_config: Any = None) -> Sandbox:
    """Start a devnet (``block_time_s=0``) and a twin on free loopback ports; stopped by ``stack``."""
    from sandbox.billing import TwinConfig
    from sandbox.devnet import Devnet
    from sandbox.twin import ApiTwin

    devnet = Devnet.start(block_time_s=0, fund=dict(fund or {}))
    stack.callback(devnet.stop)
    twin = ApiTwin.start(twin_config or TwinConfig(), devnet.ogmios_url, port=0)
    stack.callback(twin.stop)
    return Sandbox(devnet, twin)


def temp_root(stack: ExitStack) -> Path:
    """A temporary directory removed when ``stack`` closes."""
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cardano-bench-")))


def fetch_402(client: Any, url: str, message: str = "bench") -> Any:
    """POST a chat to the twin without paying; return the 402 response (its request and body)."""
    from benchmarks.errors import BenchError

    response = client.post(f"{url}/chat", json={"message": message})
    if response.status_code != 402:
        raise BenchError(f"expected a 402 from the twin, got {response.status_code}: {response.text[:200]}")
    return response


def money_checks(sandbox: Any, rows: Sequence[Any], start_balance: int, end_balance: int) -> dict[str, int]:
    """What a run's paid ledger ``rows`` must show: nothing paid twice, every transaction on the chain,
    and the wallet's balance moved by exactly what the ledger says it paid."""
    from collections import Counter

    per_job = Counter(r.job_id for r in rows)
    per_invoice = Counter(r.invoice_id for r in rows)
    missing = [r for r, seen in zip(rows, sandbox.confirmed([r.tx_id or "" for r in rows])) if not seen]
    return {
        "double_spent": sum(n - 1 for n in per_job.values() if n > 1)
        + sum(n - 1 for n in per_invoice.values() if n > 1),
        "missing_on_chain": len(missing),
        "ledger_mismatch_lovelace": abs((start_balance - end_balance) - sum(r.cost_lovelace or 0 for r in rows)),
    }


def naive_builder(address: str, ogmios_url: str, outputs: Sequence[tuple[str, int]],
                  context: Any = None) -> tuple[Any, Any]:
    """(Ogmios context, pycardano TransactionBuilder) paying ``outputs`` from ``address``: a pycardano-only script.

    Without ``context``, a fresh ``OgmiosV6ChainContext`` (a connection per query, as a script
    writes it); with one (e.g. :func:`warm_context`), that context.
    """
    from urllib.parse import urlparse

    from pycardano import Address, Network, OgmiosV6ChainContext, TransactionBuilder, TransactionOutput

    if context is None:
        url = urlparse(ogmios_url)
        context = OgmiosV6ChainContext(url.hostname or "127.0.0.1", url.port or 1337, secure=False,
                                       network=Network.TESTNET)
    builder = TransactionBuilder(context)
    builder.add_input_address(address)
    for to, amount in outputs:
        builder.add_output(TransactionOutput(Address.from_primitive(to), amount))
    return context, builder


def warm_context(ogmios_url: str) -> Any:
    """pycardano's Ogmios context kept warm: one persistent connection, protocol parameters cached.

    The fair baseline for the agent's payment overhead: ``OgmiosV6ChainContext`` opens a new
    WebSocket for every query; this one reuses one ``ogmios`` client for the tip, the UTxOs and
    the submission, and keeps pycardano's own parameter cache. UTxOs are read fresh each time
    (pycardano's cache would hand back an input the previous payment spent). Close it with
    ``context.close()``.
    """
    from urllib.parse import urlparse

    from ogmios.client import Client
    from ogmios.datatypes import Address as OgmiosAddress
    from pycardano import Network, OgmiosV6ChainContext
    from pycardano.backend.ogmios_v6 import get_current_era

    url = urlparse(ogmios_url)

    class WarmOgmiosContext(OgmiosV6ChainContext):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(url.hostname or "127.0.0.1", url.port or 1337, secure=False, network=Network.TESTNET)
            self.client = Client(self.host, self.port)

        def close(self) -> None:
            self.client.connection.close()

        def _query_current_era(self) -> Any:
            return get_current_era(self.client)

        def _query_current_epoch(self) -> int:
            return int(self.client.query_epoch.execute()[0])

        def _query_chain_tip(self) -> Any:
            return self.client.query_network_tip.execute()[0]

        def _query_utxos_by_address(self, address: Any) -> Any:
            return self.client.query_utxo.execute([address])[0]

        def _utxos(self, address: str) -> Any:
            return self._utxos_ogmios(OgmiosAddress(address=address))

        def submit_tx_cbor(self, cbor: bytes | str) -> None:
            self.client.submit_transaction.execute(cbor.hex() if isinstance(cbor, bytes) else cbor)

    return WarmOgmiosContext()


def naive_submit(context: Any, builder: Any, key: Any, address: str) -> Any:
    """Sign what ``builder`` holds (change to ``address``) and submit it; return the pycardano transaction."""
    from pycardano import Address

    tx = builder.build_and_sign([key], change_address=Address.from_primitive(address))
    context.submit_tx(tx)
    return tx
