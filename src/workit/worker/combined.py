"""``CombinedWorker``: several engines in one daemon."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from workit.status import StopReport, WorkerStatus
from workit.worker._lifecycle import State, Worker

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from workit.status import EngineInfo
    from workit.worker._engine import Engine

__all__ = ["CombinedWorker"]


class CombinedWorker(Worker):
    """Runs several workers (parallel, sequence, combined) in one daemon.

    ``wait_ready()`` returns once every worker is ready; ``stop()`` stops
    them all, each within its own grace period; ``daemon()`` returns when
    all have returned.
    """

    def __init__(self, *workers: Worker) -> None:
        super().__init__()
        if not workers:
            raise ValueError("CombinedWorker needs at least one worker")
        seen: set[int] = set()
        handlers: dict[int, str] = {}  # id of each handler object: its engine's kind
        names: dict[tuple[str, str], int] = {}  # (env, handler name): the worker's index
        leased: dict[tuple[str, str], int] = {}  # (group, unit): the worker's index
        for index, worker in enumerate(workers):
            if not isinstance(worker, Worker):
                raise TypeError(
                    f"CombinedWorker worker {index} must be a workit worker "
                    f"(ParallelWorker, SequenceWorker or CombinedWorker), got {worker!r}"
                )
            # An engine runs one daemon at a time: none may be reached twice,
            # directly or through a nested CombinedWorker.
            for engine in worker.engines:
                if id(engine) in seen:
                    raise ValueError(f"CombinedWorker worker {index}: {engine!r} is given twice")
                seen.add(id(engine))
                _check_own_handlers(engine, index, handlers)
                _check_fleet_units(engine, index, leased)
                _check_names(engine, index, names)
        self.workers = workers

    @property
    def ready(self) -> bool:
        """Whether every worker is ready (under leases: joined and not fenced) and none stops."""
        return super().ready and all(worker.ready for worker in self.workers)

    async def daemon(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every worker's daemon until ``stop()``.

        ``RuntimeError`` when one of its engines runs already (on its own, say).
        """
        self._begin()
        failure: BaseException | None = None
        try:
            # Tasks started just before (a wait_ready() waiter, say) get to wait
            # for this run, and so hear of it if it fails at once. Two turns: trio
            # runs the tasks runnable meanwhile in one batch, in either order.
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            for engine in self.engines:
                if engine.state is not State.IDLE:
                    raise RuntimeError(f"{engine!r} of {self!r} is running already")
            async with anyio.create_task_group() as tasks:
                for worker in self.workers:
                    tasks.start_soon(worker.daemon, name=f"workit:{type(worker).__name__}")
                for worker in self.workers:
                    await worker.wait_ready()
                self._set_ready(task_status)
        except BaseException as error:
            failure = error
            raise
        finally:
            self._end(failure)

    async def ensure(self) -> None:
        """Run every worker's ``ensure()``, one after the other; then raise the first error
        (a ``HandlerError``, or the ``RuntimeError`` of a worker that is stopping, say)."""
        first: Exception | None = None
        for worker in self.workers:
            try:
                await worker.ensure()
            except Exception as error:
                first = first or error
        if first is not None:
            raise first

    def status(self) -> WorkerStatus:
        """Readiness of the whole, the handlers of every worker in order, and the fleet of
        the first worker under leases (the one ``/status`` shows)."""
        statuses = [worker.status() for worker in self.workers]
        handlers = tuple(handler for status in statuses for handler in status.handlers)
        fleet = next((status.fleet for status in statuses if status.fleet is not None), None)
        return WorkerStatus(ready=self.ready, handlers=handlers, fleet=fleet)

    async def _status_parts(self) -> tuple[list[str], str]:
        handlers: list[str] = []
        fleet = "null"
        for worker in self.workers:
            parts, theirs = await worker._status_parts()
            handlers += parts
            fleet = theirs if fleet == "null" else fleet
        return handlers, fleet

    def describe(self) -> tuple[EngineInfo, ...]:
        """Every worker's engines, in order."""
        return tuple(engine for worker in self.workers for engine in worker.describe())

    @property
    def engines(self) -> tuple[Engine, ...]:
        """The engines of every worker, in order."""
        return tuple(engine for worker in self.workers for engine in worker.engines)

    @property
    def last_stop(self) -> StopReport:
        """What the last graceful stop of every worker had to cancel or abandon."""
        return sum((worker.last_stop for worker in self.workers), StopReport())

    def stop(self) -> None:
        """Stop every worker; safe from any thread and from signal handlers."""
        self._ask_stop()
        for worker in self.workers:
            worker.stop()

    def __repr__(self) -> str:
        return f"CombinedWorker{self.workers!r}"


def _check_own_handlers(engine: Engine, index: int, seen: dict[int, str]) -> None:
    """``ValueError`` when a handler object is in an engine met before: both
    engines would run it, and two executions of it could overlap."""
    for handler in engine.handlers:
        inner = id(handler.unwrap())
        if inner in seen:
            raise ValueError(
                f"CombinedWorker worker {index}: handler {handler.name!r} is also in the "
                f"{seen[inner]} engine before it; give each engine a handler object of its own"
            )
    for handler in engine.handlers:
        seen[id(handler.unwrap())] = engine.engine


def _check_names(engine: Engine, index: int, seen: dict[tuple[str, str], int]) -> None:
    """``ValueError`` when a handler has the name of a handler of an engine met before,
    under the same ``env``: their metric series would be one (or, on two
    ``CollectorRegistry``s, the same series twice), and ``/status`` would list
    two handlers no one could tell apart."""
    env = engine.registry.env
    for handler in engine.handlers:
        other = seen.setdefault((env, handler.name), index)
        if other != index:
            raise ValueError(
                f"CombinedWorker worker {index}: handler {handler.name!r} has the name of a "
                f"handler of worker {other}, and both record under env {env!r}; rename one "
                "(name=...) or give the engines registries of different envs"
            )


def _check_fleet_units(engine: Engine, index: int, seen: dict[tuple[str, str], int]) -> None:
    """``ValueError`` when an engine under leases shares a group and a unit (a handler's
    name, a pipeline's) with an engine met before: the fleet could not tell them apart."""
    if engine.leases is None:
        return
    group = engine.leases.group
    for unit in engine.units:
        other = seen.setdefault((group, unit), index)
        if other != index:
            raise ValueError(
                f"CombinedWorker worker {index}: {unit!r} is also a unit of worker {other} in "
                f"the lease group {group!r}; give one of them another name (or another group)"
            )
