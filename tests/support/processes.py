"""Real processes for end-to-end tests: an orchestrator server and workers, each a subprocess.

Every process writes its stdout and stderr to a log file (kept across restarts) so a failing test can show
what the process said. `ProcessGroup` owns the processes of one test and stops them all at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import grpc

from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._proto.durable.v1 import orchestrator_pb2_grpc as pb_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_APPS = REPO_ROOT / "tests" / "e2e" / "apps"

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
# Variables of the developer's shell that would leak into a test's processes and change their behaviour.
_LEAKY_ENV = (
    "ORCHESTRATOR_TARGET",
    "ORCHESTRATOR_HOST",
    "ORCHESTRATOR_PORT",
    "ORCHESTRATOR_DB",
    "ORCHESTRATOR_DATA_DIR",
    "ORCHESTRATOR_LEASE_SECONDS",
    "ORCHESTRATOR_LOG_LEVEL",
    "ORCHESTRATOR_POLL_MAX_WAIT_SECONDS",
    "ORCHESTRATOR_DB_POOL_SIZE",
    "ORCHESTRATOR_TIMER_SCAN_SECONDS",
    # Keys, TLS and limits would turn every test server secure or limited (and every client with them).
    "ORCHESTRATOR_EVENT_KEYS",
    "ORCHESTRATOR_WORKER_KEYS",
    "ORCHESTRATOR_ADMIN_KEYS",
    "ORCHESTRATOR_API_KEY",
    "ORCHESTRATOR_TLS",
    "ORCHESTRATOR_TLS_CA",
    "ORCHESTRATOR_TLS_CERT",
    "ORCHESTRATOR_TLS_KEY",
    "ORCHESTRATOR_MAX_EVENT_BYTES",
    "ORCHESTRATOR_MAX_BATCH_EVENTS",
    "ORCHESTRATOR_MAX_OUTPUT_BYTES",
    "ORCHESTRATOR_MAX_STEPS_PER_RUN",
    "ORCHESTRATOR_MAX_MESSAGE_BYTES",
    "E2E_STATE_DIR",
)


class ProcessFailed(AssertionError):
    """A process did not start, or exited when it should not have. The message includes its log."""


# Runs before the real program, in the child: asks Linux to SIGKILL the child when pytest dies (so a killed
# test run leaves no orchestrator holding a port), then execs the program (same pid). A shim rather than
# Popen(preexec_fn=...): preexec_fn forces fork() instead of vfork(), and fork() in a process with live
# gRPC threads can hang for good (grpc/grpc#37259).
_PDEATHSIG_SHIM = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("test runner already gone")
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _dying_with_us(command: Sequence[str]) -> list[str]:
    if sys.platform != "linux":
        return list(command)
    return [sys.executable, "-S", "-E", "-c", _PDEATHSIG_SHIM, str(os.getpid()), *command]


def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) != 0


def base_env(extra: Mapping[str, str] | None = None, *, pythonpath: bool = True) -> dict[str, str]:
    """The environment for a test subprocess: ours without ORCHESTRATOR_* leaks, plus `extra`.

    `pythonpath=True` puts the repo root first on PYTHONPATH (checkout tests); False removes PYTHONPATH
    entirely (the installed-package test must not see the checkout).
    """
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the file as they are written, also before a SIGKILL
    env.update(extra or {})
    return env


class ManagedProcess:
    """A subprocess with its output in a log file. Subclasses add readiness checks."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self.env = dict(env)
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._start_offset = 0  # where the current start's output begins in the log file

    @property
    def pid(self) -> int | None:
        """The current process id, or None when never started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited, else None."""
        return self._proc.poll() if self._proc is not None else None

    def is_running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def spawn(self) -> None:
        """Starts the process (appending to the log file, so a restart keeps the earlier output)."""
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start: {' '.join(self.command)}\n".encode())
            log.flush()
            self._start_offset = log.tell()
            self._proc = subprocess.Popen(
                _dying_with_us(self.command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                # Own session: a Ctrl-C in the terminal running pytest does not hit the processes directly.
                start_new_session=True,
            )

    def kill(self) -> int:
        """SIGKILL, then reaps the process; returns its exit code (-9)."""
        return self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and waits for a clean exit; returns the exit code. Raises if it does not exit in time."""
        return self._signal_and_wait(signal.SIGTERM, timeout)

    def interrupt(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGINT (Ctrl-C) and waits for the exit code."""
        return self._signal_and_wait(signal.SIGINT, timeout)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Waits for the process to exit on its own and returns the exit code."""
        proc = self._require_proc()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProcessFailed(f"{self.name} did not exit within {timeout}s\n{self.logs()}") from None

    def stop(self) -> None:
        """Teardown: SIGTERM, SIGKILL if it lingers. Never raises."""
        if not self.is_running():
            return
        assert self._proc is not None
        try:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            self._proc.kill()
            self._proc.wait(timeout=10)

    def logs(self) -> str:
        """Everything the process wrote so far (across restarts)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output_since_start(self) -> str:
        """What the process wrote since its latest start."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._start_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> int:
        proc = self._require_proc()
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProcessFailed(
                f"{self.name} did not exit within {timeout}s of {sig.name}\n{self.logs()}"
            ) from None


class OrchestratorProcess(ManagedProcess):
    """A real orchestrator server. `start()` returns once it answers RPCs (port bound, database ready)."""

    def __init__(
        self,
        command: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        target: str,
        cwd: Path | None = None,
        name: str = "orchestrator",
    ) -> None:
        super().__init__(name, command, log_path, env, cwd)
        self.target = target

    def start(self, timeout: float = STARTUP_TIMEOUT) -> OrchestratorProcess:
        """Spawns the server and waits until an RPC succeeds."""
        self.spawn()
        self.wait_ready(timeout)
        return self

    def restart(self, timeout: float = STARTUP_TIMEOUT) -> OrchestratorProcess:
        """Same command, port and database: stops the process if it still runs, then starts it again."""
        if self.is_running():
            self.terminate()
        return self.start(timeout)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Polls a cheap read RPC (ListRuns) until it succeeds: that proves the port and the store are up."""
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.OrchestratorStub(channel)
            while time.monotonic() < deadline:
                if not self.is_running():
                    raise ProcessFailed(
                        f"{self.name} exited with {self.returncode} during startup\n{self.logs()}"
                    )
                try:
                    stub.ListRuns(pb.ListRunsRequest(limit=1), timeout=2.0, wait_for_ready=False)
                    return
                except grpc.RpcError as exc:
                    last_error = f"{exc.code().name}: {exc.details()}"
                time.sleep(0.1)
        raise ProcessFailed(
            f"{self.name} did not answer on {self.target} within {timeout}s ({last_error})\n{self.logs()}"
        )


class WorkerProcess(ManagedProcess):
    """A worker: a workflow app module run as a script (it calls `client.worker(...).run()`)."""

    def start(self) -> WorkerProcess:
        """Spawns the worker. Readiness is the caller's business (e.g. wait for work to be picked up)."""
        self.spawn()
        return self

    def wait_for_log(self, text: str, timeout: float = STARTUP_TIMEOUT) -> None:
        """Waits until `text` appears in the worker's output; fails early if the worker exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output_since_start():
                return
            if not self.is_running():
                raise ProcessFailed(f"{self.name} exited with {self.returncode}\n{self.logs()}")
            time.sleep(0.05)
        raise ProcessFailed(f"{self.name} did not log {text!r} within {timeout}s\n{self.logs()}")


def orchestrator_command(
    port: int,
    db_url: str,
    *,
    lease_seconds: float | None = None,
    host: str = "127.0.0.1",
    python: str = sys.executable,
) -> list[str]:
    """`python -m orchestrator serve ...` with explicit port and database."""
    command = [python, "-m", "orchestrator", "serve", "--host", host, "--port", str(port), "--db", db_url]
    if lease_seconds is not None:
        command += ["--lease-seconds", str(lease_seconds)]
    return command


class ProcessGroup:
    """The processes of one test: registered for failure logs, stopped at teardown (workers first)."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []

    def add(self, process: ManagedProcess) -> None:
        """Tracks `process` for log reports and teardown."""
        self.processes.append(process)

    def stop_all(self) -> None:
        """Stops workers before orchestrators so workers do not spend teardown reconnecting."""
        ordered = sorted(self.processes, key=lambda p: isinstance(p, OrchestratorProcess))
        for process in ordered:
            process.stop()

    def report(self) -> list[tuple[str, str]]:
        """(title, log text) for every process, for pytest's failure report."""
        return [(f"{p.name} log ({p.log_path})", p.logs()) for p in self.processes]


class StartOrchestrator(Protocol):
    """The `start_orchestrator` factory's signature."""

    def __call__(
        self, *, lease_seconds: float | None = None, db_url: str | None = None, name: str = "orchestrator"
    ) -> OrchestratorProcess: ...


class StartWorker(Protocol):
    """The `start_worker` factory's signature."""

    def __call__(
        self,
        app: str | Path,
        orchestrator: OrchestratorProcess | None = None,
        *,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> WorkerProcess: ...
