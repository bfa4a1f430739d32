"""The parallel loops' cooler waits, which a stop ends at once."""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = ["Naps", "naps"]


class Naps(Protocol):
    """One wait slot per loop: ``sleep(slot, seconds)`` waits, ``wake()`` ends every wait.

    A loop woken by ``wake()`` returns from its wait normally; it checks
    whether the engine is stopping and ends. Waking 10,000 idle loops this way
    costs far less than cancelling their tasks, which raises an exception, with
    a traceback, in each.
    """

    def sleep(self, slot: int, seconds: float) -> Awaitable[None]:
        """Wait ``seconds`` (0: just let the other tasks run), unless woken first."""
        ...

    def wake(self) -> None:
        """End every pending wait now."""
        ...

    def clear(self, slot: int) -> None:
        """Forget ``slot``'s wait, when its loop ends (cancelled in it, say)."""
        ...


def naps(slots: int) -> Naps:
    """Wait slots for ``slots`` loops on the running event loop."""
    loop = anyio.lowlevel.current_token().native_token
    if isinstance(loop, asyncio.AbstractEventLoop):
        return _FutureNaps(loop, slots)
    return _ScopeNaps(slots)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _FutureNaps:
    """asyncio: a wait is a bare future and the timer that resolves it.

    Cheaper than ``asyncio.sleep()`` per wait (no coroutine, no copy of the
    context for the timer: its callback reads no context variable), and
    ``wake()`` resolves the futures instead of cancelling tasks.
    """

    __slots__ = ("_call_later", "_context", "_create_future", "_futures", "_timers")

    def __init__(self, loop: asyncio.AbstractEventLoop, slots: int) -> None:
        self._create_future = loop.create_future
        self._call_later = loop.call_later
        # Entered by the timer callbacks only, one at a time on the loop's thread.
        self._context = contextvars.Context()
        self._futures: list[asyncio.Future[None] | None] = [None] * slots
        self._timers: list[asyncio.TimerHandle | None] = [None] * slots

    def sleep(self, slot: int, seconds: float) -> Awaitable[None]:
        if seconds <= 0:
            return asyncio.sleep(0)
        future = self._create_future()
        self._timers[slot] = self._call_later(seconds, _resolve, future, context=self._context)
        self._futures[slot] = future
        return future

    def wake(self) -> None:
        for future, timer in zip(self._futures, self._timers, strict=True):
            if future is not None and not future.done():
                if timer is not None:
                    timer.cancel()
                future.set_result(None)

    def clear(self, slot: int) -> None:
        timer = self._timers[slot]
        if timer is not None:
            timer.cancel()
            self._timers[slot] = None
        self._futures[slot] = None


class _ScopeNaps:
    """Other backends: a wait is ``anyio.sleep()`` in a cancel scope that ``wake()`` cancels."""

    __slots__ = ("_scopes",)

    def __init__(self, slots: int) -> None:
        self._scopes: list[anyio.CancelScope | None] = [None] * slots

    async def sleep(self, slot: int, seconds: float) -> None:
        with anyio.CancelScope() as scope:
            self._scopes[slot] = scope
            await anyio.sleep(seconds)
        self._scopes[slot] = None

    def wake(self) -> None:
        for scope in self._scopes:
            if scope is not None:
                scope.cancel()

    def clear(self, slot: int) -> None:
        self._scopes[slot] = None
