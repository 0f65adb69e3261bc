"""Event ingest in the caller's transaction: dedupe by id, start triggered runs, resume matching
waits; and function registration."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import BindParameter, Executable, bindparam, delete, insert, select, text, update

from orchestrator import clock
from orchestrator.engine import matching, transitions
from orchestrator.engine.model import (
    EventRecord,
    FunctionSpec,
    IngestResult,
    NewEvent,
    RunState,
    RunStatus,
    StepStatus,
    SuspensionEnded,
    WaitStatus,
    Wakeups,
)
from orchestrator.store import names as event_names
from orchestrator.store import prepared, txn
from orchestrator.store import schema as t
from orchestrator.store.prepared import Prepared, Result
from orchestrator.store.txn import AnyRow, Tx

_e, _r, _w, _s = t.events, t.runs, t.waits, t.steps
K = TypeVar("K", str, tuple[str, str])
# Many rows go through Core (one multi-row statement, built once per dialect); one row, the common
# SendEvent, is prepared.
_INSERT_EVENTS: dict[str, Executable] = {}


def _insert_events_if_new(tx: Tx) -> Executable:
    statement = _INSERT_EVENTS.get(tx.dialect.name)
    if statement is None:
        upsert = tx.dialect.upsert(_e, keys=["id"], update=[])
        statement = _INSERT_EVENTS[tx.dialect.name] = upsert.returning(_e.c.seq, _e.c.id)  # type: ignore[attr-defined]
    return statement


_EVENT_COLUMNS = ("id", "name", "data", "ts_ms", "received_ms")
# One event (the usual SendEvent) is deduplicated by its insert: no row back means a known id.
_INSERT_EVENT_IF_NEW = Prepared(
    text(
        f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) "
        f"VALUES ({', '.join(':' + c for c in _EVENT_COLUMNS)}) ON CONFLICT (id) DO NOTHING RETURNING seq"
    )
)
_INSERT_RUNS = insert(_r)
_RUN_COLUMNS = (
    "id", "app_id", "function_id", "event_seq", "event_id", "status", "state", "available_at_ms", "retries",
    "body_attempts", "lost_attempts", "event_mark", "step_count", "created_ms",
)
_INSERT_RUN = Prepared(insert(_r).values({c: bindparam(c) for c in _RUN_COLUMNS}))
# With each wait, its run's app: where the store pipelines, the app the event makes ready is known
# before the wait is resolved, so the resolution goes with the next round trip (the claim a parked
# poller left, or the COMMIT).
_WAITS_MATCHING = Prepared(
    select(_w.c.id, _w.c.run_id, _w.c.step_id, _w.c.match_value, _r.c.app_id)
    .select_from(_w.join(_r, _r.c.id == _w.c.run_id))
    .where(
        _w.c.event_name == bindparam("name"),
        _w.c.status == WaitStatus.WAITING,
        _w.c.match_path == bindparam("path"),
        _w.c.match_hash == bindparam("hash"),
    )
    .order_by(_w.c.id),
)
# SQLite: the open waits on a name and path whose value is the event's, matched and returned in one
# statement (where a lookup of them, then an update of each, took one more per event).
_MATCH_WAITS = Prepared(
    update(_w)
    .where(
        _w.c.event_name == bindparam("name"),
        _w.c.status == WaitStatus.WAITING,
        _w.c.match_path == bindparam("path"),
        _w.c.match_hash == bindparam("hash"),
        _w.c.match_value == bindparam("value"),  # the hash narrowed; the value decides
    )
    .values(
        status=WaitStatus.MATCHED, resolved_event_id=bindparam("event_id"), resolved_ms=bindparam("now_ms")
    )
    .returning(_w.c.id, _w.c.run_id, _w.c.step_id)
)
_RESOLVE_WAIT = Prepared(
    update(_w)
    .where(_w.c.id == bindparam("wait_id"), _w.c.status == WaitStatus.WAITING)
    .values(
        status=bindparam("status"),
        resolved_event_id=bindparam("resolved_event_id"),
        resolved_ms=bindparam("resolved_ms"),
    )
)
_WAIT_STEP_DONE = Prepared(
    update(_s)
    .where(_s.c.run_id == bindparam("run_id"), _s.c.step_id == bindparam("step_id"))
    .values(
        status=StepStatus.COMPLETED,
        output=bindparam("output"),
        ended_ms=bindparam("ended_ms"),
        resumed_by_event_id=bindparam("resumed_by_event_id"),
    )
)
_UNPARK = Prepared(
    update(_r)
    .where(_r.c.id == bindparam("run_id"), _r.c.state == RunState.PARKED)
    .values(state=RunState.READY, available_at_ms=bindparam("available_at_ms"), event_mark=bindparam("mark"))
    .returning(_r.c.app_id)
)


# PostgreSQL: the three writes above as one statement (data-modifying CTEs), one statement per wait
# in the pipeline instead of three (each costs the client a send and a poll). Every part is found by
# its primary key, so no plan depends on statistics.
_RESOLVE_BY_EVENT = Prepared(
    text(
        """
        WITH won AS (
            UPDATE waits SET status = :matched, resolved_event_id = :event_id, resolved_ms = :now_ms
            WHERE id = :wait_id AND status = :waiting
            RETURNING id
        ), done AS (
            UPDATE steps SET status = :completed, output = :output, ended_ms = :now_ms,
                resumed_by_event_id = :event_id
            WHERE run_id = :run_id AND step_id = :step_id AND EXISTS (SELECT 1 FROM won)
        ), unparked AS (
            UPDATE runs SET state = :ready, available_at_ms = :now_ms, event_mark = :seq
            WHERE id = :run_id AND state = :parked AND EXISTS (SELECT 1 FROM won)
        )
        SELECT (SELECT count(*) FROM won) AS won
        """
    ).bindparams(
        bindparam("matched", WaitStatus.MATCHED, literal_execute=False),
        bindparam("waiting", WaitStatus.WAITING, literal_execute=False),
        bindparam("completed", StepStatus.COMPLETED, literal_execute=False),
        bindparam("ready", RunState.READY, literal_execute=False),
        bindparam("parked", RunState.PARKED, literal_execute=False),
    )
)


# PostgreSQL, a lone event on its name's hints (``_ingest_on_hints``): the event and the runs of the
# functions its name was last seen to trigger, in one statement sent with the next round trip (the
# COMMIT, or the claim a parked poller left). That claim may have the runs inserted leased to its
# poller instead (``txn.UnsentRuns``: the runs ``:to_lease`` marks), unless a ready run it could
# take now is there already (of ``:lease_app`` and ``:lease_functions``): then they are inserted
# ready, and the poller claims the oldest as usual. One row version, not an insert and
# then a claim's update of a row with seven indexes. The guard divides by zero
# (``postgres.HINT_STALE_SQLSTATE``) unless the event is new, every hinted function still exists, and
# the name triggers exactly the hinted functions now: otherwise the transaction rolls back and runs
# again without hints. The runs' retries come from the functions table, not from the hint. (Ordered
# by code point, as Python sorts the hint.) Both statements below start with these parts (the first
# with ``_EVENT_AND_LEASABLE_RUNS``).
_NEW_EVENT = """
    ev AS (
        INSERT INTO events (id, name, data, ts_ms, received_ms)
        VALUES (:id, :name, :data, :ts_ms, :received_ms)
        ON CONFLICT (id) DO NOTHING
        RETURNING seq
    )"""
_EVENT_AND_RUNS = _NEW_EVENT + """, started AS (
        INSERT INTO runs (id, app_id, function_id, event_seq, event_id, status, state,
            available_at_ms, retries, body_attempts, lost_attempts, event_mark, step_count,
            created_ms)
        SELECT v.run_id, f.app_id, f.function_id, ev.seq, :id, :running, :ready, :received_ms,
            f.retries, 0, 0, ev.seq, 0, :received_ms
        FROM ev
        CROSS JOIN unnest(CAST(:run_ids AS text[]), CAST(:app_ids AS text[]),
            CAST(:function_ids AS text[])) AS v(run_id, app_id, function_id)
        JOIN functions AS f ON f.app_id = v.app_id AND f.function_id = v.function_id
        RETURNING 1
    )"""
# The same, where the runs may be inserted leased (``_INGEST_ON_HINTS``; its statement only: with
# the lease's parts, a resume's was 0.12-0.26 ms later end to end, paired, for nothing it used).
_EVENT_AND_LEASABLE_RUNS = _NEW_EVENT + """, started AS (
        INSERT INTO runs (id, app_id, function_id, event_seq, event_id, status, state,
            available_at_ms, retries, body_attempts, lost_attempts, event_mark, step_count,
            created_ms, lease_id, lease_expires_ms, worker_id)
        SELECT v.run_id, f.app_id, f.function_id, ev.seq, :id, :running,
            CASE WHEN lease.lease_id IS NULL THEN :ready ELSE :leased END, :received_ms,
            f.retries, 0, 0, ev.seq, 0, :received_ms, lease.lease_id, lease.lease_expires_ms,
            lease.worker_id
        FROM ev
        CROSS JOIN unnest(CAST(:run_ids AS text[]), CAST(:app_ids AS text[]),
            CAST(:function_ids AS text[]), CAST(:to_lease AS boolean[]))
            AS v(run_id, app_id, function_id, to_lease)
        JOIN functions AS f ON f.app_id = v.app_id AND f.function_id = v.function_id
        LEFT JOIN (
            SELECT CAST(:lease_id AS text) AS lease_id,
                CAST(:lease_expires_ms AS bigint) AS lease_expires_ms,
                CAST(:worker_id AS text) AS worker_id
            WHERE (SELECT 1 FROM runs WHERE app_id = :lease_app AND state = :ready
                   AND available_at_ms <= :lease_now_ms
                   AND (cardinality(CAST(:lease_functions AS text[])) = 0
                        OR function_id = ANY(CAST(:lease_functions AS text[])))
                   ORDER BY available_at_ms LIMIT 1) IS NULL
        ) AS lease ON v.to_lease
        RETURNING id, state
    )"""
_EVENT_AND_RUNS_GUARD = """
    EXISTS (SELECT 1 FROM ev)
    AND (SELECT count(*) FROM started) = :runs
    AND (SELECT coalesce(jsonb_agg(jsonb_build_array(app_id, function_id)
            ORDER BY app_id COLLATE "C", function_id COLLATE "C"), '[]')
         FROM function_triggers WHERE event_name = :name) = CAST(:targets AS jsonb)"""
# The runs it inserted leased (``lease_unsent``).
_LEASED_IDS = "ARRAY(SELECT id FROM started WHERE state = :leased) AS leased_ids"
_ON_HINTS_PARAMS: tuple[BindParameter[Any], ...] = (
    bindparam("running", RunStatus.RUNNING, literal_execute=False),
    bindparam("ready", RunState.READY, literal_execute=False),
    bindparam("waiting", WaitStatus.WAITING, literal_execute=False),
)

# A name last seen with no open waits: the guard also requires that none is open now (read after the
# ingest locks, a statement before: the name lock keeps new waits out until the commit). The probe
# is an ordered LIMIT 1, not NOT EXISTS: the generic plan of a NOT EXISTS is a sequential scan of
# waits once statistics show many waits on few names (see postgres._NOTIFY_IF_READY).
_INGEST_ON_HINTS = Prepared(
    text(
        f"""
        WITH {_EVENT_AND_LEASABLE_RUNS}
        SELECT (SELECT seq FROM ev) AS seq, CAST(NULL AS text[]) AS run_ids,
            CAST(NULL AS text[]) AS step_ids, {_LEASED_IDS},
            1 / CASE WHEN {_EVENT_AND_RUNS_GUARD}
                AND (SELECT 1 FROM waits WHERE event_name = :name AND status = :waiting
                     ORDER BY match_path LIMIT 1) IS NULL
            THEN 1 ELSE 0 END AS guard
        """
    ).bindparams(*_ON_HINTS_PARAMS, bindparam("leased", RunState.LEASED, literal_execute=False))
)

# A name last seen with open waits on the match paths ``waited`` (``_HINTS``) and waits of the apps
# ``apps`` resumed by its events (``_WAIT_APP_HINTS``), for an event with a value on at most one of
# those paths (``path``, ``match_value``; NULL for none): the event also resolves the waits it
# matches there, completes their steps and makes their parked runs ready, as ``_RESOLVE_BY_EVENT``
# does per wait; one round trip instead of a lookup and then the writes. The apps are what the
# caller announces (a parked poller's claim goes with this statement), so the guard also requires
# that the open waits' paths are exactly the hinted ones (the same loose index scan as
# ``names.WAITED_PATHS``) and that every run made ready is of a hinted app. The waits' update decides
# their race with a timeout, as one by id does. One path, as scalars, not a list of them: with
# lists the generic plan's estimates (ten elements each) cost it more than planning every execution
# (0.6 ms of the server's time per event, measured), and PostgreSQL kept planning each one. The
# runs are joined to the won waits, not chosen by ``id = ANY(...)``: on tables never analyzed,
# that plan took the state index (every parked run) instead of the primary key. So did the join on
# a young database (a few hundred parked runs), through any index that leads with the state: the
# state test is written so that no index can take it (``IS TRUE``), and the transaction plans by
# the indexes alone (``txn.plan_by_index``), which leaves the primary key (without it, the runs
# were read whole).
_RESUME_ON_HINTS = Prepared(
    text(
        f"""
        WITH RECURSIVE {event_names.OPEN_PATHS}, {_EVENT_AND_RUNS}, won AS (
            UPDATE waits SET status = :matched, resolved_event_id = :id, resolved_ms = :received_ms
            WHERE event_name = :name AND status = :waiting AND match_path = :path
                AND match_hash = :hash AND match_value = :match_value AND EXISTS (SELECT 1 FROM ev)
            RETURNING id, run_id, step_id
        ), done AS (
            UPDATE steps SET status = :completed, output = :output, ended_ms = :received_ms,
                resumed_by_event_id = :id
            FROM won WHERE steps.run_id = won.run_id AND steps.step_id = won.step_id
        ), unparked AS (
            UPDATE runs SET state = :ready, available_at_ms = :received_ms,
                event_mark = (SELECT seq FROM ev)
            FROM won WHERE runs.id = won.run_id AND (runs.state = :parked) IS TRUE
            RETURNING runs.app_id
        )
        SELECT (SELECT seq FROM ev) AS seq,
            (SELECT array_agg(run_id ORDER BY id) FROM won) AS run_ids,
            (SELECT array_agg(step_id ORDER BY id) FROM won) AS step_ids,
            1 / CASE WHEN {_EVENT_AND_RUNS_GUARD}
                AND ARRAY(SELECT CAST(path AS text) FROM paths WHERE path IS NOT NULL
                          ORDER BY path COLLATE "C") = CAST(:waited AS text[])
                AND NOT EXISTS (SELECT 1 FROM unparked WHERE app_id <> ALL(CAST(:apps AS text[])))
            THEN 1 ELSE 0 END AS guard
        """
    ).bindparams(
        *_ON_HINTS_PARAMS,
        bindparam("matched", WaitStatus.MATCHED, literal_execute=False),
        bindparam("completed", StepStatus.COMPLETED, literal_execute=False),
        bindparam("parked", RunState.PARKED, literal_execute=False),
    )
)


@dataclass(frozen=True)
class Resolved:
    """A wait that ``resolve_wait`` resolved: the app of the run it made ready (None when the run was
    not parked), and the suspension it ended."""

    app_id: str | None
    ended: SuspensionEnded


def ingest(tx: Tx, events: Sequence[NewEvent], now_ms: int) -> IngestResult:
    """Stores new events (a known id is acknowledged and starts nothing), starts the runs they
    trigger and resumes the waits they match."""
    first = not tx.ingested
    tx.ingested = True
    if tx.unsent_runs is not None:
        # A second ingest in the group: a claim takes the ready runs of both by its statement, as
        # many as it may, rather than only the first one's inserted leased (``txn.UnsentRuns``).
        tx.unsent_runs.leasable = False
    tx.dialect.lock_for_ingest(tx, [e.name for e in events])
    ids = [e.id or clock.new_id() for e in events]
    rows = [
        {"id": i, "name": e.name, "data": e.data_json, "ts_ms": e.ts_ms or now_ms, "received_ms": now_ms}
        for e, i in zip(events, ids, strict=True)
    ]
    if not tx.dialect.pipelines:
        return _ingest_remembering(tx, rows, now_ms)
    if len(rows) == 1 and tx.use_hints:
        on_hints = _ingest_on_hints(tx, rows[0], leasable=first)
        if on_hints is not None:
            return on_hints
    # The functions the names trigger, and the match paths of the waits on them: read with the
    # insert of a lone event (one round trip; wasted if it is a known id), after the inserts of a
    # batch (only the names of its new events).
    names: list[str]
    prefetched: dict[tuple[str, str], Result] = {}
    if len(rows) == 1:
        names = [events[0].name]
        # The waits the event would match on the paths last seen waited on under its name ride
        # along too (``_PathHints``): a resume then needs no round trip of lookups of its own.
        hinted = _hinted_lookups(rows[0])
        inserted, triggered, *waited = prepared.run_all(
            tx, (_INSERT_EVENT_IF_NEW, rows[0]), *_lookups(names), *(call for _, call in hinted)
        )
        waited, early = waited[:1], waited[1:]
        prefetched = {key: result for (key, _), result in zip(hinted, early, strict=True)}
        records = _inserted_one(tx, rows[0], inserted.scalar())
    else:
        records = _insert_new(tx, rows)
        names = sorted({r.name for r in records})
        if records:
            triggered, *waited = prepared.run_all(tx, *_lookups(names))
    if not records:
        return IngestResult(tuple(ids), ())
    targets = triggered.all()
    paths = {name: found for name, result in zip(names, waited, strict=True) if (found := result.scalars())}
    for name in names:
        _HINTS.seen(name, paths.get(name, ()))
        _TRIGGER_HINTS.seen(name, [(r.app_id, r.function_id) for r in targets if r.event_name == name])
    return _start_and_resume(tx, ids, records, targets, paths, now_ms, prefetched)


def _ingest_remembering(tx: Tx, rows: Sequence[dict[str, Any]], now_ms: int) -> IngestResult:
    """SQLite: the events' inserts, then their names' triggers and waited paths as the connection
    remembers them (``store.names``: read only when not remembered)."""
    ids = tuple(row["id"] for row in rows)
    if len(rows) == 1:
        records = _inserted_one(tx, rows[0], _INSERT_EVENT_IF_NEW.run(tx, **rows[0]).scalar())
    else:
        records = _insert_new(tx, rows)
    if not records:
        return IngestResult(ids, ())
    remembered = event_names.known(tx)
    names = sorted({r.name for r in records})
    targets = remembered.triggered(tx, names)
    paths = {name: list(found) for name in names if (found := remembered.waited_paths(tx, name))}
    return _start_and_resume(tx, ids, records, targets, paths, now_ms, {})


def _start_and_resume(
    tx: Tx,
    ids: Sequence[str],
    records: Sequence[EventRecord],
    targets: Sequence[AnyRow],
    paths: dict[str, list[str]],
    now_ms: int,
    prefetched: dict[tuple[str, str], Result],
) -> IngestResult:
    """The runs the new events start and the waits they resume; ``ids`` are every event's, known
    ones included."""
    for record in records:
        tx.log("event.received", event_id=record.id, name=record.name, seq=record.seq)
    run_ids, ready_apps = _start_runs(tx, records, targets, now_ms)
    resumed_apps, ended = _resolve_waits(tx, records, paths, now_ms, prefetched)
    ready_apps.update(resumed_apps)
    return IngestResult(tuple(ids), tuple(run_ids), Wakeups(frozenset(ready_apps)), ended)


class _Hints(Generic[K]):
    """What each event name was last seen with, in this process (bounded): the match paths waited
    on under it (``_HINTS``), the functions (app id, function id) it triggers (``_TRIGGER_HINTS``),
    the apps whose waits its events resumed (``_WAIT_APP_HINTS``, every one seen since the name's
    hints were last forgotten).

    A hint, never an answer. Path hints let a lone event send its wait lookups with its insert; the
    match paths are still read (``names.WAITED_PATHS``) in the same round trip, and a lookup of a path the
    hint missed runs after it as before (wait registrations of the name are excluded while an
    ingest holds its name lock, so a lookup sent after the paths read sees the same open waits).
    Where a name was last seen with a known set of functions and no waits, or waits on known paths
    of known apps, a lone event is ingested on the hints alone (``_ingest_on_hints``), under guards
    the database checks in the same transaction: a stale hint costs a rolled-back attempt, never a
    wrong run or a wait left unresumed."""

    MAX_NAMES = 1024

    def __init__(self) -> None:
        self._seen: dict[str, tuple[K, ...]] = {}

    def get(self, name: str) -> tuple[K, ...] | None:
        """What was last seen (maybe nothing), or None when the name was not seen."""
        return self._seen.get(name)

    def seen(self, name: str, found: Iterable[K]) -> None:
        if name not in self._seen and len(self._seen) >= self.MAX_NAMES:
            self._seen.clear()  # rare (many names): start over rather than track use
        self._seen[name] = tuple(sorted(found))

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)


_HINTS: _Hints[str] = _Hints()
_TRIGGER_HINTS: _Hints[tuple[str, str]] = _Hints()
_WAIT_APP_HINTS: _Hints[str] = _Hints()


def forget_hints(names: Iterable[str]) -> None:
    """A guard refused what a transaction did on these names' hints (stale, or an event id that was
    not new): the next event of each name reads first, and learns them again."""
    for name in names:
        _HINTS.forget(name)
        _TRIGGER_HINTS.forget(name)
        _WAIT_APP_HINTS.forget(name)


def _ingest_on_hints(tx: Tx, row: dict[str, Any], *, leasable: bool = True) -> IngestResult | None:
    """A lone event whose name was last seen with a known set of functions and either no open waits
    (``_INGEST_ON_HINTS``) or waits on known paths of known apps (``_RESUME_ON_HINTS``; the apps
    are learnt from the waits its events resumed): its insert, its runs' and its waits'
    resolution are sent with the transaction's next round trip (the COMMIT, or the claim a parked
    poller left), under the statement's guard; a claim of the same transaction may have its runs
    inserted leased (``txn.UnsentRuns``: where ``leasable``, the transaction's first ingest). None
    when there is no such hint (the caller reads what to do)."""
    name = row["name"]
    targets = _TRIGGER_HINTS.get(name)
    waited = _HINTS.get(name)
    if targets is None or waited is None:
        return None
    ready_apps = {app for app, _ in targets}
    statement, params = _INGEST_ON_HINTS, {}
    ended: list[SuspensionEnded] = []
    if waited:
        apps = _WAIT_APP_HINTS.get(name)
        if not apps:
            return None  # no event of the name resumed a wait yet: which app it would wake is unknown
        resume = _resume_params(row, waited, apps)
        if resume is None:
            return None
        transitions.require(RunState.PARKED, RunState.READY)
        statement, params = _RESUME_ON_HINTS, resume
        if resume["path"] is not None:
            ready_apps.update(apps)  # the apps its waits may wake: the claims they left go along
    # (Why: ``_RESUME_ON_HINTS``, and the probe of older ready runs a claim may make the runs'
    # insert take, ``_EVENT_AND_LEASABLE_RUNS``.)
    txn.plan_by_index(tx)
    run_ids = [clock.new_id() for _ in targets]
    tx.hinted.add(name)
    unsent: txn.UnsentRuns | None = None

    def inserted(result: Result) -> None:  # arrives with the round trip that passed the guards
        got = result.one()
        if unsent is not None:  # first: what a claim had leased must be known whatever follows
            unsent.sent(got.seq, got.leased_ids)
        tx.log("event.received", event_id=row["id"], name=name, seq=got.seq)
        for run_id, step_id in zip(got.run_ids or (), got.step_ids or (), strict=True):
            tx.log("wait.matched", run_id=run_id, step_id=step_id, event_id=row["id"])
            ended.append(SuspensionEnded(run_id, step_id))

    deferred = statement.read_later(
        tx,
        inserted,
        **row,
        **params,
        run_ids=run_ids,
        app_ids=[app_id for app_id, _ in targets],
        function_ids=[function_id for _, function_id in targets],
        runs=len(targets),
        targets=json.dumps([list(target) for target in targets]),
        **({} if params else txn.UnsentRuns.unleased(len(targets))),
    )
    # (Not where its name has open waits: an event resuming some has the claim's statement take the
    # runs of both kinds.)
    if deferred is not None and targets and leasable and not params:
        event = EventRecord(0, row["id"], name, row["data"], row["ts_ms"])
        started = tuple(zip(run_ids, targets, strict=True))
        unsent = tx.unsent_runs = txn.UnsentRuns(deferred, event, row["received_ms"], started)
    for run_id, (app_id, function_id) in zip(run_ids, targets, strict=True):
        tx.log("run.created", run_id=run_id, app_id=app_id, function_id=function_id, event_id=row["id"],
               event=name)
    return IngestResult((row["id"],), tuple(run_ids), Wakeups(frozenset(ready_apps)), ended)


def _resume_params(
    row: dict[str, Any], waited: tuple[str, ...], apps: tuple[str, ...]
) -> dict[str, Any] | None:
    """``_RESUME_ON_HINTS``'s own parameters: the event's value on the one hinted path it has one
    on (if any), the output its waits resume with, and the hints it checks. None when it has a
    value on several (the statement takes one)."""
    values = _values_on(row, waited)
    if len(values) > 1:
        return None
    path, value = values[0] if values else (None, None)
    return {
        "path": path,
        "hash": txn.hash_value(value),
        "match_value": value,
        "output": matching.event_output_json(row["id"], row["name"], row["data"], row["ts_ms"]),
        "waited": list(waited),
        "apps": list(apps),
    }


def _hinted_lookups(row: dict[str, Any]) -> list[tuple[tuple[str, str], tuple[Prepared, dict[str, Any]]]]:
    """The waits lookups of a lone event on its name's hinted paths, keyed by (path, value)."""
    hinted = _HINTS.get(row["name"])
    if not hinted:
        return []
    return [
        ((path, value), (_WAITS_MATCHING, {"name": row["name"], "path": path, "hash": txn.hash_value(value)}))
        for path, value in _values_on(row, hinted)
    ]


def _values_on(row: dict[str, Any], paths: Iterable[str]) -> list[tuple[str, str]]:
    """A lone event's match values on ``paths``, each with its path (a path it has no value on
    matches nothing, and is left out)."""
    event_obj = matching.event_object(row["id"], row["name"], row["data"], row["ts_ms"])
    found = ((path, matching.match_value(event_obj, path)) for path in paths)
    return [(path, value) for path, value in found if value is not None]


def _lookups(names: Sequence[str]) -> list[tuple[Prepared, dict[str, Any]]]:
    return [
        (event_names.TRIGGERED, {"names": list(names)}),
        *((event_names.WAITED_PATHS, {"name": name}) for name in names),
    ]


def _inserted_one(tx: Tx, row: dict[str, Any], seq: int | None) -> list[EventRecord]:
    """The lone event as inserted (no seq back: a known id, a duplicate)."""
    if seq is None:
        tx.log("event.duplicate", event_id=row["id"], name=row["name"])
        return []
    return [EventRecord(seq, row["id"], row["name"], row["data"], row["ts_ms"])]


def _insert_new(tx: Tx, rows: Sequence[dict[str, Any]]) -> list[EventRecord]:
    """Inserts the events of a batch whose id is not known yet; returns them with their seqs.

    The insert itself skips known ids (ON CONFLICT DO NOTHING, a repeat within the batch too): a
    SELECT of the batch's ids first was a plan PostgreSQL could cache as a sequential scan while
    the table was small (measured: 52 ms per batch of 100 at 20,000 events, never analyzed)."""
    seqs: dict[str, int] = {
        row.id: row.seq for row in tx.conn.execute(_insert_events_if_new(tx), list(rows))
    }
    new, taken = [], set()
    for row in rows:
        if row["id"] in seqs and row["id"] not in taken:  # the first of repeats is the one inserted
            taken.add(row["id"])
            new.append(row)
    inserted = {id(row) for row in new}
    for row in rows:
        if id(row) not in inserted:
            tx.log("event.duplicate", event_id=row["id"], name=row["name"])
    return [EventRecord(seqs[r["id"]], r["id"], r["name"], r["data"], r["ts_ms"]) for r in new]


def _start_runs(
    tx: Tx, records: Sequence[EventRecord], triggered: Sequence[AnyRow], now_ms: int
) -> tuple[list[str], set[str]]:
    targets: dict[str, list[AnyRow]] = {}
    for row in triggered:
        targets.setdefault(row.event_name, []).append(row)
    run_rows: list[dict[str, Any]] = []
    for record in records:
        for target in targets.get(record.name, ()):
            run_id = clock.new_id()
            run_rows.append(
                {
                    "id": run_id,
                    "app_id": target.app_id,
                    "function_id": target.function_id,
                    "event_seq": record.seq,
                    "event_id": record.id,
                    "status": RunStatus.RUNNING,
                    "state": RunState.READY,
                    "available_at_ms": now_ms,
                    "retries": target.retries,
                    "body_attempts": 0,
                    "lost_attempts": 0,
                    "event_mark": record.seq,
                    "step_count": 0,
                    "created_ms": now_ms,
                }
            )
            tx.log(
                "run.created",
                run_id=run_id,
                app_id=target.app_id,
                function_id=target.function_id,
                event_id=record.id,
                event=record.name,
            )
    if len(run_rows) == 1 or tx.dialect.pipelines:
        # Where the store pipelines, each row is an execution of the one statement it prepared, sent
        # with the next round trip (the driver's executemany would send every row unprepared: the
        # store's connections leave preparing to ``postgres._pipeline``).
        for row in run_rows:
            _INSERT_RUN.run_later(tx, **row)
    elif run_rows:
        tx.conn.execute(_INSERT_RUNS, run_rows)
    return [r["id"] for r in run_rows], {r["app_id"] for r in run_rows}


def _resolve_waits(
    tx: Tx,
    records: Sequence[EventRecord],
    paths: dict[str, list[str]],
    now_ms: int,
    prefetched: dict[tuple[str, str], Result],
) -> tuple[set[str], list[SuspensionEnded]]:
    """Resumes the open waits the new events match, given the match paths waited on under each
    name: an indexed lookup per event and path (of a lone event, those ``prefetched`` by path and
    value already ran). Returns the apps of the runs it may make ready and the waits it ended;
    where the store pipelines, the waits' updates go with the transaction's next round trip and
    that list is filled once they came back (before the commit is reported), and an app whose
    wait lost its race to a timeout is announced anyway (its pollers then find nothing new)."""
    if not paths:
        return set(), []
    matches: list[tuple[EventRecord, str, str]] = []
    for record in records:
        waited = paths.get(record.name)
        if not waited:
            continue
        event_obj = matching.event_object(record.id, record.name, record.data_json, record.ts_ms)
        for path in sorted(waited):
            value = matching.match_value(event_obj, path)
            if value is not None:
                matches.append((record, path, value))
    if not matches:
        return set(), []
    if not tx.dialect.pipelines:
        return _match_waits(tx, matches, now_ms)
    # The waits each (event, path) matches (those of a lone event's hinted paths came with its
    # insert), then the writes of every wait: one or two round trips however many waits.
    # Statements run in order, so a wait that two events of a batch match goes to the first, whose
    # update wins.
    found: list[Result | None] = [prefetched.get((path, value)) for _, path, value in matches]
    missing = [i for i, result in enumerate(found) if result is None]
    if missing:
        lookups = [
            (_WAITS_MATCHING, {"name": r.name, "path": p, "hash": txn.hash_value(v)})
            for r, p, v in (matches[i] for i in missing)
        ]
        for i, result in zip(missing, prepared.run_all(tx, *lookups), strict=True):
            found[i] = result
    waits = [
        (record, wait)
        for (record, _, value), result in zip(matches, found, strict=True)
        if result is not None
        for wait in result.all()
        if wait.match_value == value  # the hash narrowed; the value decides
    ]
    if not waits:
        return set(), []
    learned: dict[str, set[str]] = {}
    for record, wait in waits:
        learned.setdefault(record.name, set()).add(wait.app_id)
    for name, resumed in learned.items():
        _WAIT_APP_HINTS.seen(name, resumed.union(_WAIT_APP_HINTS.get(name) or ()))
    return {wait.app_id for _, wait in waits}, _resolve_later(tx, waits, now_ms)


def _match_waits(
    tx: Tx, matches: Sequence[tuple[EventRecord, str, str]], now_ms: int
) -> tuple[set[str], list[SuspensionEnded]]:
    """SQLite: each (event, path, value) takes the open waits it matches (``_MATCH_WAITS``), in
    order, so a wait that two events of a batch match goes to the first; then each wait's step and
    run are written. Returns the apps of the runs made ready and the waits ended."""
    apps: set[str] = set()
    ended: list[SuspensionEnded] = []
    for record, path, value in matches:
        won = _MATCH_WAITS.run(
            tx, name=record.name, path=path, hash=txn.hash_value(value), value=value, event_id=record.id,
            now_ms=now_ms,
        ).all()  # fmt: skip
        for wait in sorted(won, key=lambda row: row.id):  # RETURNING's order is not the index's
            resolved = _wait_ended(tx, wait.run_id, wait.step_id, record, now_ms)
            ended.append(resolved.ended)
            if resolved.app_id is not None:
                apps.add(resolved.app_id)
    return apps, ended


def _resolve_later(
    tx: Tx, waits: Sequence[tuple[EventRecord, AnyRow]], now_ms: int
) -> list[SuspensionEnded]:
    """PostgreSQL: ``_RESOLVE_BY_EVENT`` per wait, sent with the transaction's next round trip.
    Returns the list of the waits whose update won (a timeout, or an earlier event of the batch,
    may have resolved one first), filled as their results come back."""
    transitions.require(RunState.PARKED, RunState.READY)
    ended: list[SuspensionEnded] = []
    for record, wait in waits:

        def resolved(result: Result, record: EventRecord = record, wait: AnyRow = wait) -> None:
            if result.one().won == 1:
                tx.log("wait.matched", run_id=wait.run_id, step_id=wait.step_id, event_id=record.id)
                ended.append(SuspensionEnded(wait.run_id, wait.step_id))

        output = matching.event_output_json(record.id, record.name, record.data_json, record.ts_ms)
        _RESOLVE_BY_EVENT.read_later(
            tx, resolved, wait_id=wait.id, run_id=wait.run_id, step_id=wait.step_id, event_id=record.id,
            output=output, now_ms=now_ms, seq=record.seq,
        )  # fmt: skip
    return ended


def resolve_wait(
    tx: Tx,
    wait_id: int,
    run_id: str,
    step_id: str,
    record: EventRecord | None,
    now_ms: int,
) -> Resolved | None:
    """Resolves one wait with an event (or a timeout when ``record`` is None). The conditional
    update on the wait row decides a race between the two: exactly one wins, and only its result
    reports the wait ended. Returns None when the other side had already won."""
    won = _RESOLVE_WAIT.run(
        tx,
        wait_id=wait_id,
        status=WaitStatus.MATCHED if record else WaitStatus.TIMED_OUT,
        resolved_event_id=record.id if record else None,
        resolved_ms=now_ms,
    )
    if won.rowcount != 1:
        return None
    return _wait_ended(tx, run_id, step_id, record, now_ms)


def _wait_ended(tx: Tx, run_id: str, step_id: str, record: EventRecord | None, now_ms: int) -> Resolved:
    """The writes of a wait that was just resolved (its row updated): its step's outcome, and its
    run made ready if it was parked."""
    if record is not None:
        output = matching.event_output_json(record.id, record.name, record.data_json, record.ts_ms)
        # The event that resumed the wait, and none before it, is consumed: a later wait of this
        # run looks at events after it.
        mark = record.seq
    else:
        output, mark = "null", txn.max_seq(tx)
    _WAIT_STEP_DONE.run(
        tx,
        run_id=run_id,
        step_id=step_id,
        output=output,
        ended_ms=now_ms,
        resumed_by_event_id=record.id if record else None,
    )
    transitions.require(RunState.PARKED, RunState.READY)
    app_id = _UNPARK.run(tx, run_id=run_id, available_at_ms=now_ms, mark=mark).scalar()
    if record is not None:
        tx.log("wait.matched", run_id=run_id, step_id=step_id, event_id=record.id)
    else:
        tx.log("wait.timed_out", run_id=run_id, step_id=step_id)
    return Resolved(str(app_id) if app_id is not None else None, SuspensionEnded(run_id, step_id))


def register(tx: Tx, app_id: str, functions: Sequence[FunctionSpec], now_ms: int) -> None:
    """Creates or updates an app's functions; each one's triggers become exactly the given ones."""
    event_names.functions_changed(tx)
    fn, ft = t.functions, t.function_triggers
    for spec in functions:
        tx.conn.execute(
            tx.dialect.upsert(fn, keys=["app_id", "function_id"], update=["retries", "updated_ms"]),
            {
                "app_id": app_id,
                "function_id": spec.function_id,
                "retries": spec.retries,
                "registered_ms": now_ms,
                "updated_ms": now_ms,
            },
        )
        tx.conn.execute(
            delete(ft).where(
                ft.c.app_id == app_id,
                ft.c.function_id == spec.function_id,
                ft.c.event_name.not_in(spec.triggers),
            )
        )
        tx.conn.execute(
            tx.dialect.upsert(ft, keys=["app_id", "function_id", "event_name"], update=[]),
            [
                {"app_id": app_id, "function_id": spec.function_id, "event_name": name}
                for name in spec.triggers
            ],
        )
        tx.log(
            "function.registered",
            app_id=app_id,
            function_id=spec.function_id,
            triggers=",".join(spec.triggers),
            retries=spec.retries,
        )
