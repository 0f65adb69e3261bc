"""Running blocking user code off the event loop, in daemon threads.

Like `asyncio.to_thread` (the caller's contextvars are copied), but each call gets its own daemon thread
instead of a pool thread. Pool threads are joined when the interpreter exits, so a step stuck in
blocking code would keep a worker process alive after it has drained and handed its runs back; a daemon
thread does not. At most one such thread runs per run slot, so the count stays bounded by the worker's
concurrency.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def run_in_thread(
    loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any, name: str
) -> asyncio.Future[T]:
    """Starts `fn(*args)` in a new daemon thread; the returned future (of `loop`) gets its outcome.
    Cancelling the future does not stop the thread: its outcome is then dropped."""
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            result = context.run(fn, *args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine, interrupts included
            _deliver(loop, future, None, exc)
        else:
            _deliver(loop, future, result, None)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def _deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], result: T | None,
             error: BaseException | None) -> None:
    def settle() -> None:
        if future.done():  # cancelled meanwhile: nobody waits for this outcome any more
            return
        if isinstance(error, StopIteration):  # a future refuses it, as asyncio.to_thread would
            future.set_exception(RuntimeError(f"StopIteration raised: {error}"))
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: the worker has stopped
        pass
