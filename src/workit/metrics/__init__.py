"""Metrics backends: where every handler execution is recorded.

Each backend records two series per execution, labelled ``env``,
``handler`` and ``success``:

- ``worker_handler_execution_total`` (counter);
- ``worker_handler_execution_duration_seconds`` (histogram, ``BUCKETS`` unless
  the backend is given others).

A backend hands out one recorder per handler up front, so an execution
records without looking labels up.

A backend that also ``observe()``\\ s handlers (both of workit's do) exposes
three gauges per handler, labelled ``env`` and ``handler``, read from the
handler's live state when metrics are collected, so they cost nothing per
execution:

- ``worker_handler_last_success_timestamp_seconds``: unix time of the last
  success (an ignored exception included), 0 before any;
- ``worker_handler_running``: 1 while an execution runs, else 0;
- ``worker_handler_consecutive_failures``: failures since the last success.

They exist from the moment a handler is observed, so an alert on their
absence works; so does the execution counter, at 0 for both outcomes.

Under leases (several replicas as one worker) both of workit's backends
also expose, without any work per execution:

- ``worker_lease_owned`` (gauge, ``env``, ``handler``): 1 while this replica
  owns the handler (for a sequence worker: the pipeline), else 0; read from
  the observed state, present only for handlers of an engine that has run
  under leases;
- ``worker_lease_events_total`` (counter, ``env``, ``event``): claims
  ``acquired``, ``released`` and ``lost``, counted by the function
  ``lease_counter(env)`` hands out (``CountsLeases``), each at 0 from then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias, runtime_checkable

from workit.metrics._series import (
    BUCKETS,
    CONSECUTIVE_FAILURES,
    DURATION,
    LAST_SUCCESS,
    LEASE_EVENTS,
    LEASE_OWNED,
    RUNNING,
    TOTAL,
)
from workit.metrics.opentelemetry import OpenTelemetry
from workit.metrics.prometheus import Prometheus

if TYPE_CHECKING:
    from workit.status import ErrorInfo

__all__ = [
    "BUCKETS",
    "CONSECUTIVE_FAILURES",
    "DURATION",
    "LAST_SUCCESS",
    "LEASE_EVENTS",
    "LEASE_OWNED",
    "RUNNING",
    "TOTAL",
    "Backend",
    "CountsLeases",
    "Observed",
    "Observes",
    "OpenTelemetry",
    "Prometheus",
    "Record",
]

Record: TypeAlias = Callable[[float, bool], None]
"""Records one execution: its latency in seconds and whether it succeeded."""


@runtime_checkable
class Backend(Protocol):
    """A metrics backend: hands out a ``Record`` function per handler."""

    def recorder(self, env: str, handler: str) -> Record:
        """The function that records executions of ``handler`` in ``env``."""
        ...


@runtime_checkable
class Observed(Protocol):
    """One handler's live state, read when metrics are collected.

    The engines keep it up to date; by the time an execution is recorded,
    ``last_outcome``, ``last_error`` and the counts already describe it.
    """

    @property
    def running(self) -> bool:
        """Whether an execution of the handler is running."""
        ...

    @property
    def last_success(self) -> float | None:
        """``time.time()`` of the last success (an ignored exception included)."""
        ...

    @property
    def consecutive_failures(self) -> int:
        """Executions that failed in a row since the last success."""
        ...

    @property
    def last_outcome(self) -> Literal["success", "ignored", "failure"] | None:
        """How the last execution ended, ``None`` before the first."""
        ...

    @property
    def last_error(self) -> ErrorInfo | None:
        """The error of the last failed execution, ``None`` before the first failure."""
        ...

    @property
    def owned(self) -> bool | None:
        """Whether this replica owns the handler under leases; ``None`` without leases.

        Backends read it with a default of ``None``, so a state without it
        still works.
        """
        ...


@runtime_checkable
class Observes(Protocol):
    """A backend that exposes gauges read from each handler's live state."""

    def observe(self, env: str, handler: str, state: Observed) -> None:
        """Register ``state`` for the gauges of ``handler`` in ``env``; the latest
        registration for a label set wins."""
        ...


@runtime_checkable
class CountsLeases(Protocol):
    """A backend that counts lease events: ``worker_lease_events_total``."""

    def lease_counter(self, env: str) -> Callable[[str], None]:
        """The function that counts one lease event (``"acquired"``, ``"released"`` or
        ``"lost"``) in ``env``; from this call on, the three series exist, at 0."""
        ...
