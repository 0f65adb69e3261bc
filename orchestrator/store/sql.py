"""``SqlStore``: the ``Store`` interface on SQLAlchemy Core, portable across SQLite and PostgreSQL.

Each public method is one transaction (``_run``); the work inside is done by helpers that take the
transaction (``store.txn.Tx``) and never commit, grouped by responsibility:

- ``store.ingest``: events, triggered runs, resuming waits; function registration
- ``store.leases``: claims, lease extension and release
- ``store.completions``: outcomes reported by workers
- ``store.runs``: inspection and cancellation
- ``store.timers``: due timers and the nearest deadline

Decisions (retries, transitions, matching) come from ``orchestrator.engine``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from orchestrator import errors
from orchestrator.engine.model import (
    ClaimResult,
    Completion,
    CompletionResult,
    FunctionSpec,
    IngestResult,
    NewEvent,
    RunFilter,
    RunView,
    TimerResult,
    Wakeups,
)
from orchestrator.store import completions, ingest, leases, runs, timers
from orchestrator.store import schema as t
from orchestrator.store.dialect import Dialect
from orchestrator.store.txn import Tx

T = TypeVar("T")

# A transaction that lost a race (deadlock, serialization failure) is simply run again.
MAX_TX_ATTEMPTS: Final = 3


class SqlStore:
    """The orchestrator's durable state in a SQL database (see ``orchestrator.store.base.Store``)."""

    def __init__(self, url: str, dialect: Dialect, *, rng: random.Random | None = None) -> None:
        self._dialect = dialect
        self._engine = dialect.create_engine(url)
        self._rng = rng or random.Random()
        self.url = url

    @property
    def max_concurrency(self) -> int:
        return self._dialect.max_concurrency

    @property
    def display_url(self) -> str:
        """The database URL without its password, for logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    def _unavailable(self, exc: DBAPIError) -> errors.StoreUnavailable | None:
        if self._dialect.is_unavailable(exc):
            return errors.StoreUnavailable(f"database unavailable: {exc.orig}")
        return None

    def _run(self, work: Callable[[Tx], T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._engine.begin() as conn:
                    tx = Tx(conn, self._dialect, self._rng)
                    result = work(tx)
            except DBAPIError as exc:
                if self._dialect.is_retryable(exc) and attempt < MAX_TX_ATTEMPTS:
                    continue
                unavailable = self._unavailable(exc)
                if unavailable is not None:
                    raise unavailable from exc
                raise
            tx.flush_logs()
            return result

    def create_schema(self) -> None:
        try:
            t.metadata.create_all(self._engine)
        except DBAPIError as exc:
            unavailable = self._unavailable(exc)
            if unavailable is not None:
                raise unavailable from exc
            raise

    def close(self) -> None:
        self._engine.dispose()

    def ingest_events(self, events: Sequence[NewEvent], *, now_ms: int) -> IngestResult:
        return self._run(lambda tx: ingest.ingest(tx, events, now_ms))

    def register_functions(self, app_id: str, functions: Sequence[FunctionSpec], *, now_ms: int) -> None:
        self._run(lambda tx: ingest.register(tx, app_id, functions, now_ms))

    def claim_work(
        self,
        *,
        app_id: str,
        function_ids: Sequence[str],
        worker_id: str,
        max_items: int,
        now_ms: int,
        lease_ms: int,
    ) -> ClaimResult:
        return self._run(
            lambda tx: leases.claim(tx, app_id, function_ids, worker_id, max_items, now_ms, lease_ms)
        )

    def complete_step(self, completion: Completion, *, now_ms: int, lease_ms: int) -> CompletionResult:
        return self._run(lambda tx: completions.complete(tx, completion, now_ms, lease_ms))

    def extend_lease(self, run_id: str, lease_id: str, *, now_ms: int, lease_ms: int) -> int:
        return self._run(lambda tx: leases.extend(tx, run_id, lease_id, now_ms, lease_ms))

    def release_work(self, run_id: str, lease_id: str, *, now_ms: int) -> Wakeups:
        return self._run(lambda tx: leases.release(tx, run_id, lease_id, now_ms))

    def get_run(self, run_id: str) -> RunView:
        return self._run(lambda tx: runs.get_run(tx, run_id))

    def list_runs(self, run_filter: RunFilter) -> list[RunView]:
        return self._run(lambda tx: runs.list_runs(tx, run_filter))

    def cancel_run(self, run_id: str, *, now_ms: int) -> RunView:
        return self._run(lambda tx: runs.cancel(tx, run_id, now_ms))

    def fire_due_timers(self, *, now_ms: int, since_ms: int) -> TimerResult:
        return self._run(lambda tx: timers.fire(tx, now_ms, since_ms))

    def next_deadline_ms(self, *, now_ms: int) -> int | None:
        return self._run(lambda tx: timers.next_deadline(tx, now_ms))
