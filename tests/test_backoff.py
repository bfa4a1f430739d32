"""Backoff: growing waits after consecutive failures, reset by a success."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import pytest

import workit
from tests.support import fake_clock

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


def test_delays_grow_by_the_multiplier_up_to_the_maximum() -> None:
    """Without jitter the delays are initial * multiplier ** (n - 1), capped."""
    backoff = workit.Backoff(initial=1, maximum=10, jitter=0)
    assert [backoff.delay(n) for n in range(7)] == [0, 1, 2, 4, 8, 10, 10]


def test_huge_failure_counts_stay_at_the_maximum() -> None:
    """A very long failure streak waits the maximum, without overflowing."""
    backoff = workit.Backoff(initial=1, maximum=300, jitter=0)
    assert backoff.delay(10_000) == 300


def test_jitter_takes_up_to_its_share_off() -> None:
    """Jitter 0.5 with the random source at 1.0 halves the delay; at 0.0 keeps it."""
    assert workit.Backoff(initial=4, jitter=0.5, random=lambda: 1.0).delay(1) == 2
    assert workit.Backoff(initial=4, jitter=0.5, random=lambda: 0.0).delay(1) == 4


def test_durations_may_be_timedeltas() -> None:
    """initial and maximum accept timedelta, kept as float seconds."""
    backoff = workit.Backoff(initial=timedelta(seconds=2), maximum=timedelta(minutes=1))
    assert (backoff.initial, backoff.maximum) == (2.0, 60.0)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"initial": 0}, ValueError),
        ({"initial": -1}, ValueError),
        ({"initial": 10, "maximum": 5}, ValueError),
        ({"multiplier": 0.5}, ValueError),
        ({"jitter": 1.5}, ValueError),
        ({"jitter": -0.1}, ValueError),
        ({"initial": "1"}, TypeError),
        ({"random": 3}, TypeError),
    ],
)
def test_bad_settings_are_rejected(options: dict[str, object], error: type[Exception]) -> None:
    """Each bad setting raises at construction, naming it."""
    with pytest.raises(error, match="Backoff"):
        workit.Backoff(**options)  # type: ignore[arg-type]


def test_engines_reject_a_non_backoff(registry: workit.Registry) -> None:
    """backoff= must be a workit.Backoff."""
    handler = workit.Handler(lambda: None, cooler=1, name="h")
    with pytest.raises(TypeError, match="backoff"):
        workit.ParallelWorker([handler], registry=registry, backoff=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backoff"):
        workit.SequenceWorker([[handler]], registry=registry, backoff=5)  # type: ignore[arg-type]


class Flaky:
    """Fails while ``failing`` is true; records when each execution starts."""

    def __init__(self, cooler: float = 0, failing: bool = True) -> None:
        self.cooler = cooler
        self.failing = failing
        self.starts: list[float] = []

    async def ensure(self) -> None:
        self.starts.append(anyio.current_time())
        if self.failing:
            raise RuntimeError("down")


async def run_for(worker: workit.Worker, seconds: float) -> None:
    with anyio.fail_after(seconds + 100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await anyio.sleep(seconds)
            worker.stop()


@fake_clock()
@pytest.mark.anyio
async def test_parallel_handler_backs_off_after_failures(registry: workit.Registry) -> None:
    """A failing handler with cooler 0 waits 1, 2, 4, 8 s between attempts."""
    flaky = Flaky()
    backoff = workit.Backoff(initial=1, maximum=8, jitter=0)
    worker = workit.ParallelWorker([flaky], registry=registry, backoff=backoff)
    start = anyio.current_time()
    await run_for(worker, 40)
    gaps = [round(b - a, 6) for a, b in zip(flaky.starts, flaky.starts[1:], strict=False)]
    assert flaky.starts[0] == start
    assert gaps[:6] == [1, 2, 4, 8, 8, 8]


@fake_clock()
@pytest.mark.anyio
async def test_success_resets_the_backoff(registry: workit.Registry) -> None:
    """After a success the handler is back to its cooler; a new failure starts at initial."""
    flaky = Flaky(cooler=0.5)
    backoff = workit.Backoff(initial=4, maximum=100, jitter=0)
    worker = workit.ParallelWorker([flaky], registry=registry, backoff=backoff)

    async def recover() -> None:
        await anyio.sleep(13)  # attempts at 0, 4, 12 failed
        flaky.failing = False
        await anyio.sleep(20.25)  # attempt at 28 succeeds, then every 0.5 s
        flaky.failing = True  # at 33.25, between two attempts

    start = anyio.current_time()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(recover)
        await run_for(worker, 40)
    times = [round(t - start, 6) for t in flaky.starts]
    assert times[:4] == [0, 4, 12, 28]
    assert times[4:6] == [28.5, 29]
    failing_again = times.index(33.5)
    assert times[failing_again + 1] == 37.5


@fake_clock()
@pytest.mark.anyio
async def test_cooler_longer_than_backoff_wins(registry: workit.Registry) -> None:
    """The wait is the longer of the cooler and the backoff delay."""
    flaky = Flaky(cooler=10)
    backoff = workit.Backoff(initial=1, maximum=100, jitter=0)
    worker = workit.ParallelWorker([flaky], registry=registry, backoff=backoff)
    start = anyio.current_time()
    await run_for(worker, 60)
    # Delays 1, 2, 4, 8 are shorter than the cooler; the fifth, 16, is longer.
    assert [round(t - start, 6) for t in flaky.starts] == [0, 10, 20, 30, 40, 56]


@fake_clock()
@pytest.mark.anyio
async def test_backoff_keeps_a_failing_handler_from_flooding_the_logs(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """In an hour, a handler failing with cooler 0 logs a bounded number of errors."""
    backoff = workit.Backoff(initial=1, maximum=300, jitter=0)
    worker = workit.ParallelWorker([Flaky()], registry=registry, backoff=backoff)
    caplog.set_level(logging.ERROR)
    await run_for(worker, 3600)
    errors = [r for r in caplog.records if r.message.startswith("worker execution failed")]
    # 1+2+...+256 = 511 s in 9 attempts, then one every 300 s.
    assert len(errors) == 9 + (3600 - 511) // 300 + 1


@fake_clock()
@pytest.mark.anyio
async def test_ignored_exceptions_do_not_back_off(
    prom: CollectorRegistry, logger: logging.Logger
) -> None:
    """An exception the registry ignores is a success: the cooler applies."""
    registry = workit.Registry(
        "test",
        ignore=lambda error: isinstance(error, RuntimeError),
        logger=logger,
        metrics=workit.metrics.Prometheus(prom),
    )
    flaky = Flaky(cooler=1)
    backoff = workit.Backoff(initial=5, jitter=0)
    worker = workit.ParallelWorker([flaky], registry=registry, backoff=backoff)
    start = anyio.current_time()
    await run_for(worker, 3.5)
    assert [round(t - start, 6) for t in flaky.starts] == [0, 1, 2, 3]


@fake_clock()
@pytest.mark.anyio
async def test_sequence_backs_off_after_failed_passes(registry: workit.Registry) -> None:
    """Failed passes are spaced by the backoff; the cooler applies again after a success."""
    flaky = Flaky()
    backoff = workit.Backoff(initial=10, maximum=40, jitter=0)
    worker = workit.SequenceWorker([[flaky]], cooler=5, registry=registry, backoff=backoff)

    async def recover() -> None:
        await anyio.sleep(71)  # passes at 0, 10, 30, 70 failed
        flaky.failing = False

    start = anyio.current_time()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(recover)
        await run_for(worker, 125)
    times = [round(t - start, 6) for t in flaky.starts]
    assert times == [0, 10, 30, 70, 110, 115, 120, 125][: len(times)]
    assert len(times) >= 7


# A random source that raises


class Down:
    """A handler failing on every execution; records when each starts."""

    def __init__(self, name: str = "down", *, cooler: float = 0.5) -> None:
        self.name = name
        self.cooler = cooler
        self.starts: list[float] = []

    async def ensure(self) -> None:
        self.starts.append(anyio.current_time())
        raise RuntimeError("down")


class Up(Down):
    """A handler succeeding on every execution; records when each starts."""

    async def ensure(self) -> None:
        self.starts.append(anyio.current_time())


def no_entropy() -> float:
    raise OSError("no entropy source")


BROKEN = workit.Backoff(initial=0.5, maximum=2, random=no_entropy)


def backoff_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("worker backoff failed")]


def failure_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("worker execution failed")]


@fake_clock()
@pytest.mark.anyio
async def test_parallel_backoff_whose_random_raises_waits_the_maximum(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A backoff whose random source raises does not crash the engine: the failing handler
    waits the maximum, the error is logged, the other handler keeps its cooler."""
    down, up = Down(), Up("up", cooler=1)
    worker = workit.ParallelWorker([down, up], registry=registry, backoff=BROKEN)
    start = anyio.current_time()
    await run_for(worker, 9.5)
    assert [round(t - start, 6) for t in down.starts] == [0, 2, 4, 6, 8]
    assert [round(t - start, 6) for t in up.starts] == list(range(10))
    records = backoff_failures(caplog)
    assert records
    record = records[0]
    assert record.getMessage() == "worker backoff failed: handler 'down' waits the maximum, 2 s"
    assert record.levelno == logging.ERROR
    assert getattr(record, "handler", None) == "down"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], OSError)
    assert len(failure_records(caplog)) == 5


