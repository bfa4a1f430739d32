"""The lifecycle every worker has: one state, readiness, and the blocking ``run()``."""

from __future__ import annotations

import abc
import enum
import json
import logging
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from workit.worker._signals import run_until_signalled

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from anyio.abc import TaskStatus

    from workit.metrics import Backend
    from workit.status import EngineInfo, StopReport, WorkerStatus
    from workit.worker._engine import Engine

__all__ = ["State", "Worker"]

_CHUNK = 1024  # handlers' JSON joined and encoded between two turns of the event loop


class State(enum.Enum):
    """Where a worker's daemon is in its life."""

    IDLE = "idle"
    """No daemon runs: before the first, or after one returned."""
    STARTING = "starting"
    """``daemon()`` was called and is starting its pipelines."""
    READY = "ready"
    """Every pipeline runs."""
    STOPPING = "stopping"
    """``stop()`` was called: no new execution starts; running ones get the grace period."""


class _Start:
    """One daemon run's readiness, which ``wait_ready()`` waits for."""

    __slots__ = ("event", "failure")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.failure: BaseException | None = None


class Worker(abc.ABC):
    """The lifecycle every workit worker has.

    ``daemon()`` runs until ``stop()`` (or cancellation); ``wait_ready()``
    returns once it has started all its pipelines; ``stop()`` is safe from any
    thread and from signal handlers; ``run()`` is the blocking entry point.
    ``ensure()`` runs every handler once, now.
    """

    def __init__(self) -> None:
        self._state = State.IDLE
        self._stop_asked = False  # by stop(), until the daemon it stops returns
        self._readiness: _Start | None = None

    @property
    def state(self) -> State:
        """Where the daemon is in its life."""
        return self._state

    @property
    def ready(self) -> bool:
        """Whether the daemon has started all its pipelines and is not stopping."""
        return self._state is State.READY

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called and the daemon has not returned yet."""
        return self._state is State.STOPPING

    @abc.abstractmethod
    async def daemon(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until ``stop()`` is called or the task is cancelled.

        ``await task_group.start(worker.daemon)`` returns once it is ready.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Start no new execution; let running ones finish, within the grace period."""

    @abc.abstractmethod
    async def ensure(self) -> None:
        """Run every active handler once now; raise ``HandlerError`` for the first failure."""

    @abc.abstractmethod
    def status(self) -> WorkerStatus:
        """A snapshot of the worker's readiness and of each handler's state."""

    async def status_json(self) -> bytes:
        """``status().to_dict()`` as JSON, built in slices between which the event loop runs.

        This is what ``/status`` serves. With 10,000 handlers the snapshot
        objects, their dicts and their encoding would hold the event loop a
        quarter of a second a request, delaying every handler due meanwhile.
        """
        handlers, fleet = await self._status_parts()
        chunks = []
        for start in range(0, len(handlers), _CHUNK):  # megabytes: encoded a slice at a time
            if start:
                await anyio.lowlevel.checkpoint()
            chunks.append(",".join(handlers[start : start + _CHUNK]).encode())
        head = f'{{"ready":{"true" if self.ready else "false"},"handlers":['.encode()
        return b"".join([head, b",".join(chunks), f'],"fleet":{fleet}}}'.encode()])

    async def _status_parts(self) -> tuple[list[str], str]:
        """Each handler's status as JSON, and the fleet's (``null`` without leases)."""
        status = self.status().to_dict()
        handlers = status["handlers"]
        assert isinstance(handlers, list)
        parts = [json.dumps(handler, separators=(",", ":")) for handler in handlers]
        return parts, json.dumps(status["fleet"], separators=(",", ":"))

    @abc.abstractmethod
    def describe(self) -> tuple[EngineInfo, ...]:
        """Each engine's kind and handlers, with what they declare."""

    @property
    @abc.abstractmethod
    def engines(self) -> tuple[Engine, ...]:
        """The engines this worker runs: itself, or those a combined worker holds."""

    @property
    def metrics(self) -> tuple[Backend, ...]:
        """The metrics backends the worker records into, each once."""
        backends: dict[int, Backend] = {}
        for engine in self.engines:
            backends.setdefault(id(engine.registry.metrics), engine.registry.metrics)
        return tuple(backends.values())

    @property
    @abc.abstractmethod
    def last_stop(self) -> StopReport:
        """What the last graceful stop had to cancel or abandon (empty before one)."""

    async def wait_ready(self) -> None:
        """Return once the daemon has started all its pipelines.

        Raises ``RuntimeError`` when the daemon it waits for ended before it
        was ready (it failed to start).
        """
        if self._readiness is None:
            self._readiness = _Start()
        start = self._readiness
        await start.event.wait()
        if start.failure is not None:
            raise RuntimeError(
                f"{type(self).__name__}.daemon() ended before it was ready"
            ) from start.failure

    def _begin(self) -> None:
        """The daemon starts: ``RuntimeError`` when one runs already."""
        if self._state is not State.IDLE:
            raise RuntimeError(f"{type(self).__name__}.daemon() is already running")
        self._state = State.STARTING
        if self._readiness is None or self._readiness.event.is_set():
            self._readiness = _Start()

    def _set_ready(self, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if self._state is State.STARTING:
            self._state = State.READY
        assert self._readiness is not None
        self._readiness.event.set()
        task_status.started()

    def _ask_stop(self) -> None:
        """Record a ``stop()``: a daemon starting or running stops, a later one returns at once."""
        self._stop_asked = True
        if self._state is State.STARTING or self._state is State.READY:
            self._state = State.STOPPING

    def _end(self, failure: BaseException | None = None, *, keep_ready: bool = False) -> None:
        """The daemon returns, or raised ``failure``; ``keep_ready`` when it had nothing to run."""
        self._state = State.IDLE
        self._stop_asked = False
        start = self._readiness
        if start is None:
            return
        if not start.event.is_set():
            start.failure = failure or RuntimeError("the daemon was cancelled")
            start.event.set()  # the waiters raise; later calls wait for the next run
            self._readiness = None
        elif not keep_ready:
            self._readiness = None  # the next run's wait_ready() waits for that run

    def run(self, *, backend: str = "asyncio") -> None:
        """Run ``daemon()`` until SIGINT, SIGTERM or SIGHUP, then stop gracefully.

        The first signal calls ``stop()``; a second one cancels running
        executions at once; later ones are logged. Returns normally in every case.
        """
        anyio.run(run_until_signalled, self, backend=backend)

    async def run_until_signalled(
        self, *, serving: AbstractAsyncContextManager[object] | None = None
    ) -> None:
        """Run ``daemon()`` until a signal, as ``run()`` does, in a running event loop.

        ``serving`` (an HTTP server, say) is entered once the signals are
        caught and left before they are let go: a signal while it starts or
        shuts down stops or cancels the worker as usual, instead of killing
        the process.
        """
        await run_until_signalled(self, serving)

    def _signal_logger(self) -> logging.Logger:
        return logging.getLogger("workit")
