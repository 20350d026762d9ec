"""Figure 5: wall time of ``cardano-agent --help`` and ``cardano-agent status`` (median of N runs).

``status`` runs on a bench home with a wallet, against a running devnet (so it asks the chain
for the balance, as a user sees it), and with ``--offline`` (no chain at all).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from benchmarks import _proc
from benchmarks._setup import make_home, median, start_sandbox, temp_root

FULL_RUNS = 11
QUICK_RUNS = 5


def measure(quick: bool) -> dict[str, Any]:
    """Time each command ``runs`` times as a fresh process; return the medians in seconds."""
    runs = QUICK_RUNS if quick else FULL_RUNS
    with ExitStack() as stack:
        root = temp_root(stack)
        home, address = make_home(root, "startup")
        assert address is not None
        sandbox = start_sandbox(stack, fund={address: 10_000_000})
        env = {**sandbox.env, "CARDANO_AGENT_HOME": str(home)}
        commands = {"help_s": ["--help"], "status_s": ["status"], "status_offline_s": ["status", "--offline"]}
        _proc.run(["--help"], env=env)  # warm the file cache: every later run starts alike
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, args in commands.items():
                times[name].append(_proc.run(args, env=env).wall_s)
    return {"runs": runs, **{name: round(median(values), 3) for name, values in times.items()}}
