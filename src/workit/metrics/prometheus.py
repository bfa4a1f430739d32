"""The Prometheus backend, exposed through ``prometheus_client``."""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from workit.metrics._series import BUCKETS, DURATION, DURATION_HELP, LABELS, TOTAL, TOTAL_HELP

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client.metrics_core import Metric

__all__ = ["Prometheus"]

_SUCCESS = ("false", "true")
_BOUNDS = [str(float(bound)) for bound in BUCKETS] + ["+Inf"]  # as prometheus_client spells them


# One label set's executions, as one array of doubles: [count, seconds, bucket,
# ..., +Inf bucket], buckets not cumulative. An array holds no references for
# the garbage collector to follow; a list would hold one per number, and every
# full collection would visit each number of each series of 10,000 handlers.
# Counts are exact up to 2**53.
_COUNT, _SUM, _BUCKET = 0, 1, 2


def _series() -> array[float]:
    return array("d", bytes(8 * (2 + len(_BOUNDS))))


class _Collector(Collector):
    """workit's two series for one ``CollectorRegistry``, built at scrape time.

    Recording is a few additions on plain numbers, with no lock and no label
    lookup: executions are recorded on the event loop's thread, and
    prometheus_client's own metrics would cost a lock per value updated.
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, str], array[float]] = {}
        self._lock = threading.Lock()  # guards _series between new labels and scrapes

    def series(self, env: str, handler: str, success: bool) -> array[float]:
        with self._lock:
            return self._series.setdefault((env, handler, _SUCCESS[success]), _series())

    def describe(self) -> list[Metric]:
        return list(self._families())

    def _families(self) -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        return (
            CounterMetricFamily(TOTAL, TOTAL_HELP, labels=LABELS),
            HistogramMetricFamily(DURATION, DURATION_HELP, labels=LABELS),
        )

    def collect(self) -> Iterator[Metric]:
        total, duration = self._families()
        with self._lock:
            series = list(self._series.items())
        for labels, one in series:
            if not one[_COUNT]:
                continue  # a label set appears once it has been recorded
            total.add_metric(labels, one[_COUNT])
            cumulative, buckets = 0.0, []
            for bound, count in zip(_BOUNDS, one[_BUCKET:], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            duration.add_metric(labels, buckets, one[_SUM])
        yield total
        yield duration


# One collector per CollectorRegistry, however many backends point at it:
# registering the same names twice is an error in prometheus_client.
_collectors: WeakKeyDictionary[CollectorRegistry, _Collector] = WeakKeyDictionary()
_collectors_lock = threading.Lock()


def _collector_for(registry: CollectorRegistry) -> _Collector:
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = _collectors[registry] = _Collector()
            registry.register(collector)
        return collector


class Prometheus:
    """Records executions into a ``prometheus_client.CollectorRegistry``.

    ``registry`` defaults to prometheus_client's global ``REGISTRY``. Any
    number of ``Prometheus`` objects, registries and workers may share one
    ``CollectorRegistry``: workit's collector is registered on it once, and
    executions with the same labels add up.
    """

    __slots__ = ("_collector", "registry")

    registry: CollectorRegistry
    """The ``CollectorRegistry`` executions are recorded into."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = REGISTRY
        elif not isinstance(registry, CollectorRegistry):
            raise TypeError(
                f"registry must be a prometheus_client CollectorRegistry, got {registry!r}"
            )
        self.registry = registry
        self._collector = _collector_for(registry)

    def recorder(self, env: str, handler: str) -> Callable[[float, bool], None]:
        """The function that records executions of ``handler`` in ``env``."""
        return _Recorder(self._collector, env, handler)

    def __repr__(self) -> str:
        return f"Prometheus(registry={self.registry!r})"


class _Recorder:
    """Records one handler's executions; a series is made on its first use,
    since most handlers never fail and an unused series is memory for nothing."""

    __slots__ = ("_collector", "_env", "_failures", "_handler", "_successes")

    def __init__(self, collector: _Collector, env: str, handler: str) -> None:
        self._collector = collector
        self._env = env
        self._handler = handler
        self._successes: array[float] | None = None
        self._failures: array[float] | None = None

    def __call__(self, latency: float, success: bool) -> None:
        series = self._successes if success else self._failures
        if series is None:
            series = self._collector.series(self._env, self._handler, success)
            if success:
                self._successes = series
            else:
                self._failures = series
        series[_COUNT] += 1
        series[_SUM] += latency
        series[_BUCKET + bisect_left(BUCKETS, latency)] += 1
