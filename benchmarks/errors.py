"""The bench's one error type: a fixture or a measurement that could not be made."""

from __future__ import annotations


class BenchError(Exception):
    """A bench step failed (the sandbox refused a setup step, a subprocess exited non-zero, ...)."""
