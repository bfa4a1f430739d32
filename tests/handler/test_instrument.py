"""Instrumented: logging of executions, broken backends, BaseException and cancellation."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

import workit
from tests.support import executions, fake_clock
from workit.status import ErrorInfo, HandlerStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from prometheus_client import CollectorRegistry

FAILED = "worker execution failed"
INSTRUMENTED = "instrumented worker handler"
METRICS_FAILED = "worker metrics recording failed"


class Raises:
    """A handler that raises ``error`` on every execution."""

    def __init__(self, error: BaseException, name: str = "raises") -> None:
        self.error = error
        self.name = name

    async def ensure(self) -> None:
        raise self.error


class RaisesInThread:
    """A sync handler (run in a worker thread) that raises ``error``."""

    name = "raises_in_thread"

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def ensure(self) -> None:
        raise self.error


class Custom(BaseException):
    """A BaseException that is neither Exception nor a system one."""


class BrokenBackend:
    """A metrics backend whose recorder raises on every record."""

    def __init__(self) -> None:
        self.calls = 0

    def recorder(self, env: str, handler: str) -> Callable[[float, bool], None]:
        def record(latency: float, success: bool) -> None:
            self.calls += 1
            raise RuntimeError("metrics are down")

        return record


async def succeed() -> None:
    """Returns at once."""


def field(record: logging.LogRecord, name: str) -> Any:
    """A structured field given through ``extra``."""
    return record.__dict__[name]


def messages(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage().startswith(message)]


@pytest.fixture
def ignoring(prom: CollectorRegistry, logger: logging.Logger) -> workit.Registry:
    """A registry on ``prom`` and ``logger`` that ignores LookupError."""
    return workit.Registry(
        "test",
        ignore=lambda error: isinstance(error, LookupError),
        logger=logger,
        metrics=workit.metrics.Prometheus(prom),
    )


@pytest.mark.anyio
async def test_failure_is_logged_as_error(
    registry: workit.Registry, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure not ignored logs an error "worker execution failed" with handler and exc_info."""
    error = ValueError("boom")
    await registry.wrap(Raises(error)).execute()
    (record,) = messages(caplog, FAILED)
    assert record.levelno == logging.ERROR
    assert record.name == logger.name
    assert field(record, "handler") == "raises"
    assert record.exc_info is not None
    assert record.exc_info[1] is error


