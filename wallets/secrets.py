"""Wrappers that keep secret material (mnemonics, passphrases, key bytes) out of reprs and logs.

A secret is only revealed by an explicit call (``reveal()``), so an accidental ``print``,
f-string, ``logging`` argument or traceback shows ``<redacted>`` instead of the words.
"""

from __future__ import annotations

import hmac
import unicodedata
from typing import Any, NoReturn


class _Redacted:
    """Base for secret holders: redacted str/repr, constant-time equality, no pickling."""

    __slots__ = ("_value",)
    _label = "secret"

    def __init__(self, value: Any) -> None:
        self._value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>)"

    def __str__(self) -> str:
        return f"<redacted {self._label}>"

    def __format__(self, spec: str) -> str:
        return str(self)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return hmac.compare_digest(self._bytes(), other._bytes())  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        # Secrets are not meant to be dict keys; hashing the value would leak equality classes.
        raise TypeError(f"{type(self).__name__} is unhashable")

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be pickled")

    def _bytes(self) -> bytes:
        value = self._value
        return value if isinstance(value, bytes) else str(value).encode()


class Mnemonic(_Redacted):
    """A BIP-39 mnemonic phrase. ``reveal()`` returns the words joined by single spaces.

    Build one with :func:`wallets.hd.parse_mnemonic` (which checks the checksum) or
    :func:`wallets.hd.generate_mnemonic`; the constructor only normalises whitespace.
    """

    __slots__ = ()
    _label = "mnemonic"

    def __init__(self, phrase: str) -> None:
        normalized = unicodedata.normalize("NFKD", phrase)
        super().__init__(" ".join(normalized.lower().split()))

    def reveal(self) -> str:
        """Return the phrase. Only for showing it once to its owner or deriving keys."""
        return str(self._value)

    def words(self) -> list[str]:
        """Return the words as a list (for numbered display at creation)."""
        return self.reveal().split(" ")

    def __len__(self) -> int:
        return len(self.words())

    def __repr__(self) -> str:
        return f"Mnemonic(<redacted {len(self)} words>)"


class Passphrase(_Redacted):
    """A keystore passphrase. ``reveal()`` returns the UTF-8 bytes fed to the KDF."""

    __slots__ = ()
    _label = "passphrase"

    def __init__(self, text: str | Passphrase) -> None:
        if isinstance(text, Passphrase):
            super().__init__(text._value)
            return
        if not isinstance(text, str):
            raise TypeError("a passphrase is a str")
        # NFC so the same passphrase typed on different systems derives the same key.
        super().__init__(unicodedata.normalize("NFC", text))

    def reveal(self) -> bytes:
        """Return the normalised passphrase as UTF-8 bytes."""
        return str(self._value).encode("utf-8")

    def __bool__(self) -> bool:
        return bool(self._value)


class SecretBytes(_Redacted):
    """Key material (entropy, extended keys) as bytes with a redacted repr."""

    __slots__ = ()
    _label = "key material"

    def __init__(self, value: bytes) -> None:
        super().__init__(bytes(value))

    def reveal(self) -> bytes:
        """Return the raw bytes."""
        return bytes(self._value)

    def __len__(self) -> int:
        return len(self._value)
