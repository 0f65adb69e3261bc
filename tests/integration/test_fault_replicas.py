"""Replicas under faults: 2 orchestrators and 3 workers on one PostgreSQL (a throwaway server of this
test's own, so restarting it disturbs nothing else), 500 runs of a five-step function and 100 runs that
wait for an event (some of which time out). During the load one replica and one worker are SIGKILLed
and restarted, and PostgreSQL is restarted once. Then, from the database: every run completed, every
step output was recorded exactly once, every step's user code ran at most retries+1 times, every event
acknowledged to the sender is stored, and every timer fired once.

The order of sends and faults is fixed (SEED shuffles the event order only); what the processes do in
between is up to the machine, and the assertions hold whatever it is.
"""

from __future__ import annotations

import collections
import json
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from sdk_python import Client, Event
from sdk_python.errors import UnavailableError
from tests.support import (
    FunctionSpec,
    OrchestratorProcess,
    ProcessGroup,
    WorkerProcess,
    base_env,
    free_port,
    orchestrator_command,
    register_functions,
    wait_until,
)
from tests.support.databases import ThrowawayPostgres, with_database

SEED = 20261125
FIVE_STEP_RUNS = 500
WAIT_RUNS = 100
TIMING_OUT = 20  # of the WAIT_RUNS: no event is ever sent for them, their timeout fires
RETRIES = 3  # as declared by the app
LEASE_SECONDS = 5.0  # work of the SIGKILLed worker comes back this soon; long enough for a loaded machine
BATCH = 25
APP = Path(__file__).parent / "apps" / "fault_app.py"
FUNCTIONS = (
    FunctionSpec("five-steps", "fault/start", retries=RETRIES),
    FunctionSpec("waiter", "fault/wait", retries=RETRIES),
)
COMPLETION_TIMEOUT = 90.0


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres(free_port()).init()
    try:
        yield server
    finally:
        server.destroy()


def _database(server: ThrowawayPostgres) -> str:
    admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE fault"))
    admin.dispose()
    return with_database(server.url, "fault")


def _replica(tmp_path: Path, processes: ProcessGroup, name: str, db_url: str) -> OrchestratorProcess:
    port = free_port()
    workdir = tmp_path / name
    workdir.mkdir()
    process = OrchestratorProcess(
        command=orchestrator_command(port, db_url, lease_seconds=LEASE_SECONDS),
        log_path=workdir / "orchestrator.log",
        env=base_env({"ORCHESTRATOR_DATA_DIR": str(workdir / "data")}),
        target=f"127.0.0.1:{port}",
        cwd=workdir,
        name=name,
    )
    processes.add(process)
    process.spawn()  # both replicas start (and migrate) at the same time
    return process


def _worker(tmp_path: Path, processes: ProcessGroup, name: str, target: str) -> WorkerProcess:
    process = WorkerProcess(
        name=name,
        command=[sys.executable, str(APP)],
        log_path=tmp_path / f"{name}.log",
        env=base_env({"ORCHESTRATOR_TARGET": target, "E2E_STATE_DIR": str(tmp_path / "state")}),
        cwd=tmp_path,
    )
    processes.add(process)
    return process.start()


