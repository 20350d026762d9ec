"""The one backoff formula: exponential, capped, jitter only shortens, every retry loop uses it."""

from __future__ import annotations

import random

import pytest

from agent.retry import RetryPolicy
from agent.runner import Backoff
from wallets.backoff import backoff_s


def test_doubles_from_base_up_to_the_cap_without_jitter() -> None:
    """Retry n waits base * 2**(n-1), never more than max_s; retry 0 counts as the first."""
    assert [backoff_s(n, base_s=0.1, max_s=0.5) for n in range(0, 6)] == [0.1, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff_s(10_000, base_s=1.0, max_s=7.0, multiplier=10.0) == 7.0  # no overflow


@pytest.mark.parametrize("seed", range(20))
def test_jitter_stays_within_its_share_of_the_delay(seed: int) -> None:
    """With jitter j the delay lies in [d * (1 - j), d]."""
    delay = backoff_s(3, base_s=1.0, max_s=60.0, jitter=0.5, rng=random.Random(seed))
    assert 2.0 <= delay <= 4.0


@pytest.mark.parametrize("attempt", [1, 2, 5, 40])
def test_runner_and_retry_policy_use_the_same_formula(attempt: int) -> None:
    """The runner's job backoff and the HTTP retry policy draw the same delay from the same seed."""
    runner = Backoff(base_s=2.0, max_s=300.0).delay(attempt, random.Random(7))
    policy = RetryPolicy(base_delay_s=2.0, max_delay_s=300.0, jitter=0.5).backoff_s(attempt, rng=random.Random(7))
    assert runner == policy == backoff_s(attempt, base_s=2.0, max_s=300.0, jitter=0.5, rng=random.Random(7))
