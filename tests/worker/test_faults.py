"""Fault injection: handlers that raise anything, hang, overrun or break their optional parts.

Every fault must end in a defined outcome (a failure counted, logged and retried
after the cooler, or a documented default) while the engine and every other
handler go on as if nothing happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import math
import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import workit
from tests.support import executions, fake_clock
from workit.status import ErrorInfo, HandlerStatus, StopReport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Generator

    from prometheus_client import CollectorRegistry


FAILED = "worker execution failed"


# Exceptions of every kind


class Custom(Exception):
    """An Exception of the user's own."""


class CustomBase(BaseException):
    """A BaseException of the user's own, neither Exception nor a system one."""


class BrokenStr(Exception):
    """An exception whose ``__str__`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("str() is broken")


class BrokenRepr(Exception):
    """An exception whose ``__repr__`` raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr() is broken")


class BrokenBoth(Exception):
    """An exception whose ``__str__`` and ``__repr__`` both raise."""

    def __str__(self) -> str:
        raise RuntimeError("str() is broken")

    def __repr__(self) -> str:
        raise RuntimeError("repr() is broken")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """An exception a handler raises, and how workit must describe it."""

    make: Callable[[], BaseException]
    kind: type[BaseException]
    message: str

    @property
    def error_info(self) -> ErrorInfo:
        """What ``status().last_error`` must say."""
        return ErrorInfo(type=self.kind.__qualname__, message=self.message)


FAULTS = [
    pytest.param(
        Fault(make=lambda: RuntimeError("boom"), kind=RuntimeError, message="boom"),
        id="RuntimeError",
    ),
    pytest.param(Fault(make=lambda: Custom("custom"), kind=Custom, message="custom"), id="Custom"),
    pytest.param(
        Fault(
            make=lambda: KeyboardInterrupt("interrupted"),
            kind=KeyboardInterrupt,
            message="interrupted",
        ),
        id="KeyboardInterrupt",
    ),
    pytest.param(Fault(make=lambda: SystemExit(3), kind=SystemExit, message="3"), id="SystemExit"),
    # Python turns a StopIteration leaving a coroutine into this RuntimeError.
    pytest.param(
        Fault(
            make=lambda: StopIteration("stop"),
            kind=RuntimeError,
            message="coroutine raised StopIteration",
        ),
        id="StopIteration",
    ),
    pytest.param(
        Fault(make=lambda: GeneratorExit("closing"), kind=GeneratorExit, message="closing"),
        id="GeneratorExit",
    ),
    pytest.param(
        Fault(make=lambda: CustomBase("base"), kind=CustomBase, message="base"), id="CustomBase"
    ),
    pytest.param(
        Fault(make=lambda: BrokenStr("x"), kind=BrokenStr, message="<unprintable>"), id="BrokenStr"
    ),
    pytest.param(
        Fault(make=lambda: BrokenRepr("shown"), kind=BrokenRepr, message="shown"), id="BrokenRepr"
    ),
    pytest.param(
        Fault(make=lambda: BrokenBoth("x"), kind=BrokenBoth, message="<unprintable>"),
        id="BrokenBoth",
    ),
    pytest.param(
        Fault(
            make=lambda: ExceptionGroup("several", [ValueError("a"), KeyError("b")]),
            kind=ExceptionGroup,
            message="several (2 sub-exceptions)",
        ),
        id="ExceptionGroup",
    ),
    pytest.param(
        Fault(
            make=lambda: BaseExceptionGroup("several", [KeyboardInterrupt(), ValueError("a")]),
            kind=BaseExceptionGroup,
            message="several (2 sub-exceptions)",
        ),
        id="BaseExceptionGroup",
    ),
]

# Handlers


class Ticker:
    """A healthy async handler that records when each execution starts."""

    def __init__(self, name: str, *, cooler: float = 2, enough: int = 1) -> None:
        self.name = name
        self.cooler = cooler
        self.starts: list[float] = []
        self.enough = enough
        self.reached = anyio.Event()

    async def ensure(self) -> None:
        self.starts.append(anyio.current_time())
        if len(self.starts) >= self.enough:
            self.reached.set()


class Raiser(Ticker):
    """An async handler that raises a fresh ``fault`` on every execution."""

    def __init__(self, fault: Fault, *, cooler: float = 5, enough: int = 3) -> None:
        super().__init__("faulty", cooler=cooler, enough=enough)
        self.fault = fault

    async def ensure(self) -> None:
        await super().ensure()
        raise self.fault.make()


class SyncRaiser:
    """A sync handler (run in a worker thread) that raises a fresh ``fault`` every time."""

    name = "faulty"

    def __init__(self, fault: Fault, *, cooler: float = 0.001) -> None:
        self.fault = fault
        self.cooler = cooler
        self.calls = 0
        self._lock = threading.Lock()

    def ensure(self) -> None:
        with self._lock:
            self.calls += 1
        raise self.fault.make()


