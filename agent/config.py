"""Reading ``<home>/agent.toml`` into frozen settings; every mistake named by key and line.

Sections: ``[api]``, ``[chain]``, ``[wallet]``, ``[policy]``, ``[[budgets]]``, ``[[schedules]]``
and ``[store]`` (``url``: PostgreSQL for a fleet; default SQLite in the home)
(``cardano-agent init`` writes a commented example). Environment overrides:
``CARDANO_AGENT_API_URL``, ``CARDANO_AGENT_OGMIOS_URL``, ``CARDANO_AGENT_STORE_URL``, ``T_API_KEY`` and
``BLOCKFROST_PROJECT_ID`` (the API key and the project id live only in the environment and never in a
repr). ADA amounts become integer lovelace exactly.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, NoReturn

from agent.errors import ConfigError, InvoiceError, JobError
from agent.policy import PaymentPolicy
from wallets.networks import NETWORKS, NetworkInfo, get_network
from wallets.types import LOVELACE

CONFIG_FILE = "agent.toml"
DEVNET_API_URL = "http://127.0.0.1:8402"
PUBLIC_API_URL = "https://api-v2.fluxpointstudios.com"
DEFAULT_OGMIOS_URL = "ws://127.0.0.1:1337"
STORE_URL_ENV = "CARDANO_AGENT_STORE_URL"
CHAIN_BACKENDS = ("ogmios", "blockfrost")
BLOCKFROST_PROJECT_ID_ENV = "BLOCKFROST_PROJECT_ID"
DEFAULT_MAX_PER_CALL_LOVELACE = 10_000_000
"""Without ``policy.max_per_call_ada``, one call never pays more than 10 ADA."""
WINDOWS: dict[str, int | None] = {"1h": 3600, "1d": 86_400, "30d": 30 * 86_400, "none": None}
MISFIRE_POLICIES = ("run_once", "skip")
PolicyConfig = PaymentPolicy
"""The ``[policy]`` section is the payment policy itself."""

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DURATION_PART = re.compile(r"([0-9]{1,7})(w|d|h|m|s)")
_UNIT_S = {"w": 7 * 86_400, "d": 86_400, "h": 3600, "m": 60, "s": 1}
_PRINTABLE = re.compile(r"[\x21-\x7e]+")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Where the API is and how to prove payment; ``api_key`` comes from ``T_API_KEY`` only."""

    base_url: str
    partner: str | None = None
    proof: str = "hash"
    timeout_s: float = 30.0
    api_key: str | None = None
    max_body_bytes: int = 64 * 1024 * 1024
    """An answer longer than this is refused unread (``max_body_mb``): one hostile API cannot balloon the agent."""

    def __repr__(self) -> str:
        key = None if self.api_key is None else "<redacted>"
        return (f"ApiConfig(base_url={self.base_url!r}, partner={self.partner!r}, proof={self.proof!r}, "
                f"timeout_s={self.timeout_s!r}, api_key={key})")


@dataclass(frozen=True, slots=True)
class ChainConfig:
    """The Cardano network the wallet lives on and the service that reaches it (Ogmios or Blockfrost).

    ``blockfrost_project_id`` comes from ``BLOCKFROST_PROJECT_ID`` only and never shows in a repr.
    """

    network: str
    ogmios_url: str
    backend: str = "ogmios"
    blockfrost_url: str = ""
    blockfrost_project_id: str | None = None

    def __repr__(self) -> str:
        secret = None if self.blockfrost_project_id is None else "<redacted>"
        return (f"ChainConfig(network={self.network!r}, backend={self.backend!r}, ogmios_url={self.ogmios_url!r}, "
                f"blockfrost_url={self.blockfrost_url!r}, blockfrost_project_id={secret})")

    @property
    def info(self) -> NetworkInfo:
        """The ``NetworkInfo`` of ``network``."""
        return get_network(self.network)


