"""Shared test support: poll-until helpers, real orchestrator and worker processes, raw RPC access.

Fixtures built on these live in `tests/conftest.py` (`start_orchestrator`, `orchestrator`, `start_worker`,
`state_dir`, `client`); import the helpers from here:

    from tests.support import wait_until, wait_until_async, StateDir, FunctionSpec, register_functions
    from tests.support.runs import wait_for_run, wait_for_status, wait_for_step, step

`tests.support.seed` has the seed workflow's events (`seed.uploaded(...)`, `seed.reviewed(...)`).
"""

from tests.support import seed
from tests.support.processes import (
    E2E_APPS,
    REPO_ROOT,
    ManagedProcess,
    OrchestratorProcess,
    ProcessFailed,
    ProcessGroup,
    StartOrchestrator,
    StartWorker,
    WorkerProcess,
    base_env,
    free_port,
    orchestrator_command,
    port_is_free,
)
from tests.support.rpc import FunctionSpec, raw_stub, register_functions
from tests.support.state import STATE_DIR_ENV, Execution, StateDir
from tests.support.waiting import GiveUp, WaitTimeout, wait_until, wait_until_async

__all__ = [
    "E2E_APPS",
    "REPO_ROOT",
    "STATE_DIR_ENV",
    "Execution",
    "FunctionSpec",
    "GiveUp",
    "ManagedProcess",
    "OrchestratorProcess",
    "ProcessFailed",
    "ProcessGroup",
    "StartOrchestrator",
    "StartWorker",
    "StateDir",
    "WaitTimeout",
    "WorkerProcess",
    "base_env",
    "free_port",
    "orchestrator_command",
    "port_is_free",
    "raw_stub",
    "register_functions",
    "seed",
    "wait_until",
    "wait_until_async",
]
