"""``ParallelWorker``: every handler in a loop of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from workit._backend import naps, tasks
from workit.status import EngineInfo
from workit.worker._build import (
    check_backoff,
    check_unique_names,
    describe,
    listed,
    own_handler_calling,
    proxies,
    raise_failure,
)
from workit.worker._engine import DEFAULT_GRACE, Engine
from workit.worker._lifecycle import State

if TYPE_CHECKING:
    import logging
    from collections.abc import Iterable

    from anyio.abc import TaskGroup

    from workit._backend import Naps
    from workit._duration import Duration
    from workit.backoff import Backoff
    from workit.handler import Instrumented, SupportsEnsure
    from workit.registry import Registry
    from workit.worker._engine import Run
    from workit.worker._fleet import Leases

__all__ = ["ParallelWorker"]

_STOPPING = State.STOPPING


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

    With ``leases`` (``workit.lease.Memory``, ``Redis`` or ``Postgres``), the
    workers of every replica sharing the backend and its group run each
    handler on one replica at a time, shared out among them; before each
    execution the loop waits until this replica owns the handler and the
    fleet's ledger says it is due.
    """

    engine: ClassVar[Literal["parallel", "sequence"]] = "parallel"

    def __init__(
        self,
        handlers: Iterable[SupportsEnsure],
        *,
        registry: Registry,
        logger: logging.Logger | None = None,
        grace: Duration = DEFAULT_GRACE,
        backoff: Backoff | None = None,
        leases: Leases | None = None,
    ) -> None:
        super().__init__(registry=registry, logger=logger, grace=grace, leases=leases)
        self.backoff: Backoff | None = check_backoff(backoff, "ParallelWorker")
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
        self.handlers: tuple[Instrumented, ...] = tuple(
            registry.wrap(proxy, logger=self.logger, backoff=self.backoff) for proxy in wrapped
        )
        self._naps: Naps | None = None

    async def ensure(self) -> None:
        """Run every active handler once, concurrently, and wait for all of them.

        Failures are reported as in the daemon (logged, counted). Then
        ``HandlerError`` is raised for the first failed handler in list order,
        with the same rules as ``SequenceWorker.ensure()``: ``__cause__`` is
        what it raised, even an ignored exception; a timeout raises
        ``HandlerTimeout``. A handler the daemon is running is run once its
        execution has ended, never twice at once. While the daemon stops,
        ``RuntimeError``.
        """
        caller = own_handler_calling(self.handlers)
        if caller is not None:
            raise RuntimeError(
                f"{self!r}.ensure() called by its own handler {caller!r}: it would wait for "
                "that very execution to end"
            )
        outcomes: list[BaseException | None] = [None] * len(self.handlers)

        async def once(index: int, handler: Instrumented) -> None:
            if handler.decide() is True:
                outcomes[index] = await handler.execute()

        with self._on_demand():
            async with tasks() as group:
                for index, handler in enumerate(self.handlers):
                    group.spawn(once, index, handler, name=handler.name)
        for handler, error in zip(self.handlers, outcomes, strict=True):
            if error is not None:
                raise_failure(handler, error)

    def describe(self) -> tuple[EngineInfo, ...]:
        """The handlers, each with its cooler and timeout."""
        handlers = tuple(describe(handler, cooler=True) for handler in self.handlers)
        return (EngineInfo(kind="parallel", handlers=handlers),)

    def _pipelines(self) -> int:
        return len(self.handlers)

    def _start(self, tasks: TaskGroup, run: Run) -> None:
        tasks.start_soon(self._loops, run, name="workit:parallel")

    async def _loops(self, run: Run) -> None:
        """Run every handler's loop, each in a task of its own, until they end."""
        self._naps = waits = naps(len(self.handlers))
        run.live += len(self.handlers)
        loop = self._loop if self._membership is None else self._leased_loop
        try:
            async with tasks() as group:
                for slot, handler in enumerate(self.handlers):
                    group.spawn(loop, handler, run, waits, slot, name=handler.name)
        finally:
            self._naps = None

    def _wake(self) -> None:
        if self._naps is not None:
            self._naps.wake()

    async def _loop(self, handler: Instrumented, run: Run, waits: Naps, slot: int) -> None:
        # The hot path of the engine, kept to what one round needs (and no
        # bound methods in locals: each would be one more object per handler
        # for the garbage collector to visit). The loop counts as live until
        # it ends, so a graceful stop waits for its execution; a stop wakes it
        # from its cooler (waits.wake()) and it ends.
        try:
            while self._state is not _STOPPING:
                if handler.decide() is True:
                    await handler.execute()
                    if self._state is _STOPPING:
                        return
                await waits.sleep(slot, handler.plan())
        finally:
            waits.clear(slot)
            run.ended()

    async def _leased_loop(self, handler: Instrumented, run: Run, waits: Naps, slot: int) -> None:
        """A handler's loop under leases: the fleet's ledger paces it, not a local cooler.

        While the handler stays on this replica a round costs what a round of
        ``_loop`` does: ``claim_now()`` answers at once after the cooler's nap.
        Otherwise the loop waits in ``acquire()`` until the fleet gives it the
        handler (or, once a stop began, returns None).
        """
        membership = self._membership
        assert membership is not None
        name = handler.name
        try:
            while self._state is not _STOPPING:
                claim = membership.claim_now(name)
                if claim is None:
                    claim = await membership.acquire(name, cooler=handler.known_cooler())
                    if claim is None:
                        return  # stopping
                handler.claim = claim
                if handler.decide() is True:
                    membership.started(name, cooler=handler.known_cooler())
                    await handler.execute()
                pause = handler.plan()
                membership.finished(name, cooler=pause)
                if self._state is _STOPPING:
                    return  # stopped while it ran: a wake() came before this nap
                await waits.sleep(slot, pause)
        finally:
            handler.claim = None
            waits.clear(slot)
            run.ended()

    def __repr__(self) -> str:
        return f"ParallelWorker({[handler.name for handler in self.handlers]!r})"
