"""CIP-1852 HD keys: BIP-39 mnemonics, ``m/1852'/1815'/account'/role/index`` and base addresses.

Derivation is pycardano's ``HDWallet`` (Icarus master key, BIP32-Ed25519). The wallet's base
address pairs the payment key (role 0, index 0) with the stake key (role 2, index 0); the
network (mainnet or testnet header) comes from the wallet's chain. pycardano is imported inside
the functions so ``import wallets`` stays light.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

from wallets.errors import MnemonicError
from wallets.networks import get_network
from wallets.secrets import Mnemonic, SecretBytes

if TYPE_CHECKING:
    from pycardano import ExtendedSigningKey, HDWallet

PURPOSE = 1852
COIN_TYPE = 1815
ROLE_EXTERNAL = 0
ROLE_STAKE = 2
MNEMONIC_WORDS = 24
_VALID_WORD_COUNTS = (12, 15, 18, 21, 24)


def _wordlist() -> list[str]:
    from mnemonic import Mnemonic as Bip39

    return list(Bip39("english").wordlist)


def generate_mnemonic() -> Mnemonic:
    """Return a fresh 24-word BIP-39 mnemonic (256 bits of entropy from the OS CSPRNG)."""
    return mnemonic_from_entropy(SecretBytes(secrets.token_bytes(32)))


def mnemonic_from_entropy(entropy: SecretBytes) -> Mnemonic:
    """Return the BIP-39 English mnemonic that encodes ``entropy`` (16–32 bytes)."""
    from mnemonic import Mnemonic as Bip39

    raw = entropy.reveal()
    if len(raw) not in (16, 20, 24, 28, 32):
        raise MnemonicError(f"entropy must be 16 to 32 bytes in steps of 4, not {len(raw)}")
    return Mnemonic(Bip39("english").to_mnemonic(raw))


def parse_mnemonic(text: str) -> Mnemonic:
    """Check a typed or pasted phrase and return it as a :class:`Mnemonic`.

    Case and extra whitespace are forgiven. Accepts 12 to 24 words (wallets made elsewhere
    may use 12 or 15); :func:`generate_mnemonic` always makes 24.

    Raises:
        MnemonicError: wrong word count, a word not in the BIP-39 English list (named by
            position only, never echoed), or a bad checksum.
    """
    from mnemonic import Mnemonic as Bip39

    phrase = Mnemonic(text)
    words = phrase.words() if phrase.reveal() else []
    if len(words) not in _VALID_WORD_COUNTS:
        raise MnemonicError(
            f"a mnemonic has 12, 15, 18, 21 or 24 words; got {len(words)}"
        )
    known = set(_wordlist())
    unknown = [str(i) for i, w in enumerate(words, start=1) if w not in known]
    if unknown:
        raise MnemonicError(
            f"word(s) at position {', '.join(unknown)} are not in the BIP-39 English word list"
        )
    if not Bip39("english").check(phrase.reveal()):
        raise MnemonicError("mnemonic checksum does not match: a word is wrong or out of order")
    return phrase


def mnemonic_entropy(phrase: Mnemonic) -> SecretBytes:
    """Return the entropy a checked mnemonic encodes (what the keystore encrypts)."""
    from mnemonic import Mnemonic as Bip39

    try:
        return SecretBytes(bytes(Bip39("english").to_entropy(phrase.reveal())))
    except (ValueError, LookupError):
        raise MnemonicError("not a valid BIP-39 mnemonic") from None


def account_path(account: int, role: int, index: int) -> str:
    """Return the CIP-1852 path ``m/1852'/1815'/<account>'/<role>/<index>``."""
    for label, value in (("account", account), ("role", role), ("index", index)):
        if not 0 <= value < 2**31:
            raise ValueError(f"{label} must be in 0..2^31-1, got {value}")
    return f"m/{PURPOSE}'/{COIN_TYPE}'/{account}'/{role}/{index}"


def pycardano_network(network: str) -> object:
    """Return pycardano's ``Network`` for one of our network names (TESTNET unless mainnet)."""
    from pycardano import Network

    return Network.TESTNET if get_network(network).testnet else Network.MAINNET


