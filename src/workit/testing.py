"""Helpers for the tests of services built on workit.

``Recorder`` is a metrics backend that keeps every execution in memory, with
its outcome, error and latency; ``running(worker)`` runs a worker's daemon
around a block. Together they test handlers through a real engine::

    recorder = workit.testing.Recorder()
    worker = workit.ParallelWorker(
        [SyncUsers()], registry=workit.Registry("test", metrics=recorder)
    )
    with anyio.fail_after(10):
        async with workit.testing.running(worker):
            await recorder.wait_for("sync_users", count=3)

On a fake clock an hour of coolers passes in milliseconds: run the test on
trio with ``trio.testing.MockClock(autojump_threshold=0)``, which jumps to the
next deadline as soon as every task waits. With anyio's pytest plugin (it
comes with anyio) and trio installed, a complete test module:

.. code-block:: python

    import anyio
    import pytest
    from trio.testing import MockClock

    import workit
    from workit.testing import Recorder, running


    class SyncUsers:
        cooler = 60

        async def ensure(self) -> None:
            pass


    @pytest.mark.parametrize(
        "anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})]
    )
    @pytest.mark.anyio
    async def test_sync_users_runs_every_minute() -> None:
        recorder = Recorder()
        registry = workit.Registry("test", metrics=recorder)
        worker = workit.ParallelWorker([SyncUsers()], registry=registry)
        start = anyio.current_time()
        with anyio.fail_after(3600):  # fake seconds: the test takes milliseconds
            async with running(worker):
                await recorder.wait_for("sync_users", count=3)
        assert recorder.outcomes("sync_users") == ["success"] * 3
        assert anyio.current_time() - start == 120  # at 0, 60 and 120 s

The fake clock does not wait for threads: while a sync (plain ``def``)
``ensure`` runs in its worker thread, every task waits, so the clock jumps
ahead, and a ``timeout`` may expire at once. Give fake-clock tests ``async``
handlers.
"""

from __future__ import annotations

import dataclasses
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar, get_args

import anyio

from workit.lease import LeaseEvent
from workit.worker import Worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from workit.metrics import Observed, Record
    from workit.status import ErrorInfo, Outcome

__all__ = ["Execution", "Recorder", "running"]

_W = TypeVar("_W", bound=Worker)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    """One execution a ``Recorder`` recorded.

    ``outcome`` is ``"success"``, ``"ignored"`` (an exception the registry's
    filter ignores) or ``"failure"``; ``error`` describes the exception of a
    failure (``None`` otherwise); ``latency`` is in seconds.
    """

    env: str
    handler: str
    outcome: Outcome
    error: ErrorInfo | None
    latency: float

    @property
    def success(self) -> bool:
        """Whether the metrics count it as a success (``ignored`` included)."""
        return self.outcome != "failure"


