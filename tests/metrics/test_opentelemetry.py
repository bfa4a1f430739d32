"""The OpenTelemetry backend: series, attributes, sums and bucket boundaries."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
    Sum,
)

import workit
from tests.support import DURATION, TOTAL

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.sdk.metrics.export import Metric

EXPECTED_BUCKETS = (0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0)


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
    return list(metrics(reader)[name].data.data_points)


def key(point: NumberDataPoint | HistogramDataPoint) -> tuple[Any, ...]:
    attributes = point.attributes or {}
    return (attributes.get("env"), attributes.get("handler"), attributes.get("success"))


def counts(reader: InMemoryMetricReader) -> dict[tuple[Any, ...], float]:
    """The counter's sum, by (env, handler, success)."""
    return {key(point): point.value for point in points(reader, TOTAL)}


@pytest.mark.anyio
async def test_exports_exactly_the_two_series(
    otel_registry: workit.Registry, reader: InMemoryMetricReader
) -> None:
    """The meter gets exactly a monotonic counter and a histogram, under workit's names."""
    await otel_registry.wrap(workit.Handler(succeed)).ensure()
    found = metrics(reader)
    assert set(found) == {TOTAL, DURATION}
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
