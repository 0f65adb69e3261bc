"""PostgreSQL runs a prepared statement with a generic plan (one that does not know the parameters)
once that plan costs less than planning each execution. The store's hot statements must have a
generic plan that reaches the big tables through their indexes, whatever the statistics say: with
many runs parked on a few event names (statistics from ANALYZE, as autovacuum gathers them), an
EXISTS probe and a claim that joined its chosen runs to runs, steps and events had generic plans that
scanned whole tables (4-10 ms per SendEvent at 20,000 parked runs), or that lost to per-execution
planning (0.3-0.55 ms of the server's time per claim and per step completion). The plans are
checked on tables never analyzed too (a fresh database filling up before autovacuum reaches it)."""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from orchestrator.engine.model import Completion, FunctionSpec, NewEvent, StepOutput, WaitForEvent
from orchestrator.store import completions, factory, ingest, leases, postgres, txn
from orchestrator.store.prepared import Prepared
from orchestrator.store.sql import SqlStore
from tests.support.databases import PostgresServer

pytestmark = pytest.mark.postgres_only("generic plans are PostgreSQL's")

T0 = 1_800_000_000_000
LEASE = 30_000
PARKED = 200  # through the store; then cloned in SQL
COPIES = 60
BIG_TABLES = ("runs", "steps", "events", "waits")


def _park(store: SqlStore) -> None:
    """PARKED runs of app "a" waiting for "go" (one match value each), through the store."""
    store.register_functions("a", [FunctionSpec("f", ("start",))], now_ms=T0)
    store.ingest_events([NewEvent("start", json.dumps({"k": i})) for i in range(PARKED)], now_ms=T0)
    parked = 0
    while parked < PARKED:
        items = store.claim_work(
            app_id="a", function_ids=(), worker_id="w", max_items=100, now_ms=T0, lease_ms=LEASE
        ).items
        assert items
        for item in items:
            wait = WaitForEvent("go", "data.k", T0 + 86_400_000)
            store.complete_step(Completion(item.run_id, item.lease_id, "w", wait), now_ms=T0, lease_ms=LEASE)
        parked += len(items)


def _clone(admin: Engine, *, analyze: bool = True) -> None:
    """COPIES more of every parked run, with its steps and its wait (new ids, distinct match hashes),
    then statistics (unless not ``analyze``)."""
    clone_id = "substr(md5({} || ':' || g), 1, 36)"
    with admin.connect() as conn:
        conn.execute(text(
            "INSERT INTO runs SELECT (jsonb_populate_record(r, jsonb_build_object('id', "
            f"{clone_id.format('r.id')}))).* FROM runs AS r, generate_series(1, {COPIES}) AS g"
        ))
        conn.execute(text(
            "INSERT INTO steps SELECT (jsonb_populate_record(s, jsonb_build_object('run_id', "
            f"{clone_id.format('s.run_id')}))).* FROM steps AS s, generate_series(1, {COPIES}) AS g"
        ))
        conn.execute(text(
            "INSERT INTO waits SELECT (jsonb_populate_record(w, jsonb_build_object("
            "'id', nextval(pg_get_serial_sequence('waits', 'id')), "
            f"'run_id', {clone_id.format('w.run_id')}, 'match_hash', md5(w.match_hash || g)))).* "
            f"FROM waits AS w, generate_series(1, {COPIES}) AS g"
        ))
        # And as many events again, of names no function or wait knows.
        conn.execute(text(
            "INSERT INTO events (id, name, data, ts_ms, received_ms) SELECT 'noise-' || g, 'noise', '{}', "
            f"{T0}, {T0} FROM generate_series(1, {PARKED * COPIES}) AS g"
        ))
        if analyze:
            conn.execute(text("VACUUM ANALYZE"))


Parked = tuple[SqlStore, Engine]


def _build_parked(url: str, *, analyze: bool) -> None:
    """The parked runs in the database at ``url``, analyzed or never (autovacuum kept off the big
    tables from the start). Every connection is closed after: the database becomes a template."""
    store = factory.open_store(url, rng=random.Random(7), db_clock=False)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        if not analyze:
            with admin.connect() as conn:
                for table in BIG_TABLES:
                    conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        _park(store)
        _clone(admin, analyze=analyze)
    finally:
        store.close()
        admin.dispose()


