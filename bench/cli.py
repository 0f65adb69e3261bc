"""`python -m bench`: measures our orchestrator next to DBOS on SQLite (and PostgreSQL when given).

    python -m bench [--pg URL] [--json PATH] [--runs 200] [--steps 10] [--samples 200]
                    [--waiting 100000] [--ingest-events 20000] [--no-dbos] [--profile] [--quick]

For each store: session A (fresh database; an orchestrator process and a worker process) measures
throughput, first-step latency, resume latency, idle memory and ingest; session B (another fresh
database) parks `--waiting` runs in wait_for_event and measures latency, resume and memory again,
its samples alternating with those of a session beside it where nothing waits (the ratio of the
two is the scale target's). Then the same shapes run on DBOS in a subprocess (`bench.dbos_side`).
One table per store; JSON with everything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import ours
from bench.procs import BenchError, Marks, Proc, Processes, env_for

RESULTS = Path(__file__).resolve().parent / "results"
PG_ENV = "ORCHESTRATOR_TEST_POSTGRES_URL"
QUICK = {"runs": 20, "steps": 5, "samples": 10, "waiting": 200, "ingest_events": 1000,
         "dbos_default_samples": 2, "dbos_budget": 3.0, "dbos_waiting_cap": 50, "dbos_ingest_events": 300,
         "dbos_recv_polling": 0.05}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pg", help=f"PostgreSQL admin URL (default ${PG_ENV}); a database 'bench' is "
                   "(re)created on that server for each session, and 'bench_dbos' for DBOS")
    p.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--runs", type=int, default=200, help="throughput: runs (default 200)")
    p.add_argument("--steps", type=int, default=10, help="throughput: no-op steps per run (default 10)")
    p.add_argument("--samples", type=int, default=200, help="latency/resume samples (default 200)")
    p.add_argument("--waiting", type=int, default=100_000,
                   help="scale: runs parked in waits (default 100000)")
    p.add_argument("--ingest-events", type=int, default=20_000, help="ingest: events per variant")
    p.add_argument("--park-budget", type=float,
                   help="scale: seconds allowed to park the runs (default 300 + waiting/20)")
    p.add_argument("--concurrency", type=int, default=100, help="worker concurrency (max 100)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--no-dbos", action="store_true", help="ours only")
    p.add_argument("--dbos-default-samples", type=int, default=20,
                   help="DBOS queue latency samples at its default 1 s polling (each takes ~0.5-1 s)")
    p.add_argument("--dbos-budget", type=float, default=60.0, help="DBOS: seconds per latency shape")
    p.add_argument("--dbos-waiting-cap", type=int, default=1000,
                   help="DBOS scale: at most this many parked workflows (each is a coroutine in-process)")
    p.add_argument("--dbos-ingest-events", type=int, default=3000)
    p.add_argument("--dbos-recv-polling", type=float,
                   help="DBOS notification_listener_polling_interval_sec (default: DBOS's, 1 s)")
    p.add_argument("--profile", action="store_true",
                   help="also run the throughput shape under py-spy on the orchestrator; profile in "
                   "bench/results/")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test): " + json.dumps(QUICK))
    p.add_argument("--keep-logs", action="store_true", help="keep process logs (printed path)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if parser.parse_args(argv).quick:
        parser.set_defaults(**QUICK)  # flags given explicitly still win
    args = parser.parse_args(argv)
    pg = args.pg or os.environ.get(PG_ENV)
    stores: list[str] = ([] if args.no_sqlite else ["sqlite"]) + (["postgresql"] if pg else [])
    dbos = not args.no_dbos and _dbos_installed()
    if not args.no_dbos and not dbos:
        print("note: dbos is not installed (pip install -e '.[bench]'): ours only", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    procs = Processes(work / "logs")
    marks = Marks(work)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    results: dict[str, Any] = {"machine": _machine(), "config": _config(args, stores, dbos), "stores": {}}
    failed = False
    try:
        for store in stores:
            print(f"== {store}", file=sys.stderr, flush=True)
            entry: dict[str, Any] = {}
            results["stores"][store] = entry
            entry["ours"] = {}  # filled shape by shape: a failure keeps what was measured
            _ours(entry["ours"], args, store, pg, procs, marks, work)
            if dbos:
                try:
                    entry["dbos"] = _dbos(args, store, pg, procs, work)
                except BenchError as exc:
                    entry["dbos"] = {"errors": {"all": str(exc)}}
            print(render_table(store, entry, args))
    except KeyboardInterrupt:
        failed = True
        print("interrupted: stopping every process", file=sys.stderr)
        return 130
    except BenchError as exc:
        failed = True
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        marks.close()
        signal.signal(signal.SIGTERM, previous)
        results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
            print(f"results: {args.json}", file=sys.stderr)
        if failed or args.keep_logs:
            print(f"logs: {work / 'logs'}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _dbos_installed() -> bool:
    try:
        import dbos  # noqa: F401
    except ImportError:
        return False
    return True


def _machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_at_start": [round(x, 2) for x in load],
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _config(args: argparse.Namespace, stores: list[str], dbos: bool) -> dict[str, Any]:
    keys = ("runs", "steps", "samples", "waiting", "ingest_events", "concurrency", "workers", "quick")
    return {"stores": stores, "dbos": dbos, **{k: getattr(args, k) for k in keys}}


# -- databases ----------------------------------------------------------------------------------------

def _pg_url(admin: str, database: str, fresh: bool = True) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = admin
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    if fresh:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{database}"'))
        finally:
            engine.dispose()
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _db_url(store: str, pg: str | None, work: Path, name: str, pg_database: str = "bench") -> str:
    if store == "sqlite":
        return f"sqlite:///{work / (name + '.db')}"
    assert pg is not None
    return _pg_url(pg, pg_database)


# -- our side ---------------------------------------------------------------------------------------

def _ours(out: dict[str, Any], args: argparse.Namespace, store: str, pg: str | None, procs: Processes,
          marks: Marks, work: Path) -> None:
    tag = store[:2]

    def log(msg: str) -> None:
        print(f"   ours/{store}: {msg}", file=sys.stderr, flush=True)

    _quiet_disk(work)
    a = ours.start_session(procs, f"{tag}-a", _db_url(store, pg, work, f"{tag}-a"), marks, args.workers,
                           args.concurrency)
    try:
        log("throughput")
        out["throughput"] = ours.throughput(a, args.runs, args.steps, f"{tag}t", budget=600)
        log("first-step latency")
        out["latency"] = ours.first_step_latency(a, args.samples, f"{tag}l", budget=300)
        out["grpc_floor"] = ours.grpc_floor(a, args.samples, budget=300)
        out["grpc_floor_back_to_back"] = ours.grpc_floor(a, args.samples, budget=300, gap=0)
        out["grpc_calls_per_s"] = ours.grpc_calls_per_s(a, 20 * args.samples)
        log("resume latency")
        out["resume"] = ours.resume_latency(a, args.samples, f"{tag}r", budget=300)
        out["rss_idle_bytes"] = a.orch.rss_bytes()
        if args.profile:
            log("throughput under py-spy")
            out["profile"] = _profile(args, a, store, f"{tag}p")
        log("ingest")
        out["ingest_no_trigger"] = ours.ingest(a, args.ingest_events, "bench/ingest.none", budget=300)
        ours.register_sink(a, procs, f"{tag}-a")
        out["ingest_triggered"] = ours.ingest(a, args.ingest_events, "bench/ingest.triggered", budget=300)
    finally:
        _stop_session(procs, a)

    _quiet_disk(work)
    b = ours.start_session(procs, f"{tag}-b", _db_url(store, pg, work, f"{tag}-b"), marks, args.workers,
                           args.concurrency)
    base: ours.Session | None = None
    try:
        log(f"parking {args.waiting} runs in wait_for_event")
        keys = [f"{tag}bg{i}" for i in range(args.waiting)]
        out["scale_waiting"] = args.waiting
        out["scale_park_seconds"] = ours.park(b, keys, budget=args.park_budget or 300 + args.waiting / 20)
        _settle_after_parking(pg if store == "postgresql" else None)
        out["scale_rss_bytes"] = b.orch.rss_bytes()
        # The baseline: a third session with no run waiting, beside this one, sampled in alternation
        # with it. Shapes (2) and (3) above ran minutes earlier, and this box's phases move a p50 by
        # more than the 20% the comparison is about.
        base = ours.start_session(procs, f"{tag}-base", _db_url(store, pg, work, f"{tag}-base", "bench_base"),
                                  marks, args.workers, args.concurrency)
        log("latency and resume with them, alternating with a session where none wait")
        out["scale_latency"], out["scale_base_latency"] = ours.first_step_latencies(
            [b, base], args.samples, f"{tag}sl", budget=600)
        out["scale_resume"], out["scale_base_resume"] = ours.resume_latencies(
            [b, base], args.samples, f"{tag}sr", budget=600)
        out["scale_rss_after_bytes"] = b.orch.rss_bytes()
    except BenchError as exc:
        # The scale shape is the long one: report its failure and go on with DBOS and the next store.
        log(f"scale failed: {exc}")
        out.setdefault("errors", {})["scale"] = str(exc)
    finally:
        _stop_session(procs, b)
        if base is not None:
            _stop_session(procs, base)


def _quiet_disk(work: Path) -> None:
    """Before a session: the SQLite files of the sessions that ended go, and what is left dirty in the
    page cache is written now. Otherwise the kernel writes it back (within 30 s) during the next
    session, and a PostgreSQL COMMIT's fsync waits behind it: with 100,000 parked runs' SQLite files
    just written, PostgreSQL's first step and resume p99 reached 54 and 95 ms (10-11 ms when run alone)."""
    for f in work.glob("*.db*"):
        f.unlink(missing_ok=True)
    os.sync()


