"""The Prometheus backend, on ``prometheus_client``."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from workit.metrics._series import BUCKETS, DURATION, DURATION_HELP, LABELS, TOTAL, TOTAL_HELP

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Prometheus"]

# One pair of collectors per CollectorRegistry, however many backends point
# at it: registering the same names twice is an error in prometheus_client.
_collectors: WeakKeyDictionary[CollectorRegistry, tuple[Counter, Histogram]] = WeakKeyDictionary()
_collectors_lock = threading.Lock()


def _collectors_for(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    with _collectors_lock:
        collectors = _collectors.get(registry)
        if collectors is None:
            collectors = (
                Counter(TOTAL, TOTAL_HELP, LABELS, registry=registry),
                Histogram(DURATION, DURATION_HELP, LABELS, registry=registry, buckets=BUCKETS),
            )
            _collectors[registry] = collectors
        return collectors


class Prometheus:
    """Records executions into a ``prometheus_client.CollectorRegistry``.

    ``registry`` defaults to prometheus_client's global ``REGISTRY``. Any
    number of ``Prometheus`` objects, registries and workers may share one
    ``CollectorRegistry``: its collectors are registered once.
    """

    __slots__ = ("_duration", "_total", "registry")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = REGISTRY
        elif not isinstance(registry, CollectorRegistry):
            raise TypeError(
                f"registry must be a prometheus_client CollectorRegistry, got {registry!r}"
            )
        self.registry = registry
        self._total, self._duration = _collectors_for(registry)

    def recorder(self, env: str, handler: str) -> Callable[[float, bool], None]:
        """The function that records executions of ``handler`` in ``env``."""
        return _Recorder(self._total, self._duration, env, handler).record

    def __repr__(self) -> str:
        return f"Prometheus(registry={self.registry!r})"


class _Recorder:
    """Holds the labelled children of one handler, made on first use."""

    __slots__ = ("_duration", "_labels", "_series", "_total")

    def __init__(self, total: Counter, duration: Histogram, env: str, handler: str) -> None:
        self._total = total
        self._duration = duration
        self._labels = ((env, handler, "false"), (env, handler, "true"))
        self._series: list[tuple[Counter, Histogram] | None] = [None, None]

    def record(self, latency: float, success: bool) -> None:
        series = self._series[success]
        if series is None:
            labels = self._labels[success]
            series = (self._total.labels(*labels), self._duration.labels(*labels))
            self._series[success] = series
        series[0].inc()
        series[1].observe(latency)
