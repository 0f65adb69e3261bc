"""Scenario 15: the package installed non-editably into a fresh virtualenv, run from outside the checkout
with DEFAULT settings (port 50051, SQLite in ./.orchestrator of the working dir), drives scenario 1.

A file missing from the package (stubs, migrations, ...) fails here even when the checkout works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import (
    E2E_APPS,
    REPO_ROOT,
    OrchestratorProcess,
    ProcessGroup,
    StateDir,
    WorkerProcess,
    base_env,
    port_is_free,
    seed,
)

DEFAULT_PORT = 50051
INSTALL_TIMEOUT = 600
# What the package build needs from the checkout; the rest (venv, caches, tests) is not copied.
_NOT_PACKAGED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", "build", "dist", "*.egg-info", ".orchestrator",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", "node_modules", "tests", "bench",
)  # fmt: skip


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{command} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_installed_package_runs_the_seed_workflow(tmp_path: Path, processes: ProcessGroup, connect) -> None:
    if not port_is_free(DEFAULT_PORT):
        pytest.fail(
            f"port {DEFAULT_PORT} is taken: this test runs the installed orchestrator with its default "
            "settings, so stop whatever listens there (e.g. a `make run`) and run it again"
        )
    assert not str(tmp_path).startswith(str(REPO_ROOT)), "the fresh venv must live outside the checkout"
    env = base_env(pythonpath=False)  # no PYTHONPATH, no ORCHESTRATOR_* variables: defaults only

    # Build from a copy of the source tree so the build's in-tree artifacts (build/, *.egg-info) never
    # land in the checkout, where another run may be building at the same time.
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_PACKAGED)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, 120)
    python = str(venv / "bin" / "python")
    # Non-editable, with dependencies, reusing the pip cache (no --no-cache-dir).
    _run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
         tmp_path, env, INSTALL_TIMEOUT)  # fmt: skip
    shutil.rmtree(source)  # nothing may be imported from the source tree

    workdir = tmp_path / "work"
    workdir.mkdir()
    where_code = "import orchestrator, sdk_python; print(orchestrator.__file__, sdk_python.__file__)"
    where = _run([python, "-c", where_code], workdir, env, 60).split()
    assert all(path.startswith(str(venv)) for path in where), where

    server = OrchestratorProcess(
        command=[str(venv / "bin" / "orchestrator"), "serve"],
        log_path=tmp_path / "orchestrator.log",
        env=env,
        target=f"127.0.0.1:{DEFAULT_PORT}",
        cwd=workdir,
        name="installed-orchestrator",
    )
    processes.add(server)
    server.start()
    assert (workdir / ".orchestrator" / "orchestrator.db").exists(), "the default SQLite file"

    shutil.copy(E2E_APPS / "contacts.py", workdir / "contacts.py")
    shutil.copy(E2E_APPS / "installed_driver.py", workdir / "installed_driver.py")
    state = StateDir(workdir / "state")
    worker = WorkerProcess(
        name="installed-worker",
        command=[python, "contacts.py"],
        log_path=tmp_path / "worker.log",
        env={**env, "E2E_STATE_DIR": str(state.path)},
        cwd=workdir,
    )
    processes.add(worker)
    worker.start()

    observed = json.loads(_run([python, "installed_driver.py"], workdir, env, 180))

    assert observed["sdk_file"].startswith(str(venv))
    # The review of another upload left the run waiting.
    assert observed["after_other_review"] == {
        "status": "running",
        "steps": {"validate-upload": "completed", "enrich": "completed", "wait-review": "waiting"},
    }
    run = observed["run"]
    assert run["status"] == "completed", run
    assert run["output"] == {"imported": 1}
    assert [(s["id"], s["status"]) for s in run["steps"]] == [(s, "completed") for s in seed.APPROVED_STEPS]
    assert run["steps"][2]["output"]["id"] == observed["review_id"]
    assert state.counts() == {
        "enrich_contacts": 1,
        "insert_contacts": 1,
        "send_success_email": 1,
        "validate_csv": 1,
    }

    # The installed CLI reads the same run.
    shown = json.loads(
        _run([str(venv / "bin" / "orchestrator"), "runs", "show", run["id"], "--json"], workdir, env, 60)
    )
    assert shown["status"] == "completed" and shown["output"] == {"imported": 1}

    # The final state through this checkout's SDK as well.
    final = connect(server).get_run(run["id"])
    assert final.status == "completed" and final.output == {"imported": 1}
    assert [(s.id, s.attempts) for s in final.steps if s.kind == "run"] == [
        ("validate-upload", 1), ("enrich", 1), ("create-contacts", 1), ("notify-success", 1),
    ]  # fmt: skip

    assert worker.terminate() == 0
    assert server.terminate() == 0
    assert os.path.getsize(workdir / ".orchestrator" / "orchestrator.db") > 0