class Counting:
    """A healthy handler, sync or async, that counts its executions thread-safely."""

    def __init__(self, name: str, *, cooler: float = 0.001) -> None:
        self.name = name
        self.cooler = cooler
        self.calls = 0
        self._lock = threading.Lock()

    def count(self) -> None:
        with self._lock:
            self.calls += 1


class AsyncCounting(Counting):
    async def ensure(self) -> None:
        self.count()


# Running a daemon


class Daemon:
    """A worker's ``daemon()`` running in the background, and how it ended."""

    def __init__(self) -> None:
        self.crashed: BaseException | None = None
        self.returned = anyio.Event()
        self.returned_at: float | None = None


@contextlib.asynccontextmanager
async def running(worker: workit.Worker, *, within: float = 5) -> AsyncIterator[Daemon]:
    """Run ``daemon()`` around the body; then ``stop()`` it and check it returned normally."""
    daemon = Daemon()

    async def run() -> None:
        try:
            await worker.daemon()
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as error:  # the engine died: record it for the assertion below
            daemon.crashed = error
        daemon.returned_at = anyio.current_time()
        daemon.returned.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        with anyio.fail_after(5):
            await worker.wait_ready()
        yield daemon
        worker.stop()
        with anyio.fail_after(within):
            await daemon.returned.wait()
    assert daemon.crashed is None, f"daemon() raised {daemon.crashed!r}"


async def wait_until(condition: Callable[[], bool], daemon: Daemon, *, within: float = 5) -> None:
    """Poll ``condition()`` until true; fail at once if the daemon died meanwhile."""
    with anyio.fail_after(within):
        # Thread-side counters and metrics: nothing to wait on, so poll.
        while not condition():
            assert daemon.crashed is None, f"daemon() raised {daemon.crashed!r}"
            await anyio.sleep(0.001)


def relative(times: list[float], origin: float) -> list[float]:
    return [round(time - origin, 9) for time in times]


def failures(caplog: pytest.LogCaptureFixture, handler: str) -> list[logging.LogRecord]:
    """The "worker execution failed" records logged for ``handler``."""
    return [
        record
        for record in caplog.records
        if record.getMessage().startswith(FAILED) and getattr(record, "handler", None) == handler
    ]


def assert_logged(
    caplog: pytest.LogCaptureFixture, handler: str, kind: type[BaseException], count: int
) -> None:
    """``count`` error records for ``handler``, each with an exception of exactly ``kind``."""
    records = failures(caplog, handler)
    assert len(records) == count
    for record in records:
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None
        assert type(record.exc_info[1]) is kind
        # The record can be formatted, broken __str__/__repr__ or not.
        assert kind.__name__ in logging.Formatter().format(record)


def status(worker: workit.Worker, handler: str) -> HandlerStatus:
    [found] = [each for each in worker.status().handlers if each.name == handler]
    return found


def assert_failed(worker: workit.Worker, handler: str, error: ErrorInfo, count: int) -> None:
    """The status of ``handler``: ``count`` executions, all failed, the last with ``error``."""
    state = status(worker, handler)
    assert (state.executions, state.failures, state.consecutive_failures) == (count, count, count)
    assert state.last_outcome == "failure"
    assert state.last_error == error
    assert state.last_success is None


# Exceptions from ensure(), async, on the fake clock


