"""Processes the bench starts (orchestrator, workers, DBOS runner), and the marks FIFO workers write to.

Every process is started in its own session with PR_SET_PDEATHSIG (through a tiny exec shim), registered
in `Processes`, and stopped by `Processes.stop_all()` (SIGTERM, then SIGKILL), which the driver calls in a
`finally` and on SIGINT/SIGTERM: a bench that fails or is interrupted leaves nothing running.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import grpc

from sdk_python import Client

REPO_ROOT = Path(__file__).resolve().parents[1]

_SHIM = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the bench
if os.getppid() != int(sys.argv[1]):
    sys.exit("bench already gone")
os.execvp(sys.argv[2], sys.argv[2:])
"""


class BenchError(RuntimeError):
    """A shape could not be measured (a process died, a deadline passed)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_for(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Proc:
    """One subprocess with its output in a log file."""

    def __init__(self, name: str, command: Sequence[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-S", "-E", "-c", _SHIM, str(os.getpid()), *command],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=REPO_ROOT, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        try:
            self.popen.send_signal(signal.SIGTERM)
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
        except ProcessLookupError:
            pass


class Processes:
    """Owns every process the bench starts."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[Proc] = []

    def start(self, name: str, command: Sequence[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, command, self.log_dir / f"{name}.log", env)
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        # Workers first (they drain against a live orchestrator), the orchestrator last.
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()


class Orchestrator:
    """`python -m orchestrator serve` on a free port and a database URL."""

    def __init__(self, procs: Processes, name: str, db_url: str) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.proc = procs.start(
            name,
            [sys.executable, "-m", "orchestrator", "serve", "--port", str(self.port), "--db", db_url,
             "--log-level", "WARNING"],
            env_for(),
        )
        self.client = Client(app_id="bench-driver", target=self.target)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.check()
            try:
                with grpc.insecure_channel(self.target) as channel:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                self.client.list_runs(limit=1)
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
        raise BenchError(f"orchestrator not ready in {timeout}s:\n{self.proc.tail()}")

    def rss_bytes(self) -> int:
        """Resident memory (VmRSS) of the orchestrator process."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError("no VmRSS in /proc status")


class Marks:
    """Reads "<kind> <key> <time_ns>" lines from a FIFO in a thread; waits for them by kind and key."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(tempfile.mkdtemp(dir=directory)) / "marks.fifo"
        os.mkfifo(self.path)
        self._rfd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        # Our own writer keeps the FIFO from reporting EOF between worker processes.
        self._wfd = os.open(self.path, os.O_WRONLY)
        self._cond = threading.Condition()
        self._times: dict[tuple[str, str], int] = {}
        self._counts: dict[str, int] = defaultdict(int)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="bench-marks", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._rfd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(self._rfd, 1 << 16)
            except BlockingIOError:
                continue
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if not lines:
                continue
            with self._cond:
                for line in lines:
                    kind, key, t_ns = line.decode().split(" ")
                    if (kind, key) not in self._times:
                        self._times[(kind, key)] = int(t_ns)
                        self._counts[kind] += 1
                self._cond.notify_all()

    def wait(self, kind: str, key: object, timeout: float) -> int:
        """The first mark of (kind, key), in time_ns; BenchError after `timeout` seconds."""
        k = (kind, str(key))
        with self._cond:
            if not self._cond.wait_for(lambda: k in self._times, timeout=timeout):
                raise BenchError(f"no mark {kind} {key} within {timeout}s")
            return self._times[k]

    def wait_count(self, kind: str, count: int, timeout: float, check: object = None) -> None:
        """Waits until `count` distinct keys of `kind` were marked (calling `check()` now and then)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._counts[kind] < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"only {self._counts[kind]}/{count} '{kind}' marks within {timeout}s")
                self._cond.wait(timeout=min(left, 1.0))
                if callable(check):
                    check()

    def times(self, kind: str) -> dict[str, int]:
        with self._cond:
            return {key: t for (k, key), t in self._times.items() if k == kind}

    def count(self, kind: str) -> int:
        with self._cond:
            return self._counts[kind]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self._rfd, self._wfd):
            os.close(fd)
