"""The same shapes on DBOS Transact (in-process durable workflows), run as `python -m bench.dbos_side`.

DBOS has no separate server or event ingestion, so the shapes map as follows:
1. throughput: `runs` workflows of `steps` no-op `@DBOS.step`s, started with `DBOS.start_workflow`;
2. latency: enqueue on a DBOS queue -> the first step's body starts (the queue path, polled every 10 ms,
   and at DBOS's default polling interval with fewer samples, since each takes about half the interval);
3. resume: `DBOS.send` -> the code after `DBOS.recv` starts, in a workflow already blocked in `recv`;
4. ingest: no-trigger has no DBOS equivalent (null); triggered = workflows enqueued per second on a queue
   that is not being polled during the measurement (one enqueue per call: DBOS has no batch enqueue);
5. scale: (2) and (3) again with `--waiting` other workflows blocked in `recv_async` (capped by
   `--dbos-waiting-cap`: each holds a coroutine in this process), and this process's resident memory.
Prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSConfig

from bench.stats import latency_summary

_cond = threading.Condition()
_marks: dict[tuple[str, str], int] = {}
WARMUP = 5  # unmeasured samples first (connections, caches); fewer when samples are few


def _warmup(samples: int) -> int:
    return max(1, min(WARMUP, samples // 4))


def _mark(kind: str, key: str) -> None:
    now = time.time_ns()
    with _cond:
        _marks.setdefault((kind, key), now)
        _cond.notify_all()


def _wait(kind: str, key: str, timeout: float) -> int:
    with _cond:
        if not _cond.wait_for(lambda: (kind, key) in _marks, timeout=timeout):
            raise TimeoutError(f"no {kind} {key} within {timeout}s")
        return _marks[(kind, key)]


@DBOS.step()
def noop_step() -> None:
    return None


@DBOS.workflow()
def noop_wf(steps: int) -> None:
    for _ in range(steps):
        noop_step()


@DBOS.step()
def first_step(key: str) -> None:
    _mark("first", key)


@DBOS.workflow()
def first_wf(key: str) -> None:
    first_step(key)


@DBOS.workflow()
def recv_wf(key: str) -> None:
    _mark("waiting", key)
    DBOS.recv("go", timeout_seconds=3600)
    _mark("resumed", key)


@DBOS.workflow()
async def parked_wf(key: str) -> None:
    _mark("parked", key)
    await DBOS.recv_async("go", timeout_seconds=86400)


@DBOS.workflow()
def sink_wf(i: int) -> None:
    return None


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def throughput(runs: int, steps: int) -> dict[str, Any]:
    t0 = time.monotonic()
    handles = [DBOS.start_workflow(noop_wf, steps) for _ in range(runs)]
    for h in handles:
        h.get_result()
    elapsed = time.monotonic() - t0
    return {"steps_per_s": runs * steps / elapsed, "runs": runs, "steps": steps, "seconds": elapsed}


def queue_latency(queue: Any, samples: int, tag: str, budget: float) -> dict[str, Any]:
    end = time.monotonic() + budget
    ms: list[float] = []
    for i in range(-_warmup(samples), samples):
        key = f"{tag}{i}"
        time.sleep(0.02)
        t0 = time.time_ns()
        queue.enqueue(first_wf, key)
        t1 = _wait("first", key, timeout=max(1.0, end - time.monotonic()) + 5)
        if i >= 0:
            ms.append((t1 - t0) / 1e6)
        if time.monotonic() > end and len(ms) >= 5:
            break
    return latency_summary(ms)


def resume_latency(samples: int, tag: str, budget: float) -> dict[str, Any]:
    end = time.monotonic() + budget
    ms: list[float] = []
    for i in range(-_warmup(samples), samples):
        key = f"{tag}{i}"
        handle = DBOS.start_workflow(recv_wf, key)
        _wait("waiting", key, timeout=30)
        time.sleep(0.05)  # let it block in recv
        t0 = time.time_ns()
        DBOS.send(handle.workflow_id, "go", "go")
        t1 = _wait("resumed", key, timeout=30)
        handle.get_result()
        if i >= 0:
            ms.append((t1 - t0) / 1e6)
        if time.monotonic() > end and len(ms) >= 5:
            break
    return latency_summary(ms)


def ingest_triggered(queue: Any, events: int, budget: float) -> dict[str, Any]:
    end = time.monotonic() + budget
    t0 = time.monotonic()
    n = 0
    while n < events and time.monotonic() < end:
        queue.enqueue(sink_wf, n)
        n += 1
    elapsed = time.monotonic() - t0
    return {"events_per_s": n / elapsed, "events": n, "batch": 1, "seconds": elapsed}


def park(n: int, budget: float) -> float:
    t0 = time.monotonic()

    async def start_all() -> None:
        for i in range(n):
            await DBOS.start_workflow_async(parked_wf, f"bg{i}")

    # Async workflows run on the loop that starts them: one that lives as long as this process.
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="bench-parked", daemon=True).start()
    asyncio.run_coroutine_threadsafe(start_all(), loop).result(timeout=budget)
    with _cond:
        if not _cond.wait_for(lambda: sum(1 for k in _marks if k[0] == "parked") >= n, timeout=budget):
            raise TimeoutError("parked workflows did not all start")
    return time.monotonic() - t0


def guarded(result: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    try:
        result[name] = fn()
    except Exception as exc:  # noqa: BLE001 - one shape failing must not hide the others
        result[name] = None
        result.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dbos_side")
    parser.add_argument("--db", required=True, help="DBOS system database URL")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--default-samples", type=int, default=20)
    parser.add_argument("--ingest-events", type=int, default=2000)
    parser.add_argument("--waiting", type=int, default=0)
    parser.add_argument("--waiting-cap", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per shape")
    parser.add_argument("--recv-polling", type=float, default=None,
                        help="notification_listener_polling_interval_sec (default: DBOS's own, 1 s)")
    args = parser.parse_args()

    config: DBOSConfig = {"name": "bench", "system_database_url": args.db, "log_level": "WARNING"}
    if args.recv_polling is not None:
        config["notification_listener_polling_interval_sec"] = args.recv_polling
    DBOS(config=config)
    DBOS.launch()
    q10 = DBOS.register_queue("bench_q10", polling_interval_sec=0.01)
    qdefault = DBOS.register_queue("bench_qdefault")
    qidle = DBOS.register_queue("bench_qidle", polling_interval_sec=3600)
    out: dict[str, Any] = {"config": {"queue_polling_s": 0.01, "default_polling_s": 1.0,
                                      "recv_polling_s": args.recv_polling}}
    try:
        guarded(out, "throughput", lambda: throughput(args.runs, args.steps))
        guarded(out, "latency", lambda: queue_latency(q10, args.samples, "l", args.budget))
        guarded(out, "latency_default_polling",
                lambda: queue_latency(qdefault, args.default_samples, "d", args.budget))
        guarded(out, "resume", lambda: resume_latency(args.samples, "r", args.budget))
        out["rss_idle_bytes"] = rss_bytes()
        out["ingest_no_trigger"] = None
        guarded(out, "ingest_triggered", lambda: ingest_triggered(qidle, args.ingest_events, args.budget))
        n = min(args.waiting, args.waiting_cap)
        if n > 0:
            guarded(out, "scale_park_seconds", lambda: park(n, max(args.budget, n / 20)))
            out["scale_waiting"] = n
            guarded(out, "scale_latency", lambda: queue_latency(q10, args.samples, "sl", args.budget))
            guarded(out, "scale_resume", lambda: resume_latency(args.samples, "sr", args.budget))
            out["scale_rss_bytes"] = rss_bytes()
    finally:
        print(json.dumps(out), flush=True)
        # Parked workflows stay PENDING in the database; the process exits without waiting for them.
        os._exit(0)


if __name__ == "__main__":
    main()
