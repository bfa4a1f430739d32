"""``ParallelWorker``: every handler in a loop of its own."""

from __future__ import annotations

from time import time
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from workit.handler._instrument import is_cancellation
from workit.worker._loop import (
    DEFAULT_GRACE,
    Engine,
    check_backoff,
    check_unique_names,
    listed,
    proxies,
    raise_failure,
    spawner,
)
from workit.worker._naps import Naps, naps

if TYPE_CHECKING:
    import logging
    from collections.abc import Iterable

    from anyio.abc import TaskGroup

    from workit._duration import Duration
    from workit.backoff import Backoff
    from workit.handler import Instrumented
    from workit.registry import Registry

__all__ = ["ParallelWorker"]

# The wait after a cooler() that raised, when no earlier cooler() worked.
_FALLBACK_COOLER = 1.0


class ParallelWorker(Engine):
    """Runs every handler in its own loop, its own failure domain.

    Each loop: if ``active()``, ``ensure()``; report a failure; sleep
    ``cooler()``; repeat. One handler failing, hanging or being slow never
    delays another, sync handlers included, since each sync handler has a
    worker thread of its own. Every handler must declare a ``cooler``.

    An exception from ``active()`` or ``cooler()``, or a value of the wrong
    type from them, is reported like a failed execution; after a failed
    ``cooler()`` the loop waits the last cooler that worked (1 s at first).

    With ``backoff`` (a ``workit.Backoff``), a handler failing again and
    again waits longer each time, up to its maximum, instead of its cooler;
    its first success resets the wait. Without it a failing handler with
    cooler 0 retries, and logs, as fast as it fails.
    """

    engine = "parallel"

    def __init__(
        self,
        handlers: Iterable[object],
        *,
        registry: Registry,
        logger: logging.Logger | None = None,
        grace: Duration = DEFAULT_GRACE,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(registry=registry, logger=logger, grace=grace)
        self.backoff = check_backoff(backoff, "ParallelWorker")
        items = listed(handlers, "ParallelWorker handlers")
        if not items:
            raise ValueError("ParallelWorker needs at least one handler")
        wrapped = proxies(items, "ParallelWorker handler")
        for index, proxy in enumerate(wrapped):
            if not proxy.has_cooler:
                raise TypeError(
                    f"ParallelWorker handler {index} ({proxy.name!r}) has no cooler: a "
                    "parallel handler needs one, e.g. `cooler = 5` or Handler(fn, cooler=5)"
                )
        check_unique_names(wrapped, "ParallelWorker")
        self.handlers = tuple(registry.wrap(proxy, logger=self.logger) for proxy in wrapped)
        self._naps: Naps | None = None

    async def ensure(self) -> None:
        """Run every active handler once, concurrently, and wait for all of them.

        Failures are reported as in the daemon (logged, counted). Then
        ``HandlerError`` is raised for the first failed handler in list order,
        with the same rules as ``SequenceWorker.ensure()``: ``__cause__`` is
        what it raised, even an ignored exception; a timeout raises
        ``HandlerTimeout``.
        """
        outcomes: list[BaseException | None] = [None] * len(self.handlers)

        async def once(index: int, handler: Instrumented) -> None:
            if self._decide(handler):
                outcomes[index] = await self._execute(handler)

        async with anyio.create_task_group() as tasks:
            for index, handler in enumerate(self.handlers):
                tasks.start_soon(once, index, handler, name=f"workit:{handler.name}")
        for handler, error in zip(self.handlers, outcomes, strict=True):
            if error is not None:
                raise_failure(handler, error)

    def _pipelines(self) -> int:
        return len(self.handlers)

    def _start(self, tasks: TaskGroup) -> None:
        tasks.start_soon(self._loops, name="workit:parallel")

    async def _loops(self) -> None:
        """Run every handler's loop, each in a task of its own, until they end."""
        self._naps = waits = naps(len(self.handlers))
        self._live = len(self.handlers)
        try:
            async with spawner() as spawn:
                for slot, handler in enumerate(self.handlers):
                    spawn(self._loop, handler, waits, slot, name=handler.name)
        finally:
            self._naps = None

    def _wake(self) -> None:
        if self._naps is not None:
            self._naps.wake()

    def _decide(self, handler: Instrumented) -> bool:
        """Ask ``active()``; a failure to answer is reported and means no."""
        try:
            active = handler.proxy.active()
        except BaseException as error:
            if is_cancellation(error):
                raise
            handler.report(error)
            active = False
        handler.state.active = active
        return active

    async def _loop(self, handler: Instrumented, waits: Naps, slot: int) -> None:
        # The hot path of the engine: locals instead of attribute lookups save
        # a few of the microseconds an execution costs (but no bound methods:
        # each would be one more object per handler for the garbage collector
        # to visit). The loop counts as live until it ends, so a graceful stop
        # waits for its execution; a stop wakes it from its cooler
        # (waits.wake()) and it ends.
        proxy = handler.proxy
        state = handler.state
        backoff = self.backoff
        cooler = _FALLBACK_COOLER
        try:
            while not self._stopping:
                if self._decide(handler):
                    await handler.execute()
                    if self._stopping:
                        return
                try:
                    cooler = proxy.cooler()
                except BaseException as error:
                    if is_cancellation(error):
                        raise
                    handler.report(error)
                pause = cooler
                if backoff is not None and state.consecutive_failures:
                    pause = max(cooler, backoff.delay(state.consecutive_failures))
                state.next_run = time() + pause
                await waits.sleep(slot, pause)
        finally:
            waits.clear(slot)
            self._live -= 1
            self._settle()

    def __repr__(self) -> str:
        return f"ParallelWorker({[handler.name for handler in self.handlers]!r})"
