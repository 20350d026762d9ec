"""One reading of Cardano payment addresses: bech32 text, raw bytes, network and parts.

Every check on an address in the packages (invoice payees, ``wallet send``, x402 v2
``payTo``, the sandbox's T twin) reads it here. Decoding is cached: the same payee is
judged once (decoding was ~10% of a payment's CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from wallets import bech32
from wallets.errors import AddressError

_HRP_NETWORK = {"addr": 1, "addr_test": 0}
_SIZES = {0: 57, 1: 57, 2: 57, 3: 57, 6: 29, 7: 29}
"""Shelley payment address types by header nibble and their byte length (4, 5 pointer: variable)."""


@dataclass(frozen=True, slots=True)
class ParsedAddress:
    """A Shelley payment address, decoded.

    ``payment`` is ``"key"`` or ``"script"``; ``stake`` is ``"key"``, ``"script"``,
    ``"pointer"`` or ``"none"`` (an enterprise address).
    """

    text: str
    raw: bytes
    network_id: int
    payment: str
    stake: str

    @property
    def testnet(self) -> bool:
        """True for an ``addr_test`` address (network id 0)."""
        return self.network_id == 0


def _stake_kind(kind: int) -> str:
    if kind in (6, 7):
        return "none"
    if kind in (4, 5):
        return "pointer"
    return "script" if kind in (2, 3) else "key"


@lru_cache(maxsize=4096)
def parse_address(address: str) -> ParsedAddress:
    """Decode a lower-case bech32 Shelley payment address, or raise :class:`AddressError`."""
    if not isinstance(address, str) or address != address.lower() or len(address) > 200:
        raise AddressError(f"not a bech32 payment address: {address!r}")
    hrp = address.rpartition("1")[0]
    if hrp not in _HRP_NETWORK:
        raise AddressError(f"not a bech32 payment address: {address!r}")
    try:
        raw = bech32.decode(address)[1]
    except bech32.Bech32Error as exc:
        what = {"checksum": "bad checksum in address", "padding": "bad padding in address"}
        raise AddressError(f"{what.get(exc.reason, 'not a bech32 payment address:')} {address!r}") from None
    kind, network_id = (raw[0] >> 4, raw[0] & 0x0F) if raw else (-1, -1)
    if not (_SIZES.get(kind) == len(raw) or (kind in (4, 5) and len(raw) >= 32)):
        raise AddressError(f"not a payment address: {address!r}")
    if network_id != _HRP_NETWORK[hrp]:
        raise AddressError(f"address prefix and network id disagree: {address!r}")
    return ParsedAddress(text=address, raw=bytes(raw), network_id=network_id,
                         payment="script" if kind & 1 else "key", stake=_stake_kind(kind))


def address_text(raw: bytes) -> str:
    """Return the bech32 form of raw Shelley address bytes (``addr`` or ``addr_test`` by network id)."""
    if not raw:
        raise AddressError("empty address")
    return bech32.encode("addr" if raw[0] & 0x0F == 1 else "addr_test", raw)


def parse_address_any_case(text: str) -> ParsedAddress:
    """:func:`parse_address` for text as people type it: all lower or all upper case (bech32 allows both)."""
    if not isinstance(text, str) or (text != text.lower() and text != text.upper()):
        raise AddressError(f"not a bech32 payment address (mixed case): {text!r}")
    return parse_address(text.lower())
