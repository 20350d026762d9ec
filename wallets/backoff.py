"""The one backoff formula every retry loop in the packages uses.

The n-th retry (1 = the first) waits ``d = min(max_s, base_s * multiplier ** (n - 1))``,
shortened by a random share of at most ``jitter`` (so within ``[d * (1 - jitter), d]``).
Pure arithmetic: callers own the loop, the clock and the sleep (tests never wait).
:class:`agent.retry.RetryPolicy` adds attempt limits and ``Retry-After`` on top.
"""

from __future__ import annotations

import math
import random


def backoff_s(retry_number: int, *, base_s: float, max_s: float, multiplier: float = 2.0,
              jitter: float = 0.0, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``retry_number`` (1 = the first retry); see the module doc."""
    try:
        ceiling = base_s * math.pow(multiplier, max(0, retry_number - 1))
    except OverflowError:
        ceiling = max_s
    ceiling = min(max_s, ceiling)
    if not jitter:
        return ceiling
    return ceiling * (1.0 - jitter * (rng or random).random())
