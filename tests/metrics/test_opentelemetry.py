"""The OpenTelemetry backend: series, attributes, sums and bucket boundaries."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
    Sum,
)

import workit
from tests.support import DURATION, TOTAL, FakeState

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.sdk.metrics.export import Metric

EXPECTED_BUCKETS = (0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0)
LAST_SUCCESS = "worker_handler_last_success_timestamp_seconds"
RUNNING = "worker_handler_running"
CONSECUTIVE_FAILURES = "worker_handler_consecutive_failures"
GAUGES = (LAST_SUCCESS, RUNNING, CONSECUTIVE_FAILURES)


class Raises:
    """A handler that raises ``error`` on every execution."""

    def __init__(self, error: BaseException, name: str = "raises") -> None:
        self.error = error
        self.name = name

    async def ensure(self) -> None:
        raise self.error


async def succeed() -> None:
    """Returns at once."""


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    meters = MeterProvider(metric_readers=[reader])
    yield meters
    meters.shutdown()


@pytest.fixture
def backend(provider: MeterProvider) -> workit.metrics.OpenTelemetry:
    return workit.metrics.OpenTelemetry(provider.get_meter("workit.tests"))


@pytest.fixture
def otel_registry(backend: workit.metrics.OpenTelemetry) -> workit.Registry:
    return workit.Registry(
        "test", metrics=backend, ignore=lambda error: isinstance(error, LookupError)
    )


def metrics(reader: InMemoryMetricReader) -> dict[str, Metric]:
    """The metrics collected so far, by name."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """The data points of ``name`` that recorded something: the zeros every observed
    handler's counter has from the start are left out (tested on their own)."""
    return [point for point in metrics(reader)[name].data.data_points if point_value(point)]


def point_value(point: Any) -> float:
    return float(point.count if isinstance(point, HistogramDataPoint) else point.value)


def key(point: NumberDataPoint | HistogramDataPoint) -> tuple[Any, ...]:
    attributes = point.attributes or {}
    return (attributes.get("env"), attributes.get("handler"), attributes.get("success"))


def counts(reader: InMemoryMetricReader) -> dict[tuple[Any, ...], float]:
    """The counter's sum, by (env, handler, success)."""
    return {key(point): point.value for point in points(reader, TOTAL)}


def gauges(reader: InMemoryMetricReader) -> dict[tuple[str, str, str], float]:
    """Every gauge value of one collection, by (gauge, env, handler)."""
    found = metrics(reader)
    values: dict[tuple[str, str, str], float] = {}
    for name in GAUGES:
        data_points: list[Any] = list(found[name].data.data_points) if name in found else []
        for point in data_points:
            labels = (name, point.attributes["env"], point.attributes["handler"])
            assert labels not in values, f"{labels} collected twice"
            values[labels] = point.value
    return values


@pytest.mark.anyio
async def test_exports_exactly_the_two_series(
    otel_registry: workit.Registry, reader: InMemoryMetricReader
) -> None:
    """The meter gets exactly a monotonic counter, a histogram and the three gauges of the
    handlers' state, under workit's names."""
    await otel_registry.wrap(workit.Handler(succeed)).ensure()
    found = metrics(reader)
    assert set(found) == {TOTAL, DURATION, *GAUGES}
    total = found[TOTAL].data
    assert isinstance(total, Sum)
    assert total.is_monotonic
    assert isinstance(found[DURATION].data, Histogram)


@pytest.mark.anyio
async def test_attributes_are_env_handler_success(
    otel_registry: workit.Registry, reader: InMemoryMetricReader
) -> None:
    """Every data point of both series has exactly the attributes env, handler and success."""
    await otel_registry.wrap(workit.Handler(succeed)).ensure()
    await otel_registry.wrap(Raises(ValueError("boom"))).execute()
    for name in (TOTAL, DURATION):
        found = points(reader, name)
        assert {key(point) for point in found} == {
            ("test", "succeed", "true"),
            ("test", "raises", "false"),
        }
        for point in found:
            assert set(point.attributes) == {"env", "handler", "success"}


