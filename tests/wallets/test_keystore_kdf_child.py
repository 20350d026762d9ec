"""scrypt at the real cost runs in a child process: the agent's own memory never holds its 128 MiB."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import wallets.keystore as keystore
from wallets.errors import KeystoreLockedError
from wallets.secrets import Passphrase

KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1, "dklen": 32, "salt": "ab" * 16}


def test_child_derivation_equals_in_process(monkeypatch):
    monkeypatch.setattr(keystore, "KDF_CHILD_BYTES", None)
    expected = keystore._derive_key(Passphrase("new\nline pass"), KDF)
    monkeypatch.setattr(keystore, "KDF_CHILD_BYTES", 0)
    assert keystore._derive_key(Passphrase("new\nline pass"), KDF) == expected


def test_passphrase_reaches_the_child_only_through_its_stdin(monkeypatch):
    seen = {}
    real = subprocess.run

    def spy(args, **kwargs):
        seen["args"], seen["input"], seen["env"] = args, kwargs.get("input"), kwargs.get("env")
        return real(args, **kwargs)

    monkeypatch.setattr(keystore, "KDF_CHILD_BYTES", 0)
    monkeypatch.setattr(subprocess, "run", spy)
    keystore._derive_key(Passphrase("hunter2-secret"), KDF)
    assert not any("hunter2" in str(a) for a in seen["args"])
    assert seen["env"] is None and b"hunter2-secret" in seen["input"]


def test_wrong_passphrase_through_the_child_is_locked(tmp_path, monkeypatch):
    monkeypatch.setattr(keystore, "KDF_CHILD_BYTES", 0)
    store = keystore.Keystore(tmp_path)
    store.create("w", network="devnet", passphrase="right passphrase")
    assert store.unlock("w", "right passphrase").name == "w"
    with pytest.raises(KeystoreLockedError):
        store.unlock("w", "wrong passphrase")


def test_unlock_at_the_real_cost_keeps_the_peak_out_of_this_process(tmp_path):
    """A wallet at N = 2^17, r = 8 (128 MiB of scrypt) unlocks with this process's peak far below that."""
    code = textwrap.dedent(f"""
        from wallets.keystore import Keystore
        store = Keystore(__import__("pathlib").Path({str(tmp_path)!r}))
        store.create("w", network="devnet", passphrase="a long enough passphrase")
        store.unlock("w", "a long enough passphrase")
        # VmHWM, not ru_maxrss: the latter keeps the forking parent's (pytest's) peak across exec.
        hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        print(int(hwm.split()[1]) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) < 100, "scrypt's 128 MiB ran inside the agent process"