@pytest.fixture(params=[False, True], ids=["never-analyzed", "analyzed"])
def parked(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[Parked]:
    """Every test here runs on the parked runs never analyzed, and analyzed: a store on a copy of
    a database made once per session (making it takes seconds), and an autocommit engine on it. A
    copy keeps the planner's statistics (``pg_statistic``, ``pg_class``), not the dates of the
    ANALYZE that made them."""
    analyze: bool = request.param
    url = postgres_server.create_database_from(
        f"generic-plans-parked-{'analyzed' if analyze else 'never-analyzed'}",
        functools.partial(_build_parked, analyze=analyze),
    )
    store = factory.open_store(url, rng=random.Random(7), db_clock=False)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("runs", "waits")}
            with_statistics = conn.execute(text(
                "SELECT count(DISTINCT starelid) FROM pg_statistic WHERE starelid = ANY("
                "SELECT oid FROM pg_class WHERE relname = ANY(:tables) AND relnamespace = "
                "'public'::regnamespace)"
            ), {"tables": list(BIG_TABLES)}).scalar()
        assert counts == {"runs": PARKED * (COPIES + 1), "waits": PARKED * (COPIES + 1)}
        assert with_statistics == (len(BIG_TABLES) if analyze else 0)
        yield store, admin
    finally:
        store.close()
        admin.dispose()
        postgres_server.drop_database(url)


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "'{" + ",".join(str(v) for v in value) + "}'"
    return "'" + str(value).replace("'", "''") + "'"


def _prepared_text(store: SqlStore, statement: Prepared, params: dict[str, Any]) -> tuple[str, str]:
    """``statement`` for PREPARE (numbered parameters), and its arguments for EXECUTE."""
    compiled = statement.statement.compile(dialect=store._engine.dialect)
    values = {name: bind.value for name, bind in compiled.binds.items() if not bind.required} | params
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    sql = re.sub(r"%\((\w+)\)s", number, compiled.string)
    return sql, ", ".join(_literal(values[name]) for name in names)


def _generic_plan(
    store: SqlStore, admin: Engine, statement: Prepared, *, after: Prepared | None = None, **params: Any
) -> str:
    """The plan PostgreSQL would reuse for ``statement`` (EXPLAIN of its generic plan), in a
    transaction that ran ``after`` (a statement without parameters) first."""
    sql, arguments = _prepared_text(store, statement, params)
    with admin.connect() as conn:
        conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        conn.exec_driver_sql("BEGIN")
        if after is not None:
            conn.exec_driver_sql(_prepared_text(store, after, {})[0])
        conn.exec_driver_sql(f"PREPARE probe AS {sql}")
        plan = "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN EXECUTE probe({arguments})"))
        conn.exec_driver_sql("DEALLOCATE probe")
        conn.exec_driver_sql("ROLLBACK")
        conn.exec_driver_sql("RESET plan_cache_mode")
    return plan


def _generic_plans_used(
    store: SqlStore,
    admin: Engine,
    statement: Prepared,
    *,
    fresh: tuple[str, ...] = (),
    by_index: bool = False,
    **params: Any,
) -> int:
    """How many of ten executions of ``statement`` PostgreSQL ran with its generic plan, choosing as
    it does for the store: it plans the first five for their parameters, then reuses the generic
    plan unless that costs more than planning each time. (The parameters must touch no row, or
    ``fresh`` names those given new values at each execution, the ids that each inserts: no
    transaction is rolled back here, as psycopg deallocates every prepared statement after one.)
    ``by_index``: planned as the store plans it after ``txn.PLAN_BY_INDEX`` (set for the session
    here, as each execution is a transaction of its own)."""
    sql, _ = _prepared_text(store, statement, params)
    with admin.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = auto")  # PostgreSQL's default, the store's
        conn.exec_driver_sql(f"SET enable_seqscan = {'off' if by_index else 'on'}")
        conn.exec_driver_sql(f"PREPARE probe AS {sql}")
        for i in range(10):
            execution = params | {name: _numbered(params[name], i) for name in fresh}
            conn.exec_driver_sql(f"EXECUTE probe({_prepared_text(store, statement, execution)[1]})")
        used = conn.exec_driver_sql("SELECT generic_plans FROM pg_prepared_statements WHERE name = 'probe'")
        count = int(used.scalar_one())
        conn.exec_driver_sql("DEALLOCATE probe")
        conn.exec_driver_sql("RESET enable_seqscan")
    return count


