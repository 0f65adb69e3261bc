"""Time and identifiers.

Instants are integers of milliseconds since the Unix epoch, UTC, everywhere inside the orchestrator:
that is the unit of the wire contract and of the database columns, so no conversion can drift or
lose a timezone on the way.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta


def now_ms() -> int:
    """The current instant, Unix ms (UTC). From the integer clock: it is read several times per RPC,
    and building a datetime each time cost 3% of the orchestrator's CPU on the step path."""
    return time.time_ns() // 1_000_000


def to_ms(instant: datetime) -> int:
    """A timezone-aware datetime as Unix ms."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: instants must be timezone-aware")
    return int(instant.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """Unix ms as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def duration_ms(*, seconds: float = 0.0, delta: timedelta | None = None) -> int:
    """A duration in whole ms."""
    total = seconds + (delta.total_seconds() if delta is not None else 0.0)
    return int(round(total * 1000))


class _Uuid7:
    """Time-ordered UUIDs (RFC 9562 version 7) so that ids sort by creation and index well.

    Within one millisecond the 12-bit ``rand_a`` field counts up, so ids made by this process are
    strictly increasing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def new(self) -> str:
        with self._lock:
            ms = now_ms()
            if ms <= self._last_ms:
                ms = self._last_ms
                self._counter += 1
                if self._counter > 0xFFF:
                    ms += 1
                    self._counter = 0
            else:
                self._counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
            self._last_ms = ms
            counter = self._counter
        rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
        return str(uuid.UUID(int=value))


_uuid7 = _Uuid7()


def new_id() -> str:
    """A new time-ordered unique id (runs, server-assigned event ids)."""
    return _uuid7.new()


def new_lease_id() -> str:
    """A new unguessable lease token."""
    return str(uuid.uuid4())
