"""How failures are classified and how RPC failures surface."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sdk_python import (
    Client,
    ClientError,
    FailedPreconditionError,
    NonDeterminismError,
    NonRetriableError,
    NotFoundError,
    RetryAfterError,
    UnavailableError,
)
from sdk_python._failures import classify
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._replay import Reached
from sdk_python.errors import client_error_for
from sdk_python.step import _run_step_request


def raised(exc: BaseException) -> BaseException:
    """The exception with a real traceback, as the worker sees it."""
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 - returning it is the point
        return caught


def test_plain_exceptions_are_retriable_and_recorded_with_their_stack() -> None:
    failure = classify(raised(ValueError("no such file")))
    assert failure.retriable is True and failure.retry_after_ms == 0
    assert (failure.error.name, failure.error.message) == ("ValueError", "no such file")
    assert "Traceback" in failure.error.stack and "raised" in failure.error.stack


def test_non_retriable_error_fails_at_once() -> None:
    failure = classify(raised(NonRetriableError("account closed")))
    assert (failure.retriable, failure.error.name, failure.error.message) == (
        False, "NonRetriableError", "account closed")


def test_non_determinism_is_final() -> None:
    assert classify(NonDeterminismError(expected="a", found="b", position=0)).retriable is False


@pytest.mark.parametrize(
    ("retry_after", "expected_ms"),
    [(timedelta(seconds=90), 90_000), (30, 30_000), (0.25, 250)],
)
def test_retry_after_sets_the_delay(retry_after: timedelta | int | float, expected_ms: int) -> None:
    failure = classify(raised(RetryAfterError("rate limited", retry_after)))
    assert failure.retriable is True and failure.retry_after_ms == expected_ms
    assert failure.error.message == "rate limited"


def test_retry_after_a_datetime_counts_from_now() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    failure = classify(RetryAfterError("later", now + timedelta(minutes=2)), now=now)
    assert failure.retry_after_ms == 120_000
    # A time already past still asks for a (minimal) explicit delay, never "use the default backoff".
    assert classify(RetryAfterError("past", now - timedelta(hours=1)), now=now).retry_after_ms == 1


def test_retry_after_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        RetryAfterError("x", datetime(2030, 1, 1))  # noqa: DTZ001 - the point of the test


def test_a_failing_step_becomes_a_step_error_with_its_classification() -> None:
    reached = Reached(step_id="charge", kind="run", position=0, memo=None)
    request = _run_step_request(reached, 10, error=raised(RetryAfterError("busy", timedelta(seconds=5))))
    assert request.step_id == "charge" and request.started_unix_ms == 10 and request.ended_unix_ms >= 10
    assert request.step_error == pb.StepError(
        error=request.step_error.error, retriable=True, retry_after_ms=5000)
    assert request.step_error.error.name == "RetryAfterError"


def test_status_names_map_to_typed_errors() -> None:
    assert type(client_error_for("NOT_FOUND", "no run r1")) is NotFoundError
    assert type(client_error_for("FAILED_PRECONDITION", "stale lease")) is FailedPreconditionError
    assert type(client_error_for("DEADLINE_EXCEEDED", "slow")) is UnavailableError
    other = client_error_for("INTERNAL", "boom")
    assert type(other) is ClientError and (other.code, other.message) == ("INTERNAL", "boom")
    assert str(other) == "INTERNAL: boom"


def test_an_unreachable_orchestrator_raises_unavailable_not_a_grpc_error() -> None:
    # Port 1 on loopback refuses connections at once: a real RPC failure, no server needed.
    client = Client(app_id="t", target="127.0.0.1:1", rpc_timeout=timedelta(seconds=5))
    try:
        with pytest.raises(UnavailableError) as caught:
            client.get_run("r1")
        assert caught.value.code == "UNAVAILABLE" and caught.value.message
    finally:
        client.close()
