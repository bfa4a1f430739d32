"""Broken backends: a metrics recorder or a logging set-up that raises never breaks a handler.

Each failure is reported once (metrics: one record per Registry; logging: one
message on stderr per process), never once per execution.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import anyio
import pytest

import workit
from tests.support import executions, fake_clock
from workit import _policy
from workit.status import StopReport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from prometheus_client import CollectorRegistry

FAILED = "worker execution failed"
METRICS_FAILED = "worker metrics recording failed"
LOGGING_FAILED = "workit: logging failed"


class Ticker:
    """An async handler that records when each execution starts, and may fail."""

    def __init__(self, name: str, *, cooler: float = 5, failing: bool = False) -> None:
        self.name = name
        self.cooler = cooler
        self.failing = failing
        self.starts: list[float] = []

    async def ensure(self) -> None:
        self.starts.append(anyio.current_time())
        if self.failing:
            raise LookupError(f"{self.name} failed")


class Hanging:
    """An async handler that never returns."""

    name = "hanging"
    cooler = 5

    async def ensure(self) -> None:
        await anyio.sleep_forever()


# Broken metrics


class BrokenBackend:
    """A metrics backend whose recorders raise (or are not even callable)."""

    def __init__(self, kind: str = "raises") -> None:
        self.kind = kind
        self.calls = 0

    def recorder(self, env: str, handler: str) -> Callable[[float, bool], None]:
        def record(latency: float, success: bool) -> None:
            self.calls += 1
            raise RuntimeError("metrics are down")

        if self.kind == "not-callable":
            return "not a function"  # type: ignore[return-value]  # the fault under test
        return record


class RefusingBackend:
    """A metrics backend that cannot even make a recorder."""

    def recorder(self, env: str, handler: str) -> Callable[[float, bool], None]:
        raise RuntimeError(f"no recorder for {handler}")


def records(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage().startswith(message)]


def make_worker(
    engine: str, handlers: list[Ticker], registry: workit.Registry
) -> workit.ParallelWorker | workit.SequenceWorker:
    """A parallel worker of ``handlers``, or a sequence worker with them in one step."""
    if engine == "parallel":
        return workit.ParallelWorker(handlers, registry=registry)
    return workit.SequenceWorker([handlers], cooler=5, registry=registry)


async def run_for(worker: workit.Worker, seconds: float) -> None:
    """Run ``worker.daemon()`` for ``seconds``, then stop it; it must return normally."""
    with anyio.fail_after(seconds + 100):
        async with workit.testing.running(worker):
            await anyio.sleep(seconds)


@pytest.mark.parametrize("kind", ["raises", "not-callable"])
@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@fake_clock()
@pytest.mark.anyio
async def test_broken_recorder_never_breaks_executions_and_is_logged_once(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture, engine: str, kind: str
) -> None:
    """Three handlers, three rounds, a recorder failing every time: one record, nothing lost."""
    backend = BrokenBackend(kind)
    registry = workit.Registry("test", logger=logger, metrics=backend)
    first, failing, third = Ticker("first"), Ticker("failing", failing=True), Ticker("third")
    worker = make_worker(engine, [first, failing, third], registry)
    start = anyio.current_time()
    await run_for(worker, 12)
    for handler in (first, failing, third):
        assert [at - start for at in handler.starts] == [0, 5, 10]
    states = {state.name: state for state in worker.status().handlers}
    assert [states[name].executions for name in ("first", "failing", "third")] == [3, 3, 3]
    assert states["failing"].failures == 3
    assert states["first"].failures == states["third"].failures == 0
    assert len(records(caplog, FAILED)) == 3
    if kind == "raises":
        assert backend.calls == 9
    [record] = records(caplog, METRICS_FAILED)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    expected = RuntimeError if kind == "raises" else TypeError
    assert isinstance(record.exc_info[1], expected)
    assert getattr(record, "handler", None) in {"first", "failing", "third"}


@fake_clock()
@pytest.mark.anyio
async def test_broken_recorder_is_logged_once_per_registry(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """One broken backend behind two registries and two engines: exactly one record each."""
    backend = BrokenBackend()
    one = workit.Registry("one", logger=logger, metrics=backend)
    two = workit.Registry("two", logger=logger, metrics=backend)
    parallel = workit.ParallelWorker([Ticker("a"), Ticker("b")], registry=one)
    sequence = workit.SequenceWorker([[Ticker("c")], [Ticker("d")]], cooler=5, registry=two)
    await run_for(workit.CombinedWorker(parallel, sequence), 12)
    assert backend.calls == 12
    found = records(caplog, METRICS_FAILED)
    assert len(found) == 2
    handlers = {getattr(record, "handler", None) for record in found}
    assert len(handlers & {"a", "b"}) == 1
    assert len(handlers & {"c", "d"}) == 1


@pytest.mark.parametrize("engine", ["parallel", "sequence"])
def test_backend_failing_to_make_a_recorder_fails_construction(
    logger: logging.Logger, engine: str
) -> None:
    """A backend whose recorder() raises makes the engine's constructor raise that error."""
    registry = workit.Registry("test", logger=logger, metrics=RefusingBackend())
    with pytest.raises(RuntimeError, match="no recorder for first"):
        make_worker(engine, [Ticker("first")], registry)