class Recorder:
    """A metrics backend that keeps every execution in memory, for tests.

    Give it to a registry (``workit.Registry("test", metrics=Recorder())``)
    and read what the engines recorded: ``executions()``, ``outcomes()``,
    ``latencies()``, ``errors()`` and ``count()``, each for one handler (and
    env) or all; ``await wait_for(handler, count=n)`` waits until ``handler``
    has had ``n`` executions, for as long as the caller's ``fail_after``
    allows; ``lease_events()`` counts the lease events of engines under
    leases (``"acquired"``, ``"released"``, ``"lost"``). The outcome and
    error of an execution are read from the state the engine registered
    with ``observe()``; for a handler never observed they follow the
    metrics' ``success`` flag alone, so an ignored exception shows as a
    ``"success"``. Executions are recorded on the event loop's thread, as
    the engines do.
    """

    __slots__ = ("_executions", "_lease_events", "_states", "_waiters")

    def __init__(self) -> None:
        self._executions: list[Execution] = []
        self._states: dict[tuple[str, str], Observed] = {}
        self._waiters: list[anyio.Event] = []
        self._lease_events: dict[tuple[str, str], int] = {}

    def recorder(self, env: str, handler: str) -> Record:
        """The function that records executions of ``handler`` in ``env``."""

        def record(latency: float, success: bool) -> None:
            outcome, error = self._outcome(env, handler, success)
            self._executions.append(
                Execution(env=env, handler=handler, outcome=outcome, error=error, latency=latency)
            )
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.set()

        return record

    def lease_counter(self, env: str) -> Callable[[str], None]:
        """The function that counts one lease event in ``env`` (see ``lease_events()``)."""
        for event in get_args(LeaseEvent):
            self._lease_events.setdefault((env, event), 0)

        def count(event: str) -> None:
            self._lease_events[env, event] = self._lease_events.get((env, event), 0) + 1

        return count

    def lease_events(self, *, env: str | None = None) -> dict[str, int]:
        """How many claims were ``"acquired"``, ``"released"`` and ``"lost"`` (in ``env``,
        or in all), as ``worker_lease_events_total`` counts them; empty before an engine
        ran under leases."""
        counts: dict[str, int] = {}
        for (each_env, event), n in self._lease_events.items():
            if env in (None, each_env):
                counts[event] = counts.get(event, 0) + n
        return counts

    def observe(self, env: str, handler: str, state: Observed) -> None:
        """Register ``state``, from which each execution's outcome and error are read;
        the latest registration for a label set wins."""
        self._states[env, handler] = state

    def _outcome(self, env: str, handler: str, success: bool) -> tuple[Outcome, ErrorInfo | None]:
        state = self._states.get((env, handler))
        outcome = None if state is None else state.last_outcome
        if outcome is None:
            outcome = "success" if success else "failure"
        error = state.last_error if state is not None and outcome == "failure" else None
        return outcome, error

    def state(self, handler: str, *, env: str | None = None) -> Observed | None:
        """The state ``handler`` was observed with (in ``env``, or any), or ``None``."""
        for (each_env, name), state in reversed(self._states.items()):
            if name == handler and env in (None, each_env):
                return state
        return None

    def executions(
        self, handler: str | None = None, *, env: str | None = None, outcome: Outcome | None = None
    ) -> list[Execution]:
        """The executions recorded, oldest first: of ``handler`` (else of all),
        in ``env`` (else any), with ``outcome`` (else any)."""
        return [
            execution
            for execution in self._executions
            if handler in (None, execution.handler)
            and env in (None, execution.env)
            and outcome in (None, execution.outcome)
        ]

    def outcomes(self, handler: str, *, env: str | None = None) -> list[Outcome]:
        """The outcome of each execution of ``handler``, oldest first."""
        return [execution.outcome for execution in self.executions(handler, env=env)]

    def latencies(self, handler: str, *, env: str | None = None) -> list[float]:
        """The latency of each execution of ``handler`` in seconds, oldest first."""
        return [execution.latency for execution in self.executions(handler, env=env)]

    def errors(self, handler: str, *, env: str | None = None) -> list[ErrorInfo]:
        """The errors of the failed executions of ``handler`` known from its state."""
        return [
            execution.error
            for execution in self.executions(handler, env=env, outcome="failure")
            if execution.error is not None
        ]

    def count(
        self, handler: str | None = None, *, env: str | None = None, outcome: Outcome | None = None
    ) -> int:
        """How many executions ``executions()`` would list."""
        return len(self.executions(handler, env=env, outcome=outcome))

    async def wait_for(
        self,
        handler: str,
        count: int = 1,
        *,
        env: str | None = None,
        outcome: Outcome | None = None,
    ) -> list[Execution]:
        """Wait until ``handler`` has ``count`` executions recorded (in ``env``,
        with ``outcome``, when given); return them all.

        It has no limit of its own: bound it with ``anyio.fail_after``.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive int, got {count!r}")
        while True:
            found = self.executions(handler, env=env, outcome=outcome)
            if len(found) >= count:
                return found
            waiter = anyio.Event()
            self._waiters.append(waiter)
            await waiter.wait()

    def clear(self) -> None:
        """Forget the executions and lease events recorded so far (the observed states
        are kept)."""
        self._executions.clear()
        for key in self._lease_events:
            self._lease_events[key] = 0

    def __repr__(self) -> str:
        return f"Recorder({len(self._executions)} executions)"


@asynccontextmanager
async def running(worker: _W) -> AsyncIterator[_W]:
    """Run ``worker.daemon()`` around the block; ready when the block starts.

    On exit ``worker.stop()`` is called and the daemon waited for (within the
    worker's ``grace``; bound the whole with ``anyio.fail_after``). When the
    daemon crashes, its exception is raised as it is rather than inside an
    ``ExceptionGroup``, and so is an exception of the block's own, unless
    both happen.
    """
    if not isinstance(worker, Worker):
        raise TypeError(f"running() needs a workit worker, got {worker!r}")
    alone: BaseException | None = None
    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(
                worker.daemon, name=f"workit.testing.running({type(worker).__name__})"
            )
            try:
                yield worker
            finally:
                worker.stop()
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        alone = group.exceptions[0]
    if alone is not None:
        raise alone  # out of the except block, so that the group is not its context