@dataclass(frozen=True, slots=True)
class WalletConfig:
    """The keystore wallet the agent pays from, and how many lanes (free UTxOs) ``run`` keeps it in."""

    name: str = "default"
    lanes: int = 8
    """Split one UTxO into up to this many when payments queue up, merge dust when idle; 0 or 1: never."""


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """A spending limit: per asset (smallest units), over a rolling window, for a scope.

    ``window_s`` None means no window (all time). ``scope`` is ``all``, ``route:<glob>`` or
    ``tag:<tag>``. Fees count against the lovelace limit unless ``include_fees`` is false.
    """

    name: str
    limits: Mapping[str, int]
    window_s: int | None = None
    scope: str = "all"
    include_fees: bool = True


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A recurring job: ``cron`` (5 fields, UTC) or ``every_s``, and what to enqueue."""

    name: str
    kind: str
    cron: str | None = None
    every_s: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    budget: str | None = None
    misfire: str = "run_once"
    report: bool = False


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the agent keeps its state: ``url`` None is SQLite in the home; else PostgreSQL."""

    url: str | None = None

    def __repr__(self) -> str:
        from agent.store import redact_url

        return f"StoreConfig(url={redact_url(self.url) if self.url else None!r})"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything ``agent.toml`` and the environment configure. ``source`` is None without a file."""

    api: ApiConfig
    chain: ChainConfig
    wallet: WalletConfig
    policy: PaymentPolicy
    budgets: tuple[BudgetSpec, ...]
    schedules: tuple[ScheduleSpec, ...]
    home: Path
    source: Path | None = None
    store: StoreConfig = field(default_factory=StoreConfig)

    @property
    def network(self) -> NetworkInfo:
        """The wallet's network."""
        return self.chain.info


def config_path(home: Path) -> Path:
    """Return where the configuration of ``home`` lives."""
    return Path(home) / CONFIG_FILE


def default_api_url(network: str) -> str:
    """Return the default API base URL: the local twin on devnet, the public T API elsewhere."""
    return DEVNET_API_URL if network == "devnet" else PUBLIC_API_URL


def ada_to_lovelace(value: object) -> int:
    """Convert an ADA amount (int, Decimal or numeric string) to lovelace exactly.

    Raises:
        ValueError: negative, not finite, more than 6 decimals, a bool, a float, or not a number.
    """
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"expected an ADA amount as an integer or decimal, got {value!r}")
    try:
        amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)  # type: ignore[arg-type]
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"expected an ADA amount, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"expected a non-negative ADA amount, got {value}")
    lovelace = amount.scaleb(6)
    if lovelace != lovelace.to_integral_value():
        raise ValueError(f"ADA has at most 6 decimals, got {value}")
    return int(lovelace)


def parse_duration(text: str) -> int:
    """Parse a duration typed by a person into seconds: ``90s``, ``15m``, ``1h``, ``7d``, ``2w``, ``1h30m``.

    Raises:
        ValueError: empty, zero, or not a run of ``<number><unit>`` parts (units w, d, h, m, s).
    """
    raw = text.strip().lower() if isinstance(text, str) else ""
    pos, total = 0, 0
    while pos < len(raw):
        match = _DURATION_PART.match(raw, pos)
        if match is None:
            break
        total += int(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if not raw or pos != len(raw) or total <= 0:
        raise ValueError(f'expected a duration like "15m", "1h", "7d", "2w" or "1h30m", got {text!r}')
    return total


def format_duration(seconds: int | float | None) -> str:
    """The shortest readable form of a duration: ``3600`` is ``1h``, ``5400`` is ``1h30m``; None is ``none``."""
    if seconds is None:
        return "none"
    left = int(seconds)
    if left <= 0:
        return "0s"
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_S[unit]
        if left >= size and (unit != "w" or left % size == 0):
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts)


