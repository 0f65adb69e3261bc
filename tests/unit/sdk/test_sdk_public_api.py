"""The SDK's public surface is pinned: adding or removing a name is a deliberate, reviewed change."""

from __future__ import annotations

import subprocess
import sys

import sdk_python

EXPECTED = {
    "Client", "ClientError", "Context", "ContextSync", "ErrorInfo", "Event", "FailedPreconditionError",
    "Function", "InvalidArgumentError", "NonDeterminismError", "NonRetriableError", "NotFoundError",
    "PermissionDeniedError", "ResourceExhaustedError", "RetryAfterError", "Run", "Step", "StepRecord",
    "StepSync", "TriggerEvent", "UnauthenticatedError", "UnavailableError", "Worker",
}


def test_all_is_pinned() -> None:
    assert set(sdk_python.__all__) == EXPECTED
    assert len(sdk_python.__all__) == len(EXPECTED), "no duplicates in __all__"


def test_every_exported_name_exists() -> None:
    missing = [name for name in sdk_python.__all__ if not hasattr(sdk_python, name)]
    assert missing == []


def test_client_errors_share_one_root() -> None:
    for name in ("InvalidArgumentError", "NotFoundError", "FailedPreconditionError", "UnavailableError",
                 "ResourceExhaustedError", "UnauthenticatedError", "PermissionDeniedError"):
        assert issubclass(getattr(sdk_python, name), sdk_python.ClientError), name


def test_sdk_does_not_import_the_server() -> None:
    code = "import sys, sdk_python; print(sorted(m for m in sys.modules if m.startswith('orchestrator')))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
