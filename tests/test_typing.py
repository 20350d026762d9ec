"""The three packages stay mypy-clean (the house style's "full hints, mypy-clean")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_packages_type_check():
    """`mypy agent wallets sandbox` finds no issues."""
    pytest.importorskip("mypy", reason="mypy comes with the test extra")
    proc = subprocess.run([sys.executable, "-m", "mypy", "agent", "wallets", "sandbox"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
