"""Loads every fixture module in tests/fixtures/ as a pytest plugin, so each area owns its own."""

from __future__ import annotations

import pkgutil
from pathlib import Path

pytest_plugins = [
    f"tests.fixtures.{m.name}"
    for m in pkgutil.iter_modules([str(Path(__file__).parent / "fixtures")])
    if not m.name.startswith("_")
]

# Tests never depend on machine speed: no per-example deadline (a loaded CI box is slow).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("agent", deadline=None)
_hypothesis_settings.load_profile("agent")
