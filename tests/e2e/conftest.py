"""End-to-end fixtures: a test app's worker, with its functions known to the orchestrator on return."""

from __future__ import annotations

from typing import Protocol

import pytest

from tests.support import (
    FunctionSpec,
    OrchestratorProcess,
    StartWorker,
    WorkerProcess,
    register_functions,
    seed,
)

# The functions each test app under tests/e2e/apps registers, as the app declares them.
APP_FUNCTIONS: dict[str, tuple[str, tuple[FunctionSpec, ...]]] = {
    "contacts": (seed.APP_ID, seed.FUNCTIONS),
    "extras": (
        "extras",
        (FunctionSpec("nap", "extras/nap", retries=2), FunctionSpec("sync-greet", "extras/greet", retries=1)),
    ),
}


class StartApp(Protocol):
    """The `start_app` factory's signature."""

    def __call__(self, app: str, orchestrator: OrchestratorProcess | None = None) -> WorkerProcess: ...


@pytest.fixture
def start_app(start_worker: StartWorker, request: pytest.FixtureRequest) -> StartApp:
    """Factory: starts a worker for a test app and makes sure its functions are registered.

    An event starts only the functions registered when it arrives, and a worker registers asynchronously
    after it starts, so the factory registers the same declarations itself (re-registering is idempotent)
    before returning: the test can send its trigger event at once.
    """

    def start(app: str, orchestrator: OrchestratorProcess | None = None) -> WorkerProcess:
        server = orchestrator or request.getfixturevalue("orchestrator")
        app_id, functions = APP_FUNCTIONS[app]
        register_functions(server.target, app_id, functions)
        return start_worker(app, server)

    return start
