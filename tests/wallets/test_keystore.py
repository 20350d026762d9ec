"""The encrypted keystore (wallets.keystore): round trips, file format and every failure mode."""

from __future__ import annotations

import json
import logging
import os
import pickle
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import wallets.keystore as keystore_module
from wallets.errors import KeystoreError, KeystoreLockedError, MnemonicError
from wallets.hd import parse_mnemonic
from wallets.keystore import Keystore, WalletInfo, WalletNameError
from wallets.secrets import Mnemonic, Passphrase

PASS = "correct horse battery staple"
# CIP-1852 test mnemonic; its preprod base address is pycardano's published vector (see test_hd.py).
VECTOR_WORDS = "test walk nut penalty hip pave soap entry language right filter choice"
VECTOR_TESTNET = ("addr_test1qz2fxv2umyhttkxyxp8x0dlpdt3k6cwng5pxj3jhsydzer3jcu5d8ps7zex2k2xt3uqxgjqnn"
                  "j83ws8lhrn648jjxtwq2ytjqp")
FIXED_NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lower the scrypt cost for speed; test_real_cost_file_format keeps the real one."""
    monkeypatch.setattr(keystore_module, "_SCRYPT_N", 2**10)


@pytest.fixture
def store(tmp_path: Path, fast_scrypt: None) -> Keystore:
    return Keystore(tmp_path / "wallets", now=lambda: FIXED_NOW)


@pytest.fixture
def imported(store: Keystore) -> Keystore:
    store.import_wallet("vec", network="preprod", mnemonic=VECTOR_WORDS, passphrase=PASS)
    return store


def _doc(store: Keystore, name: str) -> dict[str, Any]:
    return json.loads(store.path(name).read_text())


def _write(store: Keystore, name: str, doc: dict[str, Any]) -> None:
    store.path(name).write_text(json.dumps(doc))


def test_real_cost_file_format(tmp_path: Path) -> None:
    """At the real cost the file records scrypt N ≥ 2^17, r 8, p 1, AES-256-GCM, modes 0600/0700."""
    store = Keystore(tmp_path / "wallets")
    info, phrase = store.create("main", network="devnet", passphrase=PASS)
    doc = _doc(store, "main")
    assert doc["version"] == 1 and doc["name"] == "main" and doc["network"] == "devnet"
    assert doc["address"] == info.address and info.address.startswith("addr_test1q")
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["n"] >= 2**17
    assert doc["kdf"]["r"] == 8 and doc["kdf"]["p"] == 1 and len(bytes.fromhex(doc["kdf"]["salt"])) == 16
    assert doc["cipher"] == {"name": "aes-256-gcm", "nonce": doc["cipher"]["nonce"]}
    assert len(bytes.fromhex(doc["cipher"]["nonce"])) == 12
    assert len(bytes.fromhex(doc["ciphertext"])) == 32 + 16  # 256-bit entropy + GCM tag
    text = store.path("main").read_text()
    assert " ".join(phrase.words()) not in text
    for word in set(phrase.words()) - {"account", "name", "version", "network", "address", "cipher"}:
        # Format keys ("account" is also a BIP-39 word) may appear; no other mnemonic word does.
        assert f'"{word}"' not in text
    assert stat.S_IMODE(store.path("main").stat().st_mode) == 0o600
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert store.unlock("main", PASS).address == info.address


def test_create_unlock_round_trip(store: Keystore) -> None:
    """create → unlock gives the same address; the stored entropy decodes to the shown mnemonic."""
    info, phrase = store.create("main", network="devnet", passphrase=PASS)
    assert isinstance(phrase, Mnemonic) and len(phrase) == 24
    assert info == WalletInfo("main", "devnet", info.address, FIXED_NOW)
    wallet = store.unlock("main", PASS)
    assert (wallet.address, wallet.network, wallet.name) == (info.address, "devnet", "main")
    assert store.reveal_mnemonic("main", PASS) == phrase
    assert store.info("main") == info and store.list() == [info]


def test_import_known_vector(imported: Keystore) -> None:
    """Importing the CIP-1852 test mnemonic on preprod yields pycardano's published base address."""
    assert imported.info("vec").address == VECTOR_TESTNET
    assert imported.unlock("vec", PASS).address == VECTOR_TESTNET
    assert imported.reveal_mnemonic("vec", PASS).reveal() == VECTOR_WORDS


