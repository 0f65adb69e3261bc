"""The shapes on our orchestrator: a server process, a worker process (bench.app), the driver here."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.procs import BenchError, Marks, Orchestrator, Proc, Processes, env_for
from bench.stats import latency_summary
from sdk_python import Event

# The gap after a sample so the worker is back in its long poll (idle) before the next one.
IDLE_GAP_S = 0.02
WARMUP = 5  # unmeasured samples first (connections, caches); fewer when samples are few


def _warmup(samples: int) -> int:
    return max(1, min(WARMUP, samples // 4))


@dataclass
class Session:
    """One orchestrator on a fresh database with its worker(s), and the marks FIFO."""

    procs: Processes
    orch: Orchestrator
    workers: list[Proc]
    marks: Marks

    def check(self) -> None:
        self.orch.proc.check()
        for worker in self.workers:
            worker.check()

    def send(self, events: list[Event]) -> None:
        self.orch.client.send_sync(events)


def start_session(procs: Processes, name: str, db_url: str, marks: Marks, workers: int,
                  concurrency: int) -> Session:
    orch = Orchestrator(procs, f"{name}-orchestrator", db_url)
    orch.wait_ready()
    before = marks.count("ready")
    started = [start_worker(procs, orch, marks, f"{name}-worker{i}", concurrency) for i in range(workers)]
    session = Session(procs, orch, started, marks)
    marks.wait_count("ready", before + workers, timeout=60, check=session.check)
    return session


def start_worker(procs: Processes, orch: Orchestrator, marks: Marks, name: str, concurrency: int,
                 *extra: str) -> Proc:
    return procs.start(
        name, [sys.executable, "-m", "bench.app", "--concurrency", str(concurrency), *extra],
        env_for({"ORCHESTRATOR_TARGET": orch.target, "BENCH_MARKS": str(marks.path)}),
    )


def _deadline(seconds: float) -> Callable[[], float]:
    end = time.monotonic() + seconds

    def left() -> float:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise BenchError(f"shape exceeded its {seconds:.0f}s budget")
        return remaining

    return left


def throughput(s: Session, runs: int, steps: int, tag: str, budget: float,
               measured: Callable[[], None] | None = None) -> dict[str, Any]:
    """`runs` runs of `steps` no-op steps sent in one batch; steps/s from the send to the last completion
    confirmed through ListRuns. `measured` is called when the measurement ends, before the checks
    that every run completed (which read every run with its steps: not part of the shape)."""
    left = _deadline(budget)
    keys = [f"{tag}{i}" for i in range(runs)]
    events = [Event(name="bench/noop", data={"k": k, "steps": steps}) for k in keys]
    t0 = time.monotonic()
    for i in range(0, runs, 1000):
        s.send(events[i : i + 1000])
    for k in keys:
        s.marks.wait("done", k, timeout=left())
    # Every run marked its end; confirm through the API that each one is committed as completed. The
    # SDK's ListRuns carries every step, so poll the cheap question (any still running?) and count once.
    while s.orch.client.list_runs(function_id="noop", status="running", limit=1):
        left()
        time.sleep(0.005)
    elapsed = time.monotonic() - t0
    if measured is not None:
        measured()
    completed = s.orch.client.list_runs(function_id="noop", status="completed", limit=1000)
    if len(completed) < min(runs, 1000):
        raise BenchError(f"only {len(completed)} noop runs completed")
    failed = s.orch.client.list_runs(function_id="noop", status="failed", limit=1)
    if failed:
        raise BenchError(f"a noop run failed: {failed[0].error}")
    return {"steps_per_s": runs * steps / elapsed, "runs": runs, "steps": steps, "seconds": elapsed}


def first_step_latency(s: Session, samples: int, tag: str, budget: float) -> dict[str, Any]:
    """SendEvent -> the first step's body starts, sequential samples on an idle long-polling worker."""
    return first_step_latencies([s], samples, tag, budget)[0]


def first_step_latencies(sessions: list[Session], samples: int, tag: str,
                         budget: float) -> list[dict[str, Any]]:
    """`first_step_latency` of several sessions at once, one summary each. Their samples alternate
    (one from each session per round, the order flipped every round), so the summaries are paired:
    the box's faster and slower phases, which move a p50 by a millisecond within minutes here, fall
    on every session alike. That is how the scale shape compares 100,000 waiting runs with none."""
    return _alternated(sessions, samples, tag, "bench/first", "first", _deadline(budget))


def _alternated(sessions: list[Session], samples: int, tag: str, event: str, mark: str,
                left: Callable[[], float]) -> list[dict[str, Any]]:
    """Sequential samples, alternating between sessions: SendEvent of `event` with the sample's key
    -> the worker's `mark` for that key."""
    ms: list[list[float]] = [[] for _ in sessions]
    for i in range(-_warmup(samples), samples):
        for j in _round_order(len(sessions), i):
            key = f"{tag}{j}-{i}"
            time.sleep(IDLE_GAP_S)
            t0 = time.time_ns()
            sessions[j].send([Event(name=event, data={"k": key})])
            t1 = sessions[j].marks.wait(mark, key, timeout=min(left(), 30))
            if i >= 0:
                ms[j].append((t1 - t0) / 1e6)
    return [latency_summary(m) for m in ms]


