"""In-process wake-ups for parked long polls, per app.

Only an accelerator: the database is the truth. A poller subscribes *before* it tries to claim, so a
notification that lands between an empty claim and the wait is not lost; after a wake-up it claims
again. ``close()`` wakes everyone for shutdown, and later subscriptions are born woken.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType


class Subscription:
    """One parked poller's interest in an app's work."""

    def __init__(self, hub: WorkSignals, app_id: str) -> None:
        self._hub = hub
        self.app_id = app_id
        self._event = asyncio.Event()

    def wake(self) -> None:
        """Marks work as possibly available."""
        self._event.set()

    @property
    def woken(self) -> bool:
        """Whether a wake-up arrived since the subscription started."""
        return self._event.is_set()

    async def wait(self, timeout_s: float) -> bool:
        """Waits for a wake-up for at most ``timeout_s``; True when woken."""
        if self._event.is_set():
            return True
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await self._event.wait()
        except TimeoutError:
            return False
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


class WorkSignals:
    """Wakes the pollers of an app when work for it may exist. Event-loop thread only."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the server is shutting down."""
        return self._closed

    def subscribe(self, app_id: str) -> Subscription:
        """A new subscription; use it as a context manager so it is always removed."""
        sub = Subscription(self, app_id)
        if self._closed:
            sub.wake()
        self._subs.setdefault(app_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Removes a subscription (idempotent)."""
        subs = self._subs.get(sub.app_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.app_id]

    def notify(self, app_ids: Iterable[str]) -> None:
        """Wakes every poller of these apps."""
        for app_id in app_ids:
            for sub in self._subs.get(app_id, ()):
                sub.wake()

    def waiting(self, app_id: str) -> int:
        """How many pollers are parked for an app (for tests and metrics)."""
        return len(self._subs.get(app_id, ()))

    def close(self) -> None:
        """Wakes everyone; parked polls end empty and new ones do not park."""
        self._closed = True
        for subs in self._subs.values():
            for sub in subs:
                sub.wake()
