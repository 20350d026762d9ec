"""Plain value types shared by the chain client, the payment builder and the agent (no pycardano)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

LOVELACE = "lovelace"
"""The asset id of ADA. Native tokens are ``"<policy id hex 56>.<asset name hex>"``."""


def is_native_asset(asset: str) -> bool:
    """Return True if ``asset`` names a native token (``policy.assetname`` in hex)."""
    if asset == LOVELACE:
        return False
    policy, sep, name = asset.partition(".")
    return (
        sep == "."
        and len(policy) == 56
        and all(c in "0123456789abcdef" for c in policy)
        and len(name) <= 64
        and len(name) % 2 == 0
        and all(c in "0123456789abcdef" for c in name)
    )


@dataclass(frozen=True, slots=True)
class OutputRef:
    """A reference to a transaction output: transaction id (hex) and index."""

    tx_id: str
    index: int

    def __str__(self) -> str:
        return f"{self.tx_id}#{self.index}"


@dataclass(frozen=True, slots=True)
class Utxo:
    """An unspent output as the chain reports it. ``assets`` maps ``policy.name`` to quantity."""

    ref: OutputRef
    address: str
    lovelace: int
    assets: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequiredOutput:
    """One output a payment must contain: ``amount`` of ``asset`` (smallest unit) to ``address``."""

    address: str
    amount: int
    asset: str = LOVELACE
    role: str | None = None


@dataclass(frozen=True, slots=True)
class Tip:
    """The chain tip: slot number and block header hash."""

    slot: int
    id: str


@dataclass(frozen=True, slots=True)
class ProtocolParams:
    """The protocol parameters the payment builder needs."""

    min_fee_coefficient: int
    min_fee_constant: int
    coins_per_utxo_byte: int
    max_tx_size: int
    max_value_size: int
