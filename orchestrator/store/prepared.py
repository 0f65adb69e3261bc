"""Statements built once, compiled once per dialect, and executed on the driver's connection.

Why: on a 2-core machine, building a SQLAlchemy Core statement (``select(...).where(...)``) costs
about 250 us, executing it through ``Connection.execute`` another 40-80 us, and even
``exec_driver_sql`` spends 20-100 us building result metadata column by column; the same SQL on the
driver's cursor costs 5-20 us. The store's hot paths (CompleteStep, PollWork, SendEvent) run
several statements per call, so they use these.

A ``Prepared`` wraps a Core statement written with ``bindparam``s at import time: the schema and
the dialect still write the SQL. Its first execution on a dialect compiles it to that dialect's
text and remembers the order of its parameters (positional for SQLite, named for psycopg) and the
values of the literals the statement carries; later executions only fill in the parameters and
hand the text to the driver, in the caller's transaction (on PostgreSQL through the dialect's
pipeline, which prepares each text once per connection). Driver errors are raised as SQLAlchemy's
``DBAPIError`` family, as from any other statement, so the store maps them the same way.
A statement with expanding parameters (``IN :list``) has one text per list length: each is made by
SQLAlchemy the first time that length is seen and kept (up to ``MAX_EXPANSIONS`` lengths).
"""

from __future__ import annotations

import logging
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ClauseElement
from sqlalchemy.engine import Dialect as SqlDialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler

from orchestrator import errors

if TYPE_CHECKING:
    from orchestrator.store.txn import Tx

logger = logging.getLogger("orchestrator.store")

# Texts kept per statement for distinct lengths of its expanding parameters; others are expanded
# by SQLAlchemy at each execution.
MAX_EXPANSIONS = 128


@dataclass
class _Compiled:
    sql: str
    # Parameter names in the order of the placeholders (positional paramstyles); None: named.
    order: tuple[str, ...] | None
    # Values of the parameters the statement itself carries (its literals).
    literals: Mapping[str, Any]
    # The row type, made from the cursor's description at the first execution that returns rows.
    row: Any = field(default=None)


class Result:
    """What a prepared statement returned: rows with attribute access by column name, and the
    number of rows a write touched."""

    __slots__ = ("_cursor", "_compiled", "rowcount")

    def __init__(self, cursor: Any, compiled: _Compiled) -> None:
        self._cursor = cursor
        self._compiled = compiled
        self.rowcount: int = cursor.rowcount

    def _row_type(self) -> Any:
        if self._compiled.row is None:
            self._compiled.row = namedtuple("Row", [d[0] for d in self._cursor.description])  # type: ignore[misc]
        return self._compiled.row

    def first(self) -> Any | None:
        """The first row, or None."""
        raw = self._cursor.fetchone()
        return None if raw is None else self._row_type()._make(raw)

    def one(self) -> Any:
        """The only row; raises when there is none."""
        row = self.first()
        if row is None:
            raise LookupError("expected one row, got none")
        return row

    def all(self) -> list[Any]:
        """Every row."""
        rows = self._cursor.fetchall()
        if not rows:
            return []
        make = self._row_type()._make
        return [make(raw) for raw in rows]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.all())

    def scalar(self) -> Any:
        """The first column of the first row, or None."""
        raw = self._cursor.fetchone()
        return None if raw is None else raw[0]

    def scalars(self) -> list[Any]:
        """The first column of every row."""
        return [raw[0] for raw in self._cursor.fetchall()]


