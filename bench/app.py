"""The bench's worker app: the shapes measured, written with the public `sdk_python` API only.

Run as a worker process: `python -m bench.app [--concurrency N]` with `ORCHESTRATOR_TARGET` set and
`BENCH_MARKS` naming a FIFO the driver reads. Each function writes one line to that FIFO at the moment the
bench measures ("<kind> <key> <time_ns>"); both processes run on one machine, so wall clocks agree.

Functions (app "bench"):
- `noop` (`bench/noop`): `data.steps` no-op steps, then marks `done <k>` (throughput);
- `first` (`bench/first`): one step whose body marks `first <k>` as it starts (event -> first step);
- `resume` (`bench/resume.start`): waits for `bench/resume` matching `data.k`, then marks `resumed <k>`
  (SendEvent of the matching event -> the code after `wait_for_event`); it marks `waiting <k>` (once) as it
  reaches the wait, so the driver knows when every run has been handed its wait.
App "bench-sink" (`python -m bench.app --sink`): one function on `bench/ingest.triggered` that the driver
registers by starting this worker once and stopping it, so the ingest shape creates runs nobody executes.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import timedelta

from sdk_python import Client, TriggerEvent, Worker

APP_ID = "bench"
SINK_APP_ID = "bench-sink"
# Runs parked for the scale shape must not time out during a bench.
WAIT_TIMEOUT = timedelta(days=1)

_marks_fd: int | None = None
_waiting_marked: set[str] = set()


def mark(kind: str, key: object) -> None:
    """Writes "<kind> <key> <time_ns>" to the driver's FIFO (one write: atomic under PIPE_BUF)."""
    global _marks_fd
    now = time.time_ns()
    if _marks_fd is None:
        _marks_fd = os.open(os.environ["BENCH_MARKS"], os.O_WRONLY)
    os.write(_marks_fd, f"{kind} {key} {now}\n".encode())


client = Client(app_id=APP_ID, target=os.environ.get("ORCHESTRATOR_TARGET", "localhost:50051"))
sink = Client(app_id=SINK_APP_ID, target=os.environ.get("ORCHESTRATOR_TARGET", "localhost:50051"))


async def _noop() -> None:
    return None


@client.create_function(fn_id="noop", trigger=TriggerEvent(event="bench/noop"), retries=0)
async def noop(ctx):  # type: ignore[no-untyped-def]
    for i in range(int(ctx.event.data["steps"])):
        await ctx.step.run(f"s{i}", _noop)
    mark("done", ctx.event.data["k"])


@client.create_function(fn_id="first", trigger=TriggerEvent(event="bench/first"), retries=0)
async def first(ctx):  # type: ignore[no-untyped-def]
    async def body() -> None:
        mark("first", ctx.event.data["k"])

    await ctx.step.run("first", body)


@client.create_function(fn_id="resume", trigger=TriggerEvent(event="bench/resume.start"), retries=0)
async def resume(ctx):  # type: ignore[no-untyped-def]
    # Code before the wait runs again when the run is re-executed after it. Marked once per key: a
    # second mark would wake the driver's reader while the resume is being measured.
    key = ctx.event.data["k"]
    if key not in _waiting_marked:
        _waiting_marked.add(key)
        mark("waiting", key)
    got = await ctx.step.wait_for_event("w", event="bench/resume", match="data.k", timeout=WAIT_TIMEOUT)
    mark("resumed", ctx.event.data["k"])
    return got is not None


@sink.create_function(fn_id="sink", trigger=TriggerEvent(event="bench/ingest.triggered"), retries=0)
async def sink_fn(ctx):  # type: ignore[no-untyped-def]
    return None


def _mark_ready(worker: Worker) -> None:
    # The SDK exposes registration as a property (no event to wait on): poll it briefly.
    while not worker.registered:
        time.sleep(0.01)
    mark("ready", os.getpid())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.app")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--sink", action="store_true", help="serve the bench-sink app (registration only)")
    args = parser.parse_args()
    owner = sink if args.sink else client
    functions = [sink_fn] if args.sink else [noop, first, resume]
    worker = owner.worker(functions=functions, concurrency=args.concurrency, poll_wait=timedelta(seconds=30))
    threading.Thread(target=_mark_ready, args=(worker,), name="bench-ready", daemon=True).start()
    # As a user's worker runs: `run()`, its event loop, its signal handling (SIGTERM drains).
    sys.exit(worker.run())


if __name__ == "__main__":
    main()
