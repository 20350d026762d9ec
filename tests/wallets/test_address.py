"""The one address reader: parts, network, case, and every refusal as an AddressError."""

from __future__ import annotations

import pytest
from pycardano import Address, Network, PointerAddress, ScriptHash, VerificationKeyHash

from wallets.address import address_text, parse_address, parse_address_any_case
from wallets.errors import AddressError

KEY = VerificationKeyHash(bytes(range(28)))
SCRIPT = ScriptHash(bytes(range(1, 29)))


@pytest.mark.parametrize("payment,stake,network,want", [
    (KEY, KEY, Network.TESTNET, ("key", "key", 0)),
    (SCRIPT, KEY, Network.MAINNET, ("script", "key", 1)),
    (KEY, SCRIPT, Network.TESTNET, ("key", "script", 0)),
    (KEY, None, Network.MAINNET, ("key", "none", 1)),
    (SCRIPT, None, Network.TESTNET, ("script", "none", 0)),
    (KEY, PointerAddress(5, 1, 0), Network.TESTNET, ("key", "pointer", 0)),
])
def test_parts_and_network_agree_with_pycardano(payment, stake, network, want) -> None:
    """Each Shelley address kind reads as pycardano builds it, and prints back the same."""
    text = str(Address(payment, stake, network))
    parsed = parse_address(text)
    assert (parsed.payment, parsed.stake, parsed.network_id) == want
    assert parsed.testnet == (network == Network.TESTNET)
    assert parsed.raw == bytes(Address.from_primitive(text)) and address_text(parsed.raw) == text == parsed.text


def test_upper_case_is_read_mixed_case_refused() -> None:
    """Bech32 is all-lower or all-upper; parse_address itself takes only the canonical lower case."""
    text = str(Address(KEY, KEY, Network.TESTNET))
    assert parse_address_any_case(text.upper()).text == text
    with pytest.raises(AddressError, match="mixed case"):
        parse_address_any_case(text[:10] + text[10:].upper())
    with pytest.raises(AddressError):
        parse_address(text.upper())


@pytest.mark.parametrize("text", [
    "", "addr_test1", "stake_test1uqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
    "addr_test1vqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
])
def test_what_is_not_a_payment_address_is_refused(text: str) -> None:
    """Garbage, a reward (stake) address and a bad checksum are all AddressError."""
    with pytest.raises(AddressError):
        parse_address(text)


def test_prefix_and_header_network_must_agree() -> None:
    """addr_test text over a mainnet header is refused, not read as either network."""
    from wallets import bech32

    mainnet_raw = bytes(Address(KEY, KEY, Network.MAINNET))
    with pytest.raises(AddressError, match="disagree"):
        parse_address(bech32.encode("addr_test", mainnet_raw))
