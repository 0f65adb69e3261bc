"""The orchestrator as a process (``python -m orchestrator serve``): readiness line, durability across
a restart, clean exit on SIGTERM / SIGINT, and a clear failure when the port is taken."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._proto.durable.v1 import orchestrator_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[3]
READY = re.compile(r"orchestrator listening on (\S+):(\d+) db=")


class Served:
    """A ``python -m orchestrator serve`` child process whose stderr is collected line by line."""

    def __init__(self, db_url: str, port: int = 0, *flags: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve", "--port", str(port), "--db", db_url, *flags],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=REPO,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = READY.search(line)
                if match:
                    return int(match.group(2))
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError("orchestrator did not become ready:\n" + "\n".join(self.lines))

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code


@pytest.fixture
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(timeout=10)


def start(served: list[Served], db_url: str, port: int = 0, *flags: str) -> Served:
    s = Served(db_url, port, *flags)
    served.append(s)
    return s


def register_and_send(port: int) -> str:
    """Registers app "crm" (function "f" on "a/b"), sends one "a/b" and returns the run it started."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        stub.RegisterFunctions(
            pb.RegisterFunctionsRequest(
                app_id="crm",
                functions=[pb.FunctionConfig(function_id="f", triggers=[pb.Trigger(event="a/b")])],
            )
        )
        (run_id,) = stub.SendEvent(pb.SendEventRequest(events=[pb.Event(name="a/b")])).run_ids
    return str(run_id)


def test_sigterm_drains_and_exits_zero_and_state_survives_a_restart(
    tmp_path: Path, served: list[Served]
) -> None:
    db = f"sqlite:///{tmp_path / 'data' / 'o.db'}"
    first = start(served, db)
    port = first.wait_ready()
    run_id = register_and_send(port)
    assert first.stop(signal.SIGTERM) == 0
    assert any("event=run.created" in line and run_id in line for line in first.lines)
    # uvloop by default (a dependency here, on Linux).
    assert any(READY.search(line) and line.endswith(" loop=uvloop") for line in first.lines), first.lines

    second = start(served, db)
    port = second.wait_ready()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        assert stub.GetRun(pb.GetRunRequest(run_id=run_id)).run.status == pb.RUN_STATUS_RUNNING
        # The registration persisted: a new event starts a run without registering again.
        assert len(stub.SendEvent(pb.SendEventRequest(events=[pb.Event(name="a/b")])).run_ids) == 1
    assert second.stop(signal.SIGINT) == 0


def test_a_taken_port_fails_with_a_clear_message(tmp_path: Path, served: list[Served]) -> None:
    first = start(served, f"sqlite:///{tmp_path / 'a.db'}")
    port = first.wait_ready()
    second = start(served, f"sqlite:///{tmp_path / 'b.db'}", port=port)
    assert second.proc.wait(timeout=30) != 0
    second._reader.join(timeout=5)
    assert any("cannot listen" in line for line in second.lines), second.lines
    assert first.stop() == 0


def test_loop_asyncio_serves_on_the_standard_loop(tmp_path: Path, served: list[Served]) -> None:
    s = start(served, f"sqlite:///{tmp_path / 'a.db'}", 0, "--loop", "asyncio")
    port = s.wait_ready()
    assert register_and_send(port)
    assert s.stop() == 0
    assert any(READY.search(line) and line.endswith(" loop=asyncio") for line in s.lines), s.lines


def test_an_unknown_loop_is_refused_with_the_choices(tmp_path: Path, served: list[Served]) -> None:
    s = start(served, f"sqlite:///{tmp_path / 'a.db'}", 0, "--loop", "trio")
    assert s.proc.wait(timeout=30) == 2  # argparse: a usage error
    s._reader.join(timeout=5)
    assert any("invalid choice: 'trio'" in line and "uvloop" in line for line in s.lines), s.lines
