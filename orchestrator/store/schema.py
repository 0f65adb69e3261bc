"""The portable schema (SQLAlchemy Core), identical on SQLite and PostgreSQL but for one index.

Conventions, and why:
- Instants are BIGINT Unix milliseconds (``*_ms``): the unit of the wire contract, one portable type
  (SQLite has no timestamp type), trivially indexable, and free of timezone ambiguity.
- JSON payloads are TEXT: they are stored and returned byte for byte as the canonical text the API
  produced, and never queried inside the database (wait matching uses a precomputed column).
- Statuses are short strings (see ``orchestrator.engine.model``), readable in a SQL shell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from orchestrator.engine.model import WaitStatus

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite auto-increments only an INTEGER PRIMARY KEY (which is 64-bit there anyway).
Seq = BigInteger().with_variant(Integer(), "sqlite")

NAME = 256
ID = 128
UUID = 36

# The open waits, as literal SQL: the predicate of PostgreSQL's partial index of their deadlines,
# which a query can use only where its own text carries it (the timers).
WAIT_OPEN = f"status = '{WaitStatus.WAITING}'"
# Indexes that exist on one database only (by name: the dialect), created with ``ddl_if`` and
# compared only there (``include_object``); filled by ``_only_on``.
DIALECT_INDEXES: dict[str, str] = {}


def _only_on(dialect: str, index: Index) -> Index:
    """``index``, made and compared on ``dialect``'s databases only."""
    DIALECT_INDEXES[str(index.name)] = dialect
    return index.ddl_if(dialect=dialect)


