"""The names, help texts and buckets of the series every backend records."""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workit.metrics import Observed

__all__ = [
    "BUCKETS",
    "CONSECUTIVE_FAILURES",
    "CONSECUTIVE_FAILURES_HELP",
    "DURATION",
    "DURATION_HELP",
    "GAUGE_LABELS",
    "LABELS",
    "LAST_SUCCESS",
    "LAST_SUCCESS_HELP",
    "LEASE_EVENTS",
    "LEASE_EVENTS_HELP",
    "LEASE_EVENT_KINDS",
    "LEASE_EVENT_LABELS",
    "LEASE_OWNED",
    "LEASE_OWNED_HELP",
    "RUNNING",
    "RUNNING_HELP",
    "TOTAL",
    "TOTAL_HELP",
    "check_buckets",
    "owned",
    "readings",
]

TOTAL = "worker_handler_execution_total"
TOTAL_HELP = "Handler executions, by outcome."
DURATION = "worker_handler_execution_duration_seconds"
DURATION_HELP = "Duration of handler executions in seconds, by outcome."
LABELS = ("env", "handler", "success")
BUCKETS = (0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0)

LAST_SUCCESS = "worker_handler_last_success_timestamp_seconds"
LAST_SUCCESS_HELP = "When the handler last succeeded, in unix seconds; 0 before its first success."
RUNNING = "worker_handler_running"
RUNNING_HELP = "1 while an execution of the handler runs, else 0."
CONSECUTIVE_FAILURES = "worker_handler_consecutive_failures"
CONSECUTIVE_FAILURES_HELP = "Executions of the handler that failed in a row since its last success."
GAUGE_LABELS = ("env", "handler")

LEASE_OWNED = "worker_lease_owned"
LEASE_OWNED_HELP = "1 while this replica owns the handler under leases, else 0."
LEASE_EVENTS = "worker_lease_events_total"
LEASE_EVENTS_HELP = "Claims of this replica's handlers acquired, released and lost, under leases."
LEASE_EVENT_LABELS = ("env", "event")
LEASE_EVENT_KINDS = ("acquired", "released", "lost")


def check_buckets(buckets: object) -> tuple[float, ...]:
    """``buckets`` as a tuple of floats, or an error naming the bad value.

    Upper bounds in seconds: at least one, each positive and finite, in
    increasing order without repeats (the ``+Inf`` bucket is always added).
    """
    if isinstance(buckets, (str, bytes)) or not isinstance(buckets, Iterable):
        raise TypeError(f"buckets must be a sequence of upper bounds in seconds, got {buckets!r}")
    bounds = tuple(buckets)
    if not bounds:
        raise ValueError("buckets must hold at least one upper bound, got an empty sequence")
    floats = []
    for bound in bounds:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise TypeError(f"buckets must be numbers of seconds, got {bound!r} in {bounds!r}")
        try:
            value = float(bound)
        except OverflowError:
            value = math.inf
        if not 0 < value < math.inf:  # NaN fails too
            raise ValueError(f"buckets must be positive and finite, got {value!r}")
        floats.append(value)
    for low, high in pairwise(floats):
        if not low < high:
            raise ValueError(
                f"buckets must be in increasing order without repeats, got {high!r} "
                f"after {low!r} in {bounds!r}"
            )
    return tuple(floats)


def readings(state: Observed) -> tuple[float, float, float]:
    """The gauges of one handler's state: last success (0 before any), running, failures."""
    last = state.last_success
    return (
        0.0 if last is None else float(last),
        1.0 if state.running else 0.0,
        float(state.consecutive_failures),
    )


def owned(state: Observed) -> float | None:
    """The lease gauge of one handler's state: 1 or 0, or ``None`` when it runs without leases.

    Read with a default: a state written before leases existed has no ``owned``.
    """
    value = getattr(state, "owned", None)
    if value is None:
        return None
    return 1.0 if value else 0.0
