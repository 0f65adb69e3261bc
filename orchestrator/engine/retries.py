"""Retry decisions and exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

BASE_DELAY = timedelta(seconds=1)
MAX_DELAY = timedelta(hours=1)
JITTER = 0.2  # +/- 20%: spreads retries of many runs that failed together


def backoff_ms(attempt: int, *, rng: random.Random | None = None) -> int:
    """The delay before retrying after the zero-based ``attempt`` failed: 1 s * 2^attempt, +/-20%,
    capped at 1 h (the cap applies after jitter, so it is a true maximum)."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    base_ms = BASE_DELAY.total_seconds() * 1000
    cap_ms = MAX_DELAY.total_seconds() * 1000
    # 2**attempt overflows float for absurd attempts; past 2^12 s the cap wins anyway.
    raw = base_ms * 2.0 ** min(attempt, 32)
    factor = 1.0 + (rng or random).uniform(-JITTER, JITTER)
    return int(min(raw * factor, cap_ms))


@dataclass(frozen=True)
class RetryDecision:
    """Whether a failure is retried, and after how long."""

    retry: bool
    delay_ms: int = 0


def decide_retry(
    *,
    failed_attempts: int,
    retries: int,
    retriable: bool,
    retry_after_ms: int = 0,
    rng: random.Random | None = None,
) -> RetryDecision:
    """Decides what happens after a failure.

    ``failed_attempts`` counts failures including this one; with ``retries`` retries there are
    ``retries + 1`` attempts in all. A positive ``retry_after_ms`` (RetryAfterError) sets the delay
    instead of the backoff.
    """
    if not retriable or failed_attempts > retries:
        return RetryDecision(retry=False)
    if retry_after_ms > 0:
        return RetryDecision(retry=True, delay_ms=retry_after_ms)
    return RetryDecision(retry=True, delay_ms=backoff_ms(failed_attempts - 1, rng=rng))
