"""Errors raised by the wallets package.

WalletError
├── KeystoreError            keystore file missing, unreadable or already present
│   └── KeystoreLockedError  wrong passphrase or tampered file (one opaque error, like Fernet's InvalidToken)
├── MnemonicError            a mnemonic with bad words or a bad checksum
├── AddressError             an address that does not parse or is of another network
├── AmountError              negative, fractional or unaffordable amounts; outputs below min UTxO
│   └── InsufficientFundsError
├── ChainError               talking to the chain failed
│   ├── ChainUnavailableError   could not connect / connection lost (retryable)
│   │   └── MempoolFullError       the node's mempool had no room, and no block made some in time
│   ├── ChainProtocolError      the server answered something that does not parse
│   └── SubmitError             the ledger refused a transaction; ``code`` and ``data`` kept
│       ├── InputsSpentError         3117
│       ├── FeeTooSmallError         3122
│       ├── OutsideValidityError     3118
│       ├── MissingSignaturesError   3100, 3101
│       ├── ValueNotConservedError   3123
│       ├── OutputTooSmallError      3125
│       ├── TxTooLargeError          3119
│       └── NetworkMismatchError     3124
└── UnknownNetworkError      (wallets.networks)
"""

from __future__ import annotations

from typing import Any


class WalletError(Exception):
    """Root of every error the wallets package raises."""

    exit_code = 1


class KeystoreError(WalletError):
    """The keystore could not be read or written."""


class KeystoreLockedError(KeystoreError):
    """The keystore did not open: wrong passphrase or a tampered file. Deliberately opaque."""

    def __init__(self, name: str = "") -> None:
        where = f" {name!r}" if name else ""
        super().__init__(f"could not unlock wallet{where}: wrong passphrase or damaged keystore file")
        self.name = name


class MnemonicError(WalletError):
    """A mnemonic phrase that is not a valid BIP-39 phrase."""


class AddressError(WalletError):
    """An address that does not parse, or belongs to another network."""


class AmountError(WalletError):
    """An amount that is negative, fractional, too small for the ledger, or otherwise invalid."""


class InsufficientFundsError(AmountError):
    """The wallet's available UTxOs cannot cover the payment plus its fee."""

    def __init__(self, message: str, *, needed: dict[str, int] | None = None,
                 available: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.needed = needed or {}
        self.available = available or {}


class ChainError(WalletError):
    """Talking to the chain failed."""


class ChainUnavailableError(ChainError):
    """The chain endpoint could not be reached or the connection was lost. Retryable."""


class MempoolFullError(ChainUnavailableError):
    """The node's mempool had no room for a submission, and no block made some within the wait.

    Retryable, with the same signed bytes (never re-signed). ``accepted_unknown``: the node held
    the submission (Ogmios) and may still take it, so its outcome is unknown; False when the
    endpoint refused it outright (Blockfrost's 425).
    """

    def __init__(self, message: str, *, accepted_unknown: bool) -> None:
        super().__init__(message)
        self.accepted_unknown = accepted_unknown


class ChainProtocolError(ChainError):
    """The chain endpoint answered something that does not parse."""


class SubmitError(ChainError):
    """The ledger refused a transaction. ``code`` and ``data`` are Ogmios's."""

    def __init__(self, message: str, *, code: int, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class InputsSpentError(SubmitError):
    """3117: an input is unknown or already spent."""


class FeeTooSmallError(SubmitError):
    """3122: the fee is below the ledger minimum."""


class OutsideValidityError(SubmitError):
    """3118: the current slot is outside the transaction's validity interval."""


class MissingSignaturesError(SubmitError):
    """3100/3101: invalid or missing signatures."""


class ValueNotConservedError(SubmitError):
    """3123: inputs do not equal outputs plus fee."""


class OutputTooSmallError(SubmitError):
    """3125: an output holds less than the minimum UTxO value."""


class TxTooLargeError(SubmitError):
    """3119: the transaction exceeds the maximum size."""


class NetworkMismatchError(SubmitError):
    """3124: an output address belongs to another network."""


SUBMIT_ERRORS_BY_CODE: dict[int, type[SubmitError]] = {
    3100: MissingSignaturesError,
    3101: MissingSignaturesError,
    3117: InputsSpentError,
    3118: OutsideValidityError,
    3119: TxTooLargeError,
    3122: FeeTooSmallError,
    3123: ValueNotConservedError,
    3124: NetworkMismatchError,
    3125: OutputTooSmallError,
}


def submit_error(code: int, message: str, data: Any = None) -> SubmitError:
    """Return the typed SubmitError for an Ogmios error ``code``."""
    cls = SUBMIT_ERRORS_BY_CODE.get(code, SubmitError)
    return cls(message, code=code, data=data)
