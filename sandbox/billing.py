"""The T API twin's billing config: keys, prices, accepted asset, partners, timeouts and faults.

The config is a TOML file (``cardano-agent sandbox up --api-config FILE``); every key is
optional and falls back to the built-in defaults below, so an empty file is a valid config::

    chain = "cardano-devnet"
    pay_to = "addr_test1..."          # receives amountUnits (keys not held by the twin)
    asset = "ADA"                     # or "<policy id hex 56>.<asset name hex>"
    decimals = 6                      # display only (0 by default for a native token)
    invoice_timeout_s = 300
    accept_mempool = false            # true: an unconfirmed payment is enough
    sweep = false                     # true: the payee spends each payment it accepts (default pay_to only)
    max_body_bytes = 41943040         # larger request bodies get 413
    max_image_bytes = 26214400        # larger base64 images get 413

    [prices]                          # per route, in the asset's smallest unit
    chat = 2000000
    "token-analysis" = 3000000
    "images/generate" = 4000000

    [api_keys.my-key]
    privileges = ["chat", "images"]   # or ["*"]; routes: chat, token-analysis, images, variations

    [partners.acme]
    split_mode = "additional"         # or "inclusive"
    batch_target = 1                  # > 1: one payment buys N prepaid calls per wallet
    batch_validity_s = 2592000
    outputs = [{address = "addr_test1...", share_bps = 5000, role = "partner"}]  # or amount = N

    [faults]
    error_rate = 0.0                  # share of API calls answered 503 (nothing billed)
    delay_ms = 0                      # every API call answers this much later
    after_payment_402_rate = 0.0      # share of paid retries answered 402 "submitted" (not consumed)
    seed = 0
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from sandbox.errors import SandboxConfigError

LOVELACE = "lovelace"
MIN_ADA_OUTPUT_LOVELACE = 1_000_000
"""Every lovelace output of an invoice is at least this, so it clears the ledger's min UTxO."""

# Devnet enterprise addresses of keys derived from sha256 of their label; the twin never signs.
DEFAULT_PAY_TO = "addr_test1vz53fltufhm5evcsa5wa4a6t9w48ruapm8zf9dy8hdnqcsqvups93"  # "twin-pay-to"
ACME_ADDRESS = "addr_test1vz8ph3w0fuglfufhnsrjr34kwd6eflnpth50m4t8dcuccushyy7q9"  # "twin-partner-acme"
GLOBEX_ADDRESS = "addr_test1vqlapqrmgxxxf4r4888m70xw0gxwhfx8lytxnlpw9zc3eqcqxgp9s"  # "twin-partner-globex"

PAYABLE_ROUTES = ("chat", "token-analysis", "images/generate", "images/edit", "images/upload-and-edit")
"""Routes that take an api-key or an x402 payment; ``images/variations`` is api-key only."""
PRIVILEGES = ("chat", "token-analysis", "images", "variations")
SPLIT_MODES = ("additional", "inclusive")

DEFAULT_PRICES: Mapping[str, int] = {
    "chat": 2_000_000,
    "token-analysis": 3_000_000,
    "images/generate": 4_000_000,
    "images/edit": 4_000_000,
    "images/upload-and-edit": 4_000_000,
}


