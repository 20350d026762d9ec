"""The encrypted keystore: one versioned JSON file per wallet, scrypt + AES-256-GCM.

File ``<root>/<name>.json`` (mode 0600, directory 0700)::

    {"version": 1, "name": "main", "network": "devnet", "account": 0,
     "address": "addr_test1...", "created_at": "2026-11-29T14:00:00+00:00",
     "kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1, "dklen": 32, "salt": "<hex>"},
     "cipher": {"name": "aes-256-gcm", "nonce": "<hex>"},
     "ciphertext": "<hex>"}

The ciphertext is the BIP-39 entropy (from which the mnemonic and every key derive). The
associated data is the canonical JSON of every other field, so changing the name, network,
address, KDF cost or anything else makes decryption fail. Every failure to open — wrong
passphrase, tampered or truncated file, bad JSON — raises the one opaque
:class:`KeystoreLockedError`, like Fernet's ``InvalidToken``. ``list``/``info`` read the clear
header without the passphrase; it is authenticated only when the wallet is unlocked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from wallets.errors import KeystoreError, KeystoreLockedError, MnemonicError
from wallets.hd import (
    UnlockedWallet,
    derive_keys,
    generate_mnemonic,
    mnemonic_entropy,
    mnemonic_from_entropy,
    parse_mnemonic,
)
from wallets.networks import NETWORKS, get_network
from wallets.secrets import Mnemonic, Passphrase, SecretBytes

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_SCRYPT_N = 2**17
"""scrypt cost written to new files. Tests lower it for speed."""
_SCRYPT_MIN_N = 2**17
"""The weakest cost accepted on read (or ``_SCRYPT_N`` if lower), so raising the cost later keeps old files."""
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_MAX_BYTES = 2**30  # scrypt memory is 128·n·r; a forged header must not allocate more
_KEY_BYTES = 32
_NONCE_BYTES = 12
_SALT_BYTES = 16
_NAME_RE = re.compile(r"[a-z0-9_-]{1,32}")
KDF_CHILD_BYTES = 32 * 2**20
"""scrypt needing at least this much memory (128·n·r) runs in a short-lived child process, so
its peak (128 MiB at the default cost) never lands in a long-running agent's resident set.
``None`` keeps every derivation in-process."""


class WalletNameError(KeystoreError):
    """A wallet name outside ``[a-z0-9_-]{1,32}``."""


@dataclass(frozen=True, slots=True)
class WalletInfo:
    """What anyone can read about a wallet without its passphrase."""

    name: str
    network: str
    address: str
    created_at: datetime


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid wallet name (lowercase letters, digits, ``_``, ``-``; ≤ 32)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise WalletNameError(
            f"invalid wallet name {name!r}: use 1-32 characters from a-z, 0-9, '_' and '-'"
        )
    return name


class Keystore:
    """A directory of encrypted wallet files.

    Args:
        root: the directory (created 0700 on first write).
        now: clock for ``created_at``; injected by tests.
    """

    def __init__(self, root: Path, *, now: Callable[[], datetime] | None = None) -> None:
        self.root = Path(root)
        self._now = now or (lambda: datetime.now(timezone.utc))

    def __repr__(self) -> str:
        return f"Keystore({str(self.root)!r})"

    def path(self, name: str) -> Path:
        """Return the file that holds wallet ``name``."""
        return self.root / f"{validate_name(name)}.json"

    def exists(self, name: str) -> bool:
        """Return True if wallet ``name`` has a file."""
        return self.path(name).exists()

    # -- creating ---------------------------------------------------------------------------

    def create(self, name: str, *, network: str, passphrase: str | Passphrase,
               account: int = 0) -> tuple[WalletInfo, Mnemonic]:
        """Create a wallet from a fresh 24-word mnemonic; return its info and the mnemonic.

        The mnemonic is returned once so the caller can show it to the owner; the keystore
        keeps only its encrypted entropy.

        Raises:
            KeystoreError: the name is taken or invalid, the passphrase is empty, or the
                file could not be written.
        """
        phrase = generate_mnemonic()
        info = self._store(name, network=network, phrase=phrase, passphrase=passphrase, account=account)
        log.info("created wallet %s on %s", info.name, info.network)
        return info, phrase

    def import_wallet(self, name: str, *, network: str, mnemonic: str | Mnemonic,
                      passphrase: str | Passphrase, account: int = 0) -> WalletInfo:
        """Store an existing mnemonic under ``name``.

        Raises:
            MnemonicError: wrong word count, unknown word or bad checksum.
            KeystoreError: the name is taken or invalid, or the file could not be written.
        """
        text = mnemonic.reveal() if isinstance(mnemonic, Mnemonic) else mnemonic
        if not isinstance(text, str):
            raise MnemonicError("a mnemonic is a string of words")
        phrase = parse_mnemonic(text)
        info = self._store(name, network=network, phrase=phrase, passphrase=passphrase, account=account)
        log.info("imported wallet %s on %s", info.name, info.network)
        return info

    def _store(self, name: str, *, network: str, phrase: Mnemonic, passphrase: str | Passphrase,
               account: int) -> WalletInfo:
        validate_name(name)
        get_network(network)
        secret = _passphrase(passphrase)
        if self.exists(name):
            raise KeystoreError(f"a wallet named {name!r} already exists in {self.root}")
        keys = derive_keys(phrase, network, account)
        header = {
            "version": FORMAT_VERSION,
            "name": name,
            "network": network,
            "account": account,
            "address": keys.address,
            "created_at": self._now().astimezone(timezone.utc).isoformat(timespec="seconds"),
        }
        document = _seal(header, mnemonic_entropy(phrase), secret)
        _write_atomic(self.path(name), document, replace=False)
        return _info(document)

    # -- reading ----------------------------------------------------------------------------

    def list(self) -> list[WalletInfo]:
        """Return every readable wallet, by name. Damaged files are skipped with a warning."""
        if not self.root.is_dir():
            return []
        infos = []
        for path in sorted(self.root.glob("*.json")):
            name = path.stem
            if name.startswith(".") or not _NAME_RE.fullmatch(name):
                continue
            try:
                infos.append(self.info(name))
            except KeystoreError:
                log.warning("keystore file for wallet %s is damaged; skipped", name)
        return infos

    def info(self, name: str) -> WalletInfo:
        """Return the clear header of wallet ``name`` (no passphrase needed).

        Raises:
            KeystoreError: no such wallet.
            KeystoreLockedError: the file is not a readable keystore.
        """
        return _info(self._load(name))

    def unlock(self, name: str, passphrase: str | Passphrase) -> UnlockedWallet:
        """Decrypt wallet ``name`` and return a signer for its payment key.

        Raises:
            KeystoreError: no such wallet.
            KeystoreLockedError: wrong passphrase or a damaged/tampered file (deliberately
                one error: the caller cannot tell which, and neither can an attacker).
        """
        document = self._load(name)
        entropy = _open(document, _passphrase(passphrase, creating=False))
        try:
            phrase = mnemonic_from_entropy(entropy)
            keys = derive_keys(phrase, document["network"], document["account"])
        except (MnemonicError, ValueError):
            raise KeystoreLockedError(name) from None
        if keys.address != document["address"]:
            # Authenticated data makes this unreachable unless the file was forged with the key.
            raise KeystoreLockedError(name)
        log.debug("unlocked wallet %s", name)
        return UnlockedWallet(name=name, keys=keys)

    def reveal_mnemonic(self, name: str, passphrase: str | Passphrase) -> Mnemonic:
        """Decrypt and return the wallet's mnemonic (for a backup the owner asked for)."""
        document = self._load(name)
        return mnemonic_from_entropy(_open(document, _passphrase(passphrase, creating=False)))

    def change_passphrase(self, name: str, old: str | Passphrase, new: str | Passphrase) -> None:
        """Re-encrypt wallet ``name`` under ``new`` with a fresh salt and nonce.

        The file is replaced atomically: a crash leaves either the old or the new file.

        Raises:
            KeystoreLockedError: ``old`` is wrong or the file is damaged.
            KeystoreError: ``new`` is empty, or the file could not be written.
        """
        new_secret = _passphrase(new)
        document = self._load(name)
        entropy = _open(document, _passphrase(old, creating=False))
        header = {k: v for k, v in document.items() if k not in ("kdf", "cipher", "ciphertext")}
        _write_atomic(self.path(name), _seal(header, entropy, new_secret), replace=True)
        log.info("changed passphrase of wallet %s", name)

    def _load(self, name: str) -> dict[str, Any]:
        path = self.path(name)
        try:
            raw = path.read_bytes()
            if path.stat().st_mode & 0o077:
                log.warning("keystore file %s is readable by other users; run: chmod 600 %s", path, path)
        except FileNotFoundError:
            raise KeystoreError(f"no wallet named {name!r} in {self.root}") from None
        except OSError as exc:
            raise KeystoreError(f"cannot read wallet {name!r}: {exc.strerror}") from None
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise KeystoreLockedError(name) from None
        if not _well_formed(document) or document["name"] != name:
            raise KeystoreLockedError(name)
        return document


