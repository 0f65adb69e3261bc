"""Fixtures shared by every test suite: real orchestrator and worker processes, state dirs, an SDK client.

- `db_backend` / `db_url`: every test using them (and every test using `start_orchestrator`) runs once on
  SQLite and once on PostgreSQL (`@pytest.mark.sqlite_only("why")` / `@pytest.mark.postgres_only("why")`
  keep one leg); each gets its own database.
- `start_orchestrator(lease_seconds=None, db_url=None)`: starts a real `python -m orchestrator serve` on a
  free port and the test's database; returns an `OrchestratorProcess` (`.target`,
  `.kill()`, `.terminate()`, `.restart()`).
- `orchestrator`: one such server with default options.
- `state_dir`: a `StateDir` where the test apps record each execution of their step code.
- `start_worker(app, orchestrator=None, env=None)`: runs `tests/e2e/apps/<app>.py` as a worker process
  with `ORCHESTRATOR_TARGET` and `E2E_STATE_DIR` set; returns a `WorkerProcess`.
- `client`: a `sdk_python.Client` pointed at `orchestrator`; `connect(orchestrator)` makes one for any server.

Every process is stopped at teardown, and its log is attached to the report of a failing test.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# `tests` is not an installed package: put the repo root on sys.path so `tests.support` imports also when
# pytest is started as `pytest` rather than `python -m pytest` (which adds the cwd).
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.support import (  # noqa: E402  (needs the sys.path line above)
    E2E_APPS,
    STATE_DIR_ENV,
    OrchestratorProcess,
    ProcessGroup,
    StartOrchestrator,
    StartWorker,
    StateDir,
    WorkerProcess,
    base_env,
    free_port,
    orchestrator_command,
)
from tests.support.databases import PostgresServer, connect_server  # noqa: E402

if TYPE_CHECKING:
    from sdk_python import Client

_PROCESSES = pytest.StashKey[ProcessGroup]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Attaches every process log of a failing test (setup, call or teardown) to its report."""
    report: pytest.TestReport = yield
    group = item.stash.get(_PROCESSES, None)
    if report.failed and group is not None:
        for title, text in group.report():
            report.sections.append((title, text or "(empty)"))
    return report


@pytest.fixture
def processes(request: pytest.FixtureRequest) -> Iterator[ProcessGroup]:
    """The processes this test started; all stopped at teardown."""
    group = ProcessGroup()
    request.node.stash[_PROCESSES] = group
    try:
        yield group
    finally:
        group.stop_all()


DB_BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): run this test on SQLite only (it does not exercise the store differently"
        " on PostgreSQL); say why",
    )
    config.addinivalue_line(
        "markers",
        "postgres_only(reason): run this test on PostgreSQL only (what it checks does not exist on"
        " SQLite); say why",
    )


