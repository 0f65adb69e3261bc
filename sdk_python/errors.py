"""The SDK's exceptions.

Two families: errors the SDK raises to the caller when an RPC fails (`ClientError` and one subclass per
gRPC status worth telling apart), and errors user code raises inside a function to steer retries.

```
Exception
├── ClientError                  an RPC failed; .code is the gRPC status name, .message the server's text
│   ├── InvalidArgumentError     INVALID_ARGUMENT: a field is malformed; the message names it
│   ├── NotFoundError            NOT_FOUND: no such run
│   ├── FailedPreconditionError  FAILED_PRECONDITION: the lease is stale or the run already ended
│   ├── UnavailableError         UNAVAILABLE / DEADLINE_EXCEEDED: try again later
│   ├── ResourceExhaustedError   RESOURCE_EXHAUSTED
│   ├── UnauthenticatedError     UNAUTHENTICATED
│   └── PermissionDeniedError    PERMISSION_DENIED
├── NonRetriableError            raised by user code: fail the step (or run) at once, no retry
├── RetryAfterError              raised by user code: retry, but not before `retry_after`
└── NonDeterminismError          recorded on a run whose code no longer reaches its recorded steps
```
Any other gRPC status becomes a plain `ClientError`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = [
    "ClientError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NonDeterminismError",
    "NonRetriableError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryAfterError",
    "UnauthenticatedError",
    "UnavailableError",
    "client_error_for",
]


class ClientError(Exception):
    """An RPC to the orchestrator failed. `code` is the gRPC status name (e.g. "NOT_FOUND") and
    `message` the server's explanation."""

    code: str
    message: str

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class InvalidArgumentError(ClientError):
    """The request was malformed (INVALID_ARGUMENT); the message names the offending field."""


class NotFoundError(ClientError):
    """The run does not exist (NOT_FOUND)."""


class FailedPreconditionError(ClientError):
    """The request does not apply in the current state (FAILED_PRECONDITION): a stale lease, or a run
    that has already ended."""


class UnavailableError(ClientError):
    """The orchestrator could not be reached or asked to try again (UNAVAILABLE, DEADLINE_EXCEEDED)."""


class ResourceExhaustedError(ClientError):
    """The orchestrator refused the request for lack of resources or a size limit (RESOURCE_EXHAUSTED)."""


class UnauthenticatedError(ClientError):
    """The request carried no valid credentials (UNAUTHENTICATED)."""


class PermissionDeniedError(ClientError):
    """The credentials do not allow the request (PERMISSION_DENIED)."""


_BY_CODE: dict[str, type[ClientError]] = {
    "INVALID_ARGUMENT": InvalidArgumentError,
    "NOT_FOUND": NotFoundError,
    "FAILED_PRECONDITION": FailedPreconditionError,
    "UNAVAILABLE": UnavailableError,
    # A deadline that expired says nothing about the request itself: callers retry it like UNAVAILABLE.
    "DEADLINE_EXCEEDED": UnavailableError,
    "RESOURCE_EXHAUSTED": ResourceExhaustedError,
    "UNAUTHENTICATED": UnauthenticatedError,
    "PERMISSION_DENIED": PermissionDeniedError,
}


def client_error_for(code: str, message: str) -> ClientError:
    """The `ClientError` subclass instance for a gRPC status name."""
    return _BY_CODE.get(code, ClientError)(code, message)


class NonRetriableError(Exception):
    """Raise it from a step (or the function body) to fail it at once, without retries."""

    message: str

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class RetryAfterError(Exception):
    """Raise it from a step (or the function body) to have it retried, but not before `retry_after`:
    a `timedelta`, a number of seconds, or a timezone-aware `datetime`. The retry still counts against
    the function's `retries`."""

    message: str
    retry_after: timedelta | int | float | datetime

    def __init__(self, message: str, retry_after: timedelta | int | float | datetime) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        if isinstance(retry_after, datetime) and retry_after.tzinfo is None:
            raise ValueError("retry_after: a datetime must be timezone-aware")

    def delay(self, now: datetime | None = None) -> timedelta:
        """How long to wait from `now` (default: the current time), never negative."""
        if isinstance(self.retry_after, timedelta):
            delay = self.retry_after
        elif isinstance(self.retry_after, datetime):
            delay = self.retry_after - (now or datetime.now(UTC))
        else:
            delay = timedelta(seconds=self.retry_after)
        return max(delay, timedelta(0))


class NonDeterminismError(Exception):
    """A replay of a run reached a different step than the one recorded at that position: the code
    outside steps is not deterministic, or it changed while the run was in flight. The run fails with
    this error (it is not retried), naming both steps.

    `expected` is the step id recorded at `position`; `found` is the step id the code reached there,
    or "" when the function returned without reaching it."""

    expected: str
    found: str
    position: int

    def __init__(self, *, expected: str, found: str, position: int, detail: str = "") -> None:
        reached = f"the code now reaches {found!r}" if found else "the function now returns before it"
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"step {position} of this run was recorded as {expected!r} but {reached}{extra}; "
            "code outside steps must be deterministic"
        )
        self.expected = expected
        self.found = found
        self.position = position