events = Table(
    "events",
    metadata,
    # Ingestion order. Waits use it as a watermark: "events received after this run's last step".
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", String(ID), nullable=False, unique=True),
    Column("name", String(NAME), nullable=False),
    Column("data", Text, nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Index(None, "name", "seq"),
)

functions = Table(
    "functions",
    metadata,
    Column("app_id", String(NAME), nullable=False),
    Column("function_id", String(ID), nullable=False),
    Column("retries", Integer, nullable=False),
    Column("registered_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("app_id", "function_id"),
)

function_triggers = Table(
    "function_triggers",
    metadata,
    Column("app_id", String(NAME), nullable=False),
    Column("function_id", String(ID), nullable=False),
    Column("event_name", String(NAME), nullable=False),
    PrimaryKeyConstraint("app_id", "function_id", "event_name"),
    ForeignKeyConstraint(
        ["app_id", "function_id"], ["functions.app_id", "functions.function_id"], ondelete="CASCADE"
    ),
    Index(None, "event_name"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(UUID), primary_key=True),
    Column("app_id", String(NAME), nullable=False),
    Column("function_id", String(ID), nullable=False),
    Column("event_seq", BigInteger, nullable=False),
    Column("event_id", String(ID), nullable=False),
    Column("status", String(16), nullable=False),  # public: running/completed/failed/cancelled
    Column("state", String(16), nullable=False),  # scheduling: ready/leased/parked/ended
    Column("available_at_ms", BigInteger, nullable=False),  # when a ready run may be claimed
    Column("lease_id", String(UUID)),
    Column("lease_expires_ms", BigInteger),
    Column("worker_id", String(NAME)),
    # The lease whose completion last let the run go (STOP): a repeat of that completion gets STOP
    # again instead of a stale-lease error, so a retried RPC sees the same answer.
    Column("last_stop_lease_id", String(UUID)),
    Column("retries", Integer, nullable=False),  # snapshot of the function's setting at creation
    Column("body_attempts", Integer, nullable=False),  # failures outside steps so far
    # Leases that expired since the run's last step outcome: attempts lost with their workers. The
    # next outcome charges them to the step that was in flight and resets this to 0.
    Column("lost_attempts", Integer, nullable=False, server_default="0"),
    # Newest event seq when the run's last step was committed (the trigger's seq at creation):
    # a new wait first looks at matching events after it, so none is missed.
    Column("event_mark", BigInteger, nullable=False),
    Column("step_count", Integer, nullable=False),  # the next step's position
    Column("output", Text),
    Column("error_name", Text),
    Column("error_message", Text),
    Column("error_stack", Text),
    Column("created_ms", BigInteger, nullable=False),
    Column("ended_ms", BigInteger),
    ForeignKeyConstraint(["event_seq"], ["events.seq"]),
    Index(None, "app_id", "state", "available_at_ms"),  # claims
    # SQLite, claims of some of an app's functions (a worker serving a subset): one range per
    # function, so that another function's backlog of ready runs is not read at every claim
    # (``leases._lease_of_functions``; PostgreSQL's planner takes the function index there).
    _only_on("sqlite", Index("ix_runs_app_id_function_id_state_available_at_ms",
                             "app_id", "function_id", "state", "available_at_ms")),
    Index(None, "state", "available_at_ms"),  # timers: next ready time
    Index(None, "state", "lease_expires_ms"),  # timers: lease expiry
    Index(None, "created_ms"),  # ListRuns, newest first
    Index(None, "function_id", "created_ms"),
    Index(None, "event_id"),
)

steps = Table(
    "steps",
    metadata,
    Column("run_id", String(UUID), nullable=False),
    Column("step_id", String(NAME), nullable=False),
    Column("position", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("failed_attempts", Integer, nullable=False),
    Column("output", Text),
    Column("error_name", Text),
    Column("error_message", Text),
    Column("error_stack", Text),
    Column("started_ms", BigInteger, nullable=False),
    Column("ended_ms", BigInteger),
    Column("wake_ms", BigInteger),  # sleep: end; wait: timeout
    Column("wait_event", String(NAME)),
    Column("wait_match", Text),
    Column("resumed_by_event_id", String(ID)),
    Column("recorded_lease_id", String(UUID)),  # the lease whose completion last wrote this row
    PrimaryKeyConstraint("run_id", "step_id"),
    UniqueConstraint("run_id", "position"),
    ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
)

step_attempts = Table(
    "step_attempts",
    metadata,
    Column("run_id", String(UUID), nullable=False),
    Column("step_id", String(NAME), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_ms", BigInteger, nullable=False),
    Column("ended_ms", BigInteger),
    Column("failed", Boolean, nullable=False),
    Column("error_name", Text),
    Column("error_message", Text),
    Column("error_stack", Text),
    Column("lease_id", String(UUID)),
    PrimaryKeyConstraint("run_id", "step_id", "attempt"),
    ForeignKeyConstraint(["run_id", "step_id"], ["steps.run_id", "steps.step_id"], ondelete="CASCADE"),
)

waits = Table(
    "waits",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("run_id", String(UUID), nullable=False),
    Column("step_id", String(NAME), nullable=False),
    Column("event_name", String(NAME), nullable=False),
    Column("match_path", String(NAME), nullable=False),  # "" = any event of that name
    # Canonical JSON of the trigger's value at match_path ("" for no path; NULL: the trigger has no
    # value there, so nothing matches). Compared in full; indexed through match_hash because a
    # value can be longer than a B-tree entry may be.
    Column("match_value", Text),
    Column("match_hash", String(64)),
    Column("expires_ms", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # waiting/matched/timed_out/cancelled
    Column("resolved_event_id", String(ID)),
    Column("resolved_ms", BigInteger),
    ForeignKeyConstraint(["run_id", "step_id"], ["steps.run_id", "steps.step_id"], ondelete="CASCADE"),
    # Incoming event -> open waits: first DISTINCT match_path for the name, then equality per path.
    Index(None, "event_name", "status", "match_path", "match_hash"),
    # Timers: wait timeouts. On PostgreSQL a partial index of the open waits' deadlines (migration
    # 0003), which no lookup by event name can take: a plain (status, expires_ms) index tied with
    # the name index on a small table, and a plan cached then read every open wait of a name per
    # event once there were 100,000. On SQLite (which never caches a plan past a statement's
    # preparation) the plain index: with a partial one, SQLite prepares again, at every execution,
    # each statement comparing status with a bound value (12 -> 70 us for a lookup, measured).
    _only_on("sqlite", Index("ix_waits_status_expires_ms", "status", "expires_ms")),
    _only_on("postgresql", Index("ix_waits_open_expires_ms", "expires_ms", postgresql_where=text(WAIT_OPEN))),
    Index(None, "run_id", "status"),  # cancellation
)


def include_object(dialect_name: str) -> Callable[[Any, str | None, str, bool, Any], bool]:
    """Alembic's ``include_object`` for a database of ``dialect_name``: an index made for another
    database (``DIALECT_INDEXES``) is not part of its schema."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (type_ == "index" and DIALECT_INDEXES.get(name or "", dialect_name) != dialect_name)

    return include
