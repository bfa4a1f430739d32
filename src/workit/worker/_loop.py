"""What every engine shares: lifecycle, graceful stop, one accounted execution."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn

import anyio
import anyio.lowlevel

from workit._duration import seconds
from workit.backoff import Backoff
from workit.errors import HandlerError, HandlerTimeout
from workit.handler import Proxy
from workit.handler._instrument import log
from workit.registry import Registry
from workit.status import HandlerStatus, StopReport, WorkerStatus, timestamp

if TYPE_CHECKING:
    from anyio import CancelScope
    from anyio.abc import TaskGroup, TaskStatus

    from workit._duration import Duration
    from workit.handler import Instrumented
    from workit.handler._instrument import HandlerState

__all__ = [
    "Engine",
    "Spawn",
    "Worker",
    "raise_failure",
    "run_until_signalled",
    "spawner",
]

DEFAULT_GRACE = 30.0


def _threadsafe_caller() -> Callable[[Callable[[], object]], object]:
    """A function that schedules a callback on the running event loop.

    Safe from any thread and from signal handlers.
    """
    native = anyio.lowlevel.current_token().native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        return native.call_soon_threadsafe
    run_sync_soon: Callable[[Callable[[], object]], object] = native.run_sync_soon  # type: ignore[attr-defined]  # trio's TrioToken
    return run_sync_soon


Spawn = Callable[..., None]
"""Starts ``function(*args)`` as a task: ``spawn(function, *args, name=...)``."""

# How long cancelled tasks get to end; only a handler that ignores
# cancellation takes longer, and it is not waited for.
_CANCEL_WAIT = 5.0


@asynccontextmanager
async def spawner() -> AsyncIterator[Spawn]:
    """A task group for the tasks an engine starts by the thousand.

    On asyncio its tasks are plain asyncio tasks: an anyio task costs about
    3 KiB and 15 µs more, and 10,000 handlers are a normal load. Like a task
    group, leaving the block waits for the tasks, a task's exception is
    raised (the others cancelled), and cancellation cancels them all. On other
    backends it is an anyio task group.
    """
    token = anyio.lowlevel.current_token()
    loop = token.native_token
    if not isinstance(loop, asyncio.AbstractEventLoop):
        async with anyio.create_task_group() as group:

            def start(
                function: Callable[..., Coroutine[Any, Any, object]],
                *args: object,
                name: str | None = None,
            ) -> None:
                group.start_soon(function, *args, name=name)

            yield start
        return
    tasks: set[asyncio.Task[object]] = set()
    failed: list[BaseException] = []
    settled = asyncio.Event()  # set when no task is left, or one failed
    # The context ``finished`` runs in: it reads no context variable, and without
    # one add_done_callback() would keep a copy of the current context per task.
    context = contextvars.Context()

    def finished(task: asyncio.Task[object]) -> None:
        tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            failed.append(error)
        if error is not None or not tasks:
            settled.set()

    def spawn(
        function: Callable[..., Coroutine[Any, Any, object]], *args: object, name: str | None = None
    ) -> None:
        task = loop.create_task(function(*args), name=name)
        tasks.add(task)
        task.add_done_callback(finished, context=context)

    try:
        yield spawn
        if tasks and not failed:
            settled.clear()
            await settled.wait()
        if failed:
            raise failed[0]
    finally:
        for task in tasks:
            task.cancel()
        with anyio.move_on_after(_CANCEL_WAIT, shield=True):
            while tasks:  # ``finished`` sets ``settled`` once the last one is done
                settled.clear()
                await settled.wait()


class Worker(abc.ABC):
    """The lifecycle every workit worker has.

    ``daemon()`` runs until ``stop()`` (or cancellation); ``wait_ready()``
    returns once it has started all its pipelines; ``stop()`` is safe from any
    thread and from signal handlers; ``run()`` is the blocking entry point.
    """

    def __init__(self) -> None:
        self._running = False
        self._ready = False
        self._ready_event: anyio.Event | None = None

    @abc.abstractmethod
    async def daemon(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until ``stop()`` is called or the task is cancelled.

        ``await task_group.start(worker.daemon)`` returns once it is ready.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Start no new execution; let running ones finish, within the grace period."""

    @property
    def ready(self) -> bool:
        """Whether the daemon has started all its pipelines and is not stopping."""
        return self._ready

    @abc.abstractmethod
    def status(self) -> WorkerStatus:
        """A snapshot of the worker's readiness and of each handler's state."""

    @property
    @abc.abstractmethod
    def engines(self) -> tuple[Engine, ...]:
        """The engines this worker runs: itself, or those a combined worker holds."""

    @property
    @abc.abstractmethod
    def last_stop(self) -> StopReport:
        """What the last graceful stop had to cancel or abandon (empty before one)."""

    async def wait_ready(self) -> None:
        """Return once the daemon has started all its pipelines."""
        if self._ready_event is None:
            self._ready_event = anyio.Event()
        await self._ready_event.wait()

    def _begin(self) -> None:
        if self._running:
            raise RuntimeError(f"{type(self).__name__}.daemon() is already running")
        self._running = True

    def _set_ready(self, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._ready = True
        if self._ready_event is None:
            self._ready_event = anyio.Event()
        self._ready_event.set()
        task_status.started()

    def _end(self, *, keep_ready: bool = False) -> None:
        """Mark the daemon returned; ``keep_ready`` when it had nothing to run."""
        self._running = False
        self._ready = False
        if not keep_ready and self._ready_event is not None and self._ready_event.is_set():
            self._ready_event = None  # the next run's wait_ready() waits for that run

    def run(self, *, backend: str = "asyncio") -> None:
        """Run ``daemon()`` until SIGINT or SIGTERM, then stop gracefully.

        The first signal calls ``stop()``; a second one cancels running
        executions at once. Returns normally in both cases.
        """
        anyio.run(run_until_signalled, self, backend=backend)

    def _signal_logger(self) -> logging.Logger:
        return logging.getLogger("workit")


async def run_until_signalled(worker: Worker) -> None:
    """Run ``worker.daemon()``; SIGINT/SIGTERM stops it, a second one cancels it."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_stop_on_signals, worker, signals, tasks.cancel_scope)
            await worker.daemon()
            tasks.cancel_scope.cancel()


async def _stop_on_signals(worker: Worker, signals: Any, scope: CancelScope) -> None:
    logger = worker._signal_logger()
    stopping = False
    async for signum in signals:
        signame = signal.Signals(signum).name
        if stopping:
            log(logger, logging.WARNING, "worker received %s again, cancelling executions", signame)
            scope.cancel()
            return
        stopping = True
        log(logger, logging.INFO, "worker received %s, stopping gracefully", signame)
        worker.stop()


class Engine(Worker):
    """An engine that runs handlers: pipelines in one task group, graceful stop.

    Subclasses say how many pipelines they run and start them. A graceful
    stop waits until nothing runs: no execution in flight (``_execute()``
    counts them) and no parallel loop live (each counts itself, see
    ``ParallelWorker._loop``).
    """

    def __init__(
        self, *, registry: Registry, logger: logging.Logger | None, grace: Duration
    ) -> None:
        super().__init__()
        kind = type(self).__name__
        if not isinstance(registry, Registry):
            raise TypeError(f"{kind} registry must be a workit.Registry, got {registry!r}")
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(f"{kind} logger must be a logging.Logger, got {logger!r}")
        self.registry = registry
        self.logger = logger if logger is not None else registry.logger
        self.grace = seconds(grace, f"{kind} grace")
        self._stopping = False
        self._in_flight = 0
        self._live = 0  # parallel loops not ended yet
        self._drained: anyio.Event | None = None
        self._stop_event: anyio.Event | None = None
        self._call_soon: Callable[[Callable[[], object]], object] | None = None
        self._last_stop = StopReport()

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called and the daemon has not returned yet."""
        return self._stopping

    engine: ClassVar[Literal["parallel", "sequence"]]
    """The engine's kind, as reported in status snapshots."""

    handlers: tuple[Instrumented, ...]
    """The engine's handlers, each wrapped by the registry."""

    @abc.abstractmethod
    def _pipelines(self) -> int:
        """How many pipelines ``_start()`` runs; 0 means the daemon returns at once."""

    @abc.abstractmethod
    def _start(self, tasks: TaskGroup) -> None:
        """Start every pipeline in ``tasks``."""

    def stop(self) -> None:
        """Start no new execution; let running ones finish, within ``grace``.

        Safe from any thread and from signal handlers. Called before
        ``daemon()``, it makes the next ``daemon()`` return at once.
        """
        self._stopping = True
        self._ready = False
        call_soon = self._call_soon
        if call_soon is not None:
            # RuntimeError: the loop has just closed, so nothing is left to stop.
            with contextlib.suppress(RuntimeError):
                call_soon(self._wake_on_stop)

    def _wake_on_stop(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()
        self._wake()

    def _wake(self) -> None:
        """End the waits a stop need not sit out (on the event loop's thread)."""

    def _settle(self) -> None:
        """Wake the drain once nothing runs (no execution, no parallel loop)."""
        if self._drained is not None and not (self._in_flight or self._live):
            self._drained.set()

    async def daemon(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the pipelines until ``stop()``, then drain within ``grace``."""
        self._begin()
        self._stop_event = anyio.Event()
        # Set before reading _stopping: a stop() racing from another thread
        # either sees the caller or has already set _stopping.
        self._call_soon = _threadsafe_caller()
        idle = False
        try:
            pipelines = self._pipelines()
            if pipelines == 0 or self._stopping:
                idle = True
                self._set_ready(task_status)
                return
            for handler in self.handlers:
                handler.state.cancelled = False
            async with anyio.create_task_group() as tasks:
                self._start(tasks)
                self._set_ready(task_status)
                log(
                    self.logger,
                    logging.INFO,
                    "worker is executing tasks",
                    extra={"pipelines": pipelines, "engine": self.engine},
                )
                await self._stop_event.wait()
                self._ready = False
                await self._drain()
                tasks.cancel_scope.cancel()
        finally:
            self._call_soon = None
            self._stop_event = None
            self._stopping = False
            self._end(keep_ready=idle)

    async def _drain(self) -> None:
        try:
            with anyio.move_on_after(self.grace):
                while self._in_flight or self._live:
                    self._drained = anyio.Event()
                    await self._drained.wait()
        finally:  # also when cancelled, by a second signal say: the counts must be told
            self._drained = None
            self._report_stop()

    def _report_stop(self) -> None:
        # Cancelled ones count too: a second signal cancels executions while
        # the drain is still waiting for them.
        running = [
            handler for handler in self.handlers if handler.state.running or handler.state.cancelled
        ]
        cancelled = sum(handler.proxy.is_async for handler in running)
        report = self._last_stop = StopReport(
            cancelled=cancelled,
            abandoned=len(running) - cancelled,
            handlers=tuple(handler.name for handler in running),
        )
        log(
            self.logger,
            logging.WARNING if running else logging.INFO,
            "worker stopped: %d executions cancelled and %d abandoned",
            report.cancelled,
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
        """A snapshot of the worker's readiness and of each handler's state."""
        return WorkerStatus(
            ready=self._ready,
            handlers=tuple(self._handler_status(handler) for handler in self.handlers),
        )

    def _handler_status(self, handler: Instrumented) -> HandlerStatus:
        state = handler.state
        return HandlerStatus(
            name=handler.name,
            engine=self.engine,
            active=state.active,
            running=state.running,
            executions=state.executions,
            failures=state.failures,
            consecutive_failures=state.consecutive_failures,
            last_started=timestamp(state.last_started),
            last_finished=timestamp(state.last_finished),
            last_success=timestamp(state.last_success),
            last_duration=state.last_duration,
            last_outcome=state.last_outcome,
            last_error=state.last_error,
            next_run=timestamp(self._next_run(state)),
        )

    def _next_run(self, state: HandlerState) -> float | None:
        return state.next_run if self._running and not self._stopping else None

    async def _execute(self, handler: Instrumented) -> BaseException | None:
        """Run ``handler`` once, counted as in flight; return what it raised."""
        self._in_flight += 1
        try:
            return await handler.execute()
        finally:
            self._in_flight -= 1
            self._settle()

    def _signal_logger(self) -> logging.Logger:
        return self.logger


def raise_failure(handler: Instrumented, error: BaseException) -> NoReturn:
    """Raise the ``HandlerError`` (or the ``HandlerTimeout``) of a failed execution."""
    if isinstance(error, HandlerTimeout) and error.handler == handler.name:
        raise error
    raise HandlerError(handler.name) from error


def proxies(handlers: Iterable[object], where: str) -> list[Proxy]:
    """Each handler in a ``Proxy``; errors name ``where`` and the index."""
    result = []
    for index, handler in enumerate(handlers):
        try:
            result.append(handler if isinstance(handler, Proxy) else Proxy(handler))
        except (TypeError, ValueError) as error:
            raise type(error)(f"{where} {index}: {error}") from None
    return result


def check_backoff(backoff: object, where: str) -> Backoff | None:
    """``backoff`` when it is a ``Backoff`` or ``None``, else ``TypeError``."""
    if backoff is not None and not isinstance(backoff, Backoff):
        raise TypeError(f"{where} backoff must be a workit.Backoff, got {backoff!r}")
    return backoff


def check_unique_names(proxies: Iterable[Proxy], where: str) -> None:
    """``ValueError`` when two handlers share a name."""
    seen: dict[str, Proxy] = {}
    for proxy in proxies:
        other = seen.setdefault(proxy.name, proxy)
        if other is not proxy:
            raise ValueError(
                f"{where}: two handlers are named {proxy.name!r} "
                f"({other.unwrap()!r} and {proxy.unwrap()!r}); "
                "give each a distinct `name` attribute"
            )


def listed(handlers: object, where: str) -> list[object]:
    """``handlers`` as a list, or ``TypeError`` when it is not a collection."""
    if (
        handlers is None
        or isinstance(handlers, (str, bytes, Mapping))
        or not isinstance(handlers, Iterable)
    ):
        raise TypeError(f"{where} must be a list of handlers, got {handlers!r}")
    return list(handlers)
