"""Wake-ups for parked long polls, per app: in process (``WorkSignals``) and across replicas
(``ReplicaListener``, which relays the database's announcements, LISTEN/NOTIFY on PostgreSQL).

Only an accelerator: the database is the truth. A poller subscribes *before* it tries to claim, so a
notification that lands between an empty claim and the wait is not lost; after a wake-up it claims
again. ``close()`` wakes everyone for shutdown, and later subscriptions are born woken.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

from orchestrator import errors, logs

logger = logging.getLogger("orchestrator.wakeups")

Listen = Callable[[Callable[[str | None], None], threading.Event], None]


@dataclass
class Handoff:
    """A claim a parked poller left (see ``Subscription``): the store call, the poller's wake-up
    future that receives its result, what to do with a result nobody is waiting for any more (the
    poller timed out or went away first: its runs are handed back), and who observes the committed
    result (traces)."""

    claim: Callable[[], Any]
    future: asyncio.Future[Any]
    abandoned: Callable[[Any], None]
    observe: Callable[[Any], None] | None = None


class Subscription:
    """One parked poller's interest in an app's work.

    It wakes once, through one future: with None (work may be ready: claim it) or, when a group
    commit ran the poller's ``handoff`` (``WorkSignals.take_handoffs``), with that claim's result:
    the poller wakes with its work already leased, and first in line, one transaction and one
    wake-up sooner than claiming for itself."""

    def __init__(self, hub: WorkSignals, app_id: str) -> None:
        self._hub = hub
        self.app_id = app_id
        self._woken: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.handoff: Handoff | None = None
        # Set once a group took the handoff: its result (or failure) is the wake-up. A plain wake
        # meanwhile would only make that result arrive to nobody and be handed back.
        self.taken = False

    def wake(self) -> None:
        """Marks work as possibly available."""
        if not self._woken.done() and not self.taken:
            self._woken.set_result(None)

    @property
    def woken(self) -> bool:
        """Whether a wake-up (or a handed claim) arrived since the subscription started."""
        return self._woken.done()

    def handed(self) -> Any:
        """The result of the claim a group commit ran for this poller, or None."""
        woken = self._woken
        if not woken.done() or woken.cancelled() or woken.exception() is not None:
            return None
        return woken.result()

    async def wait(self, timeout_s: float) -> bool:
        """Waits for a wake-up for at most ``timeout_s``; True when woken (also by a handed claim
        that failed with its group's commit: a plain wake-up, the poller claims again itself)."""
        if self._woken.done():
            return True
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                # Awaited directly: a poller handed its claim resumes in the loop turn the group
                # settles, before the group's other callers (``asyncio.wait`` or ``shield`` would
                # each put a turn in between). Cancelling the poller cancels the future, so a group
                # that runs after that finds nobody to hand a claim to.
                await self._woken
        except TimeoutError:
            return False
        except Exception:  # a handed claim that failed with its group's commit: a plain wake-up
            return True
        return True

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._hub.unsubscribe(self)

    def leave_handoff(
        self,
        claim: Callable[[], Any],
        abandoned: Callable[[Any], None],
        observe: Callable[[Any], None] | None = None,
    ) -> None:
        """Lets a group commit run ``claim`` for this poller; its result wakes the poller."""
        self.handoff = Handoff(claim, self._woken, abandoned, observe)


class WorkSignals:
    """Wakes the pollers of an app when work for it may exist. Event-loop thread only, but for
    ``take_handoffs``, which a group commit calls from a store thread (PostgreSQL): the lock keeps
    the loop from adding or removing pollers while a group looks through them."""

    def __init__(self) -> None:
        # Per app, its parked pollers in the order they parked (a dict used as an ordered set).
        self._subs: dict[str, dict[Subscription, None]] = {}
        self._closed = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        """True once the server is shutting down."""
        return self._closed

    def subscribe(self, app_id: str) -> Subscription:
        """A new subscription; use it as a context manager so it is always removed."""
        sub = Subscription(self, app_id)
        if self._closed:
            sub.wake()
        with self._lock:
            self._subs.setdefault(app_id, {})[sub] = None
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Removes a subscription (idempotent)."""
        with self._lock:
            subs = self._subs.get(sub.app_id)
            if subs is not None:
                subs.pop(sub, None)
                if not subs:
                    del self._subs[sub.app_id]

    def take_handoffs(self, app_id: str) -> list[Handoff]:
        """The handoffs left by the app's parked pollers, oldest first; each is given out once.
        Any thread (a threaded store's group runs in its own)."""
        taken = []
        with self._lock:
            for sub in self._subs.get(app_id, ()):
                if sub.handoff is not None and not sub.woken:
                    taken.append(sub.handoff)
                    sub.handoff = None
                    sub.taken = True
        return taken

    def notify(self, app_ids: Iterable[str]) -> None:
        """Wakes every poller of these apps."""
        for app_id in app_ids:
            for sub in self._subs.get(app_id, ()):
                sub.wake()

    def notify_all(self) -> None:
        """Wakes every parked poller (after a reconnect: announcements may have been missed)."""
        self.notify(list(self._subs))

    def waiting(self, app_id: str) -> int:
        """How many pollers are parked for an app (for tests and metrics)."""
        return len(self._subs.get(app_id, ()))

    def close(self) -> None:
        """Wakes everyone; parked polls end empty and new ones do not park."""
        self._closed = True
        for subs in self._subs.values():
            for sub in subs:
                sub.wake()


class ReplicaListener:
    """Relays other replicas' "work is ready for app X" announcements to this process's pollers.

    One named thread runs the store's blocking ``listen``; when the connection fails it waits
    ``retry_delay`` and listens again, and every (re)connection wakes all pollers and calls
    ``on_rescan`` (what was announced while deaf is found by claiming again). Missing an
    announcement costs latency only: parked polls end after their poll wait, and the timer task
    scans at least every ``timer_scan_seconds``.
    """

    def __init__(
        self,
        listen: Listen,
        signals: WorkSignals,
        loop: asyncio.AbstractEventLoop,
        *,
        on_rescan: Callable[[], None],
        retry_delay: timedelta = timedelta(seconds=1),
    ) -> None:
        self._listen = listen
        self._signals = signals
        self._loop = loop
        self._on_rescan = on_rescan
        self._retry_delay_s = retry_delay.total_seconds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orchestrator-listener", daemon=True)
        self.connections = 0

    def start(self) -> None:
        """Starts listening in the background."""
        self._thread.start()

    def stop(self, timeout: timedelta = timedelta(seconds=5)) -> None:
        """Stops the thread (blocking: it notices within the listen poll interval)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout.total_seconds())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen(self._deliver, self._stop)
            except errors.StoreUnavailable as exc:
                logs.log_at(logger, logging.WARNING, "listener.disconnected", error=exc.message)
            except Exception:
                logger.exception("listener failed")
            self._stop.wait(self._retry_delay_s)

    def _deliver(self, app_id: str | None) -> None:
        if app_id is None:
            self.connections += 1
        try:
            self._loop.call_soon_threadsafe(self._wake, app_id)
        except RuntimeError:  # the loop closed during shutdown
            self._stop.set()

    def _wake(self, app_id: str | None) -> None:
        if app_id is None:
            logs.log(logger, "listener.listening", connections=self.connections)
            self._signals.notify_all()
            self._on_rescan()
        else:
            self._signals.notify([app_id])