@pytest.mark.anyio
async def test_counter_sums_are_exact(
    otel_registry: workit.Registry, reader: InMemoryMetricReader
) -> None:
    """Returns and ignored exceptions sum under success="true", other failures under "false"."""
    ok = otel_registry.wrap(workit.Handler(succeed))
    ignored = otel_registry.wrap(Raises(KeyError("gone"), name="ignored"))
    failing = otel_registry.wrap(Raises(ValueError("boom"), name="failing"))
    for _ in range(3):
        await ok.ensure()
    for _ in range(2):
        await ignored.execute()
        await failing.execute()
    assert counts(reader) == {
        ("test", "succeed", "true"): 3,
        ("test", "ignored", "true"): 2,
        ("test", "failing", "false"): 2,
    }


@pytest.mark.anyio
async def test_histogram_boundaries_are_workits(
    otel_registry: workit.Registry, reader: InMemoryMetricReader
) -> None:
    """The histogram's explicit bucket boundaries are 0.1 0.15 0.2 0.25 0.5 1 1.5 2 2.5 5."""
    await otel_registry.wrap(workit.Handler(succeed)).ensure()
    (point,) = points(reader, DURATION)
    assert tuple(point.explicit_bounds) == EXPECTED_BUCKETS


@pytest.mark.anyio
async def test_histogram_count_matches_counter(
    otel_registry: workit.Registry, reader: InMemoryMetricReader
) -> None:
    """The histogram counts every execution the counter counts, with a sum >= 0."""
    wrapped = otel_registry.wrap(workit.Handler(succeed))
    for _ in range(4):
        await wrapped.ensure()
    (point,) = points(reader, DURATION)
    assert point.count == sum(point.bucket_counts) == 4
    assert 0 <= point.sum < 4 * 5.0


def test_recorder_puts_latency_in_its_bucket(
    backend: workit.metrics.OpenTelemetry, reader: InMemoryMetricReader
) -> None:
    """A recorded latency lands in the bucket (0.25, 0.5] for 0.3 s."""
    backend.recorder("test", "direct")(0.3, True)
    (point,) = points(reader, DURATION)
    assert list(point.bucket_counts) == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert point.sum == pytest.approx(0.3)


@pytest.mark.anyio
async def test_one_backend_serves_two_registries(
    backend: workit.metrics.OpenTelemetry, reader: InMemoryMetricReader
) -> None:
    """Two registries sharing one backend record under their own env."""
    staging = workit.Registry("staging", metrics=backend)
    production = workit.Registry("production", metrics=backend)
    await staging.wrap(workit.Handler(succeed)).ensure()
    for _ in range(2):
        await production.wrap(workit.Handler(succeed)).ensure()
    assert counts(reader) == {
        ("staging", "succeed", "true"): 1,
        ("production", "succeed", "true"): 2,
    }


