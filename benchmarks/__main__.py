"""``python -m benchmarks [--quick] [--json out.json] [--only fig,...]``: measure, print the table, write JSON."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from benchmarks.report import FIGURES, checks, render_table


def machine() -> dict[str, Any]:
    """CPU count and model, Python version, platform and load average (other work on the box) of this run."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_at_start": load}


def run(figures: Sequence[str], *, quick: bool) -> dict[str, Any]:
    """Measure ``figures`` in order; a figure that fails is recorded with its error, the rest still run."""
    results: dict[str, Any] = {}
    for key in figures:
        start = time.perf_counter()
        print(f"measuring {key}…", file=sys.stderr, flush=True)
        try:
            values = importlib.import_module(f"benchmarks.{key}").measure(quick)
        except Exception as exc:  # noqa: BLE001 - one broken figure must not hide the others
            values = {"error": f"{type(exc).__name__}: {exc}"}
        values["seconds"] = round(time.perf_counter() - start, 2)
        results[key] = values
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": quick,
        "machine": machine(),
        "figures": results,
        "checks": checks(results),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; exit 1 if a figure could not be measured (a missed target is reported, not fatal)."""
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (the CI smoke run, < 2 min)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the figures as JSON to FILE")
    parser.add_argument("--only", metavar="FIGS", help=f"comma-separated subset of {','.join(FIGURES)}")
    args = parser.parse_args(argv)
    figures = FIGURES
    if args.only:
        figures = tuple(f.strip() for f in args.only.split(",") if f.strip())
        unknown = [f for f in figures if f not in FIGURES]
        if unknown:
            parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    result = run(figures, quick=args.quick)
    print(render_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 1 if any("error" in fig for fig in result["figures"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