# -- the file format ----------------------------------------------------------------------


def _passphrase(value: str | Passphrase, *, creating: bool = True) -> Passphrase:
    if not isinstance(value, (str, Passphrase)):
        raise KeystoreError("a passphrase is text")
    secret = Passphrase(value)
    if creating and not secret:
        raise KeystoreError("the passphrase must not be empty")
    return secret


def _associated_data(document: dict[str, Any]) -> bytes:
    bound = {k: v for k, v in document.items() if k != "ciphertext"}
    return json.dumps(bound, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _derive_key(secret: Passphrase, kdf: dict[str, Any]) -> bytes:
    if KDF_CHILD_BYTES is not None and 128 * kdf["n"] * kdf["r"] >= KDF_CHILD_BYTES:
        return _derive_in_child(secret, kdf)
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=bytes.fromhex(kdf["salt"]), length=kdf["dklen"], n=kdf["n"], r=kdf["r"],
                  p=kdf["p"]).derive(secret.reveal())


_KDF_CHILD = """\
import json, sys
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
head, _, secret = sys.stdin.buffer.read().partition(b"\\n")
kdf = json.loads(head)
try:
    key = Scrypt(salt=bytes.fromhex(kdf["salt"]), length=kdf["dklen"], n=kdf["n"], r=kdf["r"], p=kdf["p"]).derive(secret)
except (ValueError, MemoryError):
    sys.exit(3)
sys.stdout.buffer.write(key)
"""


