"""The event loop the orchestrator process runs on: ``Settings.event_loop`` ("auto", "uvloop" or
"asyncio"), chosen as a worker's is (``sdk_python._loops``, which says why uvloop by default).
``--loop asyncio`` (``ORCHESTRATOR_EVENT_LOOP=asyncio``) is the way back to asyncio's own loop."""

from __future__ import annotations

from orchestrator import errors
from sdk_python._loops import LoopFactory, loop_factory
from sdk_python._loops import loop_name as name_of

__all__ = ["factory", "name_of"]


def factory(kind: str) -> LoopFactory:
    """The loop constructor for ``kind``; a ``ConfigError`` naming the problem otherwise."""
    try:
        return loop_factory(kind)
    except ValueError as exc:
        raise errors.ConfigError(str(exc)) from None