class Sender:
    """Sends events with fixed ids, retrying while the orchestrators are unavailable; remembers every id
    the orchestrator acknowledged."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.acknowledged: set[str] = set()

    def send(self, events: list[Event]) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                self.acknowledged.update(self.client.send_sync(events))
                return
            except UnavailableError:
                # Same ids again: an event ingested by the failed attempt is acknowledged, not doubled.
                assert time.monotonic() < deadline, "the orchestrators stayed unavailable for 60 s"
                time.sleep(0.2)


def _scalar(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def _rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql))]


def test_replicas_and_workers_survive_kills_and_a_database_restart(
    tmp_path: Path, processes: ProcessGroup, postgres: ThrowawayPostgres
) -> None:
    db_url = _database(postgres)
    (tmp_path / "state").mkdir()
    replicas = [_replica(tmp_path, processes, name, db_url) for name in ("replica-a", "replica-b")]
    for replica in replicas:
        replica.wait_ready()
    register_functions(replicas[0].target, "fault", FUNCTIONS)
    target = "ipv4:" + ",".join(r.target for r in replicas)  # gRPC round-robin over both replicas
    workers = [_worker(tmp_path, processes, f"worker-{i}", target) for i in range(3)]
    client = Client(app_id="fault-test", target=target)
    sender = Sender(client)

    rng = random.Random(SEED)
    triggers = [Event(name="fault/start", data={"i": i}, id=f"start-{i}") for i in range(FIVE_STEP_RUNS)]
    triggers += [
        Event(
            name="fault/wait",
            data={"key": f"k{i}", "timeout_s": 4 if i < TIMING_OUT else 600},
            id=f"wait-{i}",
        )
        for i in range(WAIT_RUNS)
    ]
    rng.shuffle(triggers)
    batches = [triggers[i : i + BATCH] for i in range(0, len(triggers), BATCH)]
    faults: dict[int, Callable[[], None]] = {
        4: lambda: (replicas[1].kill(), workers[0].kill()),
        8: lambda: (replicas[1].start(), workers[0].start()),
        14: lambda: (postgres.stop("fast"), postgres.start()),
    }
    started = time.monotonic()
    for index, batch in enumerate(batches):
        if index in faults:
            faults[index]()
        sender.send(batch)
    engine = create_engine(db_url)
    try:
        # A wait sees the events received after the run's previous step: send each awaited event once
        # its run is waiting (never missed, by the no-gap rule, whichever replica ingests it).
        wait_until(
            lambda: _scalar(engine, "SELECT count(*) FROM steps WHERE step_id = 'go'") == WAIT_RUNS,
            timeout=COMPLETION_TIMEOUT,
            message="every waiting run reached its wait",
        )
        sender.send(
            [
                Event(name="fault/go", data={"key": f"k{i}"}, id=f"go-{i}")
                for i in range(TIMING_OUT, WAIT_RUNS)
            ]
        )
        total = FIVE_STEP_RUNS + WAIT_RUNS
        wait_until(
            lambda: _scalar(engine, "SELECT count(*) FROM runs WHERE state = 'ended'") == total,
            timeout=COMPLETION_TIMEOUT,
            message=lambda: (
                f"runs ended: {_rows(engine, 'SELECT status, state, count(*) FROM runs GROUP BY 1, 2')}"
            ),
        )
        elapsed = time.monotonic() - started
        _assert_outcome(engine, sender, tmp_path, replicas)
    finally:
        engine.dispose()
        client.close()
    print(f"\nfault test: {total} runs completed in {elapsed:.1f}s of load and recovery")


def _assert_outcome(
    engine: Engine, sender: Sender, tmp_path: Path, replicas: list[OrchestratorProcess]
) -> None:
    # Every run completed.
    assert _rows(engine, "SELECT status, count(*) FROM runs GROUP BY status") == [
        ("completed", FIVE_STEP_RUNS + WAIT_RUNS)
    ]
    # Every step output recorded exactly once: one row per step (primary key), completed, with exactly
    # one successful attempt in its history.
    assert _scalar(engine, "SELECT count(*) FROM steps WHERE status <> 'completed'") == 0
    steps_per_function = dict(
        _rows(
            engine,
            "SELECT r.function_id, count(*) FROM steps s JOIN runs r ON r.id = s.run_id"
            " GROUP BY r.function_id",
        )
    )
    assert steps_per_function == {"five-steps": 5 * FIVE_STEP_RUNS, "waiter": 3 * WAIT_RUNS}
    doubled = _rows(
        engine,
        "SELECT run_id, step_id, count(*) FROM step_attempts WHERE NOT failed AND ended_ms IS NOT NULL"
        " GROUP BY run_id, step_id HAVING count(*) <> 1",
    )
    assert doubled == []
    # Every step's user code ran at most retries+1 times (counted by the workers, SIGKILLed one included).
    executions: collections.Counter[tuple[str, str]] = collections.Counter()
    for log in (tmp_path / "state").glob("exec-*.log"):
        for line in log.read_text().splitlines():
            if line.endswith("}"):
                record = json.loads(line)
                executions[(record["run"], record["step"])] += 1
    assert len(executions) == 5 * FIVE_STEP_RUNS + 2 * WAIT_RUNS
    over = {key: n for key, n in executions.items() if n > RETRIES + 1}
    assert over == {}
    # Every acknowledged event is stored.
    stored = {row[0] for row in _rows(engine, "SELECT id FROM events")}
    assert sender.acknowledged - stored == set()
    assert len(sender.acknowledged) == FIVE_STEP_RUNS + 2 * WAIT_RUNS - TIMING_OUT
    # Every timer fired once: each timed-out wait resolved once (one wait row, one attempt, output null),
    # each matched wait by its own event, and the logs of both replicas tell of each timeout once.
    waits = _rows(engine, "SELECT status, count(*) FROM waits GROUP BY status ORDER BY status")
    assert waits == [("matched", WAIT_RUNS - TIMING_OUT), ("timed_out", TIMING_OUT)]
    assert (
        _scalar(
            engine, "SELECT count(*) FROM (SELECT run_id FROM waits GROUP BY run_id HAVING count(*) > 1) d"
        )
        == 0
    )
    assert (
        _scalar(engine, "SELECT count(*) FROM steps WHERE step_id = 'go' AND output = 'null'") == TIMING_OUT
    )
    fired: collections.Counter[str] = collections.Counter()
    for replica in replicas:
        for line in replica.log_path.read_text().splitlines():
            if "wait.timed_out" in line:
                match = re.search(r"run_id=(\S+)", line)
                assert match is not None, line
                fired[match.group(1)] += 1
    assert len(fired) == TIMING_OUT and set(fired.values()) == {1}, fired
    # Each replica listened again after the database restart (and rescanned): its first connection
    # plus at least one reconnection.
    for replica in replicas:
        assert replica.log_path.read_text().count("event=listener.listening") >= 2, replica.name