def _numbered(value: Any, i: int) -> Any:
    """An id (or a list of ids) made new for the ``i``-th execution."""
    return [f"{v}-{i}" for v in value] if isinstance(value, list) else f"{value}-{i}"


def _assert_indexed(plan: str) -> None:
    # (A hash join over one of them would hash it whole: a sequential scan too.)
    for table in BIG_TABLES:
        assert not re.search(rf"Seq Scan on {table}\b", plan), plan


CLAIM = {"app_id": "a", "now_ms": T0, "function_ids": [], "max_items": 100, "lease_id": "l",
         "lease_expires_ms": T0 + LEASE, "worker_id": "w"}


def test_the_claim_reaches_runs_steps_and_events_by_their_indexes(parked: Parked) -> None:
    store, admin = parked
    _assert_indexed(_generic_plan(store, admin, leases._LEASE_READY, **CLAIM))


def _young(store: SqlStore, admin: Engine | None = None, runs: int = 200, steps: int = 10) -> None:
    """``runs`` runs of ``steps`` completed steps each, through the store: a young database's tables
    (the bench's, after its throughput shape), a few hundred runs and a few thousand steps; then
    analyzed, where ``admin`` is given."""
    store.register_functions("a", [FunctionSpec("f", ("start",))], now_ms=T0)
    store.ingest_events([NewEvent("start", "{}") for _ in range(runs)], now_ms=T0)
    claim = functools.partial(
        store.claim_work, app_id="a", function_ids=(), worker_id="w", max_items=100, now_ms=T0, lease_ms=LEASE
    )
    while items := claim().items:  # (the runs stay leased: each claim takes new ones)
        for item in items:
            for i in range(steps):
                completion = Completion(item.run_id, item.lease_id, f"s{i}", StepOutput("1"))
                store.complete_step(completion, now_ms=T0, lease_ms=LEASE)
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(text("VACUUM ANALYZE"))


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "analyzed"])
def test_the_claim_reaches_a_young_databases_runs_and_steps_by_their_indexes(
    store: SqlStore, admin: Engine, analyzed: bool
) -> None:
    # Small enough that PostgreSQL's cost model prefers reading both tables whole (analyzed, still
    # the runs), at every claim; a claim's transaction does not let it (``txn.PLAN_BY_INDEX``).
    _young(store, admin if analyzed else None)
    _assert_indexed(_generic_plan(store, admin, leases._LEASE_READY, after=txn.PLAN_BY_INDEX, **CLAIM))


def test_the_claim_is_not_planned_at_every_execution(parked: Parked) -> None:
    store, admin = parked
    # (Every run is parked: the claim takes none.)
    assert _generic_plans_used(store, admin, leases._LEASE_READY, by_index=True, **CLAIM) >= 4


def test_the_ready_work_announcement_probes_the_claim_index(parked: Parked) -> None:
    store, admin = parked
    plan = _generic_plan(store, admin, postgres._NOTIFY_IF_READY, channel="c", app="a", now_ms=T0)
    _assert_indexed(plan)


ON_HINTS = {
    "id": "e", "name": "start", "data": "{}", "ts_ms": T0, "received_ms": T0, "run_ids": ["r"],
    "app_ids": ["a"], "function_ids": ["f"], "runs": 1, "targets": '[["a", "f"]]',
}
# The run inserted leased to a claim, unless a ready run of its app is older (``txn.UnsentRuns``).
LEASED = {"to_lease": [True], "lease_app": "a", "lease_functions": ["f"], "lease_now_ms": T0,
          "lease_id": "l", "lease_expires_ms": T0 + LEASE, "worker_id": "w"}