@fake_clock()
@pytest.mark.anyio
async def test_sequence_backoff_whose_random_raises_waits_the_maximum(
    registry: workit.Registry,
) -> None:
    """In a sequence, a backoff whose random source raises makes failed passes wait the
    maximum; the engine, and the parallel engine beside it, go on."""
    down, up = Down(), Up("up", cooler=1)
    worker = workit.CombinedWorker(
        workit.SequenceWorker([[down]], cooler=0.5, registry=registry, backoff=BROKEN),
        workit.ParallelWorker([up], registry=registry),
    )
    start = anyio.current_time()
    await run_for(worker, 9.5)
    assert [round(t - start, 6) for t in down.starts] == [0, 2, 4, 6, 8]
    assert [round(t - start, 6) for t in up.starts] == list(range(10))


@fake_clock()
@pytest.mark.anyio
async def test_sequence_backoff_whose_random_raises_is_logged(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """In a sequence, the exception of a backoff's random source is logged, with its traceback."""
    worker = workit.SequenceWorker([[Down()]], cooler=0.5, registry=registry, backoff=BROKEN)
    await run_for(worker, 3)
    records = backoff_failures(caplog)
    assert records
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], OSError)


# What the failure record says of the backoff


@fake_clock()
@pytest.mark.anyio
async def test_failure_record_says_how_long_the_handler_backs_off(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Under a backoff, each failure record gives the failures in a row and the wait, in its
    message and as the fields consecutive_failures and backoff."""
    backoff = workit.Backoff(initial=1, maximum=4, jitter=0)
    worker = workit.ParallelWorker([Down("x", cooler=0)], registry=registry, backoff=backoff)
    await run_for(worker, 8)  # failures at 0, 1, 3, 7
    records = failure_records(caplog)
    assert [r.getMessage() for r in records] == [
        "worker execution failed: handler 'x', 1 failure in a row; backing off 1 s",
        "worker execution failed: handler 'x', 2 failures in a row; backing off 2 s",
        "worker execution failed: handler 'x', 3 failures in a row; backing off 4 s",
        "worker execution failed: handler 'x', 4 failures in a row; backing off 4 s",
    ]
    assert [getattr(r, "consecutive_failures", None) for r in records] == [1, 2, 3, 4]
    assert [getattr(r, "backoff", None) for r in records] == [1.0, 2.0, 4.0, 4.0]
    assert all(getattr(r, "handler", None) == "x" for r in records)


@fake_clock()
@pytest.mark.anyio
async def test_failure_record_without_backoff_names_the_handler_only(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a backoff, the failure record's message names the handler, nothing more."""
    worker = workit.ParallelWorker([Down("x", cooler=1)], registry=registry)
    await run_for(worker, 1.5)
    records = failure_records(caplog)
    assert [r.getMessage() for r in records] == ["worker execution failed: handler 'x'"] * 2
    assert not any(hasattr(r, "backoff") for r in records)


@fake_clock()
@pytest.mark.anyio
async def test_failure_record_is_plain_while_the_cooler_is_longer_than_the_backoff(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """While the backoff's wait is shorter than the cooler, the cooler applies and the record
    says nothing of a backoff; once the wait is longer, it does."""
    backoff = workit.Backoff(initial=1, maximum=100, jitter=0)
    worker = workit.ParallelWorker([Down("x", cooler=3)], registry=registry, backoff=backoff)
    await run_for(worker, 10)  # failures at 0, 3, 6 (waits 1, 2, 4 s: 3, 3, 4), 10
    messages = [r.getMessage() for r in failure_records(caplog)]
    assert messages[:3] == [
        "worker execution failed: handler 'x'",
        "worker execution failed: handler 'x'",
        "worker execution failed: handler 'x', 3 failures in a row; backing off 4 s",
    ]
