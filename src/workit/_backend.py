"""What differs between asyncio and the other event loops (trio), in one place.

Everything else in workit is written against anyio. Four things are not,
because anyio's portable versions cost too much when 10,000 handlers are a
normal load, or because asyncio behaves differently:

- ``tasks()``: the tasks an engine starts by the thousand (a loop per
  handler, a task per node of a pass). On asyncio they are plain tasks: an
  anyio task costs about 3 KiB and 15 µs more. Elsewhere an anyio task group.
- ``naps()``: the parallel loops' cooler waits, which a stop ends at once. On
  asyncio a wait is a bare future and a timer; elsewhere ``anyio.sleep()`` in a
  cancel scope.
- ``is_cancellation()``: asyncio lets any code raise ``CancelledError`` or
  cancel the task it runs in; only the engine's own cancellations count.
- cancelling one handler's execution and nothing else: on asyncio the
  execution's task is cancelled (``current_task()``) and the cancellation
  taken back once caught (``uncancel()``); elsewhere the execution runs in a
  cancel scope of its own.

Plus ``threadsafe_caller()``, which schedules a callback on the running loop
from any thread or a signal handler.
"""

from __future__ import annotations

import asyncio
import contextvars
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine

__all__ = [
    "Naps",
    "Tasks",
    "current_task",
    "is_cancellation",
    "loop_clock",
    "naps",
    "tasks",
    "threadsafe_caller",
    "uncancel",
    "withdraw",
]

# How long cancelled tasks get to end; only a task that ignores cancellation
# takes longer, and it is not waited for.
_CANCEL_WAIT = 5.0

# The asyncio tasks of ``tasks()`` blocks, and those a block is cancelling.
# In these tasks only the block's cancellations are the engine's: any other
# CancelledError was raised or caused by handler code, and is a failure of
# that execution.
_spawned: set[asyncio.Task[Any]] = set()
_cancelling: set[asyncio.Task[Any]] = set()


def _on_asyncio() -> asyncio.AbstractEventLoop | None:
    native = anyio.lowlevel.current_token().native_token
    return native if isinstance(native, asyncio.AbstractEventLoop) else None


def loop_clock() -> Callable[[], float]:
    """The running event loop's clock as a plain function: what ``anyio.current_time()``
    reads, without finding the event loop at every call."""
    loop = _on_asyncio()
    if loop is not None:
        return loop.time
    import trio

    return trio.current_time


def threadsafe_caller() -> Callable[[Callable[[], object]], object]:
    """A function that schedules a callback on the running event loop.

    Safe from any thread and from signal handlers.
    """
    loop = _on_asyncio()
    if loop is not None:
        return loop.call_soon_threadsafe
    native: Any = anyio.lowlevel.current_token().native_token
    run_sync_soon: Callable[[Callable[[], object]], object] = (
        native.run_sync_soon
    )  # trio's TrioToken
    return run_sync_soon


