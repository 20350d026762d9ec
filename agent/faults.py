"""Crash points for the crash-safety tests: die at a named step, on purpose.

``CARDANO_AGENT_CRASH_POINTS="after_sign:0.2,after_submit:0.2"`` makes the process SIGKILL
itself at each named point with the given probability (seeded by ``CARDANO_AGENT_CRASH_SEED``).
Unset, every call is one dictionary lookup. This exists so a test can kill the agent exactly
between two steps of a payment (signed but not submitted, submitted but not recorded, paid
but the job not marked done) and check that nothing is paid twice and no job is lost.
"""

from __future__ import annotations

import os
import random
import signal

POINTS = ("after_reserve", "after_sign", "after_submit", "after_call", "after_claim", "after_park")


def _parse(spec: str) -> dict[str, float]:
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, prob = item.partition(":")
        if name in POINTS:
            points[name] = float(prob or 1.0)
    return points


_points = _parse(os.environ.get("CARDANO_AGENT_CRASH_POINTS", ""))
_rng = random.Random(os.environ.get("CARDANO_AGENT_CRASH_SEED"))


def crash_point(name: str) -> None:
    """Kill this process at ``name`` if the environment asks for it (never in normal runs)."""
    probability = _points.get(name)
    if probability and _rng.random() < probability:
        os.kill(os.getpid(), signal.SIGKILL)