# Broken logging


class RaisingHandler(logging.Handler):
    """A logging handler whose emit() raises."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.calls += 1
        raise RuntimeError("the log handler is broken")


class RaisingFilter(logging.Filter):
    """A logging filter that raises."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.calls += 1
        raise RuntimeError("the log filter is broken")


@contextlib.contextmanager
def broken(logger: logging.Logger, kind: str) -> Iterator[RaisingHandler | RaisingFilter]:
    """``logger`` with a raising handler or filter attached, for the duration."""
    if kind == "handler":
        handler = RaisingHandler()
        logger.addHandler(handler)
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
    else:
        log_filter = RaisingFilter()
        logger.addFilter(log_filter)
        try:
            yield log_filter
        finally:
            logger.removeFilter(log_filter)


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if no logging failure had been reported in this process yet."""
    monkeypatch.setattr(_policy, "_logging_failed", False)


def reports(err: str) -> int:
    """How many logging failures were reported on stderr."""
    return err.count(LOGGING_FAILED)


@pytest.mark.usefixtures("fresh_process")
@pytest.mark.parametrize("kind", ["handler", "filter"])
@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@pytest.mark.anyio
async def test_raising_logging_never_breaks_executions_and_is_reported_once(
    registry: workit.Registry,
    logger: logging.Logger,
    prom: CollectorRegistry,
    capsys: pytest.CaptureFixture[str],
    engine: str,
    kind: str,
) -> None:
    """With logging raising on every record, each execution still runs, counts and fails right."""
    good, failing = Ticker("good"), Ticker("failing", failing=True)
    worker = make_worker(engine, [good, failing], registry)
    with broken(logger, kind) as breaker:
        for _ in range(3):
            with anyio.fail_after(5), pytest.raises(workit.HandlerError) as raised:
                await worker.ensure()
            assert raised.value.handler == "failing"
    assert len(good.starts) == len(failing.starts) == 3
    assert executions(prom, "good", True) == 3
    assert executions(prom, "failing", False) == 3
    states = {state.name: state for state in worker.status().handlers}
    assert (states["good"].executions, states["failing"].failures) == (3, 3)
    assert breaker.calls >= 9  # 6 debug records and 3 errors, at least, were tried
    err = capsys.readouterr().err
    assert reports(err) == 1
    assert f"the log {kind} is broken" in err


@pytest.mark.usefixtures("fresh_process")
@pytest.mark.anyio
async def test_logging_failures_are_reported_once_per_process(
    prom: CollectorRegistry, logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two registries logging to two broken loggers: still one message on stderr in all."""
    other = logging.getLogger("workit.tests.other")
    other.setLevel(logging.DEBUG)
    metrics = workit.metrics.Prometheus(prom)
    one = workit.Registry("one", logger=logger, metrics=metrics)
    two = workit.Registry("two", logger=other, metrics=metrics)
    first = workit.SequenceWorker([[Ticker("a", failing=True)]], registry=one)
    second = workit.ParallelWorker([Ticker("b", failing=True)], registry=two)
    try:
        with broken(logger, "handler"), broken(other, "filter"):
            for worker in (first, second, first, second):
                with anyio.fail_after(5), pytest.raises(workit.HandlerError):
                    await worker.ensure()
    finally:
        other.setLevel(logging.NOTSET)
    assert executions(prom, "a", False, env="one") == 2
    assert executions(prom, "b", False, env="two") == 2
    assert reports(capsys.readouterr().err) == 1


