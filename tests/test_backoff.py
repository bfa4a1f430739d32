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