@dataclass(frozen=True)
class AccountKeys:
    """The keys of one CIP-1852 account: payment (0/0) signing key and stake (2/0) key hash.

    ``signing_key`` is a pycardano ``ExtendedSigningKey`` whose own repr prints the key, so this
    class hides it from its repr; read the attribute only to sign.
    """

    network: str
    account: int
    address: str
    payment_vkey: bytes
    payment_key_hash: str
    stake_key_hash: str
    signing_key: ExtendedSigningKey = field(repr=False, compare=False)

    def __reduce__(self) -> NoReturn:
        raise TypeError("AccountKeys cannot be pickled")


def root_wallet(phrase: Mnemonic) -> HDWallet:
    """Return pycardano's root ``HDWallet`` for a checked mnemonic (empty BIP-39 passphrase)."""
    from pycardano import HDWallet

    entropy = mnemonic_entropy(phrase)
    # from_entropy skips HDWallet.is_mnemonic, which tries every language and logs on failure.
    return HDWallet.from_entropy(entropy.reveal().hex())


def derive_keys(phrase: Mnemonic, network: str, account: int = 0) -> AccountKeys:
    """Derive the account's payment key and base address on ``network``.

    Args:
        phrase: a mnemonic already checked by :func:`parse_mnemonic`.
        network: ``mainnet``, ``preprod``, ``preview`` or ``devnet``.
        account: the hardened account index (0 for the first account).
    """
    from pycardano import Address, ExtendedSigningKey

    root = root_wallet(phrase)
    payment = ExtendedSigningKey.from_hdwallet(
        root.derive_from_path(account_path(account, ROLE_EXTERNAL, 0))
    )
    # The stake key is only needed as a hash for the address; derive it publicly.
    stake_public = root.derive_from_path(account_path(account, ROLE_STAKE, 0)).public_key
    payment_vk = payment.to_verification_key().to_non_extended()
    payment_hash = payment_vk.hash()
    stake_hash = _key_hash(stake_public)
    address = Address(payment_hash, stake_hash, network=pycardano_network(network))  # type: ignore[arg-type]
    return AccountKeys(
        network=network,
        account=account,
        address=address.encode(),
        payment_vkey=bytes(payment_vk.payload),
        payment_key_hash=payment_hash.payload.hex(),
        stake_key_hash=stake_hash.payload.hex(),
        signing_key=payment,
    )


def _key_hash(public_key: bytes):  # type: ignore[no-untyped-def]
    from pycardano import VerificationKey

    return VerificationKey(public_key).hash()


def derive_account(phrase: Mnemonic | str, network: str, account: int = 0) -> tuple[ExtendedSigningKey, str]:
    """Return ``(payment extended signing key, base address)`` for the account (the contract API).

    A plain string is checked with :func:`parse_mnemonic` first (``MnemonicError`` if invalid).
    """
    checked = parse_mnemonic(phrase) if isinstance(phrase, str) else phrase
    keys = derive_keys(checked, network, account)
    return keys.signing_key, keys.address


class UnlockedWallet:
    """A decrypted wallet: the payment key of account 0 behind the ``Signer`` protocol.

    Its repr shows the name, network and address, never key material; it cannot be pickled.
    """

    __slots__ = ("name", "_keys")

    def __init__(self, *, name: str, keys: AccountKeys) -> None:
        self.name = name
        self._keys = keys

    @property
    def address(self) -> str:
        """The wallet's base address (bech32)."""
        return self._keys.address

    @property
    def network(self) -> str:
        """The network name (``devnet``, ``preprod``, ...)."""
        return self._keys.network

    @property
    def payment_key_hash(self) -> str:
        """The blake2b-224 hash of the payment verification key, hex (the required signer)."""
        return self._keys.payment_key_hash

    @property
    def payment_vkey(self) -> bytes:
        """The 32-byte payment verification key."""
        return self._keys.payment_vkey

    def sign(self, tx_body_hash: bytes) -> tuple[bytes, bytes]:
        """Sign a 32-byte transaction body hash; return ``(vkey 32 bytes, signature 64 bytes)``."""
        if not isinstance(tx_body_hash, (bytes, bytearray)) or len(tx_body_hash) != 32:
            raise ValueError("a transaction body hash is 32 bytes")
        return self._keys.payment_vkey, bytes(self._keys.signing_key.sign(bytes(tx_body_hash)))

    def __repr__(self) -> str:
        return f"UnlockedWallet(name={self.name!r}, network={self.network!r}, address={self.address!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("UnlockedWallet cannot be pickled")
