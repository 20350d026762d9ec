"""Benchmarks for the paying agent: payment overhead, throughput, fees, memory, start-up, sandbox capacity.

Run ``scripts/bench [--quick] [--json out.json]`` (or ``python -m benchmarks``). Every figure
is measured in one run on the local sandbox, beside its baseline, so it reads as a ratio.
"""

from __future__ import annotations

from benchmarks.report import FIGURES, Check, checks, render_table, verdict

__all__ = ["FIGURES", "Check", "checks", "render_table", "verdict"]