@pytest.mark.anyio
async def test_several_backends_share_one_meter(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Two OpenTelemetry objects on the same meter add into the same series."""
    meter = provider.get_meter("workit.tests.shared")
    for _ in range(2):
        registry = workit.Registry("test", metrics=workit.metrics.OpenTelemetry(meter))
        await registry.wrap(workit.Handler(succeed)).ensure()
    assert counts(reader) == {("test", "succeed", "true"): 2}
    (point,) = points(reader, DURATION)
    assert point.count == 2


def test_non_meter_is_a_type_error() -> None:
    """OpenTelemetry() of something that is not a Meter raises TypeError."""
    with pytest.raises(TypeError, match="Meter"):
        workit.metrics.OpenTelemetry(object())  # type: ignore[arg-type]


def test_import_workit_does_not_import_opentelemetry() -> None:
    """`import workit` loads no opentelemetry module."""
    code = "import workit, sys; assert not any(m.startswith('opentelemetry') for m in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


# Gauges read from observed states


def test_observed_handler_adds_the_three_gauges(
    backend: workit.metrics.OpenTelemetry, reader: InMemoryMetricReader
) -> None:
    """Once a handler is observed the meter exports three gauges, attributed env and handler."""
    backend.observe("test", "sync", FakeState())
    found = metrics(reader)
    assert set(found) == {TOTAL, *GAUGES}
    for name in GAUGES:
        assert isinstance(found[name].data, Gauge)
        (point,) = found[name].data.data_points
        assert dict(point.attributes or {}) == {"env": "test", "handler": "sync"}
    assert found[LAST_SUCCESS].unit == "s"


def test_gauges_of_a_fresh_handler_are_zero(
    backend: workit.metrics.OpenTelemetry, reader: InMemoryMetricReader
) -> None:
    """An observed handler that never ran has each gauge at 0."""
    backend.observe("test", "sync", FakeState())
    assert gauges(reader) == {(name, "test", "sync"): 0 for name in GAUGES}


def test_gauges_are_read_from_the_state_at_collection(
    backend: workit.metrics.OpenTelemetry, reader: InMemoryMetricReader
) -> None:
    """A change of the state shows at the next collection, with nothing recorded."""
    state = FakeState()
    backend.observe("test", "sync", state)
    state.last_success = 1_764_633_485.25
    state.running = True
    state.consecutive_failures = 4
    assert gauges(reader) == {
        (LAST_SUCCESS, "test", "sync"): 1_764_633_485.25,
        (RUNNING, "test", "sync"): 1,
        (CONSECUTIVE_FAILURES, "test", "sync"): 4,
    }


def test_the_latest_observation_of_a_label_set_wins(
    backend: workit.metrics.OpenTelemetry, reader: InMemoryMetricReader
) -> None:
    """Observing a handler again replaces its state: its gauges show once, from the new one."""
    backend.observe("test", "sync", FakeState(consecutive_failures=7))
    backend.observe("test", "sync", FakeState(consecutive_failures=2))
    assert gauges(reader)[CONSECUTIVE_FAILURES, "test", "sync"] == 2


def test_backends_sharing_a_meter_share_the_gauges(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Handlers observed through two backends on one meter are all exported."""
    meter = provider.get_meter("workit.tests.shared")
    workit.metrics.OpenTelemetry(meter).observe("test", "first", FakeState(consecutive_failures=1))
    workit.metrics.OpenTelemetry(meter).observe("test", "second", FakeState(consecutive_failures=2))
    found = gauges(reader)
    assert found[CONSECUTIVE_FAILURES, "test", "first"] == 1
    assert found[CONSECUTIVE_FAILURES, "test", "second"] == 2


def test_observed_handler_counts_zero_for_both_outcomes(
    backend: workit.metrics.OpenTelemetry, reader: InMemoryMetricReader
) -> None:
    """An observed handler's execution counter starts at 0 for success "true" and "false"."""
    backend.observe("test", "sync", FakeState())
    data_points: list[Any] = list(metrics(reader)[TOTAL].data.data_points)
    zeros = {key(point): point.value for point in data_points}
    assert zeros == {("test", "sync", "true"): 0, ("test", "sync", "false"): 0}
    assert DURATION not in metrics(reader)


def test_otel_backend_observes(backend: workit.metrics.OpenTelemetry) -> None:
    """The OpenTelemetry backend fits the observation protocol."""
    assert isinstance(backend, workit.metrics.Observes)


# Buckets


def test_custom_buckets_are_the_histogram_boundaries(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """OpenTelemetry(meter, buckets=...) makes them the histogram's explicit boundaries."""
    meter = provider.get_meter("workit.tests.buckets")
    backend = workit.metrics.OpenTelemetry(meter, buckets=[1, 10, 60])
    assert backend.buckets == (1.0, 10.0, 60.0)
    backend.recorder("test", "slow")(30.0, True)
    (point,) = points(reader, DURATION)
    assert tuple(point.explicit_bounds) == (1.0, 10.0, 60.0)
    assert list(point.bucket_counts) == [0, 0, 1, 0]


@pytest.mark.parametrize(
    ("value", "error"),
    [([], ValueError), ([0], ValueError), ([2, 1], ValueError), (["1"], TypeError)],
    ids=["empty", "zero", "unsorted", "string"],
)
def test_bad_buckets_are_rejected(
    provider: MeterProvider, value: object, error: type[Exception]
) -> None:
    """Buckets are checked as for the Prometheus backend."""
    with pytest.raises(error, match="buckets"):
        workit.metrics.OpenTelemetry(provider.get_meter("workit.tests.bad"), buckets=value)  # type: ignore[arg-type]


def test_different_buckets_on_one_meter_are_rejected(provider: MeterProvider) -> None:
    """A second backend on a meter with other buckets is a ValueError naming both."""
    meter = provider.get_meter("workit.tests.conflict")
    workit.metrics.OpenTelemetry(meter, buckets=(1, 2))
    with pytest.raises(ValueError, match="same buckets") as caught:
        workit.metrics.OpenTelemetry(meter)
    assert "(1.0, 2.0)" in str(caught.value)
