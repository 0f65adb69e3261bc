"""Poll a condition until it holds, with a generous deadline: tests never sleep a fixed time to wait."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
DEFAULT_INTERVAL = 0.05


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline. An AssertionError so pytest shows it as a failure."""


class GiveUp(AssertionError):
    """Raised by a predicate when the condition can no longer become true (e.g. the run already failed):
    the wait stops at once with this error instead of running into its deadline."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Calls `predicate` until it returns a truthy value and returns that value.

    A predicate may raise AssertionError to mean "not yet" (the last one is reported at the deadline), or
    `GiveUp` to stop waiting at once. Raises `WaitTimeout` after `timeout` seconds, naming `message` (a
    string, or a callable evaluated at the deadline, e.g. to include the last observed state) and the last
    value or exception seen.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except GiveUp:
            raise
        except AssertionError as exc:  # predicates may assert; treat as "not yet" and keep the reason
            last, value = exc, None
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(_timeout_message(message, timeout, last))
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109  (same signature as wait_until; it is a poll deadline)
    interval: float = DEFAULT_INTERVAL,
    message: str | Callable[[], str] = "condition",
) -> T:
    """The asyncio variant of `wait_until`; `predicate` may be a plain or a coroutine function."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
            value: T | None = await result if inspect.isawaitable(result) else result  # type: ignore[assignment]
        except GiveUp:
            raise
        except AssertionError as exc:
            last, value = exc, None
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(_timeout_message(message, timeout, last))
        await asyncio.sleep(interval)


def _timeout_message(message: str | Callable[[], str], timeout: float, last: object) -> str:
    text = message() if callable(message) else message
    return f"timed out after {timeout:.0f}s waiting for {text} (last value: {last!r})"
