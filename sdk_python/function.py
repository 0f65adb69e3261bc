"""Function declarations and the context a function receives.

`@client.create_function(...)` turns an `async def f(ctx)` or a `def f(ctx)` into a `Function`: the handler
plus what the orchestrator needs to know (id, triggers, retries). At run time the handler receives a
`Context` (async handlers, `ctx.step` is a `Step`) or a `ContextSync` (sync handlers, `ctx.step` is a
`StepSync` whose methods block).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdk_python.records import Event
from sdk_python.step import Step, StepSync

__all__ = ["Context", "ContextSync", "Function", "TriggerEvent"]

DEFAULT_RETRIES = 4
MAX_RETRIES = 100


@dataclass(frozen=True)
class TriggerEvent:
    """Starts a run of the function for every event with this name."""

    event: str


@dataclass(frozen=True)
class Context:
    """What an `async def` function receives: the triggering event, the run, the attempt and the steps.

    `attempt` is zero-based: the retry count of the step being retried (or of the function body after
    a failure outside steps). `logger` prefixes every line with the run id.
    """

    event: Event
    run_id: str
    attempt: int
    function_id: str
    step: Step
    logger: logging.LoggerAdapter[logging.Logger] = field(repr=False)


@dataclass(frozen=True)
class ContextSync:
    """What a plain `def` function receives: as `Context`, with a blocking `StepSync` as `step`."""

    event: Event
    run_id: str
    attempt: int
    function_id: str
    step: StepSync
    logger: logging.LoggerAdapter[logging.Logger] = field(repr=False)


AsyncHandler = Callable[[Context], Awaitable[Any]]
SyncHandler = Callable[[ContextSync], Any]


@dataclass(frozen=True)
class Function:
    """A declared function: its id within the app, its triggers, its retries and its handler."""

    id: str
    triggers: tuple[TriggerEvent, ...]
    retries: int
    handler: Callable[..., Any] = field(repr=False)
    is_async: bool

    @classmethod
    def declare(
        cls,
        handler: AsyncHandler | SyncHandler,
        *,
        fn_id: str,
        trigger: TriggerEvent | Sequence[TriggerEvent],
        retries: int = DEFAULT_RETRIES,
    ) -> Function:
        """Validates a declaration; ValueError / TypeError name the bad argument."""
        if not isinstance(fn_id, str) or not fn_id:
            raise ValueError("fn_id must be a non-empty string")
        triggers = (trigger,) if isinstance(trigger, TriggerEvent) else tuple(trigger)
        if not triggers or not all(isinstance(t, TriggerEvent) for t in triggers):
            raise TypeError("trigger must be a TriggerEvent or a non-empty list of them")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
            raise ValueError(f"retries must be an integer between 0 and {MAX_RETRIES}, got {retries!r}")
        if not callable(handler):
            raise TypeError("the function must be callable: async def f(ctx) or def f(ctx)")
        return cls(id=fn_id, triggers=triggers, retries=retries, handler=handler,
                   is_async=_is_async(handler))

    @property
    def name(self) -> str:
        """The handler's qualified name, for logs."""
        return str(getattr(self.handler, "__qualname__", self.id))


def _is_async(handler: Callable[..., Any]) -> bool:
    """True for coroutine functions, including callable objects whose __call__ is one."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - we want the bound __call__, not callable()
    return call is not None and inspect.iscoroutinefunction(call)