def test_wrong_passphrase_is_opaque(imported: Keystore) -> None:
    """A wrong passphrase raises KeystoreLockedError whose message does not contain it."""
    with pytest.raises(KeystoreLockedError) as info:
        imported.unlock("vec", "correct horse battery stapler")
    assert "stapler" not in str(info.value) and "vec" in str(info.value)


def test_tampered_ciphertext(imported: Keystore) -> None:
    """Flipping one ciphertext bit makes unlock fail with the same opaque error."""
    doc = _doc(imported, "vec")
    raw = bytearray(bytes.fromhex(doc["ciphertext"]))
    raw[5] ^= 0x01
    doc["ciphertext"] = raw.hex()
    _write(imported, "vec", doc)
    with pytest.raises(KeystoreLockedError):
        imported.unlock("vec", PASS)


OTHER_ADDRESS = ("addr_test1qpu5vlrf4xkxv2qpwngf6cjhtw542ayty80v8dyr49rf5ewvxwdrt70qlcpeeagscasafhffqsx"
                 "y36t90ldv06wqrk2qum8x5w")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("network", "preview"),
        ("network", "mainnet"),
        ("address", OTHER_ADDRESS),
        ("created_at", "2020-01-01T00:00:00+00:00"),
        ("account", 1),
        ("version", 2),
        ("name", "other"),
        ("kdf.n", 2**11),
        ("kdf.salt", "00" * 16),
        ("cipher.nonce", "00" * 12),
        ("cipher.name", "aes-128-gcm"),
        ("extra", "field"),
    ],
)
def test_tampered_header(imported: Keystore, field: str, value: Any) -> None:
    """Changing any header field (network, address, name, version, KDF, nonce, …) fails to unlock."""
    doc = _doc(imported, "vec")
    if "." in field:
        outer, inner = field.split(".")
        doc[outer][inner] = value
    else:
        doc[field] = value
    _write(imported, "vec", doc)
    with pytest.raises(KeystoreLockedError):
        imported.unlock("vec", PASS)


