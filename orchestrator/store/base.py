"""The ``Store`` interface: every method is one transaction at the level of the domain.

Callers pass ``now_ms`` explicitly so that every decision inside a transaction uses one instant, and
so tests can drive time. Methods raise ``orchestrator.errors`` types: ``NotFound``, ``StaleLease``,
``RunEnded``, ``StepConflict``, ``LimitExceeded``, ``StoreUnavailable``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from orchestrator.engine import model


class GroupAborted(Exception):
    """A call failed inside a group commit of a store that runs calls without savepoints: the whole
    group rolls back, and its calls must be run again one by one (see ``Store.grouped``)."""


class Store(Protocol):
    """Durable state of events, functions, runs, steps, waits and timers."""

    @property
    def max_concurrency(self) -> int:
        """How many threads may call the store at once (1 for SQLite: it has a single writer)."""
        ...

    @property
    def inline(self) -> bool:
        """True when the store's calls are short local transactions that callers run on their own
        thread, one at a time (SQLite: a thread hop costs more than the transaction); False when they
        wait on a network (PostgreSQL): its reads run in a pool of ``max_concurrency`` threads, and
        its group commits there too unless ``cooperative``."""
        ...

    @property
    def cooperative(self) -> bool:
        """True when, not ``inline``, a group commit can run on the event loop in a greenlet
        (``sqlalchemy.util.concurrency.greenlet_spawn``) and await the database there instead of
        blocking a thread (PostgreSQL, ``postgres.LoopConnection``)."""
        ...

    @property
    def inline_reads(self) -> bool:
        """With ``inline``: whether reads (``get_run``, ``list_runs``) must run inline too (one
        shared in-memory connection); otherwise they may run on another thread, concurrently."""
        ...

    def grouped(self) -> AbstractContextManager[None]:
        """Group commit: the calls made inside, in this context (a thread, or a group's greenlet on
        the loop), share one transaction, committed at the exit. When the commit fails it raises,
        and none of the calls took effect. Inline stores run each call in a savepoint (a call that
        raises leaves nothing behind); others raise ``GroupAborted`` from a failing call and roll
        the whole group back."""
        ...

    def next_call_is_last(self, last: bool) -> None:
        """Inside ``grouped()``, before each call: whether it is the group's last. A call whose
        final statement is a read that nothing follows (a claim) may then send the COMMIT with it,
        one round trip less; such a call must report no ready work (no handoff may follow it)."""
        ...

    @property
    def listens(self) -> bool:
        """Whether ``listen`` hears other replicas' announcements of ready work (PostgreSQL)."""
        ...

    def listen(self, on_ready: Callable[[str | None], None], stop: threading.Event) -> None:
        """Blocks until ``stop``, calling ``on_ready(app_id)`` for every announcement by any replica
        and ``on_ready(None)`` once (re)connected (any app may have work: rescan). Raises
        ``StoreUnavailable`` when the connection fails; call again to reconnect."""
        ...

    def create_schema(self) -> None:
        """Applies pending schema migrations (under a lock, so replicas may start together)."""
        ...

    def check_schema(self) -> None:
        """Raises ``ConfigError`` unless the database is at this code's schema revision."""
        ...

    def ingest_events(self, events: Sequence[model.NewEvent], *, now_ms: int) -> model.IngestResult:
        """Stores new events (an already-seen id is acknowledged and starts nothing), starts a run of
        every function with a trigger on each new event's name, and resolves the waits they match."""
        ...

    def register_functions(
        self, app_id: str, functions: Sequence[model.FunctionSpec], *, now_ms: int
    ) -> None:
        """Creates or updates the app's functions and replaces their triggers."""
        ...

    def claim_work(
        self,
        *,
        app_id: str,
        function_ids: Sequence[str],
        worker_id: str,
        max_items: int,
        now_ms: int,
        lease_ms: int,
    ) -> model.ClaimResult:
        """Leases up to ``max_items`` ready runs of the app (of ``function_ids`` when not empty),
        completing sleeps that have elapsed, and returns them with their events and memoized steps."""
        ...

    def complete_step(
        self, completion: model.Completion, *, now_ms: int, lease_ms: int
    ) -> model.CompletionResult:
        """Records one outcome reported under the run's current lease and decides what comes next."""
        ...

    def extend_lease(self, run_id: str, lease_id: str, *, now_ms: int, lease_ms: int) -> int:
        """Extends the current lease to ``now_ms + lease_ms``; returns the new expiry."""
        ...

    def release_work(self, run_id: str, lease_id: str, *, now_ms: int) -> model.Wakeups:
        """Hands a leased run back: it is ready at once."""
        ...

    def get_run(self, run_id: str) -> model.RunView:
        """One run with its steps and their attempt history."""
        ...

    def list_runs(self, run_filter: model.RunFilter) -> list[model.RunView]:
        """Runs, newest first."""
        ...

    def cancel_run(self, run_id: str, *, now_ms: int) -> model.RunView:
        """Cancels a run that has not ended (its lease and open waits end with it)."""
        ...

    def fire_due_timers(self, *, now_ms: int, since_ms: int) -> model.TimerResult:
        """Times out due waits, expires due leases, and reports the apps whose runs became ready in
        ``(since_ms, now_ms]`` (retry backoffs and sleeps that elapsed)."""
        ...

    def next_deadline_ms(self, *, now_ms: int) -> int | None:
        """The nearest future timer (a ready time, a wait timeout or a lease expiry), or None."""
        ...

    def queue_depth(self, *, now_ms: int) -> int:
        """How many runs are ready to be handed out now."""
        ...

    def close(self) -> None:
        """Releases the database connections."""
        ...