def privilege_for(route: str) -> str:
    """Return the api-key privilege a route needs (``images/edit`` needs ``images``)."""
    if route == "images/variations":
        return "variations"
    return "images" if route.startswith("images/") else route


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An api key and the privileges it grants (``*`` grants all)."""

    key: str
    privileges: frozenset[str]

    def allows(self, route: str) -> bool:
        """Return True if this key may call ``route``."""
        return "*" in self.privileges or privilege_for(route) in self.privileges

    def __repr__(self) -> str:
        return f"ApiKey(key='***', privileges={sorted(self.privileges)})"


@dataclass(frozen=True, slots=True)
class ShareOutput:
    """A revenue-share output: a fixed ``amount`` or ``share_bps`` of the invoice amount."""

    address: str
    share_bps: int = 0
    amount: int | None = None
    role: str = "partner"

    def units_for(self, invoice_amount: int) -> int:
        """Return the amount this output takes for an invoice of ``invoice_amount`` units."""
        if self.amount is not None:
            return self.amount
        return invoice_amount * self.share_bps // 10_000


@dataclass(frozen=True, slots=True)
class Partner:
    """A partner tier: revenue-share outputs, split mode and prepaid batch size."""

    name: str
    outputs: tuple[ShareOutput, ...] = ()
    split_mode: str = "additional"
    batch_target: int = 1
    batch_validity_s: int = 30 * 86_400


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault injection: a share of 503 answers, a fixed delay, and 402s after a valid payment."""

    error_rate: float = 0.0
    delay_ms: int = 0
    after_payment_402_rate: float = 0.0
    seed: int = 0


def _default_keys() -> Mapping[str, ApiKey]:
    return {
        "twin-admin-key": ApiKey("twin-admin-key", frozenset({"*"})),
        "twin-chat-key": ApiKey("twin-chat-key", frozenset({"chat"})),
    }


def _default_partners() -> Mapping[str, Partner]:
    return {
        "acme": Partner("acme", (ShareOutput(ACME_ADDRESS, share_bps=5_000),), "additional", 1),
        "globex": Partner("globex", (ShareOutput(GLOBEX_ADDRESS, share_bps=4_000),), "inclusive", 5),
    }


@dataclass(frozen=True, slots=True)
class RequiredPayment:
    """What one invoice asks for: the amount, the asset and every output the tx must contain."""

    amount_units: int
    asset: str
    outputs: tuple[tuple[str, int, str, str], ...]  # (address, amount, asset, role); payTo first
    extra_outputs: tuple[tuple[str, int, str, str], ...]


@dataclass(frozen=True)
class TwinConfig:
    """Everything the twin bills by. Build with ``TwinConfig()``, ``parse_twin_config`` or ``load_twin_config``."""

    chain: str = "cardano-devnet"
    pay_to: str = DEFAULT_PAY_TO
    asset: str = LOVELACE
    decimals: int = 6
    invoice_timeout_s: int = 300
    accept_mempool: bool = False
    sweep: bool = False
    """Once an invoice is consumed, the payee moves its payment on (``sandbox.sweep``): no output stays."""
    max_body_bytes: int = 40 * 1024 * 1024
    max_image_bytes: int = 25 * 1024 * 1024
    prices: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    api_keys: Mapping[str, ApiKey] = field(default_factory=_default_keys, repr=False)  # keys are secrets
    partners: Mapping[str, Partner] = field(default_factory=_default_partners)
    faults: Faults = field(default_factory=Faults)

    @property
    def asset_label(self) -> str:
        """The invoice ``asset`` field: ``ADA`` or the native asset id."""
        return "ADA" if self.asset == LOVELACE else self.asset

    def price(self, route: str, partner: Partner | None = None) -> int:
        """Return the invoice amount for ``route``: its price, times the partner's batch size."""
        base = self.prices[route]
        return base * (partner.batch_target if partner else 1)

    def required_payment(self, route: str, partner: Partner | None = None) -> RequiredPayment:
        """Return the amount and outputs an invoice for ``route`` (and ``partner``) asks for."""
        amount = self.price(route, partner)
        extra = tuple(
            (o.address, o.units_for(amount), self.asset, o.role) for o in (partner.outputs if partner else ())
        )
        carved = sum(e[1] for e in extra) if partner and partner.split_mode == "inclusive" else 0
        pay_to = (self.pay_to, amount - carved, self.asset, "payTo")
        return RequiredPayment(amount, self.asset, (pay_to, *extra), extra)

    def with_(self, **changes: Any) -> TwinConfig:
        """Return a copy with ``changes`` applied and validated (handy in tests)."""
        return validate(replace(self, **changes))


