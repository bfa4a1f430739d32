"""The OpenTelemetry backend, through an ``opentelemetry.metrics.Meter``.

Needs the ``workit-jobs[otel]`` extra: the meter comes from it, and building a
backend imports ``opentelemetry.metrics`` for the gauges' observations.
``import workit`` alone imports nothing from OpenTelemetry.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from workit.metrics._series import (
    BUCKETS,
    CONSECUTIVE_FAILURES,
    CONSECUTIVE_FAILURES_HELP,
    DURATION,
    DURATION_HELP,
    LAST_SUCCESS,
    LAST_SUCCESS_HELP,
    LEASE_EVENT_KINDS,
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
    from collections.abc import Callable, Iterable

    from opentelemetry.metrics import CallbackOptions, Meter, Observation

    from workit.metrics import Observed

__all__ = ["OpenTelemetry"]


class _Gauges:
    """workit's observable gauges on one meter, and the states they read.

    A meter hands back its first instrument of a name, and with it the first
    callbacks only: every backend on one meter must share these.
    """

    def __init__(self, meter: Meter, buckets: tuple[float, ...]) -> None:
        from opentelemetry.metrics import Observation

        self.buckets = buckets
        self._observation = Observation
        # (env, handler) -> (attributes, state); guarded between observe() and
        # collections, which run in the exporter's thread.
        self._states: dict[tuple[str, str], tuple[dict[str, str], Observed]] = {}
        self._lock = threading.Lock()
        for name, description, unit, reading in (
            (LAST_SUCCESS, LAST_SUCCESS_HELP, "s", 0),
            (RUNNING, RUNNING_HELP, "", 1),
            (CONSECUTIVE_FAILURES, CONSECUTIVE_FAILURES_HELP, "", 2),
        ):
            meter.create_observable_gauge(
                name, callbacks=[self._callback(reading)], unit=unit, description=description
            )
        meter.create_observable_gauge(
            LEASE_OWNED, callbacks=[self._owned], description=LEASE_OWNED_HELP
        )

    def observe(self, env: str, handler: str, state: Observed) -> None:
        with self._lock:
            self._states[env, handler] = ({"env": env, "handler": handler}, state)

    def _callback(self, reading: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observations(options: CallbackOptions) -> list[Observation]:
            with self._lock:
                states = list(self._states.values())
            return [
                self._observation(readings(state)[reading], attributes)
                for attributes, state in states
            ]

        return observations

    def _owned(self, options: CallbackOptions) -> list[Observation]:
        """The lease gauge of the handlers whose engine has run under leases."""
        with self._lock:
            states = list(self._states.values())
        observations = []
        for attributes, state in states:
            value = owned(state)
            if value is not None:
                observations.append(self._observation(value, attributes))
        return observations


# One set of gauges per meter, however many backends use it.
_gauges: WeakKeyDictionary[Meter, _Gauges] = WeakKeyDictionary()
_gauges_lock = threading.Lock()


def _gauges_for(meter: Meter, buckets: tuple[float, ...]) -> _Gauges:
    with _gauges_lock:
        try:
            gauges = _gauges.get(meter)
        except TypeError:  # a meter that cannot be weakly referenced: gauges of its own
            return _Gauges(meter, buckets)
        if gauges is None:
            gauges = _gauges[meter] = _Gauges(meter, buckets)
        elif gauges.buckets != buckets:
            raise ValueError(
                f"OpenTelemetry buckets {buckets!r} differ from the buckets {gauges.buckets!r} "
                "of the workit histogram already on this meter; every OpenTelemetry backend "
                "on one meter must use the same buckets"
            )
        return gauges


class OpenTelemetry:
    """Records executions through an OpenTelemetry ``Meter``.

    Creates the counter and the histogram (with ``buckets`` as the advisory
    bucket boundaries, default ``BUCKETS``) on ``meter`` once; one backend may
    serve any number of registries and workers, and all backends on one
    meter must use the same buckets. ``observe()`` registers a handler's
    state for the observable gauges, whose callbacks read it at collection.
    """

    __slots__ = ("_counter", "_gauges", "_histogram", "_lease_events", "meter")

    meter: Meter
    """The ``Meter`` the counter and the histogram were created on."""

    def __init__(self, meter: Meter, *, buckets: Iterable[float] = BUCKETS) -> None:
        create_counter = getattr(meter, "create_counter", None)
        if not callable(create_counter):
            raise TypeError(f"meter must be an OpenTelemetry Meter, got {meter!r}")
        bounds = check_buckets(buckets)
        self.meter = meter
        self._gauges = _gauges_for(meter, bounds)
        self._counter = meter.create_counter(TOTAL, description=TOTAL_HELP)
        self._histogram = meter.create_histogram(
            DURATION,
            unit="s",
            description=DURATION_HELP,
            explicit_bucket_boundaries_advisory=bounds,
        )
        self._lease_events = meter.create_counter(LEASE_EVENTS, description=LEASE_EVENTS_HELP)

    @property
    def buckets(self) -> tuple[float, ...]:
        """The duration histogram's bucket boundaries, in seconds."""
        return self._gauges.buckets

    def recorder(self, env: str, handler: str) -> Callable[[float, bool], None]:
        """The function that records executions of ``handler`` in ``env``."""
        attributes = (
            {"env": env, "handler": handler, "success": "false"},
            {"env": env, "handler": handler, "success": "true"},
        )
        add = self._counter.add
        observe = self._histogram.record

        def record(latency: float, success: bool) -> None:
            labels = attributes[success]
            add(1, labels)
            observe(latency, labels)

        return record

    def observe(self, env: str, handler: str, state: Observed) -> None:
        """Register ``state`` for the gauges of ``handler`` in ``env``; the latest
        registration for a label set wins. The counter starts at 0 for both
        outcomes, so that the first failure is an increase a query can see."""
        self._gauges.observe(env, handler, state)
        for success in ("false", "true"):
            self._counter.add(0, {"env": env, "handler": handler, "success": success})

    def lease_counter(self, env: str) -> Callable[[str], None]:
        """The function that counts one lease event in ``env`` (``worker_lease_events_total``);
        the three series of ``env`` exist, at 0, from this call on."""
        attributes = {event: {"env": env, "event": event} for event in LEASE_EVENT_KINDS}
        add = self._lease_events.add
        for labels in attributes.values():
            add(0, labels)

        def count(event: str) -> None:
            add(1, attributes[event])

        return count

    def __repr__(self) -> str:
        if self.buckets == BUCKETS:
            return f"OpenTelemetry(meter={self.meter!r})"
        return f"OpenTelemetry(meter={self.meter!r}, buckets={self.buckets!r})"