def current_task() -> asyncio.Task[Any] | None:
    """The running asyncio task, or ``None`` on another event loop."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # no asyncio loop in this thread: trio
        return None


def is_cancellation(error: BaseException) -> bool:
    """Whether ``error`` cancels the running task, rather than being one a handler raised.

    On asyncio, in a task of ``tasks()``, only a cancellation by the block
    counts; elsewhere any cancellation the task has pending (a handler can
    raise ``CancelledError`` without its task being cancelled, say one that
    leaked from a task of its own).
    """
    if isinstance(error, Exception):
        return False  # the cancellation exceptions of both backends are BaseExceptions
    try:
        cancelled = anyio.get_cancelled_exc_class()
    except RuntimeError:  # no event loop running: nothing to cancel
        return False
    if not isinstance(error, cancelled):
        return False
    if isinstance(error, asyncio.CancelledError):
        task = current_task()
        if task is None:
            return True
        if task in _spawned:
            return task in _cancelling
        return task.cancelling() > 0
    return True


def uncancel(task: asyncio.Task[Any] | None) -> None:
    """Take back the cancellations pending on ``task`` that are not the engine's.

    After a handler cancelled the task its execution runs in, and the
    cancellation was reported as that execution's failure, the task goes on
    as if it had not been cancelled.
    """
    if task is not None and task in _spawned and task not in _cancelling:
        while task.cancelling():
            task.uncancel()


def withdraw(task: asyncio.Task[Any] | None) -> None:
    """Take back the cancellation that ``Instrumented.cancel()`` asked of ``task``.

    In a task of ``tasks()``, every cancellation that is not the block's
    (``uncancel()``); in a task of the caller's (an execution awaited outside
    an engine), the one that ``cancel()`` added, so that a cancellation the
    caller asked for as well still cancels it.
    """
    if task is None:
        return
    if task in _spawned:
        uncancel(task)
    elif task.cancelling():
        task.uncancel()


class Tasks(Protocol):
    """A ``tasks()`` block: ``spawn()`` starts a task in it."""

    def spawn(
        self,
        function: Callable[..., Coroutine[Any, Any, object]],
        *args: object,
        name: str | None = None,
    ) -> None:
        """Start ``function(*args)`` as a task of the block."""
        ...


@asynccontextmanager
async def tasks() -> AsyncIterator[Tasks]:
    """A task group for the tasks an engine starts by the thousand.

    Like a task group, leaving the block waits for the tasks, a task's
    exception is raised (the others cancelled), and cancellation cancels them
    all. On asyncio the tasks are plain asyncio tasks.
    """
    loop = _on_asyncio()
    if loop is None:
        async with anyio.create_task_group() as group:
            yield _GroupTasks(group)
        return
    block = _AsyncioTasks(loop)
    try:
        yield block
        await block.settle()
    finally:
        await block.cancel()


class _GroupTasks:
    __slots__ = ("_group",)

    def __init__(self, group: anyio.abc.TaskGroup) -> None:
        self._group = group

    def spawn(
        self,
        function: Callable[..., Coroutine[Any, Any, object]],
        *args: object,
        name: str | None = None,
    ) -> None:
        self._group.start_soon(function, *args, name=name)


class _AsyncioTasks:
    __slots__ = ("_context", "_failed", "_finished", "_loop", "_settled", "_tasks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._tasks: set[asyncio.Task[object]] = set()
        self._failed: list[BaseException] = []
        self._settled = asyncio.Event()  # set when no task is left, or one failed
        # The context ``_finished`` runs in: it reads no context variable, and without
        # one add_done_callback() would keep a copy of the current context per task.
        self._context = contextvars.Context()
        self._finished = self._on_finished

    def spawn(
        self,
        function: Callable[..., Coroutine[Any, Any, object]],
        *args: object,
        name: str | None = None,
    ) -> None:
        task = self._loop.create_task(function(*args), name=name)
        self._tasks.add(task)
        _spawned.add(task)
        task.add_done_callback(self._finished, context=self._context)

    def _on_finished(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        _spawned.discard(task)
        _cancelling.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._failed.append(error)
        if error is not None or not self._tasks:
            self._settled.set()

    async def settle(self) -> None:
        """Wait for every task; raise the first task's exception."""
        if self._tasks and not self._failed:
            self._settled.clear()
            await self._settled.wait()
        if self._failed:
            raise self._failed[0]

    async def cancel(self) -> None:
        """Cancel the tasks left and wait for them, a bounded time."""
        for task in self._tasks:
            _cancelling.add(task)
            task.cancel()
        with anyio.move_on_after(_CANCEL_WAIT, shield=True):
            while self._tasks:  # ``_on_finished`` sets ``_settled`` once the last one is done
                self._settled.clear()
                await self._settled.wait()
        for task in self._tasks:  # ignoring cancellation: not waited for any longer
            _cancelling.discard(task)


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

    def wake_one(self, slot: int) -> None:
        """End ``slot``'s pending wait now."""
        ...

    def clear(self, slot: int) -> None:
        """Forget ``slot``'s wait, when its loop ends (cancelled in it, say)."""
        ...


def naps(slots: int) -> Naps:
    """Wait slots for ``slots`` loops on the running event loop."""
    loop = _on_asyncio()
    if loop is not None:
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
        for slot in range(len(self._futures)):
            self.wake_one(slot)

    def wake_one(self, slot: int) -> None:
        future = self._futures[slot]
        if future is not None and not future.done():
            timer = self._timers[slot]
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

    def wake_one(self, slot: int) -> None:
        scope = self._scopes[slot]
        if scope is not None:
            scope.cancel()

    def clear(self, slot: int) -> None:
        self._scopes[slot] = None