def _derive_in_child(secret: Passphrase, kdf: dict[str, Any]) -> bytes:
    """scrypt in a child Python process; the passphrase and the key travel over its pipes only."""
    import subprocess
    import sys

    head = json.dumps({k: kdf[k] for k in ("salt", "dklen", "n", "r", "p")}).encode()
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _KDF_CHILD], input=head + b"\n" + secret.reveal(),
                              capture_output=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KeystoreError(f"could not run the key derivation: {exc.__class__.__name__}") from None
    if done.returncode == 3:
        raise ValueError("scrypt refused its parameters")
    if done.returncode != 0 or len(done.stdout) != kdf["dklen"]:
        raise KeystoreError(f"the key derivation process failed (exit {done.returncode})")
    return done.stdout


def _seal(header: dict[str, Any], entropy: SecretBytes, secret: Passphrase) -> dict[str, Any]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    document = dict(header)
    document["kdf"] = {"name": "scrypt", "n": _SCRYPT_N, "r": _SCRYPT_R, "p": _SCRYPT_P,
                       "dklen": _KEY_BYTES, "salt": secrets.token_bytes(_SALT_BYTES).hex()}
    document["cipher"] = {"name": "aes-256-gcm", "nonce": secrets.token_bytes(_NONCE_BYTES).hex()}
    key = _derive_key(secret, document["kdf"])
    nonce = bytes.fromhex(document["cipher"]["nonce"])
    document["ciphertext"] = AESGCM(key).encrypt(nonce, entropy.reveal(), _associated_data(document)).hex()
    return document


