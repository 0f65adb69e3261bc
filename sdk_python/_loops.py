"""The event loop a worker (`Worker.run`) or the orchestrator (`serve --loop`) runs on.

uvloop (asyncio's API over libuv) where it is installed: it is a dependency everywhere but Windows.
grpc.aio hands every completion to the loop through a socket, so each RPC is a few turns of the loop,
and uvloop's turns cost less (measured on 2 cores, paired, with the orchestrator: a run's first step
and a resume 0.05-0.3 ms sooner, SQLite's throughput +13%).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

EVENT_LOOPS = ("auto", "uvloop", "asyncio")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(kind: str) -> LoopFactory:
    """The loop constructor for "auto" (uvloop when it imports, else asyncio's), "uvloop" or
    "asyncio"; `ValueError` for anything else, or for "uvloop" where it cannot be imported."""
    if kind not in EVENT_LOOPS:
        raise ValueError(f"event_loop: must be one of {', '.join(EVENT_LOOPS)}; got {kind!r}")
    if kind == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        if kind == "auto":
            return asyncio.new_event_loop
        raise ValueError(
            f"event_loop: uvloop cannot be imported here ({exc}); install it or choose asyncio"
        ) from None
    new_loop: LoopFactory = uvloop.new_event_loop
    return new_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """ "uvloop" or "asyncio"."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