@pytest.mark.parametrize("lease", [False, True], ids=["ready", "leased"])
def test_ingest_on_hints_probes_open_waits_and_older_ready_runs_by_their_indexes(
    parked: Parked, lease: bool
) -> None:
    store, admin = parked
    params = ON_HINTS | (LEASED if lease else txn.UnsentRuns.unleased(1))
    _assert_indexed(_generic_plan(store, admin, ingest._INGEST_ON_HINTS, after=txn.PLAN_BY_INDEX, **params))


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "analyzed"])
def test_ingest_on_hints_probes_a_young_databases_older_ready_runs_by_their_ready_time(
    store: SqlStore, admin: Engine, analyzed: bool
) -> None:
    # Ordered by the ready time, as the claim's own choice of runs and the ready work announcement
    # are: without the order, a young database's plan took the lease expiry index, every ready run
    # of every app whatever its ready time.
    _young(store, admin if analyzed else None)
    plan = _generic_plan(store, admin, ingest._INGEST_ON_HINTS, after=txn.PLAN_BY_INDEX, **ON_HINTS, **LEASED)
    _assert_indexed(plan)
    probe = r"Index (Only )?Scan using ix_runs_(app_id_state|state)_available_at_ms on runs\b"
    assert re.search(probe, plan), plan


def test_ingest_on_hints_is_not_planned_at_every_execution(store: SqlStore, admin: Engine) -> None:
    _young(store)
    used = _generic_plans_used(
        store, admin, ingest._INGEST_ON_HINTS, fresh=("id", "run_ids"), by_index=True, **ON_HINTS, **LEASED
    )
    assert used >= 4


def test_a_step_completion_moves_the_event_mark_by_a_seek_planned_once(parked: Parked) -> None:
    store, admin = parked
    params = {"run_id": "no-such-run", "step_count": 2, "lease_expires_ms": T0}
    _assert_indexed(_generic_plan(store, admin, completions._CONTINUE_COMMITTED, **params))
    assert _generic_plans_used(store, admin, completions._CONTINUE_COMMITTED, **params) >= 4


RESUME = {
    "id": "e", "name": "go", "data": '{"k": 3}', "ts_ms": T0, "received_ms": T0, "run_ids": [],
    "app_ids": [], "function_ids": [], "runs": 0, "targets": "[]", "path": "data.k", "hash": "h",
    "match_value": "3", "output": "{}", "waited": ["data.k"], "apps": ["a"],
}


def test_resume_on_hints_finds_its_waits_by_their_match_and_their_runs_by_key(parked: Parked) -> None:
    store, admin = parked
    # An index scan of waits on (name, status) alone is no sequential scan, but reads every open
    # wait of the name: the update must seek on the match path and hash too, and the runs it makes
    # ready by primary key. (Never analyzed, a list of run ids was taken from the state index: a
    # scan of every parked run.)
    plan = _generic_plan(store, admin, ingest._RESUME_ON_HINTS, after=txn.PLAN_BY_INDEX, **RESUME)
    _assert_indexed(plan)
    by_match = r"Update on waits(.*\n)*?.*Index Cond: \(.*match_path\)::text = \$\d+\) AND .*match_hash"
    assert re.search(by_match, plan), plan
    assert re.search(r"Update on runs.*\n(.*\n)*?.*Index Scan using pk_runs on runs", plan), plan
    by_run = r"Update on steps.*\n(.*\n)*?.*Index Scan using (pk_steps|uq_steps_run_id_position) on steps"
    assert re.search(by_run, plan), plan


def test_resume_on_hints_reaches_a_young_databases_runs_by_key(store: SqlStore, admin: Engine) -> None:
    # A few hundred parked runs, never analyzed: the runs it makes ready were found through the
    # lease expiry index (every parked run), or read whole.
    _park(store)
    plan = _generic_plan(store, admin, ingest._RESUME_ON_HINTS, after=txn.PLAN_BY_INDEX, **RESUME)
    _assert_indexed(plan)
    assert re.search(r"Update on runs.*\n(.*\n)*?.*Index Scan using pk_runs on runs", plan), plan


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "analyzed"])
def test_resume_on_hints_is_not_planned_at_every_execution(
    store: SqlStore, admin: Engine, analyzed: bool
) -> None:
    # Planning it costs the server about 0.6 ms, as much as the round trip it saves. Fresh: the
    # bench's databases, whose small tables autovacuum has not analyzed yet.
    _park(store)
    if analyzed:
        _clone(admin)
    used = _generic_plans_used(store, admin, ingest._RESUME_ON_HINTS, fresh=("id",), by_index=True, **RESUME)
    assert used >= 4
