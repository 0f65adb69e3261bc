"""The Node.js example speaks the wire contract: its sender starts a run, its worker finishes it.

A real orchestrator process; the example's `worker.js` and `send.js` run under `node` against it; the
result is read back through `GetRun` with the Python stubs. The worker's first step fails on its first
attempt, so the run also shows that a step error reported by another language is retried alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sdk_python import Client
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from tests.support import (
    REPO_ROOT,
    OrchestratorProcess,
    ProcessGroup,
    WorkerProcess,
    base_env,
    raw_stub,
    wait_until,
)
from tests.support.secure import generate_tls, start_configured

EXAMPLE_DIR = REPO_ROOT / "examples" / "node"
NPM_TIMEOUT = 300.0
SEND_TIMEOUT = 60.0
RUN_TIMEOUT = 90.0
ORDER = {
    "customer": "ada",
    "items": [{"sku": "tea", "qty": 2, "price": 3.5}, {"sku": "cup", "qty": 1, "price": 4}],
}

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="node and npm are not installed"
)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The example's dependencies, installed from its committed lock file when missing."""
    modules = EXAMPLE_DIR / "node_modules"
    if not (modules / "@grpc" / "grpc-js").is_dir() or not (modules / "@grpc" / "proto-loader").is_dir():
        # --ignore-scripts: neither package needs its install script, and it keeps npm quiet and offline-safe.
        subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=EXAMPLE_DIR,
            check=True,
            timeout=NPM_TIMEOUT,
            capture_output=True,
        )
    return modules


def _node_env(orchestrator: OrchestratorProcess, extra: dict[str, str] | None = None) -> dict[str, str]:
    return base_env({"ORCHESTRATOR_TARGET": orchestrator.target, **(extra or {})}, pythonpath=False)


@pytest.fixture
def start_node_worker(
    node_modules: Path, orchestrator: OrchestratorProcess, processes: ProcessGroup, tmp_path: Path
) -> Callable[..., WorkerProcess]:
    """Starts `node worker.js ARGS...`; the process is stopped at teardown and its log shown on failure."""

    def start(*args: str) -> WorkerProcess:
        worker = WorkerProcess(
            name="node-worker",
            command=["node", str(EXAMPLE_DIR / "worker.js"), *args],
            log_path=tmp_path / "node-worker.log",
            env=_node_env(orchestrator),
            cwd=EXAMPLE_DIR,
        )
        processes.add(worker)
        return worker.start()

    return start


def _send(
    orchestrator: OrchestratorProcess, name: str, data: object, env: dict[str, str] | None = None
) -> dict[str, list[str]]:
    result = subprocess.run(
        ["node", str(EXAMPLE_DIR / "send.js"), name, json.dumps(data)],
        cwd=EXAMPLE_DIR,
        env=_node_env(orchestrator, env),
        capture_output=True,
        text=True,
        timeout=SEND_TIMEOUT,
    )
    assert result.returncode == 0, f"send.js failed ({result.returncode}): {result.stderr}"
    reply: dict[str, list[str]] = json.loads(result.stdout)
    return reply


def _get_run(orchestrator: OrchestratorProcess, run_id: str) -> pb.Run:
    with raw_stub(orchestrator.target) as stub:
        reply: pb.GetRunResponse = stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=10)
    return reply.run


def _ended(orchestrator: OrchestratorProcess, run_id: str) -> pb.Run | None:
    run = _get_run(orchestrator, run_id)
    return run if run.status != pb.RUN_STATUS_RUNNING else None