def _round_order(sessions: int, i: int) -> list[int]:
    order = list(range(sessions))
    return order if i % 2 == 0 else order[::-1]


def grpc_floor(s: Session, samples: int, budget: float, gap: float = IDLE_GAP_S) -> dict[str, Any]:
    """The floor under the latency shapes on this machine: a trivial gRPC round trip (the health
    check, which touches no store) to the same orchestrator, from the same driver, after the same
    idle gap. Event -> first step crosses two one-way legs like it (SendEvent in, PollWork's reply
    out), so no latency shape can beat it. With ``gap=0`` the calls follow each other: the floor as
    a loop of calls measures it, with every process and core still awake from the call before
    (here that costs well under half of a call after 20 ms idle)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    left = _deadline(budget)
    ms: list[float] = []
    with grpc.insecure_channel(s.orch.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        for i in range(-_warmup(samples), samples):
            if gap:
                time.sleep(gap)
            t0 = time.perf_counter_ns()
            stub.Check(request, timeout=min(left(), 30))
            if i >= 0:
                ms.append((time.perf_counter_ns() - t0) / 1e6)
    return latency_summary(ms)


def grpc_calls_per_s(s: Session, calls: int, in_flight: int = 16, budget: float = 120) -> dict[str, Any]:
    """The issue's own measure of this box, run beside our shapes so that a run says which phase of
    the box it met: trivial grpc.aio unary calls (the health check, no store) to the same
    orchestrator, ``in_flight`` at a time from one asyncio client, until ``calls`` have returned
    (CPU bound on both sides). The issue measured about 2,200 calls/s with 16 in flight on the
    machine its targets were written for."""
    import asyncio

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    left = _deadline(budget)
    request = health_pb2.HealthCheckRequest(service="")

    async def run() -> float:
        async with grpc.aio.insecure_channel(s.orch.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            remaining = calls

            async def caller() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    await stub.Check(request, timeout=min(left(), 30))

            for _ in range(in_flight):  # connection and caches warm, not measured
                await stub.Check(request, timeout=min(left(), 30))
            t0 = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(in_flight)))
            return time.perf_counter() - t0

    seconds = asyncio.run(run())
    return {"calls": calls, "in_flight": in_flight, "seconds": seconds, "calls_per_s": calls / seconds}


def park(s: Session, keys: list[str], budget: float, batch: int = 1000) -> float:
    """Starts a `resume` run per key (batched SendEvent) and returns once each has reached its wait
    (plus a short settle so the waits are committed). Returns the seconds it took."""
    left = _deadline(budget)
    t0 = time.monotonic()
    before = s.marks.count("waiting")
    for i in range(0, len(keys), batch):
        s.send([Event(name="bench/resume.start", data={"k": k}) for k in keys[i : i + batch]])
    s.marks.wait_count("waiting", before + len(keys), timeout=left(), check=s.check)
    elapsed = time.monotonic() - t0
    time.sleep(0.5)
    return elapsed


def resume_latency(s: Session, samples: int, tag: str, budget: float) -> dict[str, Any]:
    """SendEvent of the matching event -> the code after wait_for_event starts, sequentially."""
    return resume_latencies([s], samples, tag, budget)[0]


def resume_latencies(sessions: list[Session], samples: int, tag: str,
                     budget: float) -> list[dict[str, Any]]:
    """`resume_latency` of several sessions, samples alternating as in `first_step_latencies`."""
    left = _deadline(budget)
    for j, s in enumerate(sessions):
        park(s, [f"{tag}{j}-{i}" for i in range(-_warmup(samples), samples)], budget=min(left(), 120))
    return _alternated(sessions, samples, tag, "bench/resume", "resumed", left)


def ingest(s: Session, events: int, name: str, budget: float, batch: int = 100) -> dict[str, Any]:
    """Events/s through sequential SendEvent calls of `batch` events."""
    left = _deadline(budget)
    batches = [[Event(name=name, data={"i": i + j}) for j in range(batch)] for i in range(0, events, batch)]
    t0 = time.monotonic()
    for b in batches:
        s.send(b)
        left()
    elapsed = time.monotonic() - t0
    return {"events_per_s": events / elapsed, "events": events, "batch": batch, "seconds": elapsed}


def register_sink(s: Session, procs: Processes, name: str) -> None:
    """Registers the bench-sink app's function by running its worker until registered, then stops it:
    the triggered ingest creates runs that nobody executes during the measurement."""
    before = s.marks.count("ready")
    sink = start_worker(procs, s.orch, s.marks, f"{name}-sink", 1, "--sink")
    s.marks.wait_count("ready", before + 1, timeout=60, check=sink.check)
    procs.stop(sink)


def profile_dir() -> Path:
    return Path(__file__).resolve().parent / "results"
