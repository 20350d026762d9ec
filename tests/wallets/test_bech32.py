"""The one bech32/base58 codec: agrees with pycardano, says why a string is refused, and both users share it."""

from __future__ import annotations

import random

import pytest
from pycardano import Address

from sandbox import txcbor
from wallets import bech32, payment
from wallets.errors import AddressError


@pytest.mark.parametrize("header,size", [(0x00, 57), (0x61, 29), (0x70, 29), (0x11, 57), (0x40, 32)])
def test_round_trips_and_agrees_with_pycardano(header: int, size: int) -> None:
    """Every Shelley address kind encodes as pycardano does and decodes back to the same bytes."""
    rng = random.Random(header)
    raw = bytes([header]) + bytes(rng.randrange(256) for _ in range(size - 1))
    if header >> 4 == 4:  # a pointer address: 28-byte key hash, then slot, tx index, cert index
        raw = raw[:29] + bytes([5, 1, 0])
    text = bech32.encode("addr" if header & 0x0F else "addr_test", raw)
    assert text == str(Address.from_primitive(raw))
    assert bech32.decode(text) == ("addr" if header & 0x0F else "addr_test", raw)
    assert payment.address_from_bytes(raw) == text == txcbor.address_to_str(raw)
    assert payment.address_bytes(text) == raw == txcbor.address_from_str(text)


def test_payloads_longer_than_bip173_limit_round_trip() -> None:
    """No 90/108-character limit: Cardano bech32 carries long payloads."""
    raw = bytes(range(200))
    assert bech32.decode(bech32.encode("script", raw)) == ("script", raw)


def test_refusals_name_their_reason_in_both_callers() -> None:
    """A flipped character is a checksum error; garbage is a syntax error; each caller keeps its message."""
    good = bech32.encode("addr_test", bytes([0x60]) + bytes(28))
    bad = good[:-1] + ("q" if good[-1] != "q" else "p")
    with pytest.raises(bech32.Bech32Error) as err:
        bech32.decode(bad)
    assert err.value.reason == "checksum"
    with pytest.raises(bech32.Bech32Error) as err:
        bech32.decode("addr_test1b")
    assert err.value.reason == "syntax"
    with pytest.raises(AddressError, match="bad checksum in address"):
        payment.address_bytes(bad)
    with pytest.raises(txcbor.DecodeError, match="bad bech32 checksum"):
        txcbor.bech32_decode(bad)


def test_base58_matches_the_reference_package() -> None:
    """Byron addresses print in base58 with leading zero bytes as '1', as the base58 package does."""
    base58 = pytest.importorskip("base58")
    for payload in (b"", b"\0\0abc", bytes(range(1, 80))):
        assert bech32.base58_encode(payload) == base58.b58encode(payload).decode()