def load_config(home: Path, env: Mapping[str, str] = os.environ) -> AgentConfig:
    """Read ``<home>/agent.toml`` (defaults for a devnet home if it is missing) and apply ``env``.

    Raises:
        ConfigError: one line naming the file, the line, the key and what was expected.
    """
    home = Path(home)
    path = config_path(home)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text, source = "", None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    else:
        source = path
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+), column (\d+)", str(exc))
        where = f"{path}:{match.group(1)}" if match else str(path)
        raise ConfigError(f"{where}: TOML syntax error: {exc}") from None
    return _Reader(path, text).config(data, home=home, source=source, env=env)


class _Reader:
    """Turns the parsed TOML into settings, failing with the key's line in the text."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.locator = _Locator(text)

    def fail(self, where: tuple[Any, ...], message: str) -> NoReturn:
        line = self.locator.line(where)
        prefix = f"{self.path}:{line}" if line else str(self.path)
        raise ConfigError(f"{prefix}: {_dotted(where)}: {message}")

    def table(self, value: Any, where: tuple[Any, ...], allowed: tuple[str, ...]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(where, f"expected a table, got {_show(value)}")
        for key in value:
            if key not in allowed:
                hint = "; set T_API_KEY in the environment instead" if key == "api_key" else ""
                self.fail((*where, key), f"unknown key (expected one of {', '.join(allowed)}){hint}")
        return value

    def string(self, value: Any, where: tuple[Any, ...], *, choices: tuple[str, ...] = (),
               pattern: re.Pattern[str] | None = None, expected: str = "a string") -> str:
        if choices and value not in choices:
            self.fail(where, f"expected {_either(choices)}, got {_show(value)}")
        if not isinstance(value, str) or not value or (pattern is not None and not pattern.fullmatch(value)):
            self.fail(where, f"expected {expected}, got {_show(value)}")
        return value

    def url(self, value: Any, where: tuple[Any, ...], schemes: tuple[str, ...]) -> str:
        text = self.string(value, where, expected=f"a {'/'.join(schemes)} URL")
        if not any(text.startswith(f"{s}://") and len(text) > len(s) + 3 for s in schemes):
            self.fail(where, f"expected a {'/'.join(schemes)} URL, got {_show(value)}")
        return text.rstrip("/")

    def boolean(self, value: Any, where: tuple[Any, ...]) -> bool:
        if not isinstance(value, bool):
            self.fail(where, f"expected true or false, got {_show(value)}")
        return value

    def ada(self, value: Any, where: tuple[Any, ...]) -> int:
        try:
            return ada_to_lovelace(value)
        except ValueError as exc:
            self.fail(where, str(exc))

    def strings(self, value: Any, where: tuple[Any, ...]) -> list[str]:
        if not isinstance(value, list):
            self.fail(where, f"expected a list of strings, got {_show(value)}")
        for i, item in enumerate(value):
            self.string(item, (*where, i))
        return value

    # -- sections -------------------------------------------------------------------------

    def config(self, data: dict[str, Any], *, home: Path, source: Path | None, env: Mapping[str, str]) -> AgentConfig:
        self.table(data, (), ("api", "chain", "store", "wallet", "policy", "budgets", "schedules"))
        chain = self.chain(data.get("chain"), env)
        network = get_network(chain.network)
        api = self.api(data.get("api"), chain.network, env)
        wallet_t = self.table(data.get("wallet"), ("wallet",), ("name", "lanes"))
        lanes = wallet_t.get("lanes", 8)
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 0 <= lanes <= 100:
            self.fail(("wallet", "lanes"), f"expected a whole number of lanes from 0 to 100, got {_show(lanes)}")
        wallet = WalletConfig(self.string(wallet_t.get("name", "default"), ("wallet", "name"),
                                          pattern=_NAME, expected="a name of letters, digits, _ . -"), lanes=lanes)
        policy = self.policy(data.get("policy"), network)
        budgets = self.budgets(data.get("budgets"))
        schedules = self.schedules(data.get("schedules"), {b.name for b in budgets})
        return AgentConfig(api=api, chain=chain, wallet=wallet, policy=policy, budgets=budgets,
                           schedules=schedules, home=home, source=source,
                           store=self.store(data.get("store"), env))

    def chain(self, value: Any, env: Mapping[str, str]) -> ChainConfig:
        from wallets.blockfrost import default_url

        t = self.table(value, ("chain",), ("network", "backend", "ogmios_url", "blockfrost_url"))
        network = self.string(t.get("network", "devnet"), ("chain", "network"), choices=tuple(NETWORKS))
        backend = self.string(t.get("backend", "ogmios"), ("chain", "backend"), choices=CHAIN_BACKENDS)
        url = self.url(t.get("ogmios_url", DEFAULT_OGMIOS_URL), ("chain", "ogmios_url"), ("ws", "wss"))
        if env.get("CARDANO_AGENT_OGMIOS_URL"):
            url = _env_url(env["CARDANO_AGENT_OGMIOS_URL"], "CARDANO_AGENT_OGMIOS_URL", ("ws", "wss"))
        blockfrost_url = self.url(t.get("blockfrost_url", default_url(network)), ("chain", "blockfrost_url"),
                                  ("http", "https"))
        return ChainConfig(network=network, ogmios_url=url, backend=backend, blockfrost_url=blockfrost_url,
                           blockfrost_project_id=env.get(BLOCKFROST_PROJECT_ID_ENV) or None)

    def store(self, value: Any, env: Mapping[str, str]) -> StoreConfig:
        t = self.table(value, ("store",), ("url",))
        url = None
        if t.get("url") is not None:
            url = self.string(t["url"], ("store", "url"), expected="a postgresql:// URL")
            if not _store_url_ok(url):
                self.fail(("store", "url"), f"expected a postgresql:// URL, got {_redacted(url)!r}")
        if env.get(STORE_URL_ENV):
            url = env[STORE_URL_ENV]
            if not _store_url_ok(url):
                raise ConfigError(f"{STORE_URL_ENV}: expected a postgresql:// URL, got {_redacted(url)!r}")
        return StoreConfig(url=url)

    def api(self, value: Any, network: str, env: Mapping[str, str]) -> ApiConfig:
        t = self.table(value, ("api",), ("base_url", "partner", "proof", "timeout_s", "max_body_mb"))
        base_url = self.url(t.get("base_url", default_api_url(network)), ("api", "base_url"), ("http", "https"))
        if env.get("CARDANO_AGENT_API_URL"):
            base_url = _env_url(env["CARDANO_AGENT_API_URL"], "CARDANO_AGENT_API_URL", ("http", "https"))
        partner = None
        if t.get("partner") is not None:
            partner = self.string(t["partner"], ("api", "partner"), pattern=_PRINTABLE,
                                  expected="a partner name without spaces")
        proof = self.string(t.get("proof", "hash"), ("api", "proof"), choices=("hash", "cbor"))
        timeout = t.get("timeout_s", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, Decimal)) or not timeout > 0:
            self.fail(("api", "timeout_s"), f"expected a positive number of seconds, got {_show(timeout)}")
        max_body_mb = t.get("max_body_mb", 64)
        if isinstance(max_body_mb, bool) or not isinstance(max_body_mb, int) or not 1 <= max_body_mb <= 4096:
            self.fail(("api", "max_body_mb"), f"expected a whole number of MB from 1 to 4096, got {_show(max_body_mb)}")
        return ApiConfig(base_url=base_url, partner=partner, proof=proof, timeout_s=float(timeout),
                         api_key=env.get("T_API_KEY") or None, max_body_bytes=int(max_body_mb) * 1024 * 1024)

    def policy(self, value: Any, network: NetworkInfo) -> PaymentPolicy:
        from agent.x402 import normalise_asset, validate_address

        where = ("policy",)
        t = self.table(value, where, ("max_per_call_ada", "approve_above_ada", "payees", "allowed_assets",
                                      "pin_payees", "max_fee_overpay_ada"))
        max_per_call = DEFAULT_MAX_PER_CALL_LOVELACE
        if "max_per_call_ada" in t:
            max_per_call = self.ada(t["max_per_call_ada"], (*where, "max_per_call_ada"))
        approve = None
        if "approve_above_ada" in t:
            approve = self.ada(t["approve_above_ada"], (*where, "approve_above_ada"))
        payees: dict[str, frozenset[str]] = {}
        raw_payees = t.get("payees", {})
        if not isinstance(raw_payees, dict):
            self.fail((*where, "payees"), f"expected a table of host = [addresses], got {_show(raw_payees)}")
        for host, addresses in raw_payees.items():
            key = (*where, "payees", host)
            if not _HOST.fullmatch(host):
                self.fail(key, 'expected a host or host:port (no scheme or path), e.g. "api.example.com"')
            checked = set()
            for i, address in enumerate(self.strings(addresses, key)):
                try:
                    checked.add(validate_address(address, network, where="address"))
                except InvoiceError as exc:
                    self.fail((*key, i), str(exc))
            payees[host.lower()] = frozenset(checked)
        assets = {LOVELACE}
        for i, asset in enumerate(self.strings(t.get("allowed_assets", []), (*where, "allowed_assets"))):
            try:
                assets.add(normalise_asset(asset, where="asset"))
            except InvoiceError as exc:
                self.fail((*where, "allowed_assets", i), str(exc))
        pin = self.boolean(t.get("pin_payees", True), (*where, "pin_payees"))
        overpay = self.ada(t.get("max_fee_overpay_ada", 0), (*where, "max_fee_overpay_ada"))
        return PaymentPolicy(max_per_call_lovelace=max_per_call, payees=MappingProxyType(payees),
                             allowed_assets=frozenset(assets), approve_above_lovelace=approve, pin_payees=pin,
                             max_fee_overpay_lovelace=overpay)

    def budgets(self, value: Any) -> tuple[BudgetSpec, ...]:
        from agent.x402 import normalise_asset

        specs: list[BudgetSpec] = []
        for i, t in enumerate(self.entries(value, "budgets")):
            where = ("budgets", i)
            t = self.table(t, where, ("name", "limit_ada", "limits", "window", "scope", "include_fees"))
            name = self.unique_name(t, where, {b.name for b in specs})
            limits: dict[str, int] = {}
            if "limit_ada" in t:
                limits[LOVELACE] = self.ada(t["limit_ada"], (*where, "limit_ada"))
            raw_limits = t.get("limits", {})
            if not isinstance(raw_limits, dict):
                self.fail((*where, "limits"), f"expected a table of asset = amount, got {_show(raw_limits)}")
            for asset, amount in raw_limits.items():
                key = (*where, "limits", asset)
                try:
                    asset_id = normalise_asset(asset, where="asset")
                except InvoiceError as exc:
                    self.fail(key, str(exc))
                if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
                    self.fail(key, f"expected a non-negative integer in the asset's smallest unit, got {_show(amount)}")
                if asset_id in limits:
                    self.fail(key, f"limit for {asset_id} given twice (limit_ada is lovelace)")
                limits[asset_id] = amount
            if not limits:
                self.fail(where, "budget without a limit: set limit_ada or limits")
            window = t.get("window", "none")
            window_s: int | None = None
            if not isinstance(window, str):
                self.fail((*where, "window"), f'expected a duration like "1h", "7d" or "none", got {_show(window)}')
            if window.strip().lower() != "none":
                try:
                    window_s = parse_duration(window)
                except ValueError:
                    self.fail((*where, "window"), f'expected a duration like "1h", "7d", "2w" or "none", '
                                                  f"got {_show(window)}")
            scope = self.string(t.get("scope", "all"), (*where, "scope"))
            kind, sep, arg = scope.partition(":")
            if scope != "all" and not (sep and kind in ("route", "tag") and arg):
                self.fail((*where, "scope"), f'expected "all", "route:<pattern>" or "tag:<tag>", got {_show(scope)}')
            include_fees = self.boolean(t.get("include_fees", True), (*where, "include_fees"))
            specs.append(BudgetSpec(name=name, limits=MappingProxyType(limits), window_s=window_s,
                                    scope=scope, include_fees=include_fees))
        return tuple(specs)

    def schedules(self, value: Any, budget_names: set[str]) -> tuple[ScheduleSpec, ...]:
        from agent.jobs import JOB_KINDS, validate_request

        specs: list[ScheduleSpec] = []
        for i, t in enumerate(self.entries(value, "schedules")):
            where = ("schedules", i)
            t = self.table(t, where, ("name", "cron", "every", "job", "params", "tags", "budget", "misfire",
                                      "report"))
            name = self.unique_name(t, where, {s.name for s in specs})
            if ("cron" in t) == ("every" in t):
                self.fail(where, "set exactly one of cron or every")
            cron = every_s = None
            if "cron" in t:
                cron = self.cron(t["cron"], (*where, "cron"))
            else:
                try:
                    every_s = parse_duration(t["every"])
                except ValueError:
                    self.fail((*where, "every"), f'expected an interval like "15m", "1h" or "1d", got {_show(t["every"])}')
            if "job" not in t:
                self.fail(where, f"missing job (one of {', '.join(JOB_KINDS)})")
            kind = self.string(t["job"], (*where, "job"), choices=tuple(JOB_KINDS))
            params = t.get("params", {})
            if not isinstance(params, dict):
                self.fail((*where, "params"), f"expected a table, got {_show(params)}")
            params = _plain(params)
            try:
                validate_request(kind, params)
            except JobError as exc:
                named = re.search(r"field '([^']+)'", str(exc))
                key = named.group(1) if named and named.group(1) in params else None
                self.fail((*where, "params", key) if key else (*where, "params"), str(exc))
            tags = tuple(self.strings(t.get("tags", []), (*where, "tags")))
            budget = None
            if t.get("budget") is not None:
                budget = self.string(t["budget"], (*where, "budget"))
                if budget not in budget_names:
                    self.fail((*where, "budget"), f"no budget named {_show(budget)}")
            misfire = self.string(t.get("misfire", "run_once"), (*where, "misfire"), choices=MISFIRE_POLICIES)
            report = self.boolean(t.get("report", False), (*where, "report"))
            specs.append(ScheduleSpec(name=name, kind=kind, cron=cron, every_s=every_s,
                                      params=MappingProxyType(params), tags=tags, budget=budget,
                                      misfire=misfire, report=report))
        return tuple(specs)

    def entries(self, value: Any, section: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail((section,), f"expected [[{section}]] entries, got {_show(value)}")
        return value

    def unique_name(self, t: Mapping[str, Any], where: tuple[Any, ...], taken: set[str]) -> str:
        if "name" not in t:
            self.fail(where, "missing name")
        name = self.string(t["name"], (*where, "name"), pattern=_NAME, expected="a name of letters, digits, _ . -")
        if name in taken:
            self.fail((*where, "name"), f"duplicate name {_show(name)}")
        return name

    def cron(self, value: Any, where: tuple[Any, ...]) -> str:
        from datetime import timezone

        from apscheduler.triggers.cron import CronTrigger

        text = self.string(value, where, expected='a 5-field cron expression like "0 7 * * *"')
        if len(text.split()) != 5:
            self.fail(where, f"expected 5 cron fields (minute hour day month weekday), got {_show(text)}")
        try:
            CronTrigger.from_crontab(text, timezone=timezone.utc)
        except (ValueError, TypeError) as exc:
            self.fail(where, f"bad cron {_show(text)}: {exc}")
        return text


class _Locator:
    """Finds the line of a key path in TOML text (tomllib keeps no positions)."""

    _KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
    _DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
    _ARRAY = re.compile(rf"\s*\[\[\s*({_DOTTED})\s*\]\]")
    _TABLE = re.compile(rf"\s*\[\s*({_DOTTED})\s*\]")
    _ASSIGN = re.compile(rf"\s*({_DOTTED})\s*=(.*)")
    _PART = re.compile(_KEY)
    _STRING = re.compile(r'"""|\'\'\'|"(?:[^"\\]|\\.)*"|\'[^\']*\'')

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[Any, ...], int] = {}
        arrays: dict[tuple[Any, ...], int] = {}
        current: tuple[Any, ...] = ()
        depth, in_multiline = 0, None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline:
                if in_multiline in line:
                    in_multiline = None
                continue
            if depth > 0:  # inside a multi-line array or inline table
                depth, in_multiline = self._scan(line, depth)
                continue
            if m := self._ARRAY.match(line):
                current = self._resolve(self._split(m.group(1)), arrays, array=True)
                self.lines.setdefault(current[:-1], number)
                self.lines.setdefault(current, number)
            elif m := self._TABLE.match(line):
                current = self._resolve(self._split(m.group(1)), arrays, array=False)
                self.lines.setdefault(current, number)
            elif m := self._ASSIGN.match(line):
                parts = self._split(m.group(1))
                for k in range(1, len(parts) + 1):
                    self.lines.setdefault((*current, *parts[:k]), number)
                depth, in_multiline = self._scan(m.group(2), 0)

    def line(self, path: tuple[Any, ...]) -> int | None:
        """Return the line of ``path`` or of its nearest ancestor that has one."""
        for k in range(len(path), 0, -1):
            if path[:k] in self.lines:
                return self.lines[path[:k]]
        return None

    @classmethod
    def _split(cls, dotted: str) -> tuple[str, ...]:
        parts = []
        for m in cls._PART.finditer(dotted):
            token = m.group(0)
            if token[0] == '"':
                token = token[1:-1].encode().decode("unicode_escape")
            elif token[0] == "'":
                token = token[1:-1]
            parts.append(token)
        return tuple(parts)

    @staticmethod
    def _resolve(parts: tuple[str, ...], arrays: dict[tuple[Any, ...], int], *, array: bool) -> tuple[Any, ...]:
        resolved: tuple[Any, ...] = ()
        for i, part in enumerate(parts):
            resolved = (*resolved, part)
            if array and i == len(parts) - 1:
                arrays[resolved] = arrays.get(resolved, 0) + 1
                resolved = (*resolved, arrays[resolved] - 1)
            elif resolved in arrays:
                resolved = (*resolved, arrays[resolved] - 1)
        return resolved

    @classmethod
    def _scan(cls, value: str, depth: int) -> tuple[int, str | None]:
        """Track bracket depth through ``value``; report an unterminated multi-line string."""
        pos = 0
        while pos < len(value):
            m = cls._STRING.search(value, pos)
            chunk = value[pos:m.start()] if m else value[pos:]
            chunk = chunk.split("#", 1)[0] if "#" in chunk else chunk
            depth += chunk.count("[") + chunk.count("{") - chunk.count("]") - chunk.count("}")
            if m is None or "#" in value[pos:m.start()]:
                break
            token = m.group(0)
            if token in ('"""', "'''"):
                close = value.find(token, m.end())
                if close < 0:
                    return depth, token
                pos = close + 3
            else:
                pos = m.end()
        return max(depth, 0), None


def _store_url_ok(url: str) -> bool:
    from agent.store import is_postgres_url

    return is_postgres_url(url) and len(url.split("://", 1)[1]) > 0


def _redacted(url: str) -> str:
    from agent.store import redact_url

    return redact_url(url)


def _env_url(value: str, name: str, schemes: tuple[str, ...]) -> str:
    if not any(value.startswith(f"{s}://") and len(value) > len(s) + 3 for s in schemes):
        raise ConfigError(f"{name}: expected a {'/'.join(schemes)} URL, got {value!r}")
    return value.rstrip("/")


def _plain(value: Any) -> Any:
    """TOML values as JSON-able plain values (Decimal floats back to float)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            out += f".{key}" if out else key
    return out or "(top level)"


def _either(choices: tuple[str, ...]) -> str:
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"' if len(value) <= 80 else f'"{value[:80]}..."'
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)