# Modules whose tests use an orchestrator only as a backdrop for a client surface (the CLI's rendering,
# the Node example's wire calls): they exercise no store path the other scenarios do not, so they skip
# the PostgreSQL leg and keep the whole suite within its time budget.
SQLITE_ONLY_MODULES = frozenset({"test_cli", "test_node_example"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that touches the store (through `db_backend`) runs on each database."""
    if "db_backend" in metafunc.fixturenames:
        sqlite_only = (
            metafunc.definition.get_closest_marker("sqlite_only") is not None
            or metafunc.module.__name__.rpartition(".")[2] in SQLITE_ONLY_MODULES
        )
        postgres_only = metafunc.definition.get_closest_marker("postgres_only") is not None
        backends = ("sqlite",) if sqlite_only else ("postgresql",) if postgres_only else DB_BACKENDS
        metafunc.parametrize("db_backend", backends, indirect=True)


@pytest.fixture
def db_backend(request: pytest.FixtureRequest) -> str:
    """ "sqlite" or "postgresql": the database this test runs on (parametrized above)."""
    backend: str = getattr(request, "param", "sqlite")
    return backend


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The test PostgreSQL server (skips, or fails under CI=true, when unreachable)."""
    server = connect_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_db_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database at the newest schema revision, dropped after the test."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture
def db_url(db_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """This test's own database: a SQLite file under its tmp dir, or a fresh PostgreSQL database."""
    if db_backend == "postgresql":
        url: str = request.getfixturevalue("postgres_db_url")
        return url
    return f"sqlite:///{tmp_path / 'orchestrator.db'}"


@pytest.fixture
def start_orchestrator(
    tmp_path: Path, processes: ProcessGroup, db_backend: str, request: pytest.FixtureRequest
) -> StartOrchestrator:
    """Factory: a real orchestrator on a free port, on this test's database: a SQLite file per
    orchestrator under the test's tmp dir, or (PostgreSQL leg) the test's one PostgreSQL database."""
    counter = 0

    def start(
        *, lease_seconds: float | None = None, db_url: str | None = None, name: str = "orchestrator"
    ) -> OrchestratorProcess:
        nonlocal counter
        counter += 1
        workdir = tmp_path / f"{name}-{counter}"
        workdir.mkdir()
        port = free_port()
        url = db_url
        if url is None and db_backend == "postgresql":
            url = request.getfixturevalue("postgres_db_url")
        url = url or f"sqlite:///{workdir / 'orch.db'}"
        process = OrchestratorProcess(
            command=orchestrator_command(port, url, lease_seconds=lease_seconds),
            log_path=workdir / "orchestrator.log",
            env=base_env({"ORCHESTRATOR_DATA_DIR": str(workdir / "data")}),
            target=f"127.0.0.1:{port}",
            cwd=workdir,
            name=name,
        )
        processes.add(process)
        return process.start()

    return start


@pytest.fixture
def orchestrator(start_orchestrator: StartOrchestrator) -> OrchestratorProcess:
    """A running orchestrator with default options."""
    return start_orchestrator()


@pytest.fixture
def state_dir(tmp_path: Path) -> StateDir:
    """Where this test's apps record their step executions (`E2E_STATE_DIR`)."""
    return StateDir(tmp_path / "state")


@pytest.fixture
def start_worker(
    tmp_path: Path, processes: ProcessGroup, state_dir: StateDir, request: pytest.FixtureRequest
) -> StartWorker:
    """Factory: runs a test app module (a name in tests/e2e/apps, or a path) as a worker process."""
    counter = 0

    def start(
        app: str | Path,
        orchestrator: OrchestratorProcess | None = None,
        *,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> WorkerProcess:
        nonlocal counter
        counter += 1
        script = Path(app) if isinstance(app, Path) else E2E_APPS / f"{app}.py"
        server = orchestrator or request.getfixturevalue("orchestrator")
        label = name or f"worker-{script.stem}-{counter}"
        process = WorkerProcess(
            name=label,
            command=[sys.executable, str(script)],
            log_path=tmp_path / f"{label}.log",
            env=base_env(
                {"ORCHESTRATOR_TARGET": server.target, STATE_DIR_ENV: str(state_dir.path), **(env or {})}
            ),
            cwd=tmp_path,
        )
        processes.add(process)
        return process.start()

    return start


@pytest.fixture
def connect() -> Iterator[Callable[[OrchestratorProcess], Client]]:
    """Factory: an SDK client (app id "tests") for a given orchestrator; closed at teardown."""
    from sdk_python import Client

    clients: list[Client] = []

    def make(orchestrator: OrchestratorProcess) -> Client:
        clients.append(Client(app_id="tests", target=orchestrator.target))
        return clients[-1]

    try:
        yield make
    finally:
        for sdk_client in clients:
            sdk_client.close()


@pytest.fixture
def client(orchestrator: OrchestratorProcess, connect: Callable[[OrchestratorProcess], Client]) -> Client:
    """An SDK client for `orchestrator` (app id "tests")."""
    return connect(orchestrator)