class Prepared:
    """A statement built once; ``run(tx, **params)`` executes it in the caller's transaction."""

    __slots__ = ("statement", "_expanding", "_by_dialect", "_compiler", "_expansions")

    def __init__(
        self, statement: ClauseElement, *, expanding: tuple[str, ...] = ()
    ) -> None:
        self.statement = statement
        # Names of the ``bindparam(..., expanding=True)`` lists (``IN :list``).
        self._expanding = expanding
        self._by_dialect: dict[str, _Compiled] = {}
        self._compiler: dict[str, SQLCompiler] = {}
        self._expansions: dict[tuple[str, tuple[int, ...]], _Compiled] = {}

    def _compile(self, dialect: SqlDialect) -> _Compiled:
        compiled = cast(SQLCompiler, self.statement.compile(dialect=dialect))
        literals = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
        order = tuple(compiled.positiontup) if compiled.positiontup is not None else None
        entry = _Compiled(compiled.string, order, literals)
        self._by_dialect[dialect.name] = entry
        self._compiler[dialect.name] = compiled
        return entry

    def _expanded(self, dialect: SqlDialect, params: dict[str, Any]) -> tuple[_Compiled, dict[str, Any]]:
        """The text for the lengths of this call's lists, and the parameters with each list spread
        into the ``<name>_<i>`` parameters SQLAlchemy names its elements."""
        if dialect.name not in self._compiler:
            self._compile(dialect)
        compiler = self._compiler[dialect.name]
        lists = {name: list(params.pop(name)) for name in self._expanding}
        for name, values in lists.items():
            for i, value in enumerate(values, start=1):
                params[f"{name}_{i}"] = value
        key = (dialect.name, tuple(len(values) for values in lists.values()))
        entry = self._expansions.get(key)
        if entry is None:
            state = compiler.construct_expanded_state({**params, **lists})
            order = tuple(state.positiontup) if state.positiontup is not None else None
            literals = {k: v for k, v in state.parameters.items() if k not in params}
            entry = _Compiled(state.statement, order, literals)
            if len(self._expansions) < MAX_EXPANSIONS:
                self._expansions[key] = entry
        return entry, params

    def _bind(self, tx: Tx, params: dict[str, Any]) -> tuple[_Compiled, Any]:
        dialect = tx.sa_dialect
        if self._expanding:
            compiled, params = self._expanded(dialect, params)
        else:
            compiled = self._by_dialect.get(dialect.name) or self._compile(dialect)
        if compiled.literals:
            params = {**compiled.literals, **params}
        if compiled.order is not None:
            return compiled, tuple(params[name] for name in compiled.order)
        return compiled, params

    def run(self, tx: Tx, /, *, commit: bool = False, **params: Any) -> Result:
        """Executes the statement with ``params`` (every ``bindparam`` by name; a list for each
        expanding one), after the transaction's deferred writes. With ``commit`` (where the
        dialect pipelines) the transaction's COMMIT follows it in the same round trip: the caller
        must not run anything after it."""
        compiled, args = self._bind(tx, params)
        commit = commit and tx.dialect.pipelines
        if tx.dialect.pipelines:  # also alone: the dialect's pipeline prepares it once per connection
            return Result(run_pipelined(tx, [(compiled.sql, args)], commit=commit)[0], compiled)
        try:
            cursor = tx.raw.execute(compiled.sql, args)
        except tx.driver_error as exc:
            raise _wrapped(tx, compiled.sql, args, exc) from exc
        return Result(cursor, compiled)

    def run_later(self, tx: Tx, /, **params: Any) -> None:
        """Executes a write whose result nobody reads. Where the dialect pipelines (PostgreSQL) it
        is sent with the transaction's next statement, or at its commit: the writes of a step and
        the next read then cost one round trip. Elsewhere it runs now. An error it causes is raised
        by whatever sends it, still inside the transaction, which then fails."""
        compiled, args = self._bind(tx, params)
        if tx.dialect.pipelines:
            tx.deferred.append((compiled.sql, args, None))
            return
        try:
            tx.raw.execute(compiled.sql, args)
        except tx.driver_error as exc:
            raise _wrapped(tx, compiled.sql, args, exc) from exc

    def run_at_commit(self, tx: Tx, key: Any, /, **params: Any) -> None:
        """Executes a write whose result nobody reads after every other statement of the
        transaction: where the dialect pipelines, with its COMMIT (one statement per ``key``, the
        last one queued); elsewhere now."""
        if not tx.dialect.pipelines:
            self.run_later(tx, **params)
            return
        if tx.committed:
            raise RuntimeError("a statement after the transaction's COMMIT was queued")
        compiled, args = self._bind(tx, params)
        tx.at_commit[key] = (compiled.sql, args)

    def read_later(self, tx: Tx, on_result: Callable[[Result], None], /, **params: Any) -> Unsent | None:
        """As ``run_later``, for a statement whose result is wanted but not before the next round
        trip: ``on_result`` gets it once it arrived (at once where the dialect does not pipeline).
        An error the statement raises is raised by whatever sends it, before any callback runs.
        Where it is deferred, returns the handle that may still change its parameters."""
        compiled, args = self._bind(tx, dict(params))
        if tx.dialect.pipelines:
            entry = (compiled.sql, args, lambda cursor: on_result(Result(cursor, compiled)))
            tx.deferred.append(entry)
            return Unsent(self, tx, params, entry)
        on_result(self.run(tx, **params))
        return None