def _is_asset(asset: str) -> bool:
    policy, sep, name = asset.partition(".")
    hexdigits = set("0123456789abcdef")
    return (sep == "." and len(policy) == 56 and set(policy) <= hexdigits
            and len(name) % 2 == 0 and len(name) <= 64 and set(name) <= hexdigits)


def _check_address(value: Any, where: str) -> str:
    from wallets.address import parse_address
    from wallets.errors import AddressError

    try:
        if isinstance(value, str) and parse_address(value).testnet:
            return value
    except AddressError:
        pass
    raise SandboxConfigError(f"{where}: expected a devnet (addr_test1…) address, got {value!r}")


def validate(config: TwinConfig) -> TwinConfig:
    """Check a config as a whole (addresses, prices, splits); return it or raise SandboxConfigError."""
    if config.chain != "cardano-devnet":
        raise SandboxConfigError(f"chain: the twin bills on cardano-devnet, not {config.chain!r}")
    _check_address(config.pay_to, "pay_to")
    if config.sweep and config.pay_to != DEFAULT_PAY_TO:
        raise SandboxConfigError("sweep: the twin holds only the key of the default pay_to")
    if config.asset != LOVELACE and not _is_asset(config.asset):
        raise SandboxConfigError(f"asset: expected ADA or <policy hex 56>.<name hex>, got {config.asset!r}")
    if config.invoice_timeout_s <= 0:
        raise SandboxConfigError("invoice_timeout_s must be positive")
    for route in PAYABLE_ROUTES:
        if not isinstance(config.prices.get(route), int) or config.prices[route] <= 0:
            raise SandboxConfigError(f"prices.{route}: expected a positive integer")
    f = config.faults
    if not (0.0 <= f.error_rate <= 1.0 and 0.0 <= f.after_payment_402_rate <= 1.0 and f.delay_ms >= 0):
        raise SandboxConfigError("faults: rates must be within 0..1 and delay_ms non-negative")
    for partner in (None, *config.partners.values()):
        for route in PAYABLE_ROUTES:
            need = config.required_payment(route, partner)
            for address, amount, asset, role in need.outputs:
                floor = MIN_ADA_OUTPUT_LOVELACE if asset == LOVELACE else 1
                if amount < floor:
                    who = f"partner {partner.name}" if partner else "default tier"
                    raise SandboxConfigError(
                        f"{who}, route {route}: {role} output of {amount} is below {floor} ({asset})")
    return config


