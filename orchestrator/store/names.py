"""SQLite: what each event name triggers and the match paths of its open waits, remembered per
writer connection, so that an event's ingest reads neither the triggers nor the paths again.

Why: a SendEvent's transaction on SQLite read both for every event (the triggers joined with their
functions, and the paths by a recursive loose index scan), about 0.1 ms of its 0.8-1.2 ms after an
idle gap. Both change only when functions are registered or a wait is registered, which this
process does itself on the same connection, unless another process writes to the same file.

Correct, not a hint (PostgreSQL's per-process hints in ``store.ingest`` are checked by guards in the
database instead):

- ``PRAGMA data_version`` changes when any other connection commits to the database (another
  process, a SQL shell, another store on the same file; also a TRUNCATE checkpoint, which costs a
  read, not a wrong answer), never for this connection's own commits (nor for the PASSIVE
  checkpoints of the store's checkpointer). It is read once
  per write transaction that uses what is remembered, under the write lock (``BEGIN IMMEDIATE``):
  no other connection can commit until this transaction ends, so what it read holds throughout.
  When it moved, everything is forgotten and read again.
- Writes on this connection keep it true: ``functions_changed`` (registration) forgets every
  name's triggers, and ``wait_added`` adds a wait's path to its name's paths as the wait is
  inserted, before any event of that name can be ingested in the same or a later transaction.
- Triggers are remembered only from a transaction that wrote no functions: what it read is
  committed already, so no rollback can take it back. Paths are read in a transaction that may
  have ended waits before (an earlier call of its group): a write transaction that rolls back
  forgets everything (``forget``, from ``sqlite._write_transaction``), or a path whose wait the
  rollback reopened could be missing. (A call's own savepoint rollback cannot do that: an ingest
  reads its names' paths before it resolves any wait.)
- The paths kept may be more than the open waits use (a wait resolved, cancelled or timed out, or
  a registration rolled back): a path no open wait uses costs one indexed lookup that finds
  nothing. They are read again at every ``REREAD_PATHS_AFTER``-th ingest that uses the name, so
  such paths do not pile up. They are never fewer: a missing path would leave a wait unresumed.

The memory goes with the connection (SQLAlchemy's per-connection ``info``, cleared when a
connection is replaced), since ``data_version`` values compare only within one connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, text

from orchestrator.engine.model import WaitStatus
from orchestrator.store import schema as t
from orchestrator.store.prepared import Prepared
from orchestrator.store.txn import AnyRow, Tx

_INFO_KEY = "orchestrator.store.names"
# Ingests that use a name's remembered paths between two reads of them.
REREAD_PATHS_AFTER = 64
# Names remembered; past this, everything is forgotten (rare: many names) rather than tracking use.
MAX_NAMES = 4096

_ft, _fn = t.function_triggers, t.functions
TRIGGERED = Prepared(
    select(_ft.c.event_name, _fn.c.app_id, _fn.c.function_id, _fn.c.retries)
    .select_from(_ft.join(_fn))
    .where(_ft.c.event_name.in_(bindparam("names", expanding=True)))
    .order_by(_fn.c.app_id, _fn.c.function_id),
    expanding=("names",),
)
# The distinct match paths of the open waits on an event name, by a loose index scan: one index
# seek per distinct path (the index on event_name, status, match_path), however many runs wait.
# A plain SELECT DISTINCT would read every open wait's index entry: 100,000 for 100,000 waits.
# ORDER BY ... LIMIT 1 rather than MIN(): PostgreSQL turns MIN into that seek only when its
# statistics say it pays, and without them (a table never analyzed) it read all 100,000 entries
# (140 ms) on every event of that name.
OPEN_PATHS = """
    paths(path) AS (
        SELECT (
            SELECT match_path FROM waits WHERE event_name = :name AND status = :waiting
            ORDER BY match_path LIMIT 1
        )
        UNION ALL
        SELECT (
            SELECT w.match_path FROM waits AS w
            WHERE w.event_name = :name AND w.status = :waiting AND w.match_path > paths.path
            ORDER BY w.match_path LIMIT 1
        )
        FROM paths WHERE paths.path IS NOT NULL
    )"""
WAITED_PATHS = Prepared(
    text(f"WITH RECURSIVE {OPEN_PATHS} SELECT path FROM paths WHERE path IS NOT NULL").bindparams(
        bindparam("waiting", WaitStatus.WAITING, literal_execute=False)
    ),
)


@dataclass
class _Paths:
    paths: set[str]
    # Ingests that used these paths since they were read.
    uses: int = 0


@dataclass
class Names:
    """What one connection remembers (see the module docstring)."""

    # ``PRAGMA data_version`` when this was last known true.
    version: int | None = None
    triggers: dict[str, tuple[AnyRow, ...]] = field(default_factory=dict)
    paths: dict[str, _Paths] = field(default_factory=dict)

    def triggered(self, tx: Tx, names: Sequence[str]) -> list[AnyRow]:
        """The functions the names trigger (rows of ``TRIGGERED``), one statement for those not
        remembered."""
        if tx.functions_written:  # not committed yet: read, never remembered
            return TRIGGERED.run(tx, names=list(names)).all()
        missing = [name for name in names if name not in self.triggers]
        if missing:
            if len(self.triggers) + len(missing) > MAX_NAMES:
                self.triggers.clear()
                missing = list(names)
            read: dict[str, list[AnyRow]] = {name: [] for name in missing}
            for row in TRIGGERED.run(tx, names=missing).all():
                read[row.event_name].append(row)
            for name, rows in read.items():
                self.triggers[name] = tuple(rows)
        return [row for name in names for row in self.triggers[name]]

    def waited_paths(self, tx: Tx, name: str) -> set[str]:
        """The match paths of the open waits on ``name`` (maybe a few more: see the module
        docstring)."""
        known = self.paths.get(name)
        if known is None or known.uses >= REREAD_PATHS_AFTER:
            if name not in self.paths and len(self.paths) >= MAX_NAMES:
                self.paths.clear()
            known = self.paths[name] = _Paths(set(WAITED_PATHS.run(tx, name=name).scalars()))
        known.uses += 1
        return known.paths


def known(tx: Tx) -> Names:
    """What this transaction's SQLite connection remembers, checked against other connections'
    commits (once per transaction). (PostgreSQL ingests on per-process hints instead.)"""
    info = tx.bare_conn.connection.info
    names: Names | None = info.get(_INFO_KEY)
    if names is None:
        names = info[_INFO_KEY] = Names()
    if not tx.names_checked:
        version = tx.raw.execute("PRAGMA data_version").fetchone()[0]
        if version != names.version:
            names.triggers.clear()
            names.paths.clear()
            names.version = version
        tx.names_checked = True
    return names


def forget(info: dict[Any, Any]) -> None:
    """A write transaction on the connection whose ``info`` this is rolled back: what it read may
    have been undone (a wait it ended is open again, and its name's paths were read without it)."""
    info.pop(_INFO_KEY, None)


def _remembered(tx: Tx) -> Names | None:
    if tx.dialect.pipelines:
        return None
    names: Names | None = tx.bare_conn.connection.info.get(_INFO_KEY)
    return names


def wait_added(tx: Tx, name: str, path: str) -> None:
    """A wait on ``name`` by ``path`` was inserted on this transaction's connection."""
    names = _remembered(tx)
    if names is not None and name in names.paths:
        names.paths[name].paths.add(path)


def functions_changed(tx: Tx) -> None:
    """Functions or their triggers were written in this transaction."""
    tx.functions_written = True
    names = _remembered(tx)
    if names is not None:
        names.triggers.clear()
