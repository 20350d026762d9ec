"""The crash soaks' restart loop: run `cardano-agent run` again and again, killing it while it works.

Shared by tests/agent/test_crash.py and test_crash_v2.py. Half of the restarts die at a named
crash point (``CARDANO_AGENT_CRASH_POINTS``), the others are SIGKILLed from outside as soon
as they have made progress; the loop ends early once every job is done.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence


def count(db_path: Path, sql: str) -> int:
    """One number from the agent's SQLite database (read beside a running agent)."""
    with sqlite3.connect(db_path, timeout=30) as conn:
        return int(conn.execute(sql).fetchone()[0])


def wait_for_progress(proc: subprocess.Popen[bytes], db_path: Path, *, beyond: int, timeout_s: float) -> None:
    """Wait until the process exits or more than ``beyond`` jobs are done (polling the database)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return
        try:
            if count(db_path, "SELECT count(*) FROM jobs WHERE state = 'done'") > beyond:
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.02)


def kill_runs(cmd: Sequence[str], env: Mapping[str, str], db_path: Path, *, restarts: int,
              crash_points: Sequence[str], rng: random.Random,
              before_each: Callable[[int], None] | None = None) -> int:
    """Start ``cmd`` up to ``restarts`` times, crashing or killing each run; return how many were SIGKILLed.

    Even restarts die at a random point of ``crash_points``; every run still alive once it has
    done a job or two more is killed. ``before_each(restart)`` runs before each start.
    """
    kills = 0
    for restart in range(restarts):
        if before_each is not None:
            before_each(restart)
        run_env = dict(env)
        if restart % 2 == 0:
            point = rng.choice(list(crash_points))
            run_env["CARDANO_AGENT_CRASH_POINTS"] = f"{point}:{rng.choice([0.2, 0.5, 1.0])}"
            run_env["CARDANO_AGENT_CRASH_SEED"] = str(restart)
        proc = subprocess.Popen(list(cmd), env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done = count(db_path, "SELECT count(*) FROM jobs WHERE state = 'done'")
        wait_for_progress(proc, db_path, beyond=done + rng.randint(0, 2), timeout_s=60)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL:
            kills += 1
        if count(db_path, "SELECT count(*) FROM jobs WHERE state != 'done'") == 0:
            break
    return kills