@pytest.mark.usefixtures("fresh_process")
@pytest.mark.anyio
async def test_broken_metrics_and_logging_together_never_break_executions(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """A raising recorder whose failure cannot even be logged: executions go on, one message."""
    backend = BrokenBackend()
    registry = workit.Registry("test", logger=logger, metrics=backend)
    handler = Ticker("good")
    worker = workit.ParallelWorker([handler], registry=registry)
    with broken(logger, "handler"):
        for _ in range(3):
            with anyio.fail_after(5):
                await worker.ensure()
    assert len(handler.starts) == 3
    assert backend.calls == 3
    assert worker.status().handlers[0].executions == 3
    assert reports(capsys.readouterr().err) == 1


@contextlib.asynccontextmanager
async def daemon_running(worker: workit.Worker) -> AsyncIterator[list[BaseException]]:
    """Run ``daemon()`` around the body, then stop it; yields where a crash is recorded."""
    crashed: list[BaseException] = []

    async def run() -> None:
        try:
            await worker.daemon()
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as error:  # the engine died: the test asserts on it
            crashed.append(error)

    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            await worker.wait_ready()
            yield crashed
            worker.stop()


@pytest.mark.usefixtures("fresh_process")
@pytest.mark.parametrize("kind", ["handler", "filter"])
@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@fake_clock()
@pytest.mark.anyio
async def test_daemon_survives_raising_logging(
    registry: workit.Registry,
    logger: logging.Logger,
    prom: CollectorRegistry,
    capsys: pytest.CaptureFixture[str],
    engine: str,
    kind: str,
) -> None:
    """With logging raising on every record, the daemon runs its rounds and returns normally."""
    good, failing = Ticker("good"), Ticker("failing", failing=True)
    worker = make_worker(engine, [good, failing], registry)
    start = anyio.current_time()
    with broken(logger, kind):
        async with daemon_running(worker) as crashed:
            await anyio.sleep(12)
    assert crashed == []
    assert [at - start for at in good.starts] == [0, 5, 10]
    assert executions(prom, "failing", False) == 3
    assert reports(capsys.readouterr().err) == 1


@pytest.mark.usefixtures("fresh_process")
@fake_clock()
@pytest.mark.anyio
async def test_stop_report_survives_raising_logging(
    registry: workit.Registry, logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stop that cancels a hung handler returns normally though its warning cannot be logged."""
    logger.setLevel(logging.WARNING)  # the start message is not even tried
    worker = workit.ParallelWorker([Hanging()], registry=registry, grace=1)
    with broken(logger, "handler"):
        async with daemon_running(worker) as crashed:
            await anyio.sleep(1)
    assert crashed == []
    assert worker.last_stop == StopReport(cancelled=1, handlers=("hanging",))
    assert reports(capsys.readouterr().err) == 1


# Backends raising a BaseException


class Halt(BaseException):
    """A BaseException (not an Exception) of the back end's own."""


class HaltingBackend:
    """A metrics backend whose recorder raises a BaseException."""

    def recorder(self, env: str, handler: str) -> Callable[[float, bool], None]:
        def record(latency: float, success: bool) -> None:
            raise Halt("metrics halted")

        return record


class HaltingHandler(logging.Handler):
    """A logging handler whose emit() raises a BaseException."""

    def emit(self, record: logging.LogRecord) -> None:
        raise Halt("logging halted")


def halting_filter(error: BaseException) -> bool:
    raise Halt("filter halted")


@pytest.mark.usefixtures("fresh_process")
@pytest.mark.parametrize("part", ["recorder", "ignore", "log-handler"])
@pytest.mark.anyio
async def test_base_exception_from_a_back_end_never_breaks_an_execution(
    prom: CollectorRegistry, logger: logging.Logger, part: str
) -> None:
    """A recorder, ignore filter or log handler raising a BaseException is contained too."""
    metrics: workit.metrics.Backend = workit.metrics.Prometheus(prom)
    if part == "recorder":
        metrics = HaltingBackend()
    registry = workit.Registry(
        "test",
        logger=logger,
        metrics=metrics,
        ignore=halting_filter if part == "ignore" else None,
    )
    worker = workit.ParallelWorker([Ticker("failing", failing=True)], registry=registry)
    handler = HaltingHandler()
    if part == "log-handler":
        logger.addHandler(handler)
    try:
        with anyio.fail_after(5), pytest.raises(workit.HandlerError) as raised:
            await worker.ensure()
    except BaseException as escaped:  # what must not happen: fail this test only
        pytest.fail(f"ensure() let {escaped!r} escape")
    finally:
        logger.removeHandler(handler)
    assert isinstance(raised.value.__cause__, LookupError)
    assert worker.status().handlers[0].failures == 1
