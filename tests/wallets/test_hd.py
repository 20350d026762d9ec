"""CIP-1852 derivation, mnemonics and signing (wallets.hd), checked against public vectors."""

from __future__ import annotations

import pytest

from wallets.errors import MnemonicError
from wallets.hd import (
    account_path,
    derive_account,
    derive_keys,
    generate_mnemonic,
    mnemonic_entropy,
    mnemonic_from_entropy,
    parse_mnemonic,
)
from wallets.networks import UnknownNetworkError
from wallets.secrets import SecretBytes

# Source: pycardano test/pycardano/crypto/test_bip32.py (commit 1613ebe), whose vectors are
# copied from Emurgo cardano-serialization-lib rust/src/address.rs. Base address = payment key
# m/1852'/1815'/0'/0/0 + stake key m/1852'/1815'/0'/2/0.
MNEMONIC_12 = "test walk nut penalty hip pave soap entry language right filter choice"
MNEMONIC_15 = "art forum devote street sure rather head chuckle guard poverty release quote oak craft enemy"
MNEMONIC_24 = ("excess behave track soul table wear ocean cash stay nature item turtle palm soccer lunch "
               "horror start stumble month panic right must lock dress")
BASE_VECTORS = [
    (MNEMONIC_12, "mainnet",
     "addr1qx2fxv2umyhttkxyxp8x0dlpdt3k6cwng5pxj3jhsydzer3jcu5d8ps7zex2k2xt3uqxgjqnnj83ws8lhrn648jjxtwqfjkjv7"),
    (MNEMONIC_12, "preprod",
     "addr_test1qz2fxv2umyhttkxyxp8x0dlpdt3k6cwng5pxj3jhsydzer3jcu5d8ps7zex2k2xt3uqxgjqnnj83ws8lhrn648jjxtwq2ytjqp"),
    (MNEMONIC_15, "mainnet",
     "addr1q9u5vlrf4xkxv2qpwngf6cjhtw542ayty80v8dyr49rf5ewvxwdrt70qlcpeeagscasafhffqsxy36t90ldv06wqrk2qld6xc3"),
    (MNEMONIC_15, "preview",
     "addr_test1qpu5vlrf4xkxv2qpwngf6cjhtw542ayty80v8dyr49rf5ewvxwdrt70qlcpeeagscasafhffqsxy36t90ldv06wqrk2qum8x5w"),
    (MNEMONIC_24, "mainnet",
     "addr1qyy6nhfyks7wdu3dudslys37v252w2nwhv0fw2nfawemmn8k8ttq8f3gag0h89aepvx3xf69g0l9pf80tqv7cve0l33sdn8p3d"),
    (MNEMONIC_24, "devnet",
     "addr_test1qqy6nhfyks7wdu3dudslys37v252w2nwhv0fw2nfawemmn8k8ttq8f3gag0h89aepvx3xf69g0l9pf80tqv7cve0l33sw96paj"),
]


@pytest.mark.parametrize(("phrase", "network", "address"), BASE_VECTORS)
def test_base_address_matches_pycardano_vectors(phrase: str, network: str, address: str) -> None:
    """The CIP-1852 base address equals pycardano's / CSL's published vector for each network."""
    assert derive_keys(parse_mnemonic(phrase), network).address == address


def test_payment_key_matches_cip19_vector() -> None:
    """Payment key 0/0 of the CIP-1852 test mnemonic is CIP-19's test payment key and enterprise address.

    Source: cardano-foundation/CIPs CIP-0019/README.md "Test Vectors" (addr_vk1w0l2sr2z…,
    type-06 addr1vx2fxv2u…). CIP-19's type-00 address pairs that key with an unrelated stake
    key, so it is not a derivation vector and is not used for the base address.
    """
    from pycardano import Address, Network, VerificationKeyHash
    from pycardano.crypto.bech32 import bech32_decode, convertbits

    keys = derive_keys(parse_mnemonic(MNEMONIC_12), "mainnet")
    hrp, data, _ = bech32_decode("addr_vk1w0l2sr2zgfm26ztc6nl9xy8ghsk5sh6ldwemlpmp9xylzy4dtf7st80zhd")
    assert hrp == "addr_vk"
    assert keys.payment_vkey == bytes(convertbits(data, 5, 8, False))
    enterprise = Address(VerificationKeyHash(bytes.fromhex(keys.payment_key_hash)), network=Network.MAINNET)
    assert enterprise.encode() == "addr1vx2fxv2umyhttkxyxp8x0dlpdt3k6cwng5pxj3jhsydzers66hrl8"


def test_stake_key_matches_pycardano_reward_vector() -> None:
    """The stake key 2/0 hash gives pycardano's stake_test1uqevw2… reward address vector."""
    from pycardano import Address, Network, VerificationKeyHash

    keys = derive_keys(parse_mnemonic(MNEMONIC_12), "preprod")
    reward = Address(staking_part=VerificationKeyHash(bytes.fromhex(keys.stake_key_hash)),
                     network=Network.TESTNET)
    assert reward.encode() == "stake_test1uqevw2xnsc0pvn9t9r9c7qryfqfeerchgrlm3ea2nefr9hqp8n5xl"