@pytest.mark.parametrize("fault", FAULTS)
@fake_clock()
@pytest.mark.anyio
async def test_parallel_async_raise_is_a_failure_retried_after_the_cooler(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    fault: Fault,
) -> None:
    """Any exception from an async ensure is counted, logged and retried a cooler later."""
    faulty = Raiser(fault, cooler=5)
    steady = Ticker("steady", cooler=2, enough=6)
    worker = workit.ParallelWorker([faulty, steady], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await faulty.reached.wait()
            await steady.reached.wait()
    assert relative(faulty.starts, start) == [0, 5, 10]
    assert relative(steady.starts, start) == [0, 2, 4, 6, 8, 10]
    assert executions(prom, "faulty", False) == 3
    assert executions(prom, "faulty", True) == 0
    assert executions(prom, "steady", True) == 6
    assert_logged(caplog, "faulty", fault.kind, 3)
    assert_failed(worker, "faulty", fault.error_info, 3)
    assert failures(caplog, "steady") == []


@pytest.mark.parametrize("fault", FAULTS)
@fake_clock()
@pytest.mark.anyio
async def test_sequence_async_raise_fails_the_pass_and_the_next_pass_comes_a_cooler_later(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    fault: Fault,
) -> None:
    """Any exception fails the pass: its sibling finishes, its dependent never starts."""
    faulty = Raiser(fault)
    sibling = Ticker("sibling", enough=3)
    dependent = Ticker("dependent")
    worker = workit.SequenceWorker([[faulty, sibling], [dependent]], cooler=5, registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await faulty.reached.wait()
            await sibling.reached.wait()
    assert relative(faulty.starts, start) == [0, 5, 10]
    assert relative(sibling.starts, start) == [0, 5, 10]
    assert dependent.starts == []
    assert executions(prom, "faulty", False) == 3
    assert executions(prom, "sibling", True) == 3
    assert_logged(caplog, "faulty", fault.kind, 3)
    assert_failed(worker, "faulty", fault.error_info, 3)


@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.anyio
async def test_on_demand_run_raises_handler_error_caused_by_any_exception(
    registry: workit.Registry, prom: CollectorRegistry, fault: Fault, engine: str
) -> None:
    """``ensure()`` of either engine raises HandlerError whose cause is what the handler raised."""
    faulty = Raiser(fault)
    worker: workit.ParallelWorker | workit.SequenceWorker
    if engine == "parallel":
        worker = workit.ParallelWorker([faulty, Ticker("steady")], registry=registry)
    else:
        worker = workit.SequenceWorker([[faulty, Ticker("steady")]], registry=registry)
    for _ in range(2):
        with anyio.fail_after(5), pytest.raises(workit.HandlerError) as raised:
            await worker.ensure()
        assert type(raised.value) is workit.HandlerError
        assert raised.value.handler == "faulty"
        assert type(raised.value.__cause__) is fault.kind
        assert str(raised.value).startswith("handler 'faulty' failed: ")
    assert executions(prom, "faulty", False) == 2
    assert executions(prom, "steady", True) == 2


# Exceptions from ensure(), sync (worker threads), on the real clock


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.anyio
async def test_parallel_sync_raise_is_a_failure_and_the_neighbour_keeps_running(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    fault: Fault,
) -> None:
    """Any exception from a sync ensure is counted and logged; the loop and its neighbour go on."""
    faulty = SyncRaiser(fault)
    steady = AsyncCounting("steady")
    worker = workit.ParallelWorker([faulty, steady], registry=registry)
    async with running(worker) as daemon:
        await wait_until(lambda: executions(prom, "faulty", False) >= 3, daemon)
        await wait_until(lambda: steady.calls >= 3, daemon)
    count = executions(prom, "faulty", False)
    assert faulty.calls == count
    assert executions(prom, "faulty", True) == 0
    assert executions(prom, "steady", True) == steady.calls
    assert_logged(caplog, "faulty", fault.kind, int(count))
    assert_failed(worker, "faulty", fault.error_info, int(count))


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.anyio
async def test_sequence_sync_raise_fails_every_pass_and_the_daemon_goes_on(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    fault: Fault,
) -> None:
    """Any exception from a sync ensure fails each pass; passes keep coming."""
    faulty = SyncRaiser(fault)
    sibling = AsyncCounting("sibling")
    dependent = AsyncCounting("dependent")
    worker = workit.SequenceWorker(
        [[faulty, sibling], [dependent]], cooler=0.001, registry=registry
    )
    async with running(worker) as daemon:
        await wait_until(lambda: executions(prom, "faulty", False) >= 3, daemon)
    count = executions(prom, "faulty", False)
    assert faulty.calls == count
    assert sibling.calls == count
    assert dependent.calls == 0
    assert_logged(caplog, "faulty", fault.kind, int(count))
    assert_failed(worker, "faulty", fault.error_info, int(count))


@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.anyio
async def test_on_demand_run_raises_handler_error_caused_by_any_sync_exception(
    registry: workit.Registry, fault: Fault, engine: str
) -> None:
    """``ensure()`` raises HandlerError caused by what a sync handler raised in its thread."""
    worker: workit.ParallelWorker | workit.SequenceWorker
    if engine == "parallel":
        worker = workit.ParallelWorker([SyncRaiser(fault)], registry=registry)
    else:
        worker = workit.SequenceWorker([[SyncRaiser(fault)]], registry=registry)
    with anyio.fail_after(5), pytest.raises(workit.HandlerError) as raised:
        await worker.ensure()
    assert raised.value.handler == "faulty"
    assert type(raised.value.__cause__) is fault.kind


class CancelledRaiser(Counting):
    """A handler that raises asyncio.CancelledError of its own, without being cancelled."""

    def make(self) -> BaseException:
        self.count()
        return asyncio.CancelledError("leaked from a task of the handler's own")


class AsyncCancelledRaiser(CancelledRaiser):
    async def ensure(self) -> None:
        raise self.make()


class SyncCancelledRaiser(CancelledRaiser):
    def ensure(self) -> None:
        raise self.make()


@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_cancelled_error_raised_by_a_handler_is_a_failure(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    sync: bool,
    engine: str,
) -> None:
    """On asyncio, a CancelledError the handler raises itself is a failure, not a cancellation."""
    faulty = (SyncCancelledRaiser if sync else AsyncCancelledRaiser)("faulty")
    steady = AsyncCounting("steady")
    worker: workit.ParallelWorker | workit.SequenceWorker
    if engine == "parallel":
        worker = workit.ParallelWorker([faulty, steady], registry=registry)
    else:
        worker = workit.SequenceWorker([[faulty, steady]], cooler=0.001, registry=registry)
    async with running(worker) as daemon:
        await wait_until(lambda: executions(prom, "faulty", False) >= 3, daemon)
        await wait_until(lambda: steady.calls >= 3, daemon)
    count = executions(prom, "faulty", False)
    assert faulty.calls == count
    assert_logged(caplog, "faulty", asyncio.CancelledError, int(count))
    info = ErrorInfo(type="CancelledError", message="leaked from a task of the handler's own")
    assert_failed(worker, "faulty", info, int(count))
    with anyio.fail_after(5), pytest.raises(workit.HandlerError) as raised:
        await worker.ensure()
    assert type(raised.value.__cause__) is asyncio.CancelledError


# Hanging and overrunning handlers


class Hanging(Ticker):
    """An async handler that never returns (or takes ``takes`` seconds)."""

    def __init__(
        self, name: str = "hanging", *, takes: float = math.inf, timeout: float | None = None
    ) -> None:
        super().__init__(name, cooler=5, enough=3)
        self.takes = takes
        if timeout is not None:
            self.timeout = timeout

    async def ensure(self) -> None:
        await super().ensure()
        await anyio.sleep(self.takes)


@fake_clock()
@pytest.mark.anyio
async def test_parallel_async_hang_is_cancelled_at_the_end_of_the_grace(
    registry: workit.Registry, prom: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A hung async handler shows as running; the neighbour keeps its schedule; stop cancels it."""
    hanging = Hanging()
    steady = Ticker("steady", cooler=2, enough=6)
    worker = workit.ParallelWorker([hanging, steady], registry=registry, grace=10)
    start = anyio.current_time()
    async with running(worker, within=100) as daemon:
        with anyio.fail_after(100):
            await steady.reached.wait()
        state = status(worker, "hanging")
        assert (state.running, state.executions, state.failures) == (True, 0, 0)
        stopped = anyio.current_time()
    assert relative(steady.starts, start) == [0, 2, 4, 6, 8, 10]
    assert relative(hanging.starts, start) == [0]
    assert daemon.returned_at == pytest.approx(stopped + 10)
    assert worker.last_stop == StopReport(cancelled=1, abandoned=0, handlers=("hanging",))
    assert executions(prom, "hanging", False) == executions(prom, "hanging", True) == 0
    assert failures(caplog, "hanging") == []


@fake_clock()
@pytest.mark.anyio
async def test_sequence_async_hang_stalls_only_its_own_engine(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """A hung async handler holds its pass; another engine keeps its schedule; stop cancels it."""
    hanging, sibling, dependent = Hanging(), Ticker("sibling"), Ticker("dependent")
    steady = Ticker("steady", cooler=2, enough=6)
    sequence = workit.SequenceWorker(
        [[hanging, sibling], [dependent]], cooler=1, registry=registry, grace=10
    )
    parallel = workit.ParallelWorker([steady], registry=registry, grace=10)
    combined = workit.CombinedWorker(sequence, parallel)
    start = anyio.current_time()
    async with running(combined, within=100) as daemon:
        with anyio.fail_after(100):
            await steady.reached.wait()
        assert status(sequence, "hanging").running
        stopped = anyio.current_time()
    assert relative(steady.starts, start) == [0, 2, 4, 6, 8, 10]
    assert relative(sibling.starts, start) == [0]
    assert dependent.starts == []
    assert daemon.returned_at == pytest.approx(stopped + 10)
    assert sequence.last_stop == StopReport(cancelled=1, abandoned=0, handlers=("hanging",))
    assert parallel.last_stop == StopReport()
    assert executions(prom, "hanging", False) == 0


@pytest.mark.parametrize("takes", [math.inf, 3], ids=["hang", "slow"])
@fake_clock()
@pytest.mark.anyio
async def test_parallel_async_timeout_is_a_failure_retried_after_the_cooler(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    takes: float,
) -> None:
    """An async execution over its timeout is cancelled at the deadline, reported, retried."""
    slow = Hanging("slow", takes=takes, timeout=2)
    steady = Ticker("steady", cooler=2, enough=8)
    worker = workit.ParallelWorker([slow, steady], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await slow.reached.wait()
            await steady.reached.wait()
    assert relative(slow.starts, start) == [0, 7, 14]
    assert relative(steady.starts, start) == [0, 2, 4, 6, 8, 10, 12, 14]
    # The third, running at stop(), is given the grace and times out at 16.
    assert executions(prom, "slow", False) == 3
    assert_logged(caplog, "slow", workit.HandlerTimeout, 3)
    info = ErrorInfo(type="HandlerTimeout", message="handler 'slow' timed out after 2 s")
    assert status(worker, "slow").last_error == info


@pytest.mark.parametrize("takes", [math.inf, 3], ids=["hang", "slow"])
@fake_clock()
@pytest.mark.anyio
async def test_sequence_async_timeout_fails_the_pass_and_the_next_comes_a_cooler_later(
    registry: workit.Registry, prom: CollectorRegistry, takes: float
) -> None:
    """A timed-out async handler fails its pass at the deadline; the next pass is a cooler later."""
    slow = Hanging("slow", takes=takes, timeout=2)
    sibling, dependent = Ticker("sibling", enough=3), Ticker("dependent")
    worker = workit.SequenceWorker([[slow, sibling], [dependent]], cooler=5, registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await slow.reached.wait()
            await sibling.reached.wait()
    assert relative(slow.starts, start) == [0, 7, 14]
    assert relative(sibling.starts, start) == [0, 7, 14]
    assert dependent.starts == []
    assert executions(prom, "slow", False) == 3  # the third pass ends within the grace
    assert status(worker, "slow").last_error == ErrorInfo(
        type="HandlerTimeout", message="handler 'slow' timed out after 2 s"
    )


# A timeout that a thread of a loaded machine starts well within: the tests
# below count the hung thread's timeout, and an execution timed out before its
# thread started (see Unstartable) would be counted beside it.
HUNG_TIMEOUT = 0.25


class Blocking:
    """A sync handler whose executions block on ``gate``; thread-safe counters."""

    cooler = 0.001

    def __init__(self, name: str = "blocking", *, timeout: float | None = None) -> None:
        self.name = name
        if timeout is not None:
            self.timeout = timeout
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls = 0
        self.returned = 0
        self._lock = threading.Lock()

    def ensure(self) -> None:
        with self._lock:
            self.calls += 1
        self.entered.set()
        try:
            self.gate.wait()
        finally:
            with self._lock:
                self.returned += 1


@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@pytest.mark.parametrize("limit", [None, HUNG_TIMEOUT], ids=["no-timeout", "timeout"])
@pytest.mark.anyio
async def test_sync_hang_blocks_only_its_own_handler_and_is_abandoned_at_stop(
    registry: workit.Registry, prom: CollectorRegistry, limit: float | None, engine: str
) -> None:
    """A hung sync handler holds up no other, is reported once if timed out, abandoned at stop."""
    blocking = Blocking(timeout=limit)
    steady = AsyncCounting("steady")
    hung: workit.Worker
    if engine == "parallel":
        hung = workit.ParallelWorker([blocking], registry=registry, grace=0.02)
    else:
        hung = workit.SequenceWorker([[blocking]], cooler=0.001, registry=registry, grace=0.02)
    combined = workit.CombinedWorker(hung, workit.ParallelWorker([steady], registry=registry))
    expected = 0 if limit is None else 1
    try:
        async with running(combined) as daemon:
            await wait_until(blocking.entered.is_set, daemon)
            await wait_until(lambda: executions(prom, "blocking", False) >= expected, daemon)
            seen = steady.calls
            await wait_until(lambda: steady.calls >= seen + 5, daemon)
            assert status(hung, "blocking").running
        assert blocking.calls == 1
        assert executions(prom, "blocking", False) == expected
        assert executions(prom, "blocking", True) == 0
        assert hung.last_stop == StopReport(abandoned=1, handlers=("blocking",))
        error = status(hung, "blocking").last_error
        assert (error and error.type) == (None if limit is None else "HandlerTimeout")
    finally:
        blocking.gate.set()
    with anyio.fail_after(5):
        while blocking.returned < 1:  # noqa: ASYNC110  # a thread's counter
            await anyio.sleep(0.001)


@pytest.mark.anyio
async def test_sync_pass_over_its_timeout_raises_at_the_deadline_and_holds_back_the_next(
    registry: workit.Registry,
) -> None:
    """A sync handler over its timeout fails the pass at once; the next waits for the thread."""
    blocking = Blocking(timeout=HUNG_TIMEOUT)
    worker = workit.SequenceWorker([[blocking]], registry=registry)
    try:
        with anyio.fail_after(5), pytest.raises(workit.HandlerTimeout):
            await worker.ensure()
        assert blocking.calls == 1
        assert blocking.returned == 0
        passed = anyio.Event()

        async def second() -> None:
            blocking.timeout = 5
            await worker.ensure()
            passed.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(second)
            await anyio.sleep(0.02)  # room for a wrongly started second thread
            assert blocking.calls == 1
            blocking.gate.set()
            with anyio.fail_after(5):
                await passed.wait()
        assert blocking.calls == 2
    finally:
        blocking.gate.set()


class Unstartable:
    """A sync handler whose first timeout expires before its thread can start."""

    name = "unstartable"
    cooler = 0.001

    def __init__(self) -> None:
        self.timeout = 0.0
        self.calls = 0

    def ensure(self) -> None:
        self.calls += 1


@pytest.mark.anyio
async def test_sync_execution_timed_out_before_its_thread_started_does_not_block_the_next(
    registry: workit.Registry,
) -> None:
    """A sync execution that timed out before its thread ran leaves the next one free to run."""
    handler = Unstartable()
    worker = workit.SequenceWorker([[handler]], registry=registry)
    wrapped = worker.handlers[0]
    try:
        with anyio.fail_after(5), pytest.raises(workit.HandlerTimeout):
            await worker.ensure()
        handler.timeout = 5
        with anyio.fail_after(0.2):
            await worker.ensure()
        assert handler.calls == 1
    finally:
        straggler = wrapped.proxy._straggler
        if straggler is not None:
            straggler.finished.set()  # release any thread left waiting for it


# A sync ensure returning an awaitable


class Awaitable:
    """An awaitable that is not a coroutine."""

    def __await__(self) -> Generator[None, None, None]:
        yield None


class ReturnsAwaitable(Counting):
    """A plain ``def ensure`` that returns a coroutine or another awaitable by mistake."""

    def __init__(self, returned: str) -> None:
        super().__init__("mistaken")
        self.returned = returned

    async def work(self) -> None:
        """Never awaited."""

    def ensure(self) -> object:
        self.count()
        return self.work() if self.returned == "coroutine" else Awaitable()


@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@pytest.mark.parametrize("returned", ["coroutine", "awaitable"])
@pytest.mark.anyio
async def test_sync_ensure_returning_an_awaitable_is_a_type_error_failure(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    returned: str,
    engine: str,
) -> None:
    """A sync ensure returning an awaitable fails with TypeError every time, with no warning."""
    mistaken = ReturnsAwaitable(returned)
    steady = AsyncCounting("steady")
    worker: workit.Worker
    if engine == "parallel":
        worker = workit.ParallelWorker([mistaken, steady], registry=registry)
    else:
        worker = workit.SequenceWorker([[mistaken, steady]], cooler=0.001, registry=registry)
    async with running(worker) as daemon:
        await wait_until(lambda: executions(prom, "mistaken", False) >= 3, daemon)
        await wait_until(lambda: steady.calls >= 3, daemon)
    gc.collect()  # an unclosed coroutine would warn now, and warnings are errors
    count = int(executions(prom, "mistaken", False))
    assert mistaken.calls == count
    assert executions(prom, "mistaken", True) == 0
    assert_logged(caplog, "mistaken", TypeError, count)
    state = status(worker, "mistaken")
    assert state.failures == count
    assert state.last_error is not None
    assert state.last_error.type == "TypeError"
    assert "returned an awaitable" in state.last_error.message


# active(): flipping, raising, wrong values


class Flipping(Ticker):
    """A handler whose ``active()`` alternates True, False, True, ..."""

    def __init__(self) -> None:
        super().__init__("flipping", cooler=5, enough=3)
        self.asked: list[float] = []

    def active(self) -> bool:
        self.asked.append(anyio.current_time())
        return len(self.asked) % 2 == 1


@fake_clock()
@pytest.mark.anyio
async def test_parallel_active_flipping_between_calls_runs_every_other_cooler(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """An ``active()`` that alternates is asked every cooler and runs only when true."""
    flipping = Flipping()
    steady = Ticker("steady", cooler=2, enough=11)
    worker = workit.ParallelWorker([flipping, steady], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await flipping.reached.wait()
            await steady.reached.wait()
        assert status(worker, "flipping").active is True
    assert relative(flipping.asked, start) == [0, 5, 10, 15, 20]
    assert relative(flipping.starts, start) == [0, 10, 20]
    assert relative(steady.starts, start) == [2 * step for step in range(11)]
    assert executions(prom, "flipping", True) == 3
    assert executions(prom, "flipping", False) == 0


@fake_clock()
@pytest.mark.anyio
async def test_sequence_active_flipping_between_passes_skips_without_blocking_dependents(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """An ``active()`` that alternates runs every other pass; its dependent runs every pass."""
    flipping = Flipping()
    dependent = Ticker("dependent", enough=5)
    worker = workit.SequenceWorker([[flipping], [dependent]], cooler=5, registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await dependent.reached.wait()
    assert relative(flipping.starts, start) == [0, 10, 20]
    assert relative(dependent.starts, start) == [0, 5, 10, 15, 20]
    assert executions(prom, "flipping", True) == 3


BAD_ANSWERS = [
    pytest.param(
        lambda: RuntimeError("cannot tell"), RuntimeError, "cannot tell", id="raises-RuntimeError"
    ),
    pytest.param(
        lambda: KeyboardInterrupt("cannot tell"),
        KeyboardInterrupt,
        "cannot tell",
        id="raises-KeyboardInterrupt",
    ),
    pytest.param(lambda: BrokenStr("x"), BrokenStr, "<unprintable>", id="raises-BrokenStr"),
    pytest.param("yes", TypeError, "handler 'bad': active must be a bool, got 'yes'", id="str"),
    pytest.param(1, TypeError, "handler 'bad': active must be a bool, got 1", id="int"),
    pytest.param(None, TypeError, "handler 'bad': active must be a bool, got None", id="None"),
]


class BadPart:
    """A handler one of whose optional parts gives ``answer``.

    ``answer`` is returned, or raised when it is a function making an exception;
    the ``good`` answers come first. ``asked`` records when the part is asked.
    """

    name = "bad"

    def __init__(
        self, answer: object, *, good: list[object] | None = None, enough: int = 3
    ) -> None:
        self.answer = answer
        self.good = list(good or [])
        self.enough = enough
        self.asked: list[float] = []
        self.asked_enough = anyio.Event()
        self.starts: list[float] = []
        self.reached = anyio.Event()

    def _answer(self) -> Any:
        self.asked.append(anyio.current_time())
        if len(self.asked) >= self.enough:
            self.asked_enough.set()
        if self.good:
            return self.good.pop(0)
        if callable(self.answer):
            error = self.answer()
            assert isinstance(error, BaseException)
            raise error
        return self.answer

    async def ensure(self) -> None:
        self.starts.append(anyio.current_time())
        if len(self.starts) >= self.enough:
            self.reached.set()


class BadActive(BadPart):
    cooler = 5

    def active(self) -> Any:
        return self._answer()


@pytest.mark.parametrize(("answer", "kind", "message"), BAD_ANSWERS)
@fake_clock()
@pytest.mark.anyio
async def test_parallel_active_failing_is_a_failure_and_asked_again_a_cooler_later(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    answer: object,
    kind: type[BaseException],
    message: str,
) -> None:
    """An ``active()`` that raises or answers a non-bool is a failure; ensure does not run."""
    bad = BadActive(answer)
    steady = Ticker("steady", cooler=2, enough=6)
    worker = workit.ParallelWorker([bad, steady], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await bad.asked_enough.wait()
            await steady.reached.wait()
        assert status(worker, "bad").active is False
    assert relative(bad.asked, start) == [0, 5, 10]
    assert bad.starts == []
    assert relative(steady.starts, start) == [0, 2, 4, 6, 8, 10]
    assert executions(prom, "bad", False) == 3
    assert_logged(caplog, "bad", kind, 3)
    info = ErrorInfo(type=kind.__qualname__, message=message)
    assert_failed(worker, "bad", info, 3)


@pytest.mark.parametrize(("answer", "kind", "message"), BAD_ANSWERS)
@fake_clock()
@pytest.mark.anyio
async def test_sequence_active_failing_fails_the_pass(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    answer: object,
    kind: type[BaseException],
    message: str,
) -> None:
    """An ``active()`` that raises or answers a non-bool fails the pass like ensure() would."""
    bad = BadActive(answer)
    sibling, dependent = Ticker("sibling", enough=3), Ticker("dependent")
    worker = workit.SequenceWorker([[sibling, bad], [dependent]], cooler=5, registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await bad.asked_enough.wait()
            await sibling.reached.wait()
    assert relative(bad.asked, start) == [0, 5, 10]
    assert bad.starts == []
    assert dependent.starts == []
    assert executions(prom, "bad", False) == 3
    assert_logged(caplog, "bad", kind, 3)
    info = ErrorInfo(type=kind.__qualname__, message=message)
    assert_failed(worker, "bad", info, 3)
    with anyio.fail_after(5), pytest.raises(workit.HandlerError) as raised:
        await worker.ensure()
    assert raised.value.handler == "bad"
    assert type(raised.value.__cause__) is kind


@fake_clock()
@pytest.mark.anyio
async def test_active_attribute_set_to_a_non_bool_at_run_time_is_a_failure(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """An ``active`` attribute changed to a non-bool fails every ask until it is a bool again."""
    flipped = Ticker("flipped", cooler=5, enough=2)
    flipped.active = True  # type: ignore[attr-defined]
    worker = workit.ParallelWorker([flipped], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        await anyio.sleep(1)
        flipped.active = "no"  # type: ignore[attr-defined]
        await anyio.sleep(10)  # asked at 5 and 10: failures
        flipped.active = True  # type: ignore[attr-defined]
        with anyio.fail_after(100):
            await flipped.reached.wait()
    assert relative(flipped.starts, start) == [0, 15]
    assert executions(prom, "flipped", False) == 2
    assert executions(prom, "flipped", True) == 2
    state = status(worker, "flipped")
    assert state.consecutive_failures == 0
    assert state.last_error == ErrorInfo(
        type="TypeError", message="handler 'flipped': active must be a bool, got 'no'"
    )


# cooler(): raising and wrong values at run time (parallel only)


BAD_COOLERS = [
    pytest.param(lambda: LookupError("cannot tell"), LookupError, id="raises-LookupError"),
    pytest.param(
        lambda: KeyboardInterrupt("cannot tell"), KeyboardInterrupt, id="raises-KeyboardInterrupt"
    ),
    pytest.param(-1, ValueError, id="negative"),
    pytest.param(math.nan, ValueError, id="nan"),
    pytest.param("5", TypeError, id="str"),
    pytest.param(True, TypeError, id="bool"),
    pytest.param([5], TypeError, id="list"),
    pytest.param(None, TypeError, id="None"),
]


class BadCooler(BadPart):
    def cooler(self) -> Any:
        return self._answer()


@pytest.mark.parametrize(("answer", "kind"), BAD_COOLERS)
@fake_clock()
@pytest.mark.anyio
async def test_bad_cooler_after_a_good_one_waits_the_last_good_cooler(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    answer: object,
    kind: type[BaseException],
) -> None:
    """A ``cooler()`` that goes bad is a failure after each execution; the last good one is used."""
    bad = BadCooler(answer, good=[3], enough=4)
    steady = Ticker("steady", cooler=2, enough=5)
    worker = workit.ParallelWorker([bad, steady], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await bad.reached.wait()
            await steady.reached.wait()
    assert relative(bad.starts, start) == [0, 3, 6, 9]
    assert relative(steady.starts, start) == [0, 2, 4, 6, 8]
    # Each execution succeeded; each cooler() after the first failed.
    assert executions(prom, "bad", True) == 4
    assert executions(prom, "bad", False) == 3
    assert_logged(caplog, "bad", kind, 3)
    state = status(worker, "bad")
    assert state.failures == 3
    assert state.last_error is not None
    assert state.last_error.type == kind.__qualname__


@pytest.mark.parametrize(("answer", "kind"), BAD_COOLERS)
@fake_clock()
@pytest.mark.anyio
async def test_bad_cooler_from_the_start_waits_one_second(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    answer: object,
    kind: type[BaseException],
) -> None:
    """A ``cooler()`` that never worked is a failure after each execution; the loop waits 1 s."""
    bad = BadCooler(answer, enough=4)
    worker = workit.ParallelWorker([bad], registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await bad.reached.wait()
    assert relative(bad.starts, start) == [0, 1, 2, 3]
    assert executions(prom, "bad", True) == 4
    assert executions(prom, "bad", False) == 4
    assert_logged(caplog, "bad", kind, 4)


@fake_clock()
@pytest.mark.anyio
async def test_infinite_cooler_runs_once_and_stop_returns_at_once(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """A cooler of infinity means "never again": one execution, and stop() is prompt."""
    once = Ticker("once", cooler=math.inf)
    worker = workit.ParallelWorker([once], registry=registry)
    async with running(worker) as daemon:
        await anyio.sleep(1000)
        stopped = anyio.current_time()
    assert once.starts == [pytest.approx(stopped - 1000)]
    assert daemon.returned_at == stopped
    assert executions(prom, "once", True) == 1


@pytest.mark.parametrize("cooler", [math.inf, 1e12], ids=["inf", "huge"])
@fake_clock()
@pytest.mark.anyio
async def test_status_survives_an_infinite_cooler(registry: workit.Registry, cooler: float) -> None:
    """status() works while a handler sleeps an infinite (or huge) cooler; next_run is None."""
    once = Ticker("once", cooler=cooler)
    worker = workit.ParallelWorker([once], registry=registry)
    async with running(worker):
        await anyio.sleep(1)
        assert status(worker, "once").next_run is None


@fake_clock()
@pytest.mark.anyio
async def test_sequence_ignores_a_handler_cooler_that_raises(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """The sequence engine never asks a handler's cooler, so a broken one changes nothing."""
    bad = BadCooler(lambda: LookupError("cannot tell"))
    worker = workit.SequenceWorker([[bad]], cooler=5, registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await bad.reached.wait()
    assert relative(bad.starts, start) == [0, 5, 10]
    assert bad.asked == []
    assert executions(prom, "bad", True) == 3
    assert executions(prom, "bad", False) == 0


# timeout(): raising and wrong values at run time


BAD_TIMEOUTS = [
    pytest.param(lambda: LookupError("cannot tell"), LookupError, id="raises-LookupError"),
    pytest.param(lambda: SystemExit(2), SystemExit, id="raises-SystemExit"),
    pytest.param(-1, ValueError, id="negative"),
    pytest.param(math.nan, ValueError, id="nan"),
    pytest.param("2", TypeError, id="str"),
]


class BadTimeout(BadPart):
    cooler = 5

    def timeout(self) -> Any:
        return self._answer()


class SyncBadTimeout(BadTimeout):
    def ensure(self) -> None:  # type: ignore[override]  # a sync variant of the same handler
        self.starts.append(-1.0)


@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize(("answer", "kind"), BAD_TIMEOUTS)
@fake_clock()
@pytest.mark.anyio
async def test_bad_timeout_at_run_time_fails_the_execution_without_running_it(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    answer: object,
    kind: type[BaseException],
    sync: bool,
    engine: str,
) -> None:
    """A ``timeout()`` that raises or answers a bad value fails that execution before it starts."""
    bad = (SyncBadTimeout if sync else BadTimeout)(answer)
    steady = Ticker("steady", cooler=5, enough=3)
    worker: workit.Worker
    if engine == "parallel":
        worker = workit.ParallelWorker([bad, steady], registry=registry)
    else:
        worker = workit.SequenceWorker([[steady, bad]], cooler=5, registry=registry)
    start = anyio.current_time()
    async with running(worker):
        with anyio.fail_after(100):
            await bad.asked_enough.wait()
            await steady.reached.wait()
    # No thread was started, so the fake clock is exact for sync handlers too.
    assert relative(bad.asked, start) == [0, 5, 10]
    assert relative(steady.starts, start) == [0, 5, 10]
    assert bad.starts == []
    assert executions(prom, "bad", False) == 3
    assert executions(prom, "bad", True) == 0
    assert_logged(caplog, "bad", kind, 3)
    state = status(worker, "bad")
    assert state.failures == 3
    assert state.last_error is not None
    assert state.last_error.type == kind.__qualname__
