"""How an exception raised by user code is reported: its record, and whether and when to retry."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import UTC, datetime

from sdk_python.errors import NonDeterminismError, NonRetriableError, RetryAfterError
from sdk_python.records import ErrorInfo


@dataclass(frozen=True)
class Failure:
    """A failed step or run as it is reported to the orchestrator."""

    error: ErrorInfo
    retriable: bool
    retry_after_ms: int = 0


def describe(exc: BaseException) -> ErrorInfo:
    """The record of an exception: type name, message and the formatted traceback."""
    if isinstance(exc, NonRetriableError | RetryAfterError):
        message = exc.message
    else:
        try:
            message = str(exc)
        except Exception:  # a broken __str__ must not hide the failure itself
            message = repr(exc)
    stack = "".join(traceback.format_exception(exc))
    return ErrorInfo(name=type(exc).__name__, message=message, stack=stack)


def classify(exc: BaseException, now: datetime | None = None) -> Failure:
    """`NonRetriableError` and `NonDeterminismError` are final; `RetryAfterError` retries after its
    delay; anything else retries with the orchestrator's backoff."""
    info = describe(exc)
    if isinstance(exc, NonRetriableError | NonDeterminismError):
        return Failure(error=info, retriable=False)
    if isinstance(exc, RetryAfterError):
        delay = exc.delay(now or datetime.now(UTC))
        # At least 1 ms: zero on the wire means "use the default backoff", which is not what was asked.
        return Failure(error=info, retriable=True, retry_after_ms=max(1, int(delay.total_seconds() * 1000)))
    return Failure(error=info, retriable=True)


def final(exc: BaseException) -> Failure:
    """A failure that must not be retried whatever its type (e.g. an output that cannot be encoded)."""
    return Failure(error=describe(exc), retriable=False)