def test_weaker_kdf_than_floor_refused(store: Keystore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose scrypt N is below the module floor is refused before any decryption."""
    store.import_wallet("weak", network="devnet", mnemonic=VECTOR_WORDS, passphrase=PASS)
    monkeypatch.setattr(keystore_module, "_SCRYPT_N", 2**17)
    with pytest.raises(KeystoreLockedError):
        store.unlock("weak", PASS)


@pytest.mark.parametrize("keep", [0, 1, 40, 200, -2])
def test_truncated_file(imported: Keystore, keep: int) -> None:
    """A truncated file (empty, partial JSON, cut ciphertext) is the same opaque error, for info too."""
    raw = imported.path("vec").read_bytes()
    doc = _doc(imported, "vec")
    if keep == -2:  # valid JSON, ciphertext missing its last byte
        doc["ciphertext"] = doc["ciphertext"][:-2]
        _write(imported, "vec", doc)
    else:
        imported.path("vec").write_bytes(raw[:keep])
        with pytest.raises(KeystoreLockedError):
            imported.info("vec")
    with pytest.raises(KeystoreLockedError):
        imported.unlock("vec", PASS)


@pytest.mark.parametrize("content", [b"not json", b"[]", b"{}", b'{"version": 1}', b"\xff\xfe\x00"])
def test_bad_json(imported: Keystore, content: bytes) -> None:
    """Garbage, wrong JSON types and missing fields raise KeystoreLockedError."""
    imported.path("vec").write_bytes(content)
    with pytest.raises(KeystoreLockedError):
        imported.unlock("vec", PASS)


def test_bad_checksum_mnemonic_stores_nothing(store: Keystore) -> None:
    """Importing a mnemonic with a bad checksum raises MnemonicError and writes no file."""
    bad = VECTOR_WORDS.rsplit(" ", 1)[0] + " walk"
    with pytest.raises(MnemonicError):
        store.import_wallet("bad", network="devnet", mnemonic=bad, passphrase=PASS)
    assert not store.path("bad").exists()


def test_missing_and_duplicate_wallets(imported: Keystore) -> None:
    """A missing wallet and a taken name raise KeystoreError (not the locked error) with clear text."""
    with pytest.raises(KeystoreError) as missing:
        imported.unlock("nope", PASS)
    assert not isinstance(missing.value, KeystoreLockedError) and "no wallet named 'nope'" in str(missing.value)
    before = imported.path("vec").read_bytes()
    with pytest.raises(KeystoreError, match="already exists"):
        imported.create("vec", network="devnet", passphrase=PASS)
    assert imported.path("vec").read_bytes() == before


def test_create_never_overwrites_even_when_racing(imported: Keystore, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the name appears between the check and the write, the final link refuses to overwrite."""
    before = imported.path("vec").read_bytes()
    monkeypatch.setattr(Keystore, "exists", lambda self, name: False)
    with pytest.raises(KeystoreError, match="already exists"):
        imported.create("vec", network="devnet", passphrase=PASS)
    assert imported.path("vec").read_bytes() == before
    assert [p.name for p in imported.root.iterdir()] == ["vec.json"]


@pytest.mark.parametrize("name", ["", "Main", "a b", "../x", "x" * 33, "wallet.json", "é"])
def test_invalid_names(store: Keystore, name: str) -> None:
    """Names outside [a-z0-9_-]{1,32} are refused before anything is written."""
    with pytest.raises(WalletNameError):
        store.create(name, network="devnet", passphrase=PASS)
    assert not store.root.exists() or list(store.root.iterdir()) == []


def test_empty_passphrase_and_unknown_network_refused(store: Keystore) -> None:
    """Creating with an empty passphrase or an unknown network fails and writes nothing."""
    with pytest.raises(KeystoreError, match="empty"):
        store.create("main", network="devnet", passphrase="")
    with pytest.raises(Exception, match="unknown network"):
        store.create("main", network="testnet", passphrase=PASS)
    assert not store.path("main").exists()


def test_change_passphrase(imported: Keystore) -> None:
    """change_passphrase re-encrypts with a fresh salt/nonce; old stops working, new works."""
    before = _doc(imported, "vec")
    imported.change_passphrase("vec", PASS, "new secret words")
    after = _doc(imported, "vec")
    assert after["kdf"]["salt"] != before["kdf"]["salt"]
    assert after["cipher"]["nonce"] != before["cipher"]["nonce"]
    assert after["ciphertext"] != before["ciphertext"]
    assert {k: after[k] for k in ("name", "network", "address", "created_at")} == \
        {k: before[k] for k in ("name", "network", "address", "created_at")}
    with pytest.raises(KeystoreLockedError):
        imported.unlock("vec", PASS)
    assert imported.unlock("vec", "new secret words").address == VECTOR_TESTNET
    assert stat.S_IMODE(imported.path("vec").stat().st_mode) == 0o600


def test_change_passphrase_wrong_old_leaves_file(imported: Keystore) -> None:
    """A wrong old passphrase raises the locked error and leaves the file byte for byte."""
    before = imported.path("vec").read_bytes()
    with pytest.raises(KeystoreLockedError):
        imported.change_passphrase("vec", "wrong", "new secret words")
    with pytest.raises(KeystoreError, match="empty"):
        imported.change_passphrase("vec", PASS, "")
    assert imported.path("vec").read_bytes() == before


def _crash_on(monkeypatch: pytest.MonkeyPatch, name: str, *, after: int = 0) -> None:
    """Make os.<name> raise OSError on its (after+1)-th call inside the keystore module."""
    real = getattr(os, name)
    calls = {"n": 0}

    def boom(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(keystore_module.os, name, boom)


@pytest.mark.parametrize("failing", ["write", "fsync", "link"])
def test_crash_during_create_leaves_no_file(store: Keystore, monkeypatch: pytest.MonkeyPatch,
                                            failing: str) -> None:
    """A failure mid-write, at fsync or at the final link leaves neither wallet nor temp file."""
    store.root.mkdir(mode=0o700)
    if failing == "write":
        real_write = os.write

        def half_write(fd: int, data: Any) -> int:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(keystore_module.os, "write", half_write)
    else:
        _crash_on(monkeypatch, failing)
    with pytest.raises(KeystoreError, match="cannot write"):
        store.create("main", network="devnet", passphrase=PASS)
    monkeypatch.undo()
    assert list(store.root.iterdir()) == []


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_crash_during_passphrase_change_keeps_old_file(imported: Keystore, monkeypatch: pytest.MonkeyPatch,
                                                       failing: str) -> None:
    """A crash while re-encrypting leaves the old file intact and unlockable with the old passphrase."""
    before = imported.path("vec").read_bytes()
    _crash_on(monkeypatch, failing)
    with pytest.raises(KeystoreError, match="cannot write"):
        imported.change_passphrase("vec", PASS, "new secret words")
    monkeypatch.setattr(keystore_module, "_SCRYPT_N", 2**10)
    assert imported.path("vec").read_bytes() == before
    assert [p.name for p in imported.root.iterdir()] == ["vec.json"]
    assert imported.unlock("vec", PASS).address == VECTOR_TESTNET


def test_list_skips_damaged_and_temp_files(imported: Keystore, caplog: pytest.LogCaptureFixture) -> None:
    """list() returns readable wallets by name, skips a damaged file with a warning, ignores temp files."""
    imported.create("alpha", network="devnet", passphrase=PASS)
    (imported.root / "broken.json").write_text("{")
    (imported.root / ".vec.abc.tmp").write_text("{}")
    (imported.root / "notes.txt").write_text("hi")
    with caplog.at_level(logging.WARNING, logger="wallets.keystore"):
        names = [w.name for w in imported.list()]
    assert names == ["alpha", "vec"]
    assert any("broken" in r.getMessage() for r in caplog.records)
    assert Keystore(imported.root / "absent").list() == []


def test_reprs_are_redacted(imported: Keystore) -> None:
    """Mnemonic, Passphrase, UnlockedWallet and the derived keys never show secret material."""
    phrase = parse_mnemonic(VECTOR_WORDS)
    wallet = imported.unlock("vec", PASS)
    secret = Passphrase(PASS)
    rendered = " ".join([repr(phrase), str(phrase), f"{phrase}", repr(secret), str(secret), f"{secret!s:>10}",
                         repr(wallet), str(wallet), repr(wallet._keys), repr(imported)])
    for word in VECTOR_WORDS.split():
        assert f" {word} " not in f" {rendered} ".replace("(", " ").replace(")", " ")
    assert "horse" not in rendered and "redacted" in rendered
    assert wallet._keys.signing_key.payload.hex() not in rendered
    for obj in (phrase, secret, wallet, wallet._keys):
        with pytest.raises(TypeError):
            pickle.dumps(obj)


def test_no_secret_in_any_log_line(tmp_path: Path, fast_scrypt: None, caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG on every logger, no log line holds a passphrase or any run of mnemonic words."""
    store = Keystore(tmp_path / "wallets")
    secrets = [PASS, "second passphrase!"]
    with caplog.at_level(logging.DEBUG):
        _, created = store.create("main", network="devnet", passphrase=PASS)
        store.import_wallet("vec", network="preprod", mnemonic=VECTOR_WORDS, passphrase=PASS)
        store.unlock("main", PASS).sign(bytes(32))
        with pytest.raises(KeystoreLockedError):
            store.unlock("main", "wrong " + PASS)
        with pytest.raises(MnemonicError):
            store.import_wallet("bad", network="devnet", mnemonic=VECTOR_WORDS + " walk", passphrase=PASS)
        store.change_passphrase("main", PASS, secrets[1])
        store.list()
    lines = [r.getMessage() + " " + repr(r.args) for r in caplog.records]
    assert any("created wallet main" in line for line in lines)
    for phrase in (created.words(), VECTOR_WORDS.split()):
        pairs = [f"{a} {b}" for a, b in zip(phrase, phrase[1:])]
        for line in lines:
            assert not any(pair in line for pair in pairs), line
    for line in lines:
        assert not any(s in line for s in secrets), line


def test_loose_file_mode_warns(imported: Keystore, caplog: pytest.LogCaptureFixture) -> None:
    """A keystore file readable by others still opens but logs a chmod warning (path only)."""
    imported.path("vec").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="wallets.keystore"):
        imported.info("vec")
    assert any("chmod 600" in r.getMessage() for r in caplog.records)


def test_passphrase_unicode_normalised(store: Keystore) -> None:
    """A passphrase typed composed (é) or decomposed (e + ◌́) unlocks the same wallet."""
    composed, decomposed = "caf\u00e9 au lait", "cafe\u0301 au lait"
    store.import_wallet("uni", network="devnet", mnemonic=VECTOR_WORDS, passphrase=composed)
    assert store.unlock("uni", decomposed).address == store.info("uni").address