def _open(document: dict[str, Any], secret: Passphrase) -> SecretBytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    name = document["name"]
    try:
        key = _derive_key(secret, document["kdf"])
        plain = AESGCM(key).decrypt(bytes.fromhex(document["cipher"]["nonce"]),
                                    bytes.fromhex(document["ciphertext"]),
                                    _associated_data(document))
    except (InvalidTag, ValueError, MemoryError):
        raise KeystoreLockedError(name) from None
    return SecretBytes(plain)


def _is_hex(value: Any, *, length: int | None = None) -> bool:
    if not isinstance(value, str) or len(value) % 2 or (length is not None and len(value) != 2 * length):
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _well_formed(doc: Any) -> bool:
    """Check the shape and bounds of a parsed file before any of it reaches scrypt or AES."""
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        return False
    if not all(isinstance(doc.get(k), str) for k in ("name", "network", "address", "created_at")):
        return False
    if doc["network"] not in NETWORKS or not _NAME_RE.fullmatch(doc["name"]):
        return False
    account = doc.get("account")
    if not isinstance(account, int) or isinstance(account, bool) or not 0 <= account < 2**31:
        return False
    try:
        datetime.fromisoformat(doc["created_at"])
    except ValueError:
        return False
    kdf, cipher = doc.get("kdf"), doc.get("cipher")
    if not isinstance(kdf, dict) or not isinstance(cipher, dict):
        return False
    n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
    if kdf.get("name") != "scrypt" or kdf.get("dklen") != _KEY_BYTES or not _is_hex(kdf.get("salt")):
        return False
    if len(kdf["salt"]) // 2 < _SALT_BYTES:  # an empty or short salt makes the KDF precomputable
        return False
    if not (isinstance(n, int) and isinstance(r, int) and isinstance(p, int)) or any(
            isinstance(v, bool) for v in (n, r, p)):
        return False
    if not (min(_SCRYPT_N, _SCRYPT_MIN_N) <= n and n & (n - 1) == 0 and 1 <= r and 128 * n * r <= _SCRYPT_MAX_BYTES
            and 1 <= p <= 4):
        return False
    if cipher.get("name") != "aes-256-gcm" or not _is_hex(cipher.get("nonce"), length=_NONCE_BYTES):
        return False
    # 16-byte GCM tag plus 16..32 bytes of entropy.
    return _is_hex(doc.get("ciphertext")) and 32 <= len(doc["ciphertext"]) // 2 <= 48


def _info(document: dict[str, Any]) -> WalletInfo:
    return WalletInfo(
        name=document["name"],
        network=document["network"],
        address=document["address"],
        created_at=datetime.fromisoformat(document["created_at"]),
    )


def _write_atomic(path: Path, document: dict[str, Any], *, replace: bool) -> None:
    """Write ``document`` to ``path`` so a crash leaves the old file or the new one, never half.

    Temp file in the same directory (mode 0600 from the start), fsync, then ``os.replace``
    (or ``os.link`` when creating, which fails instead of overwriting a wallet made
    concurrently), then fsync the directory so the rename itself is durable.
    """
    root = path.parent
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=root)
    except OSError as exc:
        raise KeystoreError(f"cannot write keystore in {root}: {exc.strerror}") from None
    data = (json.dumps(document, indent=2) + "\n").encode()
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise KeystoreError(f"a wallet named {path.stem!r} already exists in {root}") from None
            os.unlink(tmp)
        _fsync_dir(root)
    except OSError as exc:
        raise KeystoreError(f"cannot write wallet {path.stem!r}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