def _int(raw: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SandboxConfigError(f"{where}{key}: expected an integer, got {value!r}")
    return value


def _rate(raw: Mapping[str, Any], key: str) -> float:
    value = raw.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SandboxConfigError(f"faults.{key}: expected a number within 0..1, got {value!r}")
    return float(value)


def _partner(name: str, raw: Any) -> Partner:
    where = f"partners.{name}."
    if not isinstance(raw, Mapping):
        raise SandboxConfigError(f"partners.{name}: expected a table")
    mode = raw.get("split_mode", "additional")
    if mode not in SPLIT_MODES:
        raise SandboxConfigError(f"{where}split_mode: expected additional or inclusive, got {mode!r}")
    outputs = []
    for i, out in enumerate(raw.get("outputs", [])):
        if not isinstance(out, Mapping):
            raise SandboxConfigError(f"{where}outputs[{i}]: expected a table")
        amount = out.get("amount")
        if amount is not None and (not isinstance(amount, int) or amount <= 0):
            raise SandboxConfigError(f"{where}outputs[{i}].amount: expected a positive integer")
        bps = _int(out, "share_bps", 0, f"{where}outputs[{i}].")
        if amount is None and not 0 < bps < 10_000:
            raise SandboxConfigError(f"{where}outputs[{i}]: give amount or share_bps in 1..9999")
        outputs.append(ShareOutput(_check_address(out.get("address"), f"{where}outputs[{i}].address"),
                                   bps, amount, str(out.get("role", "partner"))))
    batch = _int(raw, "batch_target", 1, where)
    if batch < 1:
        raise SandboxConfigError(f"{where}batch_target: must be at least 1")
    return Partner(name, tuple(outputs), mode, batch, _int(raw, "batch_validity_s", 30 * 86_400, where))


def parse_twin_config(raw: Mapping[str, Any]) -> TwinConfig:
    """Build a validated TwinConfig from a parsed TOML mapping; missing keys take the defaults."""
    base = TwinConfig()
    known = {"chain", "pay_to", "asset", "decimals", "invoice_timeout_s", "accept_mempool", "sweep",
             "max_body_bytes", "max_image_bytes", "prices", "api_keys", "partners", "faults"}
    unknown = set(raw) - known
    if unknown:
        raise SandboxConfigError(f"unknown billing config keys: {', '.join(sorted(unknown))}")
    asset = raw.get("asset", "ADA")
    asset = LOVELACE if asset in ("ADA", "lovelace") else asset
    prices = dict(DEFAULT_PRICES)
    for route, price in dict(raw.get("prices", {})).items():
        if route not in DEFAULT_PRICES:
            raise SandboxConfigError(f"prices.{route}: unknown route; expected one of {', '.join(PAYABLE_ROUTES)}")
        prices[route] = _int({route: price}, route, 0, "prices.")
    keys = dict(base.api_keys)
    for key, spec in dict(raw.get("api_keys", {})).items():
        privs = spec.get("privileges", ["*"]) if isinstance(spec, Mapping) else None
        if not isinstance(privs, list) or not set(privs) <= {*PRIVILEGES, "*"}:
            raise SandboxConfigError(f"api_keys.{key}.privileges: expected a list from {', '.join(PRIVILEGES)} or *")
        keys[key] = ApiKey(key, frozenset(privs))
    partners = dict(base.partners)
    for name, spec in dict(raw.get("partners", {})).items():
        partners[name] = _partner(name, spec)
    fraw = raw.get("faults", {})
    if not isinstance(fraw, Mapping):
        raise SandboxConfigError("faults: expected a table")
    faults = Faults(_rate(fraw, "error_rate"), _int(fraw, "delay_ms", 0, "faults."),
                    _rate(fraw, "after_payment_402_rate"), _int(fraw, "seed", 0, "faults."))
    accept = raw.get("accept_mempool", False)
    if not isinstance(accept, bool):
        raise SandboxConfigError(f"accept_mempool: expected true or false, got {accept!r}")
    sweep = raw.get("sweep", False)
    if not isinstance(sweep, bool):
        raise SandboxConfigError(f"sweep: expected true or false, got {sweep!r}")
    config = TwinConfig(
        chain=str(raw.get("chain", base.chain)),
        pay_to=_check_address(raw.get("pay_to", base.pay_to), "pay_to"),
        asset=asset,
        decimals=_int(raw, "decimals", 6 if asset == LOVELACE else 0, ""),
        invoice_timeout_s=_int(raw, "invoice_timeout_s", base.invoice_timeout_s, ""),
        accept_mempool=accept,
        sweep=sweep,
        max_body_bytes=_int(raw, "max_body_bytes", base.max_body_bytes, ""),
        max_image_bytes=_int(raw, "max_image_bytes", base.max_image_bytes, ""),
        prices=prices, api_keys=keys, partners=partners, faults=faults,
    )
    return validate(config)


def load_twin_config(path: Path | None) -> TwinConfig:
    """Read the TOML billing config at ``path`` (None: the built-in defaults)."""
    if path is None:
        return validate(TwinConfig())
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SandboxConfigError(f"cannot read billing config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SandboxConfigError(f"billing config {path} is not valid TOML: {exc}") from exc
    return parse_twin_config(raw)