def test_network_selects_address_header() -> None:
    """mainnet gives addr1… (network id 1); preprod, preview and devnet give the same addr_test1…."""
    phrase = parse_mnemonic(MNEMONIC_24)
    test_addresses = {derive_keys(phrase, n).address for n in ("preprod", "preview", "devnet")}
    assert len(test_addresses) == 1 and next(iter(test_addresses)).startswith("addr_test1q")
    assert derive_keys(phrase, "mainnet").address.startswith("addr1q")
    with pytest.raises(UnknownNetworkError):
        derive_keys(phrase, "testnet-magic-7")


def test_derive_account_contract_and_accounts_differ() -> None:
    """derive_account returns (extended signing key, address); account 1 is a different address."""
    from pycardano import ExtendedSigningKey

    phrase = parse_mnemonic(MNEMONIC_12)
    key, address = derive_account(phrase, "mainnet")
    assert isinstance(key, ExtendedSigningKey)
    assert address == BASE_VECTORS[0][2]
    assert derive_account(MNEMONIC_12, "mainnet")[1] == address  # a plain string is checked and accepted
    with pytest.raises(MnemonicError):
        derive_account(MNEMONIC_12 + " walk", "mainnet")
    _, other = derive_account(phrase, "mainnet", account=1)
    assert other != address and other.startswith("addr1q")


def test_account_path_format_and_bounds() -> None:
    """Paths are m/1852'/1815'/account'/role/index; indices outside 0..2^31-1 are refused."""
    assert account_path(0, 2, 0) == "m/1852'/1815'/0'/2/0"
    assert account_path(3, 0, 7) == "m/1852'/1815'/3'/0/7"
    with pytest.raises(ValueError):
        account_path(2**31, 0, 0)
    with pytest.raises(ValueError):
        account_path(0, 0, -1)


def test_sign_verifies_under_ed25519() -> None:
    """sign() returns the 32-byte payment vkey and a 64-byte Ed25519 signature that verifies."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from wallets.hd import UnlockedWallet

    keys = derive_keys(parse_mnemonic(MNEMONIC_12), "devnet")
    wallet = UnlockedWallet(name="t", keys=keys)
    body_hash = bytes(range(32))
    vkey, sig = wallet.sign(body_hash)
    assert vkey == keys.payment_vkey and len(vkey) == 32 and len(sig) == 64
    Ed25519PublicKey.from_public_bytes(vkey).verify(sig, body_hash)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(vkey).verify(sig, bytes(32))
    assert wallet.payment_key_hash == "9493315cd92eb5d8c4304e67b7e16ae36d61d34502694657811a2c8e"
    with pytest.raises(ValueError):
        wallet.sign(b"short")


def test_generate_mnemonic_is_24_fresh_valid_words() -> None:
    """Generated mnemonics have 24 words, pass the checksum, and differ every time."""
    first, second = generate_mnemonic(), generate_mnemonic()
    assert len(first) == 24 and len(second) == 24
    assert parse_mnemonic(first.reveal()) == first
    assert first != second


def test_entropy_round_trip_matches_bip39_vector() -> None:
    """32 zero bytes encode to 'abandon'×23 + 'art' (BIP-39 vector, trezor python-mnemonic vectors.json)."""
    phrase = mnemonic_from_entropy(SecretBytes(bytes(32)))
    assert phrase.reveal() == " ".join(["abandon"] * 23 + ["art"])
    assert mnemonic_entropy(phrase).reveal() == bytes(32)
    with pytest.raises(MnemonicError):
        mnemonic_from_entropy(SecretBytes(bytes(15)))


def test_parse_mnemonic_forgives_case_and_spacing() -> None:
    """Upper case, tabs, newlines and repeated spaces are normalised away."""
    messy = "  " + MNEMONIC_12.upper().replace(" ", " \t\n ") + "\n"
    assert parse_mnemonic(messy).reveal() == MNEMONIC_12


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (MNEMONIC_12.rsplit(" ", 1)[0] + " walk", "checksum"),      # valid words, bad checksum
        (" ".join(reversed(MNEMONIC_12.split())), "checksum"),
        (MNEMONIC_12.replace("penalty", "penaltyy"), "position 4"),  # unknown word, named by position
        (MNEMONIC_12.rsplit(" ", 1)[0], "got 11"),                   # wrong word count
        ("", "got 0"),
    ],
)
def test_parse_mnemonic_rejects_bad_phrases(text: str, fragment: str) -> None:
    """Bad checksum, unknown words and wrong counts raise MnemonicError without echoing words."""
    with pytest.raises(MnemonicError) as info:
        parse_mnemonic(text)
    message = str(info.value)
    assert fragment in message
    assert "penaltyy" not in message and "walk" not in message
