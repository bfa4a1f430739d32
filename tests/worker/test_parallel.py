"""ParallelWorker: one loop per handler, each its own failure domain."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import pytest

import workit
from tests.support import BlocksFirst, executions, fake_clock
from workit.status import EngineInfo, HandlerInfo
from workit.worker import State

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from prometheus_client import CollectorRegistry


FAILED = "worker execution failed"


class Ticker:
    """An async handler that records the time each execution starts."""

    def __init__(self, name: str, *, cooler: float, takes: float = 0.0, enough: int = 1) -> None:
        self.name = name
        self.cooler = cooler
        self.takes = takes
        self.starts: list[float] = []
        self.enough = enough
        self.reached = anyio.Event()

    async def ensure(self) -> None:
        self.starts.append(anyio.current_time())
        if len(self.starts) >= self.enough:
            self.reached.set()
        await anyio.sleep(self.takes)


@contextlib.asynccontextmanager
async def running(worker: workit.ParallelWorker, *, within: float = 5) -> AsyncIterator[None]:
    """Run ``worker.daemon()`` around the body; then stop it and wait until it returns."""
    returned = anyio.Event()

    async def daemon() -> None:
        await worker.daemon()
        returned.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(daemon)
        with anyio.fail_after(5):
            await worker.wait_ready()
        yield
        worker.stop()
        with anyio.fail_after(within):
            await returned.wait()


def failures(caplog: pytest.LogCaptureFixture, handler: str) -> list[logging.LogRecord]:
    """The "worker execution failed" records logged for ``handler``."""
    return [
        record
        for record in caplog.records
        if record.getMessage().startswith(FAILED) and getattr(record, "handler", None) == handler
    ]


async def wait_until(condition: Callable[[], bool], *, within: float = 5) -> None:
    """Poll ``condition()`` every millisecond until it is true, for at most ``within`` s."""
    with anyio.fail_after(within):
        # A metric or a thread's state: nothing to wait on, so poll.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.001)


# Cooler and activity


@fake_clock()
@pytest.mark.anyio
async def test_cooler_is_slept_after_each_execution(registry: workit.Registry) -> None:
    """The cooler starts when an execution ends: 3 s of work + cooler 5 starts every 8 s."""
    ticker = Ticker("ticker", cooler=5, takes=3, enough=4)
    worker = workit.ParallelWorker([ticker], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await ticker.reached.wait()
    assert [at - start for at in ticker.starts[:4]] == pytest.approx([0, 8, 16, 24])


class Jittery(Ticker):
    """A ticker whose coolers vary by up to ``jitter`` either way."""

    def __init__(self, *, cooler: float, jitter: float, enough: int) -> None:
        super().__init__("jittery", cooler=cooler, enough=enough)
        self.jitter = jitter


@fake_clock()
@pytest.mark.anyio
async def test_jitter_shortens_and_lengthens_each_cooler_by_up_to_its_share(
    registry: workit.Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With jitter 0.5 a cooler of 10 s lasts 5 s at the lowest draw, 15 s at the highest,
    10 s in the middle; the draws come from the random source, one per cooler."""
    draws = iter([0.0, 1.0, 0.5])
    monkeypatch.setattr("workit.handler._instrument.random", lambda: next(draws))
    jittery = Jittery(cooler=10, jitter=0.5, enough=4)
    worker = workit.ParallelWorker([jittery], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await jittery.reached.wait()
    assert [at - start for at in jittery.starts[:4]] == pytest.approx([0, 5, 20, 30])


@fake_clock()
@pytest.mark.anyio
async def test_handlers_started_together_drift_apart_with_jitter(
    registry: workit.Registry,
) -> None:
    """Ten handlers with cooler 1 and jitter 0.2 no longer start in lock-step after a while;
    without jitter they do."""
    drifting = [Ticker(f"j{index}", cooler=1, enough=5) for index in range(10)]
    for ticker in drifting:
        ticker.jitter = 0.2  # type: ignore[attr-defined]  # declared on the instance
    steady = [Ticker(f"s{index}", cooler=1, enough=5) for index in range(10)]
    worker = workit.ParallelWorker([*drifting, *steady], registry=registry)
    async with running(worker):
        with anyio.fail_after(100):
            for ticker in [*drifting, *steady]:
                await ticker.reached.wait()
    assert len({round(ticker.starts[4], 6) for ticker in steady}) == 1
    assert len({round(ticker.starts[4], 6) for ticker in drifting}) == 10


def test_engine_handlers_have_their_gauges_from_the_start(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """Built, before any execution, each handler has its three gauges at 0 and its counters."""
    workit.ParallelWorker([Ticker("fresh", cooler=1)], registry=registry)
    labels = {"env": "test", "handler": "fresh"}
    for gauge in (
        "worker_handler_last_success_timestamp_seconds",
        "worker_handler_running",
        "worker_handler_consecutive_failures",
    ):
        assert prom.get_sample_value(gauge, labels) == 0.0, gauge
    assert executions(prom, "fresh", success=True) == 0.0
    assert (
        prom.get_sample_value("worker_handler_execution_total", {**labels, "success": "false"})
        == 0.0
    )


class Dormant:
    """A handler whose ``active()`` records when it is asked."""

    name = "dormant"
    cooler = 5

    def __init__(self, *, enough: int) -> None:
        self.asked: list[float] = []
        self.ensured = 0
        self.enough = enough
        self.reached = anyio.Event()

    def active(self) -> bool:
        self.asked.append(anyio.current_time())
        if len(self.asked) >= self.enough:
            self.reached.set()
        return False

    async def ensure(self) -> None:
        self.ensured += 1


@fake_clock()
@pytest.mark.anyio
async def test_inactive_handler_is_skipped_and_asked_every_cooler(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """An inactive handler is not executed nor counted, and is asked again every cooler."""
    dormant = Dormant(enough=4)
    worker = workit.ParallelWorker([dormant], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await dormant.reached.wait()
    assert [at - start for at in dormant.asked[:4]] == pytest.approx([0, 5, 10, 15])
    assert dormant.ensured == 0
    assert executions(prom, "dormant", True) == 0
    assert executions(prom, "dormant", False) == 0


@fake_clock()
@pytest.mark.anyio
async def test_handler_starts_running_when_active_flips(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """A handler whose ``active`` attribute turns true runs at the next ask."""

    class Sleeper(Ticker):
        active = False

    sleeper = Sleeper("sleeper", cooler=5)
    worker = workit.ParallelWorker([sleeper], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        await anyio.sleep(12)
        assert sleeper.starts == []
        sleeper.active = True
        with anyio.fail_after(100):
            await sleeper.reached.wait()
    assert [at - start for at in sleeper.starts] == pytest.approx([15])
    assert executions(prom, "sleeper", True) == 1


# Failures


class Failing(Ticker):
    """A ticker whose every execution raises ``RuntimeError``."""

    async def ensure(self) -> None:
        await super().ensure()
        raise RuntimeError("boom")


@fake_clock()
@pytest.mark.anyio
async def test_failure_is_reported_and_loop_continues_after_cooler(
    registry: workit.Registry, prom: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure is counted and logged with the handler name; the next run comes a cooler later."""
    failing = Failing("failing", cooler=5, enough=3)
    worker = workit.ParallelWorker([failing], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await failing.reached.wait()
    assert [at - start for at in failing.starts] == pytest.approx([0, 5, 10])
    assert executions(prom, "failing", False) == 3
    assert executions(prom, "failing", True) == 0
    records = failures(caplog, "failing")
    assert len(records) == 3
    assert all(record.levelno == logging.ERROR for record in records)
    assert all(
        record.exc_info and isinstance(record.exc_info[1], RuntimeError) for record in records
    )


@fake_clock()
@pytest.mark.anyio
async def test_failing_handler_does_not_affect_another(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """A handler next to a failing one keeps its schedule and counts successes."""
    failing = Failing("failing", cooler=5)
    steady = Ticker("steady", cooler=2, enough=6)
    worker = workit.ParallelWorker([failing, steady], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await steady.reached.wait()
    assert [at - start for at in steady.starts] == pytest.approx([0, 2, 4, 6, 8, 10])
    assert executions(prom, "steady", True) == 6
    assert executions(prom, "steady", False) == 0
    assert executions(prom, "failing", False) >= 2


class Stuck:
    """An async handler that never finishes (``hang``) or takes 1000 s (``slow``)."""

    name = "stuck"
    cooler = 1

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def ensure(self) -> None:
        if self.kind == "hang":
            await anyio.sleep_forever()
        await anyio.sleep(1000)


@pytest.mark.parametrize("kind", ["hang", "slow"])
@fake_clock()
@pytest.mark.anyio
async def test_stuck_handler_never_delays_another(registry: workit.Registry, kind: str) -> None:
    """A hanging or slow async handler leaves another's schedule exactly as it was."""
    steady = Ticker("steady", cooler=1, takes=0.5, enough=6)
    worker = workit.ParallelWorker([Stuck(kind), steady], registry=registry, grace=0)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await steady.reached.wait()
    assert [at - start for at in steady.starts] == pytest.approx([0, 1.5, 3, 4.5, 6, 7.5])


# Sync handlers

BLOCKED = 100  # more than anyio's default thread limiter (40) holds


class Blocked:
    """A sync handler that blocks its thread until ``gate`` is set."""

    cooler = 0

    def __init__(self, index: int, gate: threading.Event, entered: Counter) -> None:
        self.name = f"blocked_{index}"
        self.gate = gate
        self.entered = entered

    def ensure(self) -> None:
        self.entered.add()
        self.gate.wait()


class Counter:
    """A thread-safe counter that sets an anyio event once it reaches ``target``."""

    def __init__(self) -> None:
        self.count = 0
        self.target: int | None = None
        self.reached = anyio.Event()
        self._lock = threading.Lock()

    def add(self) -> None:
        """Count one; called from a worker thread."""
        with self._lock:
            self.count += 1
            hit = self.target is not None and self.count >= self.target
        if hit:
            anyio.from_thread.run_sync(self.reached.set)

    def expect(self, more: int) -> None:
        """Set ``reached`` once ``more`` more have been counted."""
        with self._lock:
            self.target = self.count + more


class Quick:
    """A quick sync handler that counts its executions."""

    name = "quick"
    cooler = 0.005

    def __init__(self) -> None:
        self.counter = Counter()

    def ensure(self) -> None:
        self.counter.add()


@pytest.mark.anyio
async def test_blocked_sync_handlers_do_not_stop_a_quick_one(registry: workit.Registry) -> None:
    """100 blocked sync handlers (more than a shared 40-thread pool) leave a quick one running."""
    gate = threading.Event()
    entered = Counter()
    entered.expect(BLOCKED)
    quick = Quick()
    blocked = [Blocked(index, gate, entered) for index in range(BLOCKED)]
    worker = workit.ParallelWorker([*blocked, quick], registry=registry)
    try:
        async with running(worker):
            with anyio.fail_after(5):
                await entered.reached.wait()
                quick.counter.expect(10)
                await quick.counter.reached.wait()
            assert entered.count == BLOCKED
            gate.set()
    finally:
        gate.set()  # else the blocked threads keep the interpreter from exiting


# One execution at a time


@pytest.mark.anyio
async def test_sync_execution_past_timeout_holds_back_the_next(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """After a sync ``HandlerTimeout`` the next execution waits until the thread returns."""
    handler = BlocksFirst("overstaying", cooler=0, timeout=0.01, limit=5)
    worker = workit.ParallelWorker([handler], registry=registry)
    try:
        async with running(worker):
            await wait_until(lambda: executions(prom, "overstaying", False) >= 1)
            await anyio.wait_all_tasks_blocked()
            await anyio.sleep(0.02)  # room for a wrongly started second execution
            assert handler.calls == 1
            handler.gate.set()
            await wait_until(lambda: handler.calls >= 3)
    finally:
        handler.gate.set()
    assert handler.most == 1


class Lingering:
    """An async handler cancelled at its timeout that takes 1 s to clean up."""

    name = "lingering"
    cooler = 0
    timeout = 2

    def __init__(self) -> None:
        self.calls = 0
        self.running = 0
        self.most = 0
        self.reached = anyio.Event()

    async def ensure(self) -> None:
        self.calls += 1
        self.running += 1
        self.most = max(self.most, self.running)
        if self.calls >= 3:
            self.reached.set()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(1)
            self.running -= 1


@fake_clock()
@pytest.mark.anyio
async def test_async_execution_is_never_overlapped(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """An async execution cancelled at its timeout has finished before the next starts."""
    handler = Lingering()
    worker = workit.ParallelWorker([handler], registry=registry, grace=0)
    async with running(worker):
        with anyio.fail_after(100):
            await handler.reached.wait()
    assert handler.most == 1
    assert executions(prom, "lingering", False) >= 2


# BaseException and broken optional parts


class Stop(BaseException):
    """A BaseException of the user's own."""


def raiser(kind: type[BaseException], *, sync: bool) -> workit.Handler:
    """A handler that raises ``kind`` on every execution."""

    def ensure_sync() -> None:
        raise kind("raised by the handler")

    async def ensure_async() -> None:
        raise kind("raised by the handler")

    ensure = ensure_sync if sync else ensure_async
    return workit.Handler(ensure, cooler=0.001, name="raiser")


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, Stop])
@pytest.mark.anyio
async def test_base_exception_from_ensure_is_a_failure(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    kind: type[BaseException],
    sync: bool,
) -> None:
    """KeyboardInterrupt, SystemExit or a custom BaseException from ensure is counted and logged."""
    steady = Ticker("steady", cooler=0.001)
    worker = workit.ParallelWorker([raiser(kind, sync=sync), steady], registry=registry)
    async with running(worker):
        await wait_until(lambda: executions(prom, "raiser", False) >= 3)
        await wait_until(lambda: executions(prom, "steady", True) >= 3)
    records = failures(caplog, "raiser")
    assert len(records) >= 3
    assert all(record.exc_info and type(record.exc_info[1]) is kind for record in records)
    assert executions(prom, "raiser", True) == 0


class BadActive(Ticker):
    """A ticker whose ``active()`` raises the first time it is asked."""

    def __init__(self) -> None:
        super().__init__("bad_active", cooler=5)
        self.asked = 0

    def active(self) -> bool:
        self.asked += 1
        if self.asked == 1:
            raise LookupError("cannot tell")
        return True


@fake_clock()
@pytest.mark.anyio
async def test_exception_from_active_is_a_failure(
    registry: workit.Registry, prom: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``active()`` that raises is reported as a failure; the loop asks again a cooler later."""
    handler = BadActive()
    worker = workit.ParallelWorker([handler], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await handler.reached.wait()
    assert [at - start for at in handler.starts] == pytest.approx([5])
    assert executions(prom, "bad_active", False) == 1
    assert executions(prom, "bad_active", True) == 1
    [record] = failures(caplog, "bad_active")
    assert record.exc_info
    assert isinstance(record.exc_info[1], LookupError)


class BadCooler:
    """A handler whose ``cooler()`` always raises."""

    name = "bad_cooler"

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.reached = anyio.Event()

    def cooler(self) -> float:
        raise LookupError("cannot tell")

    async def ensure(self) -> None:
        self.starts.append(anyio.current_time())
        if len(self.starts) >= 3:
            self.reached.set()


@fake_clock()
@pytest.mark.anyio
async def test_exception_from_cooler_is_a_failure(
    registry: workit.Registry, prom: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``cooler()`` that raises is reported as a failure; the loop goes on without spinning."""
    handler = BadCooler()
    worker = workit.ParallelWorker([handler], registry=registry)
    async with running(worker):
        with anyio.fail_after(100):
            await handler.reached.wait()
    assert executions(prom, "bad_cooler", False) >= 2
    assert executions(prom, "bad_cooler", True) == 3
    assert len(failures(caplog, "bad_cooler")) >= 2
    gaps = [later - earlier for earlier, later in itertools.pairwise(handler.starts)]
    assert all(gap > 0 for gap in gaps)


# A handler cancelling its own task (asyncio)


class Watchdogged:
    """An async handler whose own watchdog cancels the task it runs in after 10 ms,
    while it waits longer (a library cancelling "its" task, say)."""

    name = "watchdogged"
    cooler = 0

    def __init__(self) -> None:
        self.calls = 0

    async def ensure(self) -> None:
        self.calls += 1
        task = asyncio.current_task()
        assert task is not None
        guard = asyncio.get_running_loop().call_later(0.01, task.cancel)
        try:
            await asyncio.sleep(1)
        finally:
            guard.cancel()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_handler_cancelling_its_own_task_is_a_failure_and_its_loop_goes_on(
    registry: workit.Registry, prom: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """On asyncio, an execution cancelled by the handler's own code is a failure (counted,
    logged, in status) and its loop goes on; the neighbour too; the stop cancels nothing."""
    watchdogged = Watchdogged()
    steady = Ticker("steady", cooler=0.001)
    worker = workit.ParallelWorker([watchdogged, steady], registry=registry)
    async with running(worker):
        await wait_until(lambda: executions(prom, "watchdogged", False) >= 3)
        assert worker.ready
        await wait_until(lambda: len(steady.starts) >= 3)
    count = executions(prom, "watchdogged", False)
    assert watchdogged.calls == count
    assert executions(prom, "watchdogged", True) == 0
    records = failures(caplog, "watchdogged")
    assert len(records) == count
    assert all(
        record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError)
        for record in records
    )
    [status] = [h for h in worker.status().handlers if h.name == "watchdogged"]
    assert (status.executions, status.failures, status.last_outcome) == (count, count, "failure")
    assert status.last_error is not None
    assert status.last_error.type == "CancelledError"
    assert worker.last_stop.cancelled == 0
    assert executions(prom, "steady", False) == 0


class CancelsItselfOnce:
    """An async handler whose first execution cancels its own task; the later ones note how
    many cancellations their task has pending."""

    name = "cancels_itself_once"
    cooler = 0

    def __init__(self) -> None:
        self.calls = 0
        self.pending: list[int] = []

    async def ensure(self) -> None:
        self.calls += 1
        task = asyncio.current_task()
        assert task is not None
        if self.calls == 1:
            task.cancel()
            await asyncio.sleep(0)
        self.pending.append(task.cancelling())


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_after_a_handler_cancelled_its_own_task_the_task_is_not_left_cancelling(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """On asyncio, once the cancellation a handler caused was reported, its loop's task goes
    on as if never cancelled: the next executions see no cancellation pending."""
    handler = CancelsItselfOnce()
    worker = workit.ParallelWorker([handler], registry=registry)
    async with running(worker):
        await wait_until(lambda: len(handler.pending) >= 2)
    assert executions(prom, "cancels_itself_once", False) == 1
    assert set(handler.pending) == {0}


# On demand while the daemon runs, and while it stops


class Overlapping:
    """An async handler that notes the most executions in flight at once; each waits for
    ``gate`` (then for the next one)."""

    name = "overlapping"
    cooler = 3600

    def __init__(self) -> None:
        self.calls = 0
        self.inflight = 0
        self.most = 0
        self.gate = anyio.Event()
        self.started = anyio.Event()

    async def ensure(self) -> None:
        self.calls += 1
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        self.started.set()
        try:
            await self.gate.wait()
        finally:
            self.inflight -= 1
        self.gate = anyio.Event()


@pytest.mark.anyio
async def test_ensure_waits_for_the_daemons_execution_of_the_same_handler(
    registry: workit.Registry,
) -> None:
    """ensure() while the daemon executes a handler runs it once that execution has ended:
    never two executions of one handler in flight; running shows until both are over."""
    handler = Overlapping()
    worker = workit.ParallelWorker([handler], registry=registry)
    returned = anyio.Event()

    async def on_demand() -> None:
        await worker.ensure()
        returned.set()

    async with running(worker), anyio.create_task_group() as tasks:
        with anyio.fail_after(5):
            await handler.started.wait()
            tasks.start_soon(on_demand)
            await anyio.wait_all_tasks_blocked()
            assert (handler.calls, handler.inflight) == (1, 1)
            handler.gate.set()  # the daemon's execution ends; ensure()'s starts
            await anyio.wait_all_tasks_blocked()
            assert (handler.calls, handler.inflight) == (2, 1)
            assert worker.status().handlers[0].running
            assert not returned.is_set()
            handler.gate.set()
            await returned.wait()
    assert handler.most == 1


@pytest.mark.anyio
async def test_ensure_while_stopping_is_refused(registry: workit.Registry) -> None:
    """ensure() while the daemon drains after stop() raises RuntimeError and runs nothing."""
    handler = Overlapping()
    worker = workit.ParallelWorker([handler], registry=registry)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await handler.started.wait()
            worker.stop()
            await anyio.wait_all_tasks_blocked()
            assert worker.state is State.STOPPING
            with pytest.raises(RuntimeError, match="stopping"):
                await worker.ensure()
            handler.gate.set()
    assert handler.calls == 1


@fake_clock()
@pytest.mark.anyio
async def test_ensure_after_stop_without_a_daemon_runs_the_handlers(
    registry: workit.Registry,
) -> None:
    """stop() with no daemon running only concerns the next daemon: ensure() runs every handler."""
    first, second = Ticker("first", cooler=60), Ticker("second", cooler=60)
    worker = workit.ParallelWorker([first, second], registry=registry)
    with anyio.fail_after(100):
        await worker.ensure()
        worker.stop()
        for _ in range(3):
            await worker.ensure()
    assert (len(first.starts), len(second.starts)) == (4, 4)
    assert [handler.executions for handler in worker.status().handlers] == [4, 4]


@fake_clock()
@pytest.mark.anyio
async def test_ensure_runs_again_once_a_stopped_daemon_has_returned(
    registry: workit.Registry,
) -> None:
    """Once a stopped daemon has returned, ensure() runs every handler again."""
    first, second = Ticker("first", cooler=3600), Ticker("second", cooler=3600)
    worker = workit.ParallelWorker([first, second], registry=registry)
    async with running(worker):
        with anyio.fail_after(5):
            await first.reached.wait()
            await second.reached.wait()
    assert worker.state is State.IDLE
    with anyio.fail_after(100):
        await worker.ensure()
        await worker.ensure()
    assert (len(first.starts), len(second.starts)) == (3, 3)


class Reentrant:
    """A handler whose execution awaits its own worker's ensure()."""

    name = "reentrant"
    cooler = 3600

    def __init__(self) -> None:
        self.worker: workit.Worker | None = None

    async def ensure(self) -> None:
        assert self.worker is not None
        await self.worker.ensure()


@fake_clock()
@pytest.mark.anyio
async def test_handler_calling_its_own_workers_ensure_fails_instead_of_deadlocking(
    registry: workit.Registry,
) -> None:
    """A handler awaiting its own worker's ensure() fails with RuntimeError, as in a sequence."""
    handler = Reentrant()
    worker = handler.worker = workit.ParallelWorker([handler], registry=registry)
    with anyio.fail_after(5), pytest.raises(workit.HandlerError) as raised:
        await worker.ensure()
    assert isinstance(raised.value.__cause__, RuntimeError)


# describe()


class Declares:
    """A handler declaring a cooler and a timeout, as attributes or methods that may raise."""

    def __init__(
        self, name: str, *, cooler: object = 5, timeout: object = None, raising: bool = False
    ) -> None:
        self.name = name
        self._cooler = cooler
        self.timeout = timeout
        self.raising = raising

    def cooler(self) -> object:
        if self.raising:
            raise RuntimeError("cooler is down")
        return self._cooler

    async def ensure(self) -> None:
        pass


def test_describe_lists_each_handler_with_its_cooler_and_timeout(
    registry: workit.Registry,
) -> None:
    """describe(): one parallel engine, each handler's name, cooler and timeout in seconds."""
    worker = workit.ParallelWorker(
        [
            Declares("fast", cooler=0.5, timeout=2),
            Declares("slow", cooler=timedelta(minutes=1)),
        ],
        registry=registry,
    )
    [engine] = worker.describe()
    assert engine == EngineInfo(
        kind="parallel",
        handlers=(
            HandlerInfo(name="fast", cooler=0.5, timeout=2.0),
            HandlerInfo(name="slow", cooler=60.0, timeout=None),
        ),
    )
    assert engine.cooler is None
    assert not engine.dependencies


def test_describe_says_which_part_could_not_be_read(registry: workit.Registry) -> None:
    """describe() of a handler whose cooler() raises gives cooler None and the error."""
    handler = Declares("broken", raising=True, timeout=3)
    [engine] = workit.ParallelWorker([handler], registry=registry).describe()
    [info] = engine.handlers
    assert (info.name, info.cooler, info.timeout) == ("broken", None, 3.0)
    assert (info.cooler_error, info.timeout_error) == ("cooler is down", None)


# Construction


class Good:
    """A minimal valid parallel handler."""

    cooler = 1

    def __init__(self, name: str = "good") -> None:
        self.name = name

    async def ensure(self) -> None:
        pass


class NoCooler:
    """A handler without a cooler."""

    async def ensure(self) -> None:
        pass


class NegativeCooler:
    """A handler whose cooler is negative."""

    cooler = -1

    async def ensure(self) -> None:
        pass


async def nothing() -> None:
    pass


def test_empty_handler_list_is_rejected(registry: workit.Registry) -> None:
    """An empty handler list raises ``ValueError``."""
    with pytest.raises(ValueError, match="at least one handler"):
        workit.ParallelWorker([], registry=registry)


def test_none_handler_is_rejected_with_its_index(registry: workit.Registry) -> None:
    """``None`` in the list raises ``TypeError`` naming its index."""
    with pytest.raises(TypeError, match=r"handler 1\b.*None"):
        workit.ParallelWorker([Good(), None], registry=registry)  # type: ignore[list-item]  # under test


def test_object_without_ensure_is_rejected(registry: workit.Registry) -> None:
    """An object without ``ensure`` raises ``TypeError`` naming it."""
    with pytest.raises(TypeError, match=r"handler 0\b.*'not a handler'.*ensure"):
        workit.ParallelWorker(["not a handler"], registry=registry)  # type: ignore[list-item]  # under test


def test_handler_without_cooler_is_rejected(registry: workit.Registry) -> None:
    """A handler without ``cooler`` raises ``TypeError`` naming it."""
    with pytest.raises(TypeError, match=r"handler 1\b.*'no_cooler'.*cooler"):
        workit.ParallelWorker([Good(), NoCooler()], registry=registry)


def test_function_handler_without_cooler_is_rejected(registry: workit.Registry) -> None:
    """A ``workit.Handler(fn)`` made without ``cooler`` raises ``TypeError`` naming it."""
    with pytest.raises(TypeError, match=r"'nothing'.*cooler"):
        workit.ParallelWorker([workit.Handler(nothing)], registry=registry)


def test_negative_cooler_is_rejected(registry: workit.Registry) -> None:
    """A negative ``cooler`` attribute raises ``ValueError`` naming the handler."""
    with pytest.raises(ValueError, match=r"'negative_cooler'.*cooler.*negative"):
        workit.ParallelWorker([NegativeCooler()], registry=registry)


def test_duplicate_names_are_rejected(registry: workit.Registry) -> None:
    """Two handlers with one name raise ``ValueError`` that says to set ``name``."""
    with pytest.raises(ValueError, match=r"'twin'(?s:.*)`name`"):
        workit.ParallelWorker([Good("twin"), Good("twin")], registry=registry)


def test_registry_of_wrong_type_is_rejected() -> None:
    """A ``registry`` that is not a ``workit.Registry`` raises ``TypeError``."""
    with pytest.raises(TypeError, match="registry"):
        workit.ParallelWorker([Good()], registry="test")  # type: ignore[arg-type]


def test_negative_grace_is_rejected(registry: workit.Registry) -> None:
    """A negative ``grace`` raises ``ValueError`` naming it."""
    with pytest.raises(ValueError, match="grace"):
        workit.ParallelWorker([Good()], registry=registry, grace=-1)