def test_node_sender_and_worker_complete_a_run_with_a_retried_step(
    orchestrator: OrchestratorProcess, start_node_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_node_worker("--max-runs", "1")
    worker.wait_for_log("registered order-receipt")

    sent = _send(orchestrator, "node/order.placed", ORDER)
    assert len(sent["ids"]) == 1 and len(sent["run_ids"]) == 1, sent
    run_id = sent["run_ids"][0]

    run = wait_until(
        lambda: _ended(orchestrator, run_id),
        timeout=RUN_TIMEOUT,
        message=lambda: f"run {run_id} to end; worker log:\n{worker.logs()}",
    )

    assert run is not None
    assert run.status == pb.RUN_STATUS_COMPLETED, (run.status, run.error)
    assert (run.app_id, run.function_id, run.event_id) == ("node-example", "order-receipt", sent["ids"][0])
    assert json.loads(run.output_json) == {"total": 11, "receipt": "ada: 11.00"}

    assert [(s.id, s.status) for s in run.steps] == [
        ("price-order", pb.STEP_STATUS_COMPLETED),
        ("format-receipt", pb.STEP_STATUS_COMPLETED),
    ]
    price, receipt = run.steps
    assert price.attempts == 2, price
    assert [a.failed for a in price.attempt_history] == [True, False], price.attempt_history
    assert price.attempt_history[0].error.message == "pricing service timed out (simulated)"
    assert json.loads(price.output_json) == 11
    assert receipt.attempts == 1, receipt
    assert json.loads(receipt.output_json) == "ada: 11.00"

    # --max-runs 1: the worker leaves by itself once it has ended the run.
    assert worker.wait(timeout=30) == 0, worker.logs()


def test_node_worker_exits_cleanly_on_sigterm(start_node_worker: Callable[..., WorkerProcess]) -> None:
    worker = start_node_worker()
    worker.wait_for_log("registered order-receipt")
    # It is parked in a long poll now; SIGTERM must cancel the poll rather than wait it out (30 s).
    assert worker.terminate(timeout=10) == 0, worker.logs()


def test_node_sender_and_worker_over_tls_with_api_keys(
    node_modules: Path, tmp_path: Path, processes: ProcessGroup
) -> None:
    tls = generate_tls(tmp_path / "tls")
    server = start_configured(
        tmp_path,
        processes,
        "--event-key", "node-event-key",
        "--worker-key", "node-worker-key",
        "--admin-key", "node-admin-key",
        tls=tls,
    )  # fmt: skip
    ca = {"ORCHESTRATOR_TLS_CA": str(tls.ca)}
    worker = WorkerProcess(
        name="node-worker-tls",
        command=["node", str(EXAMPLE_DIR / "worker.js"), "--max-runs", "1"],
        log_path=tmp_path / "node-worker-tls.log",
        env=_node_env(server, {**ca, "ORCHESTRATOR_API_KEY": "node-worker-key"}),
        cwd=EXAMPLE_DIR,
    )
    processes.add(worker)
    worker.start().wait_for_log("registered order-receipt")

    sent = _send(server, "node/order.placed", ORDER, {**ca, "ORCHESTRATOR_API_KEY": "node-event-key"})
    run_id = sent["run_ids"][0]
    admin = Client("tests", server.target, api_key="node-admin-key", tls_ca=tls.ca)
    try:
        run = wait_until(
            lambda: next((r for r in [admin.get_run(run_id)] if r.status != "running"), None),
            timeout=RUN_TIMEOUT,
            message=lambda: f"run {run_id} to end; worker log:\n{worker.logs()}",
        )
    finally:
        admin.close()
    assert run.status == "completed", run.error
    assert run.output == {"total": 11, "receipt": "ada: 11.00"}
    assert worker.wait(timeout=30) == 0, worker.logs()

    # The event key may send but not register or poll: the worker fails with PERMISSION_DENIED.
    denied = subprocess.run(
        ["node", str(EXAMPLE_DIR / "worker.js"), "--max-runs", "1"],
        cwd=EXAMPLE_DIR,
        env=_node_env(server, {**ca, "ORCHESTRATOR_API_KEY": "node-event-key"}),
        capture_output=True,
        text=True,
        timeout=SEND_TIMEOUT,
    )
    assert denied.returncode != 0 and "PERMISSION_DENIED" in denied.stdout + denied.stderr, denied
