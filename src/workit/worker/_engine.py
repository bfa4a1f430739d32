"""``Engine``: what the parallel and the sequence engine share.

Pipelines in one task group, a graceful stop that waits for them within
``grace``, the stop report and the status snapshot.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, ClassVar, Literal

import anyio
import anyio.lowlevel

from workit._backend import threadsafe_caller
from workit._duration import seconds
from workit._policy import log
from workit.errors import LeaseLost
from workit.registry import Registry
from workit.status import StopReport, WorkerStatus
from workit.worker._fleet import Leases
from workit.worker._lifecycle import State, Worker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from anyio.abc import TaskGroup, TaskStatus

    from workit._duration import Duration
    from workit.handler import Instrumented
    from workit.worker._fleet import Membership

__all__ = ["DEFAULT_GRACE", "Engine", "Run", "executions"]

DEFAULT_GRACE = 30.0

# Handlers written into a /status body between two turns of the event loop
# (about a millisecond's work).
_SLICE = 128


class Run:
    """One daemon run of an engine: how to reach its loop, and what still runs."""

    __slots__ = ("call_soon", "drained", "live", "stopped")

    def __init__(self) -> None:
        # Schedules a callback on the daemon's event loop, from any thread.
        self.call_soon: Callable[[Callable[[], object]], object] = threadsafe_caller()
        self.stopped = anyio.Event()  # set (on the loop) once stop() was called
        self.drained: anyio.Event | None = None  # set once nothing runs, while draining
        self.live = 0  # pipelines (a parallel loop, the pass loop) and on-demand runs

    def ended(self) -> None:
        """One pipeline or on-demand run has ended."""
        self.live -= 1
        if self.drained is not None and not self.live:
            self.drained.set()


class Engine(Worker):
    """An engine that runs handlers: pipelines in one task group, graceful stop.

    Subclasses say how many pipelines they run and start them. A graceful
    stop waits until nothing runs: every pipeline and on-demand run counts
    itself live while it runs (``Run.live``).

    ``leases`` is the lease backend the engine was built with, or ``None``.
    It is read when the daemon starts, so it may be set until then:
    ``workit run --leases`` gives a backend to the engines built without
    one. A ``CombinedWorker`` checks its engines' units against their groups
    when it is built: who sets ``leases`` later checks them too (the
    command does).
    """

    engine: ClassVar[Literal["parallel", "sequence"]]
    """The engine's kind, as reported in status snapshots."""

    handlers: tuple[Instrumented, ...]
    """The engine's handlers, each wrapped by the registry."""

    def __init__(
        self,
        *,
        registry: Registry,
        logger: logging.Logger | None,
        grace: Duration,
        leases: Leases | None = None,
    ) -> None:
        super().__init__()
        kind = type(self).__name__
        if not isinstance(registry, Registry):
            raise TypeError(f"{kind} registry must be a workit.Registry, got {registry!r}")
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(f"{kind} logger must be a logging.Logger, got {logger!r}")
        if leases is not None and not isinstance(leases, Leases):
            raise TypeError(
                f"{kind} leases must be a lease backend (workit.lease.Memory, Redis or "
                f"Postgres), got {leases!r}"
            )
        self.registry: Registry = registry
        self.logger: logging.Logger = logger if logger is not None else registry.logger
        self.grace: float = seconds(grace, f"{kind} grace")
        self.leases: Leases | None = leases
        self._run: Run | None = None
        self._membership: Membership | None = None
        self._last_stop = StopReport()

    @property
    def units(self) -> tuple[str, ...]:
        """The names the engine's handlers are known by to a fleet under leases."""
        return tuple(handler.name for handler in self.handlers)

    @property
    def ready(self) -> bool:
        """Whether the daemon runs all its pipelines, is not stopping and, under leases,
        has joined its fleet and is not fenced."""
        membership = self._membership
        return super().ready and (membership is None or membership.ready)

    @abc.abstractmethod
    def _pipelines(self) -> int:
        """How many pipelines ``_start()`` runs; 0 means the daemon returns at once."""

    @abc.abstractmethod
    def _start(self, tasks: TaskGroup, run: Run) -> None:
        """Start every pipeline in ``tasks``; each counts itself in ``run.live``."""

    def stop(self) -> None:
        """Start no new execution; let running ones finish, within ``grace``.

        Safe from any thread and from signal handlers. Called before
        ``daemon()``, it makes the next ``daemon()`` return at once.
        """
        self._ask_stop()
        run = self._run
        if run is not None:
            # RuntimeError: the loop has just closed, so nothing is left to stop.
            with contextlib.suppress(RuntimeError):
                run.call_soon(self._wake_on_stop)

    def _wake_on_stop(self) -> None:
        run = self._run
        if run is not None:
            run.stopped.set()
            if self._membership is None:
                self._wake()  # under leases, once the idle handlers are handed over

    def _wake(self) -> None:
        """End the waits a stop need not sit out (on the event loop's thread)."""

    async def daemon(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the pipelines until ``stop()``, then drain within ``grace``."""
        self._begin()
        # Set before reading _stop_asked: a stop() racing from another thread
        # either finds the run or has already asked.
        run = self._run = Run()
        idle = False
        failure: BaseException | None = None
        try:
            pipelines = self._pipelines()
            if pipelines == 0 or self._stop_asked:
                idle = True
                self._set_ready(task_status)
                return
            for handler in self.handlers:
                handler.cancelled = False
            async with anyio.create_task_group() as tasks:
                membership = self._join(tasks)
                self._start(tasks, run)
                self._set_ready(task_status)
                log(
                    self.logger,
                    logging.INFO,
                    "worker is executing tasks",
                    extra={"pipelines": pipelines, "engine": self.engine},
                )
                await run.stopped.wait()
                if membership is not None:
                    # Hand the idle handlers over before their loops end: ending
                    # thousands of them keeps the event loop busy a while.
                    await membership.stopping()
                    self._wake()
                await self._drain(run)
                if membership is not None:  # leave once none runs
                    await membership.close()
                tasks.cancel_scope.cancel()
        except BaseException as error:
            failure = error
            raise
        finally:
            self._run = None
            self._membership = None
            for handler in self.handlers:
                handler.claim = None
                if handler.owned:
                    handler.owned = False  # a replica that no longer runs owns nothing
            self._end(failure, keep_ready=idle)

    def _join(self, tasks: TaskGroup) -> Membership | None:
        """Under leases, start this run's membership of the fleet beside the pipelines."""
        if self.leases is None:
            return None
        membership = self._membership = self.leases.membership(
            self.units, engine=self.engine, logger=self.logger
        )
        by_unit: dict[str, list[Instrumented]] = {}
        for handler, unit in zip(self.handlers, self._unit_of_each(), strict=True):
            by_unit.setdefault(unit, []).append(handler)
            handler.owned = False  # the worker_lease_owned gauge appears, at 0
        membership.on_lost(partial(self._lost, by_unit))
        membership.on_event(partial(self._lease_event, by_unit, self.registry.lease_counter()))
        tasks.start_soon(membership.run, name=f"workit:lease:{self.engine}")
        return membership

    def _lost(self, by_unit: dict[str, list[Instrumented]], unit: str) -> None:
        """The fleet's claim on ``unit`` turned invalid: its running executions fail (a
        pipeline's handlers are all of one unit; a fence loses thousands at once)."""
        for handler in by_unit.get(unit, ()):
            handler.claim = None
            handler.cancel(LeaseLost(unit))

    @staticmethod
    def _lease_event(
        by_unit: dict[str, list[Instrumented]],
        count: Callable[[str], None] | None,
        unit: str,
        event: str,
    ) -> None:
        """A claim of this run was acquired, released or lost: the gauge and the counter.

        Only the fleet's changes come here, never an execution, so leases add
        nothing to the per-execution path.
        """
        owned = event == "acquired"
        for handler in by_unit.get(unit, ()):
            handler.owned = owned
        if count is not None:
            count(event)

    @contextmanager
    def _on_demand(self) -> Iterator[None]:
        """An on-demand run (``ensure()``): refused while stopping; a stop waits for it."""
        if self._state is State.STOPPING:
            raise RuntimeError(f"{self!r} is stopping: no new execution starts")
        run = self._run
        if run is None:
            yield
            return
        run.live += 1
        try:
            yield
        finally:
            run.ended()

    async def _drain(self, run: Run) -> None:
        try:
            with anyio.move_on_after(self.grace):
                while run.live:
                    run.drained = anyio.Event()
                    await run.drained.wait()
        finally:  # also when cancelled, by a second signal say: the counts must be told
            run.drained = None
            self._report_stop()

    def _report_stop(self) -> None:
        # Cancelled ones count too: a second signal cancels executions while
        # the drain is still waiting for them.
        running = [handler for handler in self.handlers if handler.running or handler.cancelled]
        cancelled = sum(handler.proxy.is_async for handler in running)
        report = self._last_stop = StopReport(
            cancelled=cancelled,
            abandoned=len(running) - cancelled,
            handlers=tuple(handler.name for handler in running),
        )
        log(
            self.logger,
            logging.WARNING if running else logging.INFO,
            "worker stopped: %s cancelled and %d abandoned",
            executions(report.cancelled),
            report.abandoned,
            extra={
                "engine": self.engine,
                "cancelled": report.cancelled,
                "abandoned": report.abandoned,
                "handlers": list(report.handlers),
            },
        )

    @property
    def engines(self) -> tuple[Engine, ...]:
        """This engine alone."""
        return (self,)

    @property
    def last_stop(self) -> StopReport:
        """What the last graceful stop had to cancel or abandon (empty before one)."""
        return self._last_stop

    def status(self) -> WorkerStatus:
        """A snapshot of the worker's readiness, of each handler's state and of the fleet."""
        planned = self._state is State.STARTING or self._state is State.READY
        membership = self._membership
        if membership is None:
            return WorkerStatus(
                ready=self.ready,
                handlers=tuple(
                    handler.status(self.engine, self._next_run(handler) if planned else None)
                    for handler in self.handlers
                ),
            )
        return WorkerStatus(
            ready=self.ready,
            handlers=tuple(
                handler.status(
                    self.engine,
                    self._next_run(handler) if planned else None,
                    owner=membership.owner_of(unit),
                    owned=membership.claim(unit) is not None,
                )
                for handler, unit in zip(self.handlers, self._unit_of_each(), strict=True)
            ),
            fleet=membership.snapshot(),
        )

    async def _status_parts(self) -> tuple[list[str], str]:
        planned = self._state is State.STARTING or self._state is State.READY
        membership = self._membership
        engine = self.engine
        parts = []
        for index, (handler, unit) in enumerate(
            zip(self.handlers, self._unit_of_each(), strict=True)
        ):
            next_run = self._next_run(handler) if planned else None
            if membership is None:
                parts.append(handler.status_json(engine, next_run))
            else:
                parts.append(
                    handler.status_json(
                        engine,
                        next_run,
                        owner=membership.owner_of(unit),
                        owned=membership.claim(unit) is not None,
                    )
                )
            if index % _SLICE == _SLICE - 1:
                await anyio.lowlevel.checkpoint()  # let the handlers due meanwhile run
        if membership is None:
            return parts, "null"
        return parts, json.dumps(membership.snapshot().to_dict(), separators=(",", ":"))

    def _unit_of_each(self) -> tuple[str, ...]:
        """The unit each handler belongs to, in order."""
        return self.units

    def _next_run(self, handler: Instrumented) -> float | None:
        """When the daemon runs ``handler`` next (a ``time.time()`` value)."""
        return handler.next_run

    def _signal_logger(self) -> logging.Logger:
        return self.logger


def executions(count: int) -> str:
    """``1 execution``, ``2 executions``."""
    return f"{count} execution" if count == 1 else f"{count} executions"
