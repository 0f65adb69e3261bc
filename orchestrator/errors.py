"""Errors of the orchestrator, and the one table that maps them to gRPC status codes.

```
OrchestratorError
├── ConfigError                 bad settings (process start, never on the wire)
├── InvalidArgument             a request field is malformed          -> INVALID_ARGUMENT
├── NotFound                    no such run                           -> NOT_FOUND
├── FailedPrecondition                                                -> FAILED_PRECONDITION
│   ├── StaleLease              the lease is not the run's current lease
│   ├── RunEnded                the run completed, failed or was cancelled
│   └── StepConflict            the step id was recorded as another kind of step
├── LimitExceeded               too many steps, too much data         -> RESOURCE_EXHAUSTED
└── StoreUnavailable            the database cannot be reached        -> UNAVAILABLE
```
Every error carries the message sent to the client; ``retryable`` says whether repeating the same
request later may succeed.
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class OrchestratorError(Exception):
    """Root of the orchestrator's errors."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(OrchestratorError):
    """The settings are invalid."""


class InvalidArgument(OrchestratorError):
    """A request field is malformed; the message starts with the field's path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(OrchestratorError):
    """The named object does not exist."""


class FailedPrecondition(OrchestratorError):
    """The request is well formed but the state of the run forbids it."""


class StaleLease(FailedPrecondition):
    """The caller's lease is not the run's current lease: the worker must abandon the run."""


class RunEnded(FailedPrecondition):
    """The run already completed, failed or was cancelled."""


class StepConflict(FailedPrecondition):
    """The step id is already recorded as a different kind of step."""


class LimitExceeded(OrchestratorError):
    """A per-run or per-request limit would be exceeded."""


class StoreUnavailable(OrchestratorError):
    """The database cannot be reached; the request had no effect or is safe to repeat."""

    retryable = True


class RaceLost(StoreUnavailable):
    """A concurrent transaction changed what this one had read (PostgreSQL, READ COMMITTED): the
    store runs the transaction again on a fresh snapshot, and reports this only if it keeps losing
    (the request had no effect; repeating it is safe)."""


class CommitOutcomeUnknown(StoreUnavailable):
    """The connection broke while a COMMIT was on its way: the transaction may or may not have
    committed, so it is reported and never run again (what it did is idempotent to repeat from the
    client: an event by its id, a completion by its lease and step; a claim's leases expire)."""


# The one place where domain errors become wire statuses. Lookup walks the class's MRO, so a
# subclass maps like its nearest listed ancestor.
STATUS_CODES: dict[type[OrchestratorError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code(error: OrchestratorError) -> grpc.StatusCode:
    """The gRPC status for a domain error (INTERNAL only for an error class missing from the table)."""
    for cls in type(error).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL
