"""The payment policy: whether an invoice may be paid, and whether a human must approve it (pure).

Pins and approvals are stored elsewhere (SQLite); this module only decides. Checks run in a
fixed order so the reason reported is the most fundamental one: network, expiry, babel,
asset, payee allowlist, payee pinning, per-call maximum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping

from agent.errors import PolicyError
from agent.x402 import Invoice
from wallets.networks import NetworkInfo
from wallets.types import LOVELACE

WRONG_NETWORK = "wrong_network"
EXPIRED = "expired"
BABEL = "babel_not_supported"
ASSET_NOT_ALLOWED = "asset_not_allowed"
PAYEE_NOT_ALLOWED = "payee_not_allowed"
PAYEE_CHANGED = "payee_changed"
OVER_MAX_PER_CALL = "over_max_per_call"


class PayeeChangedError(PolicyError):
    """The invoice pays an address never seen for this host; refused until a human approves it."""

    def __init__(self, message: str, *, host: str, new_payees: frozenset[str], pinned: frozenset[str]) -> None:
        super().__init__(message, reason=PAYEE_CHANGED)
        self.host = host
        self.new_payees = new_payees
        self.pinned = pinned


@dataclass(frozen=True, slots=True)
class PaymentPolicy:
    """What the agent may pay without asking.

    Attributes:
        max_per_call_lovelace: refuse a payment whose cost (outputs to others + fee) exceeds this.
        payees: allowlist per API host (``host`` or ``host:port``); a host absent or mapped to an
            empty set is not restricted (pinning still applies).
        allowed_assets: assets an invoice may ask for; ``lovelace`` plus configured tokens.
        approve_above_lovelace: payments costing more wait for ``cardano-agent approve``.
        pin_payees: remember a host's payees on first payment and refuse a change until approved.
        max_fee_overpay_lovelace: when the wallet's last coins leave no room for a change output,
            the rest goes to the fee; pay such a payment only if that extra is at most this
            (default 0: refuse, unless a person at the terminal agrees).
    """

    max_per_call_lovelace: int | None = None
    payees: Mapping[str, frozenset[str]] = field(default_factory=dict)
    allowed_assets: frozenset[str] = frozenset({LOVELACE})
    approve_above_lovelace: int | None = None
    pin_payees: bool = True
    max_fee_overpay_lovelace: int = 0

    def allowlist_for(self, host: str) -> frozenset[str]:
        """Return the allowed payees for ``host`` (exact, then without port); empty = unrestricted."""
        host = host.lower()
        if host in self.payees:
            return self.payees[host]
        bare = _strip_port(host)
        return self.payees.get(bare, frozenset())


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer for an invoice it does not refuse.

    Attributes:
        approval_required: the cost is above the approval threshold; park it for a human.
        pin: payees to remember for the host once this payment goes ahead (empty if none).
        cost_lovelace: the cost that was judged.
    """

    approval_required: bool
    pin: frozenset[str]
    cost_lovelace: int


def check_invoice(
    invoice: Invoice,
    policy: PaymentPolicy,
    *,
    network: NetworkInfo,
    host: str,
    now: datetime,
    cost_lovelace: int,
    pinned: frozenset[str] | None = None,
    pinned_payees: frozenset[str] | None = None,
) -> Decision:
    """Judge ``invoice`` against ``policy`` for a wallet on ``network`` calling ``host``.

    Args:
        invoice: the parsed invoice.
        policy: the configured policy.
        network: the paying wallet's network.
        host: the API host the 402 came from (``host`` or ``host:port``).
        now: the current instant.
        cost_lovelace: lovelace leaving the wallet (outputs to others, min-ADA of token
            outputs, and the fee), as built.
        pinned: the payees pinned for ``host`` so far, or None if none were ever pinned.
        pinned_payees: the same, under the name used in contracts.md; give one or the other.

    Returns:
        A ``Decision``: whether approval is required, and which payees to pin.

    Raises:
        PolicyError: with ``reason`` one of the module's reason constants
            (``PayeeChangedError`` for ``payee_changed``).
    """
    if pinned is not None and pinned_payees is not None:
        raise TypeError("give pinned or pinned_payees, not both")
    pinned = pinned if pinned is not None else pinned_payees
    if invoice.network.name != network.name:
        raise PolicyError(
            f"invoice {invoice.invoice_id} is for {invoice.chain}, the wallet is on {network.chain_label}",
            reason=WRONG_NETWORK,
        )
    if _utc(now) >= invoice.expires_at:
        raise PolicyError(
            f"invoice {invoice.invoice_id} expired at {invoice.expires_at.isoformat()}", reason=EXPIRED
        )
    if invoice.babel:
        raise PolicyError(
            f"invoice {invoice.invoice_id} demands babel fees (fees in a token); the agent pays fees in ADA only",
            reason=BABEL,
        )
    for asset in sorted(invoice.total_by_asset()):
        if asset not in policy.allowed_assets:
            raise PolicyError(
                f"invoice {invoice.invoice_id} asks for {asset}, which is not an allowed asset",
                reason=ASSET_NOT_ALLOWED,
            )
    allowed = policy.allowlist_for(host)
    if allowed:
        outside = sorted(invoice.payees - allowed)
        if outside:
            raise PolicyError(
                f"invoice {invoice.invoice_id} pays {outside[0]}, which is not an allowed payee for {host}",
                reason=PAYEE_NOT_ALLOWED,
            )
    pin: frozenset[str] = frozenset()
    # An allowlist is the user's own word on who may be paid, so it replaces pinning for that host.
    if policy.pin_payees and not allowed:
        if pinned is None:
            pin = invoice.payees
        else:
            new = invoice.payees - pinned
            if new:
                raise PayeeChangedError(
                    f"invoice {invoice.invoice_id} pays {sorted(new)[0]}, not a payee pinned for {host}; "
                    f"refused until approved",
                    host=host, new_payees=frozenset(new), pinned=pinned,
                )
    if policy.max_per_call_lovelace is not None and cost_lovelace > policy.max_per_call_lovelace:
        raise PolicyError(
            f"invoice {invoice.invoice_id} costs {cost_lovelace / 1e6:.6f} ADA, over the per-call maximum "
            f"of {policy.max_per_call_lovelace / 1e6:.6f} ADA",
            reason=OVER_MAX_PER_CALL,
        )
    approval = policy.approve_above_lovelace is not None and cost_lovelace > policy.approve_above_lovelace
    return Decision(approval_required=approval, pin=pin, cost_lovelace=cost_lovelace)


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [ipv6]:port
        return host.split("]", 1)[0] + "]"
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