@pytest.mark.anyio
async def test_every_failure_is_logged(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Each failed execution logs its own error record."""
    wrapped = registry.wrap(Raises(ValueError("boom")))
    for _ in range(3):
        await wrapped.execute()
    assert len(messages(caplog, FAILED)) == 3


@pytest.mark.anyio
async def test_ignored_exception_is_not_logged_as_error(
    ignoring: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception the filter matches logs nothing at ERROR or above."""
    error = await ignoring.wrap(Raises(KeyError("gone"))).execute()
    assert isinstance(error, KeyError)
    assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []


@pytest.mark.anyio
async def test_every_execution_is_logged_at_debug(
    ignoring: workit.Registry, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Each execution logs debug "instrumented worker handler" with handler, latency and success."""
    await ignoring.wrap(workit.Handler(succeed)).execute()
    await ignoring.wrap(Raises(ValueError("boom"), name="failing")).execute()
    await ignoring.wrap(Raises(KeyError("gone"), name="ignored")).execute()
    records = messages(caplog, INSTRUMENTED)
    assert [(field(record, "handler"), field(record, "success")) for record in records] == [
        ("succeed", True),
        ("failing", False),
        ("ignored", True),
    ]
    for record in records:
        assert record.levelno == logging.DEBUG
        assert record.name == logger.name
        latency = field(record, "latency")
        assert isinstance(latency, float)
        assert latency >= 0


@pytest.mark.anyio
async def test_debug_latency_covers_the_execution(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """The logged latency is at least as long as the handler took."""

    async def nap() -> None:
        await anyio.sleep(0.02)

    with anyio.fail_after(5):
        await registry.wrap(workit.Handler(nap)).ensure()
    (record,) = messages(caplog, INSTRUMENTED)
    assert 0.02 <= field(record, "latency") < 5


@pytest.mark.anyio
async def test_no_debug_work_above_debug(
    registry: workit.Registry,
    logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the logger above DEBUG, no debug record is made and debug() is not even called."""
    logger.setLevel(logging.INFO)
    calls: list[object] = []
    monkeypatch.setattr(logger, "debug", lambda *args, **kwargs: calls.append(args))
    wrapped = registry.wrap(workit.Handler(succeed))
    for _ in range(3):
        await wrapped.ensure()
    await registry.wrap(Raises(ValueError("boom"))).execute()
    assert calls == []
    assert [record for record in caplog.records if record.levelno < logging.INFO] == []
    assert len(messages(caplog, FAILED)) == 1


@pytest.mark.anyio
async def test_broken_metrics_never_break_a_success(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """A recorder that raises leaves ensure() of a succeeding handler succeeding."""
    backend = BrokenBackend()
    registry = workit.Registry("test", logger=logger, metrics=backend)
    wrapped = registry.wrap(workit.Handler(succeed))
    await wrapped.ensure()
    assert await wrapped.execute() is None
    assert backend.calls == 2


@pytest.mark.anyio
async def test_broken_metrics_keep_the_handler_error(logger: logging.Logger) -> None:
    """A recorder that raises leaves the handler's own error as the outcome."""
    backend = BrokenBackend()
    registry = workit.Registry("test", logger=logger, metrics=backend)
    error = ValueError("boom")
    wrapped = registry.wrap(Raises(error))
    assert await wrapped.execute() is error
    with pytest.raises(ValueError, match="boom") as raised:
        await wrapped.ensure()
    assert raised.value is error


@pytest.mark.anyio
async def test_broken_metrics_are_logged_once(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """A recorder that raises on every record is logged once, not once per execution."""
    backend = BrokenBackend()
    registry = workit.Registry("test", logger=logger, metrics=backend)
    wrapped = registry.wrap(workit.Handler(succeed))
    for _ in range(5):
        await wrapped.execute()
    assert backend.calls == 5
    (record,) = messages(caplog, METRICS_FAILED)
    assert record.levelno >= logging.WARNING
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    # Executions are still logged at debug even though recording failed.
    assert len(messages(caplog, INSTRUMENTED)) == 5


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt(), SystemExit(3), Custom("custom")], ids=lambda e: type(e).__name__
)
@pytest.mark.anyio
async def test_base_exception_is_returned_as_a_failure(
    error: BaseException,
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A BaseException from ensure() is returned by execute(), counted "false" and logged."""
    try:
        returned = await registry.wrap(Raises(error)).execute()
    except BaseException as escaped:
        # Fail this test only, instead of letting a KeyboardInterrupt end the run.
        pytest.fail(f"execute() let {escaped!r} escape")
    assert returned is error
    assert executions(prom, "raises", False) == 1
    assert executions(prom, "raises", True) == 0
    (record,) = messages(caplog, FAILED)
    assert record.exc_info is not None
    assert record.exc_info[1] is error


@pytest.mark.anyio
async def test_base_exception_from_a_sync_handler_is_returned(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """A BaseException raised in a sync handler's thread is returned by execute() and counted."""
    error = Custom("in a thread")
    try:
        with anyio.fail_after(5):
            returned = await registry.wrap(RaisesInThread(error)).execute()
    except BaseException as escaped:
        pytest.fail(f"execute() let {escaped!r} escape")
    assert returned is error
    assert executions(prom, "raises_in_thread", False) == 1


@pytest.mark.anyio
async def test_cancellation_propagates_uncounted(
    registry: workit.Registry, prom: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelling a running execution propagates to the scope; nothing is counted or logged."""

    async def hang() -> None:
        await anyio.sleep_forever()

    wrapped = registry.wrap(workit.Handler(hang))
    scope = anyio.CancelScope()
    outcomes: list[BaseException | None] = []

    async def run() -> None:
        with scope:
            outcomes.append(await wrapped.execute())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught
    assert outcomes == []
    assert executions(prom, "hang", True) == 0
    assert executions(prom, "hang", False) == 0
    assert messages(caplog, FAILED) == []
    assert messages(caplog, INSTRUMENTED) == []


# cancel(reason): one execution cancelled, nothing else


class Stalls:
    """An async handler whose first execution hangs until cancelled; later ones return."""

    cooler = 5

    def __init__(self, name: str = "stalls") -> None:
        self.name = name
        self.calls = 0
        self.cancelled = 0
        self.started = anyio.Event()
        self.again = anyio.Event()

    async def ensure(self) -> None:
        self.calls += 1
        if self.calls > 1:
            self.again.set()
            return
        self.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise


class Held:
    """An async handler whose executions wait until ``gate`` is set."""

    cooler = 5

    def __init__(self, name: str = "held") -> None:
        self.name = name
        self.started = anyio.Event()
        self.gate = anyio.Event()
        self.finished = anyio.Event()
        self.cancelled = False

    async def ensure(self) -> None:
        self.started.set()
        try:
            await self.gate.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        self.finished.set()


def handler_status(worker: workit.Worker, name: str) -> HandlerStatus:
    [status] = [handler for handler in worker.status().handlers if handler.name == name]
    return status


@fake_clock()
@pytest.mark.anyio
async def test_cancel_fails_the_running_execution_with_the_reason(
    registry: workit.Registry, prom: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """cancel(reason) cancels that execution, which is a failure of the reason's type
    (counted, logged, in status); the handler's loop goes on a cooler later."""
    stalls = Stalls()
    worker = workit.ParallelWorker([stalls], registry=registry)
    target = worker.handlers[0]
    reason = TimeoutError("taking too long")
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(worker.daemon)
        with anyio.fail_after(100):
            await stalls.started.wait()
            cancelled_at = anyio.current_time()
            assert target.cancel(reason) is True
            await stalls.again.wait()
        assert anyio.current_time() - cancelled_at == pytest.approx(5)
        assert worker.ready
        worker.stop()
    assert (stalls.calls, stalls.cancelled) == (2, 1)
    status = handler_status(worker, "stalls")
    assert (status.executions, status.failures) == (2, 1)
    assert status.last_error == ErrorInfo(type="TimeoutError", message="taking too long")
    assert executions(prom, "stalls", False) == 1
    assert executions(prom, "stalls", True) == 1
    (record,) = messages(caplog, FAILED)
    assert field(record, "handler") == "stalls"
    assert record.exc_info is not None
    assert record.exc_info[1] is reason
    assert worker.last_stop.cancelled == 0


@fake_clock()
@pytest.mark.anyio
async def test_cancel_leaves_another_handlers_execution_alone(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """While one handler's execution is cancelled, another's, running meanwhile, goes on."""
    stalls, held = Stalls(), Held()
    worker = workit.ParallelWorker([stalls, held], registry=registry)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(worker.daemon)
        with anyio.fail_after(100):
            await stalls.started.wait()
            await held.started.wait()
            assert worker.handlers[0].cancel(RuntimeError("cancelled by the operator"))
            await stalls.again.wait()
            other = handler_status(worker, "held")
            assert other.running
            assert (other.executions, other.failures) == (0, 0)
            held.gate.set()
            await held.finished.wait()
        worker.stop()
    assert not held.cancelled
    assert executions(prom, "held", True) == 1
    assert executions(prom, "held", False) == 0


@fake_clock()
@pytest.mark.anyio
async def test_cancel_returns_false_when_nothing_runs(registry: workit.Registry) -> None:
    """cancel() is False before any execution and while the handler cools; nothing changes."""
    stalls = Stalls()
    worker = workit.ParallelWorker([stalls], registry=registry)
    target = worker.handlers[0]
    assert target.cancel(RuntimeError("too early")) is False
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(worker.daemon)
        with anyio.fail_after(100):
            await stalls.started.wait()
            assert target.cancel(RuntimeError("now")) is True
            await stalls.again.wait()
            await anyio.wait_all_tasks_blocked()
            assert target.cancel(RuntimeError("while cooling")) is False
        worker.stop()
    assert (target.executions, target.failures) == (2, 1)
    assert target.last_error == ErrorInfo(type="RuntimeError", message="now")


@pytest.mark.anyio
async def test_cancel_during_an_on_demand_run_raises_handler_error_with_the_reason(
    registry: workit.Registry,
) -> None:
    """cancel(reason) of an execution of worker.ensure() makes ensure() raise HandlerError,
    caused by the reason."""
    stalls = Stalls()
    worker = workit.ParallelWorker([stalls], registry=registry)
    reason = TimeoutError("taking too long")
    raised: list[BaseException] = []

    async def on_demand() -> None:
        try:
            await worker.ensure()
        except workit.HandlerError as error:
            raised.append(error)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(on_demand)
            await stalls.started.wait()
            assert worker.handlers[0].cancel(reason)
    [error] = raised
    assert error.__cause__ is reason


@pytest.mark.anyio
async def test_cancel_of_a_wrapped_handler_run_directly_is_a_failure(
    registry: workit.Registry,
) -> None:
    """cancel(reason) of Registry.wrap(h).execute() awaited directly makes execute() return
    the reason, counted as a failure."""

    async def hang() -> None:
        await anyio.sleep_forever()

    wrapped = registry.wrap(workit.Handler(hang))
    reason = TimeoutError("taking too long")
    outcomes: list[BaseException | None] = []

    async def run() -> None:
        outcomes.append(await wrapped.execute())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            await anyio.wait_all_tasks_blocked()
            assert wrapped.cancel(reason)
    assert outcomes == [reason]
    assert wrapped.failures == 1


@pytest.mark.anyio
async def test_the_callers_cancellation_beside_cancel_of_a_handler_run_directly_still_cancels(
    registry: workit.Registry,
) -> None:
    """cancel(reason) takes back only its own cancellation: when the caller's scope is
    cancelled as well, execute() raises the cancellation, counted as no failure."""

    async def hang() -> None:
        await anyio.sleep_forever()

    wrapped = registry.wrap(workit.Handler(hang))
    outcomes: list[BaseException | None] = []

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:

            async def run() -> None:
                with anyio.CancelScope() as scope:
                    scopes.append(scope)
                    outcomes.append(await wrapped.execute())

            scopes: list[anyio.CancelScope] = []
            tasks.start_soon(run)
            await anyio.wait_all_tasks_blocked()
            scopes[0].cancel()
            assert wrapped.cancel(TimeoutError("taking too long"))
    assert outcomes == []
    assert wrapped.failures == 0
    assert wrapped.cancelled


@pytest.mark.anyio
async def test_a_handler_that_swallows_cancel_leaves_no_reason_for_its_next_failure(
    registry: workit.Registry,
) -> None:
    """A handler run directly that catches cancel()'s cancellation and returns succeeds,
    and its next execution fails with its own error, not the old reason."""
    calls: list[int] = []
    resumed = anyio.Event()

    async def stubborn() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise ValueError("its own")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            resumed.set()

    wrapped = registry.wrap(workit.Handler(stubborn))
    outcomes: list[BaseException | None] = []

    async def run() -> None:
        outcomes.append(await wrapped.execute())
        await anyio.lowlevel.checkpoint()  # a cancellation left pending would land here
        outcomes.append(await wrapped.execute())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            await anyio.wait_all_tasks_blocked()
            assert wrapped.cancel(TimeoutError("taking too long"))
    assert resumed.is_set()
    assert outcomes[0] is None
    assert isinstance(outcomes[1], ValueError)
    assert wrapped.failures == 1
