"""Printing command results: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
import re
import sys
from contextlib import redirect_stdout
from decimal import Decimal
from typing import Any, Callable, Iterable, Sequence, TextIO

LOVELACE_PER_ADA = 1_000_000

# ANSI CSI and OSC sequences, then any other C0/C1 control (tab and newline kept) and the
# bidi overrides that reorder what a terminal shows.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x9b[0-?]*[ -/]*[@-~]")
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """``text`` with terminal escape sequences removed and other control characters shown as U+FFFD.

    Server text (answers, error details) goes through this before it reaches a terminal, so
    a hostile API cannot move the cursor, retitle the window or rewrite earlier lines.
    """
    return _CONTROLS.sub("\ufffd", _ESCAPES.sub("", text))


class _TerminalSafeWriter:
    """A text stream that passes everything it writes through :func:`terminal_safe`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(terminal_safe(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def format_ada(lovelace: int) -> str:
    """Format an integer lovelace amount as ADA with six decimals, e.g. ``1.500000``."""
    sign = "-" if lovelace < 0 else ""
    whole, frac = divmod(abs(int(lovelace)), LOVELACE_PER_ADA)
    return f"{sign}{whole}.{frac:06d}"


def parse_ada(text: str) -> int:
    """Parse an ADA amount typed by a user (``"5"``, ``"1.25"``) into lovelace.

    Raises:
        ValueError: negative, more than six decimals, or not a number.
    """
    try:
        value = Decimal(text.strip())
    except Exception:
        raise ValueError(f"not an ADA amount: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"not a non-negative ADA amount: {text!r}")
    lovelace = value * LOVELACE_PER_ADA
    if lovelace != lovelace.to_integral_value():
        raise ValueError(f"ADA has at most 6 decimals: {text!r}")
    return int(lovelace)


def parse_amount(text: str) -> int:
    """Parse an amount a person typed into lovelace: ADA by default (``"5"``, ``"1.25"``, ``"2ada"``),
    or lovelace with an explicit suffix (``"5000000lovelace"``).

    Raises:
        ValueError: not a non-negative amount, or a lovelace amount that is not whole.
    """
    raw = text.strip().lower().replace("_", "")
    if raw.endswith("lovelace"):
        number = raw[: -len("lovelace")].strip()
        if not number.isdigit():
            raise ValueError(f"not a whole number of lovelace: {text!r}")
        return int(number)
    if raw.endswith("ada"):
        raw = raw[:-3].strip()
    return parse_ada(raw)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], *, out: TextIO | None = None) -> None:
    """Print ``rows`` as a left-aligned text table under ``headers`` (numbers right-aligned)."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        all(_is_number(r[i]) for r in cells[1:]) and len(cells) > 1 for i in range(len(headers))
    ]
    for n, row in enumerate(cells):
        parts = [
            c.rjust(widths[i]) if numeric[i] and n > 0 else c.ljust(widths[i])
            for i, c in enumerate(row)
        ]
        out.write("  ".join(parts).rstrip() + "\n")
    if len(cells) == 1:
        out.write("(none)\n")


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except Exception:
        return False
    return True


def emit(as_json: bool, data: Any, human: Callable[[Any], None] | None = None) -> None:
    """Print ``data`` as JSON when ``as_json``; otherwise call ``human(data)`` (or print JSON)."""
    if as_json or human is None:
        json.dump(data, sys.stdout, indent=2, sort_keys=False, default=_json_default)
        sys.stdout.write("\n")
    else:
        with redirect_stdout(_TerminalSafeWriter(sys.stdout)):  # type: ignore[type-var]
            human(data)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, Decimal):
        return str(obj)
    return str(obj)


def kv(pairs: Iterable[tuple[str, Any]], *, out: TextIO | None = None) -> None:
    """Print ``key: value`` lines with the keys aligned."""
    out = out or sys.stdout
    items = list(pairs)
    width = max((len(k) for k, _ in items), default=0)
    for k, v in items:
        out.write(f"{k.ljust(width)}  {v}\n")
