"""Looking at a real store from the side, and making it fail for real.

- ``committed_event_ids(observer)`` / ``run_row(observer, run_id)``: what another connection sees
  (only what is committed), through an engine of the test's own (the ``observer`` fixture).
- ``commit_breaker(store, admin)``: a store call that makes the commit of the group it runs in fail:
  on SQLite a foreign key violation whose check is deferred to COMMIT; on PostgreSQL the group's
  connection is terminated by another one after the call, so COMMIT finds it gone.
- ``cap_database_size(store)``: SQLite's own size limit on the store's writer connection, so that a
  large write fails with "database or disk is full" (SQLITE_FULL), as on a full disk.
- ``terminate_backend(admin, pid)``: ends a PostgreSQL session from another one (``backend_pid(tx)``
  names a store transaction's).
- ``seqscan_setting(store)``: PostgreSQL's ``enable_seqscan`` in the store's transaction (the open
  group's, inside ``grouped()``): "off" once a statement set it to plan by the indexes alone.
- ``terminate_own_connection(store, pids)``: a store call whose PostgreSQL connection is terminated
  under it (the server ends the session, as an administrator or a crashed backend would).

These reach the store's transaction through ``SqlStore._run`` (the one way a call joins a group
commit, as every store method does) to run SQL of their own: no database is mocked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, select, text

from orchestrator.store import schema as t
from orchestrator.store.prepared import Prepared
from orchestrator.store.sql import SqlStore
from tests.support.waiting import wait_until

_BACKEND_PID = Prepared(text("SELECT pg_backend_pid()"))
_TERMINATE_SELF = Prepared(text("SELECT pg_terminate_backend(pg_backend_pid())"))


def committed_event_ids(observer: Engine) -> set[str]:
    """The ids of the events another connection sees."""
    with observer.connect() as conn:
        return set(conn.execute(select(t.events.c.id)).scalars())


def run_row(observer: Engine, run_id: str) -> Any:
    """A run's row (state, lease_id, worker_id, ...) as another connection sees it."""
    with observer.connect() as conn:
        return conn.execute(select(t.runs).where(t.runs.c.id == run_id)).one()


def commit_breaker(store: SqlStore, admin: Engine) -> Callable[[], None]:
    """A store call that runs fine itself but makes the commit of its group fail. On PostgreSQL it
    must be the group's last call (a later call would fail on the dead connection instead)."""
    if store.inline:

        def orphan_attempt_checked_at_commit() -> None:
            # SQLite checks a deferred foreign key at COMMIT, and only there: an attempt row of a
            # step that does not exist makes COMMIT itself fail (the savepoint of this call does not).
            def work(tx: Any) -> None:
                tx.raw.execute("PRAGMA defer_foreign_keys = ON")
                tx.raw.execute(
                    "INSERT INTO step_attempts (run_id, step_id, attempt, started_ms, failed)"
                    " VALUES ('no-such-run', 'no-such-step', 0, 0, 0)"
                )

            store._run(work)

        return orphan_attempt_checked_at_commit

    def connection_gone_before_commit() -> None:
        terminate_backend(admin, store._run(backend_pid))

    return connection_gone_before_commit


def backend_pid(tx: Any) -> int:
    """The pid of the PostgreSQL backend serving a store transaction."""
    return int(_BACKEND_PID.run(tx).scalar())


def seqscan_setting(store: SqlStore) -> str:
    """``enable_seqscan`` as the store's transaction sees it (see the module's docstring)."""
    return str(store._run(lambda tx: tx.conn.exec_driver_sql("SHOW enable_seqscan").scalar()))


def terminate_backend(admin: Engine, pid: int) -> None:
    """Has the PostgreSQL server end the session ``pid`` (from another connection) and waits until
    it is gone: that session's next statement, or its COMMIT, finds its connection lost."""
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        wait_until(
            lambda: (
                not conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                ).scalar()
            ),
            timeout=20,
            message=f"backend {pid} to exit",
        )


def advisory_lock_waiters(engine: Engine) -> int:
    """How many sessions of ``engine``'s PostgreSQL database wait for an advisory lock."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            ).scalar_one()
        )


def cap_database_size(store: SqlStore, *, slack_pages: int = 16) -> None:
    """Lets the SQLite file grow by only ``slack_pages`` pages on the store's writer connection
    (the limit lasts as long as that connection): small writes fit, a large one fails."""

    def work(tx: Any) -> None:
        pages = tx.raw.execute("PRAGMA page_count").fetchone()[0]
        tx.raw.execute(f"PRAGMA max_page_count = {pages + slack_pages}")

    store._run(work)


def terminate_own_connection(store: SqlStore, pids: list[int] | None = None) -> None:
    """A PostgreSQL store call whose connection the server terminates while it runs, under a
    statement run as the store runs its own (``store.prepared``). Each time it runs (the store may
    run it again), the pid of its backend is added to ``pids``."""

    def work(tx: Any) -> None:
        if pids is not None:
            pids.append(backend_pid(tx))
        _TERMINATE_SELF.run(tx).all()

    store._run(work)