class Unsent:
    """A statement ``read_later`` deferred: until the transaction's next round trip sends it, its
    parameters may change (``rebind``). How a claim leases the runs an event ingested on hints is
    about to insert, in the same statement, instead of updating them after (``store.leases``)."""

    __slots__ = ("_statement", "_tx", "_params", "_entry")

    def __init__(
        self, statement: Prepared, tx: Tx, params: dict[str, Any], entry: tuple[str, Any, Any]
    ) -> None:
        # (``params`` is the caller's own: ``read_later`` bound a copy of it.)
        self._statement, self._tx, self._params, self._entry = statement, tx, params, entry

    def rebind(self, **changes: Any) -> bool:
        """Changes these parameters of the statement; False (and nothing changed) once it was sent."""
        deferred = self._tx.deferred
        for i, entry in enumerate(deferred):
            if entry is self._entry:
                self._params.update(changes)
                compiled, args = self._statement._bind(self._tx, dict(self._params))
                self._entry = (compiled.sql, args, entry[2])
                deferred[i] = self._entry
                return True
        return False


def run_all(tx: Tx, *calls: tuple[Prepared, dict[str, Any]]) -> list[Result]:
    """Runs independent statements (none needs another's result): where the dialect pipelines, in
    one round trip with the deferred writes; elsewhere one after the other."""
    if not tx.dialect.pipelines:
        return [statement.run(tx, **params) for statement, params in calls]
    bound = [statement._bind(tx, dict(params)) for statement, params in calls]
    cursors = run_pipelined(tx, [(compiled.sql, args) for compiled, args in bound])
    return [Result(cursor, compiled) for cursor, (compiled, _) in zip(cursors, bound, strict=True)]


def run_pipelined(tx: Tx, statements: list[tuple[str, Any]], *, commit: bool = False) -> list[Any]:
    """Sends the transaction's deferred writes, then ``statements``, then (with ``commit``) its
    ``at_commit`` statements and the COMMIT, in one pipeline: one round trip. Returns the cursors
    of ``statements``, their results received. (After a COMMIT sent here, the one SQLAlchemy sends
    finds no transaction: the driver makes it a no-op.)"""
    if tx.committed:
        raise RuntimeError("a statement after the transaction's COMMIT was sent")
    queued, tx.deferred = tx.deferred, []
    last = list(tx.at_commit.values()) if commit else []
    sent = [(sql, args) for sql, args, _ in queued] + statements + last
    cursors: list[Any] = []
    ended: Any = None
    awaited: list[tuple[Callable[[Any], None], Any]] = []
    try:
        # The COMMIT is a statement, not the driver's commit(): psycopg's waits for a round trip of
        # its own inside a pipeline.
        tx.committed = commit
        got = tx.dialect.pipeline(tx.raw, sent + ([("COMMIT", None)] if commit else []))
        for (_, _, on_result), cursor in zip(queued, got, strict=False):
            if on_result is not None:
                awaited.append((on_result, cursor))
        cursors = got[len(queued) : len(queued) + len(statements)]
        if commit:
            ended = got[-1]
    except tx.driver_error as exc:
        # The driver does not say which statement of the pipeline failed: name them all.
        described = "\n".join(sql for sql, _ in sent) + ("\nCOMMIT" if commit else "")
        error = _wrapped(tx, f"(one of, pipelined)\n{described}", [args for _, args in sent], exc)
        if commit and error.connection_invalidated:
            # The COMMIT may have reached the server before the connection broke: never run again.
            raise errors.CommitOutcomeUnknown(f"database unavailable while committing: {exc}") from error
        raise error from exc
    if commit and ended.statusmessage != "COMMIT":
        # A transaction that failed earlier ends in a ROLLBACK, which a COMMIT statement reports
        # without an error (every failure raises before this: never seen, never acknowledged).
        raise errors.StoreUnavailable(f"database rolled back at COMMIT ({ended.statusmessage})")
    for on_result, cursor in awaited:
        try:
            on_result(cursor)
        except Exception:
            if not commit:
                raise
            # Committed: that must be what the caller hears, whatever a callback did.
            logger.exception("a deferred read's callback failed after its transaction committed")
    return cursors


def _wrapped(tx: Tx, sql: str, args: Any, exc: Exception) -> DBAPIError:
    """A driver error as SQLAlchemy would have raised it (the store maps DBAPIError). A lost
    connection is invalidated, so the pool replaces it rather than handing it out again."""
    dialect = tx.sa_dialect
    gone = dialect.is_disconnect(cast(Any, exc), tx.raw, None)
    if gone:
        tx.invalidate(exc)
    error = DBAPIError.instance(
        sql, args, exc, tx.driver_error, connection_invalidated=gone, dialect=dialect
    )
    return cast(DBAPIError, error)
