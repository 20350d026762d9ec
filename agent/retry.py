"""Backoff policy for transient API failures: exponential delays with jitter that honour Retry-After.

The policy is pure arithmetic; the caller owns the loop, the clock and the sleep, so tests
drive it with a fake clock and never wait::

    policy = RetryPolicy(max_attempts=4)
    delay = policy.delay_s(attempts_made, retry_after_s=parse_retry_after(header, now=now))
    if delay is None:
        raise ...          # give up
    sleep(delay)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable

from agent.errors import ConfigError
from wallets.backoff import backoff_s

Sleep = Callable[[float], None]
Clock = Callable[[], datetime]

TRANSIENT_STATUSES = frozenset({408, 425, 429})
"""Client-side statuses that are worth retrying as well as every 5xx."""


def utc_now() -> datetime:
    """The current instant as an aware UTC datetime (the default clock)."""
    return datetime.now(timezone.utc)


def is_transient_status(status: int) -> bool:
    """True for answers that say "try again later": every 5xx, 408, 425 and 429."""
    return status >= 500 or status in TRANSIENT_STATUSES


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None.

    Args:
        value: the header value, or None when absent.
        now: the current instant, used to turn an HTTP-date into a delay.

    Returns:
        A non-negative number of seconds, or None when the header is absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to back off.

    ``max_attempts`` counts every attempt, the first included. The n-th retry waits a
    random delay in ``[d * (1 - jitter), d]`` where ``d = min(max_delay_s,
    base_delay_s * multiplier ** (n - 1))``; a ``Retry-After`` longer than that delay wins,
    and one longer than ``max_retry_after_s`` ends the retries (the server asked for more
    patience than this caller has).
    """

    max_attempts: int = 4
    base_delay_s: float = 0.5
    multiplier: float = 2.0
    max_delay_s: float = 30.0
    jitter: float = 0.5
    max_retry_after_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"retry max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_retry_after_s < 0:
            raise ConfigError("retry delays must not be negative")
        if self.multiplier < 1:
            raise ConfigError(f"retry multiplier must be at least 1, got {self.multiplier}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigError(f"retry jitter must be within [0, 1], got {self.jitter}")

    def backoff_s(self, retry_number: int, *, rng: random.Random | None = None) -> float:
        """The jittered exponential delay before retry ``retry_number`` (1 = the first retry)."""
        return backoff_s(retry_number, base_s=self.base_delay_s, max_s=self.max_delay_s,
                         multiplier=self.multiplier, jitter=self.jitter, rng=rng)

    def delay_s(
        self,
        attempts_made: int,
        *,
        retry_after_s: float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up.

        Args:
            attempts_made: attempts already sent (1 after the first failure).
            retry_after_s: the server's ``Retry-After`` in seconds, if it sent one.
            rng: random source for the jitter (inject a seeded one in tests).
        """
        if attempts_made >= self.max_attempts:
            return None
        delay = self.backoff_s(attempts_made, rng=rng)
        if retry_after_s is not None:
            if retry_after_s > self.max_retry_after_s:
                return None
            delay = max(delay, retry_after_s)
        return delay


NO_RETRY = RetryPolicy(max_attempts=1)
"""A policy that never retries."""
