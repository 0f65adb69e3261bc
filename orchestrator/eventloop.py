"""The event loop the orchestrator process runs on.

By default uvloop (asyncio's API over libuv) where it is installed: it is a dependency everywhere but
Windows. Every RPC is a few turns of the loop (grpc.aio hands each completion to it through a socket)
and SQLite's group commits run on it, so the loop's own cost per turn is on every hot path: measured
on 2 cores, paired, uvloop against asyncio's loop gave SQLite +13% steps/s and each latency shape
0.05-0.2 ms sooner, on both stores. ``--loop asyncio`` (``ORCHESTRATOR_EVENT_LOOP=asyncio``) is the
way back if a deployment needs asyncio's own loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from orchestrator import errors
from orchestrator.config import EVENT_LOOPS

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def factory(kind: str) -> LoopFactory:
    """The loop constructor for a ``Settings.event_loop`` value ("auto", "uvloop" or "asyncio")."""
    if kind not in EVENT_LOOPS:
        raise errors.ConfigError(f"event_loop: must be one of {', '.join(EVENT_LOOPS)}, got {kind!r}")
    if kind == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        if kind == "auto":
            return asyncio.new_event_loop
        raise errors.ConfigError(
            f"event_loop: uvloop cannot be imported here ({exc}); install it or choose asyncio"
        ) from None
    new_loop: LoopFactory = uvloop.new_event_loop
    return new_loop


def name_of(loop: asyncio.AbstractEventLoop) -> str:
    """"uvloop" or "asyncio", for the startup line."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