def _settle_after_parking(pg: str | None) -> None:
    """After parking the scale shape's runs, the database as it is once they have waited a while, so
    the shape measures runs that wait rather than the burst that parked them. PostgreSQL: VACUUM
    ANALYZE (what autovacuum does after that many changes; a server with it off, like the one this
    was measured on, kept every parked run's dead entry in the claim index: an empty claim read 23
    pages instead of 2), then CHECKPOINT. Then the page cache is flushed: hundreds of MB the kernel
    would otherwise write back during the shape, behind which each COMMIT's fsync waits (see
    ``_quiet_disk``)."""
    if pg is not None:
        from sqlalchemy import create_engine, text

        engine = create_engine(_pg_url(pg, "bench", fresh=False), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text("VACUUM ANALYZE"))
                conn.execute(text("CHECKPOINT"))
        finally:
            engine.dispose()
    os.sync()


def _stop_session(procs: Processes, s: ours.Session) -> None:
    for worker in s.workers:
        procs.stop(worker)
    procs.stop(s.orch.proc)


def _profile(args: argparse.Namespace, s: ours.Session, store: str, tag: str) -> dict[str, Any]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise BenchError("--profile needs py-spy (pip install -e '.[bench]')")
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / f"profile-{store}.txt"
    spy = subprocess.Popen([py_spy, "record", "--pid", str(s.orch.proc.pid), "--rate", "200", "--format",
                            "raw", "--output", str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = b""

    def stop() -> None:
        nonlocal err
        if spy.returncode is not None:
            return
        spy.send_signal(signal.SIGINT)
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()

    try:
        time.sleep(1.0)  # py-spy attaches
        # Stopped as the measurement ends: the checks after it (every run read back) are no cost of it.
        result = ours.throughput(s, args.runs, args.steps, tag, budget=600, measured=stop)
    finally:
        stop()
    if not raw.exists():
        raise BenchError(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
    top = top_costs(raw)
    print(f"\nprofile of the orchestrator during throughput ({store}): {raw}", file=sys.stderr)
    print(format_costs(top), file=sys.stderr)
    return {"steps_per_s_while_profiled": result["steps_per_s"], "raw": str(raw), "top": top}


def top_costs(raw: Path, limit: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive sample shares per function from py-spy's collapsed-stack output."""
    # Frames where a thread only waits (the event loop's select, an idle executor thread): not a cost.
    idle = ("EpollSelector.select", "Thread.run (", "_worker (futures", "Condition.wait", "SimpleQueue.get")
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = busy = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        if not frames or frames[-1].startswith(idle):
            continue
        busy += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    if busy == 0:
        return {"self": [], "inclusive": [], "busy_share": 0.0}
    # Entry points every busy stack goes through say nothing about where the time goes.
    wrappers = ("Thread._bootstrap", "Thread.run (", "_worker (futures", "_WorkItem.run", "_run_code (",
                "_run_module_as_main", "Runner.run", "run (asyncio", "BaseEventLoop.run_", "main (orch",
                "_serve (orch", "run (orchestrator/server", "<module>")
    incl = [(f, c) for f, c in inclusive.most_common() if c < 0.9 * busy and not f.startswith(wrappers)]
    return {"self": [(f, round(100 * c / busy, 1)) for f, c in own.most_common(limit)],
            "inclusive": [(f, round(100 * c / busy, 1)) for f, c in incl[:limit]],
            "busy_share": round(100 * busy / total, 1)}


def _frame(frame: str) -> str:
    # "name (path/to/file.py:123)" -> "name (file.py)": lines vary within one function.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


def format_costs(top: dict[str, Any]) -> str:
    lines = [f"  {top['busy_share']}% of the samples busy; shares below are of the busy samples",
             "  self %   function"]
    lines += [f"  {pct:6.1f}   {f}" for f, pct in top["self"]]
    lines += ["  incl %   function"]
    lines += [f"  {pct:6.1f}   {f}" for f, pct in top["inclusive"]]
    return "\n".join(lines)


# -- DBOS side --------------------------------------------------------------------------------------

def _dbos(args: argparse.Namespace, store: str, pg: str | None, procs: Processes,
          work: Path) -> dict[str, Any]:
    print(f"   dbos/{store}: all shapes", file=sys.stderr, flush=True)
    _quiet_disk(work)
    url = f"sqlite:///{work / 'dbos.db'}" if store == "sqlite" else _pg_url(pg or "", "bench_dbos")
    command = [sys.executable, "-m", "bench.dbos_side", "--db", url, "--runs", str(args.runs),
               "--steps", str(args.steps), "--samples", str(args.samples),
               "--default-samples", str(args.dbos_default_samples), "--waiting", str(args.waiting),
               "--waiting-cap", str(args.dbos_waiting_cap), "--budget", str(args.dbos_budget),
               "--ingest-events", str(args.dbos_ingest_events)]
    if args.dbos_recv_polling is not None:
        command += ["--recv-polling", str(args.dbos_recv_polling)]
    proc: Proc = procs.start(f"dbos-{store}", command, env_for())
    try:
        proc.popen.wait(timeout=900)
    except subprocess.TimeoutExpired:
        raise BenchError(f"DBOS side did not finish in 900s:\n{proc.tail()}") from None
    finally:
        procs.stop(proc)
    for line in reversed(proc.log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise BenchError(f"DBOS side printed no result:\n{proc.tail()}")


# -- the table --------------------------------------------------------------------------------------

def _get(d: dict[str, Any] | None, *path: str) -> float | None:
    cur: Any = d
    for p in path:
        if not isinstance(cur, dict) or cur.get(p) is None:
            return None
        cur = cur[p]
    return float(cur)


Row = tuple[str, float | None, float | None, bool]


def rows(entry: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    """(metric, ours, dbos, higher_is_better) for the table."""
    o, d = entry.get("ours"), entry.get("dbos")
    mb = 1 / (1024 * 1024)

    def mem(x: float | None) -> float | None:
        return None if x is None else x * mb

    n = o.get("scale_waiting") if o else None
    dn = d.get("scale_waiting") if d else None
    wait_label = f"{n:,} waiting" + (f" (DBOS: {dn:,})" if dn is not None and dn != n else "")
    return [
        (f"throughput, steps/s ({args.runs} runs x {args.steps} steps)", _get(o, "throughput", "steps_per_s"),
         _get(d, "throughput", "steps_per_s"), True),
        ("event -> first step p50, ms (DBOS: queue, 10 ms polling)", _get(o, "latency", "p50_ms"),
         _get(d, "latency", "p50_ms"), False),
        ("event -> first step p99, ms", _get(o, "latency", "p99_ms"), _get(d, "latency", "p99_ms"), False),
        ("event -> first step p50, ms (DBOS: queue, default polling)", _get(o, "latency", "p50_ms"),
         _get(d, "latency_default_polling", "p50_ms"), False),
        ("floor: a trivial gRPC round trip here, same idle gap, p50 ms", _get(o, "grpc_floor", "p50_ms"),
         None, False),
        ("floor: a trivial gRPC round trip here, p99 ms", _get(o, "grpc_floor", "p99_ms"), None, False),
        ("floor: the same round trips back to back (no idle gap), p50 ms",
         _get(o, "grpc_floor_back_to_back", "p50_ms"), None, False),
        ("floor: trivial grpc.aio calls/s, 16 in flight (the issue's box: about 2,200)",
         _get(o, "grpc_calls_per_s", "calls_per_s"), None, True),
        ("resume after wait p50, ms (DBOS: send -> recv)", _get(o, "resume", "p50_ms"),
         _get(d, "resume", "p50_ms"), False),
        ("resume after wait p99, ms", _get(o, "resume", "p99_ms"), _get(d, "resume", "p99_ms"), False),
        ("ingest, events/s, batches of 100, no function triggered",
         _get(o, "ingest_no_trigger", "events_per_s"), _get(d, "ingest_no_trigger", "events_per_s"), True),
        ("ingest, events/s, one function triggered (DBOS: enqueues/s)",
         _get(o, "ingest_triggered", "events_per_s"), _get(d, "ingest_triggered", "events_per_s"), True),
        (f"event -> first step p50, ms, {wait_label}", _get(o, "scale_latency", "p50_ms"),
         _get(d, "scale_latency", "p50_ms"), False),
        ("  the same, none waiting, samples alternated with the row above",
         _get(o, "scale_base_latency", "p50_ms"), None, False),
        ("  ratio, with them / none waiting", _ratio(o, "scale_latency", "scale_base_latency"), None, False),
        (f"resume after wait p50, ms, {wait_label}", _get(o, "scale_resume", "p50_ms"),
         _get(d, "scale_resume", "p50_ms"), False),
        ("  the same, none waiting, samples alternated with the row above",
         _get(o, "scale_base_resume", "p50_ms"), None, False),
        ("  ratio, with them / none waiting", _ratio(o, "scale_resume", "scale_base_resume"), None, False),
        ("resident memory idle, MB (DBOS: its whole process)", mem(_get(o, "rss_idle_bytes")),
         mem(_get(d, "rss_idle_bytes")), False),
        (f"resident memory, MB, {wait_label}", mem(_get(o, "scale_rss_after_bytes")),
         mem(_get(d, "scale_rss_bytes")), False),
        ("parking rate, runs brought to their wait per s", _rate(n, _get(o, "scale_park_seconds")),
         _rate(dn, _get(d, "scale_park_seconds")), True),
    ]


def _ratio(o: dict[str, Any] | None, scale: str, base: str) -> float | None:
    with_them, without = _get(o, scale, "p50_ms"), _get(o, base, "p50_ms")
    return None if with_them is None or not without else with_them / without


def _rate(n: int | None, seconds: float | None) -> float | None:
    return None if not n or not seconds else n / seconds


def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def render_table(store: str, entry: dict[str, Any], args: argparse.Namespace) -> str:
    table = rows(entry, args)
    header = ("metric", "ours", "DBOS", "ours vs DBOS")
    body = []
    for metric, o, d, higher in table:
        ratio = None
        if o and d:
            ratio = o / d if higher else d / o
        body.append((metric, _fmt(o), _fmt(d), "n/a" if ratio is None else f"{ratio:.1f}x better"
                     if ratio >= 1 else f"{1 / ratio:.1f}x worse"))
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |"
    sep = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([f"\n### {store}", "", line(header), sep, *(line(r) for r in body), ""])
