"""Backoff policy: exponential growth, jitter bounds, attempt limits and Retry-After."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.retry import NO_RETRY, RetryPolicy, is_transient_status, parse_retry_after

NOW = datetime(2026, 11, 29, 15, 0, tzinfo=timezone.utc)


def test_backoff_grows_exponentially_without_jitter() -> None:
    """With no jitter the n-th retry waits base * multiplier**(n-1), capped at max_delay_s."""
    policy = RetryPolicy(base_delay_s=1.0, multiplier=2.0, max_delay_s=5.0, jitter=0.0, max_attempts=10)
    assert [policy.delay_s(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


@given(retry=st.integers(min_value=1, max_value=5000), seed=st.integers(min_value=0, max_value=2**32))
def test_jittered_delay_stays_within_bounds(retry: int, seed: int) -> None:
    """A jittered delay lies in [ceiling * (1 - jitter), ceiling] and never overflows."""
    policy = RetryPolicy(base_delay_s=0.5, multiplier=3.0, max_delay_s=30.0, jitter=0.5)
    ceiling = min(30.0, 0.5 * 3.0 ** min(retry - 1, 100))
    delay = policy.backoff_s(retry, rng=random.Random(seed))
    assert ceiling * 0.5 - 1e-9 <= delay <= ceiling + 1e-9


def test_attempts_are_limited() -> None:
    """After max_attempts attempts the policy gives up (None); NO_RETRY never retries."""
    policy = RetryPolicy(max_attempts=3, jitter=0.0)
    assert policy.delay_s(1) is not None
    assert policy.delay_s(2) is not None
    assert policy.delay_s(3) is None
    assert NO_RETRY.delay_s(1) is None


def test_retry_after_wins_when_longer_and_ends_retries_when_too_long() -> None:
    """Retry-After longer than the backoff is honoured; longer than max_retry_after_s stops retrying."""
    policy = RetryPolicy(base_delay_s=1.0, jitter=0.0, max_retry_after_s=60.0)
    assert policy.delay_s(1, retry_after_s=7.0) == 7.0
    assert policy.delay_s(1, retry_after_s=0.0) == 1.0
    assert policy.delay_s(1, retry_after_s=61.0) is None


def test_parse_retry_after_seconds_and_http_date() -> None:
    """Retry-After is read as delta-seconds or an HTTP-date relative to the injected now."""
    assert parse_retry_after("5", now=NOW) == 5.0
    later = (NOW + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(later, now=NOW) == 30.0
    earlier = (NOW - timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(earlier, now=NOW) == 0.0
    assert parse_retry_after(None, now=NOW) is None
    assert parse_retry_after("soon", now=NOW) is None
    assert parse_retry_after("-3", now=NOW) is None


def test_transient_statuses() -> None:
    """5xx, 408, 425 and 429 are transient; other 4xx are final."""
    assert all(is_transient_status(s) for s in (500, 502, 503, 504, 408, 425, 429))
    assert not any(is_transient_status(s) for s in (200, 400, 401, 402, 403, 404, 413, 422))


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_delay_s": -1.0}, {"multiplier": 0.5}, {"jitter": 1.5}],
)
def test_invalid_policy_is_a_config_error(kwargs: dict[str, float]) -> None:
    """Nonsense policies are refused with ConfigError."""
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
