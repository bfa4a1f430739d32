"""The Prometheus backend, exposed through ``prometheus_client``."""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from workit.metrics._series import (
    BUCKETS,
    CONSECUTIVE_FAILURES,
    CONSECUTIVE_FAILURES_HELP,
    DURATION,
    DURATION_HELP,
    GAUGE_LABELS,
    LABELS,
    LAST_SUCCESS,
    LAST_SUCCESS_HELP,
    LEASE_EVENT_KINDS,
    LEASE_EVENT_LABELS,
    LEASE_EVENTS,
    LEASE_EVENTS_HELP,
    LEASE_OWNED,
    LEASE_OWNED_HELP,
    RUNNING,
    RUNNING_HELP,
    TOTAL,
    TOTAL_HELP,
    check_buckets,
    owned,
    readings,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from prometheus_client.metrics_core import Metric

    from workit.metrics import Observed

__all__ = ["Prometheus"]

_SUCCESS = ("false", "true")


# One label set's executions, as one array of doubles: [count, seconds, bucket,
# ..., +Inf bucket], buckets not cumulative. An array holds no references for
# the garbage collector to follow; a list would hold one per number, and every
# full collection would visit each number of each series of 10,000 handlers.
# Counts are exact up to 2**53.
_COUNT, _SUM, _BUCKET = 0, 1, 2

_Families = tuple[
    CounterMetricFamily,
    HistogramMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
]

_EVENT_INDEX = {event: index for index, event in enumerate(LEASE_EVENT_KINDS)}


class _Collector(Collector):
    """workit's series for one ``CollectorRegistry``, built at scrape time.

    Recording is a few additions on plain numbers, with no lock and no label
    lookup: executions are recorded on the event loop's thread, and
    prometheus_client's own metrics would cost a lock per value updated.
    The gauges cost nothing until a scrape: they are read then from the
    states handlers were observed with.
    """

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        # The upper bounds as prometheus_client spells them.
        self._bounds = [str(bound) for bound in buckets] + ["+Inf"]
        self._series: dict[tuple[str, str, str], array[float]] = {}
        self._observed: dict[tuple[str, str], Observed] = {}
        # env -> the count of each lease event, in LEASE_EVENT_KINDS order.
        self._lease_events: dict[str, array[float]] = {}
        # Guards _series, _observed and _lease_events between new labels and scrapes.
        self._lock = threading.Lock()

    def series(self, env: str, handler: str, success: bool) -> array[float]:
        with self._lock:
            one = self._series.get((env, handler, _SUCCESS[success]))
            if one is None:
                one = self._series[env, handler, _SUCCESS[success]] = array(
                    "d", bytes(8 * (2 + len(self._bounds)))
                )
            return one

    def observe(self, env: str, handler: str, state: Observed) -> None:
        with self._lock:
            self._observed[env, handler] = state

    def lease_events(self, env: str) -> array[float]:
        with self._lock:
            counts = self._lease_events.get(env)
            if counts is None:
                counts = self._lease_events[env] = array("d", bytes(8 * len(LEASE_EVENT_KINDS)))
            return counts

    def describe(self) -> list[Metric]:
        return [*self._families(), *self._lease_families()]

    @staticmethod
    def _lease_families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(LEASE_OWNED, LEASE_OWNED_HELP, labels=GAUGE_LABELS),
            CounterMetricFamily(LEASE_EVENTS, LEASE_EVENTS_HELP, labels=LEASE_EVENT_LABELS),
        )

    def _families(self) -> _Families:
        return (
            CounterMetricFamily(TOTAL, TOTAL_HELP, labels=LABELS),
            HistogramMetricFamily(DURATION, DURATION_HELP, labels=LABELS),
            GaugeMetricFamily(LAST_SUCCESS, LAST_SUCCESS_HELP, labels=GAUGE_LABELS),
            GaugeMetricFamily(RUNNING, RUNNING_HELP, labels=GAUGE_LABELS),
            GaugeMetricFamily(CONSECUTIVE_FAILURES, CONSECUTIVE_FAILURES_HELP, labels=GAUGE_LABELS),
        )

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        with self._lock:
            series = dict(self._series)
            observed = list(self._observed.items())
            lease_events = list(self._lease_events.items())
        self._executions(families, series)
        if not observed:
            yield from families[:2]  # no gauges to declare until a handler is observed
        else:
            self._gauges(families, observed, series)
            yield from families
        yield from self._leases(observed, lease_events)

    def _leases(
        self,
        observed: Iterable[tuple[tuple[str, str], Observed]],
        lease_events: Iterable[tuple[str, array[float]]],
    ) -> Iterator[Metric]:
        """The lease gauge and counter, each only once something under leases has one."""
        gauge, counter = self._lease_families()
        for labels, state in observed:
            value = owned(state)
            if value is not None:
                gauge.add_metric(labels, value)
        if gauge.samples:
            yield gauge
        for env, counts in lease_events:
            for event, count in zip(LEASE_EVENT_KINDS, counts, strict=True):
                counter.add_metric((env, event), count)
        if counter.samples:
            yield counter

    def _executions(
        self, families: _Families, series: dict[tuple[str, str, str], array[float]]
    ) -> None:
        total, duration = families[0], families[1]
        for labels, one in series.items():
            if not one[_COUNT]:
                continue  # a label set appears once it has been recorded
            total.add_metric(labels, one[_COUNT])
            cumulative, buckets = 0.0, []
            for bound, count in zip(self._bounds, one[_BUCKET:], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            duration.add_metric(labels, buckets, one[_SUM])

    @staticmethod
    def _gauges(
        families: _Families,
        observed: Iterable[tuple[tuple[str, str], Observed]],
        series: dict[tuple[str, str, str], array[float]],
    ) -> None:
        total, last_success, running, failures = families[0], *families[2:]
        for (env, handler), state in observed:
            # An observed handler's counter is 0 until recorded, so that the
            # first failure is an increase that rate() and increase() can see.
            for success in _SUCCESS:
                one = series.get((env, handler, success))
                if one is None or not one[_COUNT]:
                    total.add_metric((env, handler, success), 0.0)
            labels = (env, handler)
            success_at, is_running, in_a_row = readings(state)
            last_success.add_metric(labels, success_at)
            running.add_metric(labels, is_running)
            failures.add_metric(labels, in_a_row)


# One collector per CollectorRegistry, however many backends point at it:
# registering the same names twice is an error in prometheus_client.
_collectors: WeakKeyDictionary[CollectorRegistry, _Collector] = WeakKeyDictionary()
_collectors_lock = threading.Lock()


def _collector_for(registry: CollectorRegistry, buckets: tuple[float, ...]) -> _Collector:
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = _collectors[registry] = _Collector(buckets)
            registry.register(collector)
        elif collector.buckets != buckets:
            raise ValueError(
                f"Prometheus buckets {buckets!r} differ from the buckets {collector.buckets!r} "
                "of the workit histogram already on this CollectorRegistry; every Prometheus "
                "backend on one CollectorRegistry must use the same buckets"
            )
        return collector


class Prometheus:
    """Records executions into a ``prometheus_client.CollectorRegistry``.

    ``registry`` defaults to prometheus_client's global ``REGISTRY``. Any
    number of ``Prometheus`` objects, registries and workers may share one
    ``CollectorRegistry``: workit's collector is registered on it once, and
    executions with the same labels add up. ``buckets`` are the duration
    histogram's upper bounds in seconds (default ``BUCKETS``); all backends
    on one ``CollectorRegistry`` must use the same. ``observe()`` registers a
    handler's state for the gauges, which are read from it at scrape time.
    """

    __slots__ = ("_collector", "registry")

    registry: CollectorRegistry
    """The ``CollectorRegistry`` executions are recorded into."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, buckets: Iterable[float] = BUCKETS
    ) -> None:
        if registry is None:
            registry = REGISTRY
        elif not isinstance(registry, CollectorRegistry):
            raise TypeError(
                f"registry must be a prometheus_client CollectorRegistry, got {registry!r}"
            )
        bounds = check_buckets(buckets)
        self.registry = registry
        self._collector = _collector_for(registry, bounds)

    @property
    def buckets(self) -> tuple[float, ...]:
        """The duration histogram's upper bounds, in seconds (``+Inf`` aside)."""
        return self._collector.buckets

    def recorder(self, env: str, handler: str) -> Callable[[float, bool], None]:
        """The function that records executions of ``handler`` in ``env``."""
        return _Recorder(self._collector, env, handler)

    def observe(self, env: str, handler: str, state: Observed) -> None:
        """Register ``state`` for the gauges of ``handler`` in ``env``; the latest
        registration for a label set wins."""
        self._collector.observe(env, handler, state)

    def lease_counter(self, env: str) -> Callable[[str], None]:
        """The function that counts one lease event in ``env`` (``worker_lease_events_total``);
        the three series of ``env`` exist, at 0, from this call on."""
        counts = self._collector.lease_events(env)

        def count(event: str) -> None:
            counts[_EVENT_INDEX[event]] += 1

        return count

    def __repr__(self) -> str:
        if self.buckets == BUCKETS:
            return f"Prometheus(registry={self.registry!r})"
        return f"Prometheus(registry={self.registry!r}, buckets={self.buckets!r})"


class _Recorder:
    """Records one handler's executions; a series is made on its first use,
    since most handlers never fail and an unused series is memory for nothing."""

    __slots__ = ("_buckets", "_collector", "_env", "_failures", "_handler", "_successes")

    def __init__(self, collector: _Collector, env: str, handler: str) -> None:
        self._collector = collector
        self._buckets = collector.buckets
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
        series[_BUCKET + bisect_left(self._buckets, latency)] += 1
