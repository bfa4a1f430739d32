"""Metrics backends: where every handler execution is recorded.

Each backend records two series per execution, labelled ``env``,
``handler`` and ``success``:

- ``worker_handler_execution_total`` (counter);
- ``worker_handler_execution_duration_seconds`` (histogram, ``BUCKETS``).

A backend hands out one recorder per handler up front, so an execution
records without looking labels up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeAlias, runtime_checkable

from workit.metrics._series import BUCKETS, DURATION, TOTAL
from workit.metrics.opentelemetry import OpenTelemetry
from workit.metrics.prometheus import Prometheus

__all__ = ["BUCKETS", "DURATION", "TOTAL", "Backend", "OpenTelemetry", "Prometheus", "Record"]

Record: TypeAlias = Callable[[float, bool], None]
"""Records one execution: its latency in seconds and whether it succeeded."""


@runtime_checkable
class Backend(Protocol):
    """A metrics backend: hands out a ``Record`` function per handler."""

    def recorder(self, env: str, handler: str) -> Record:
        """The function that records executions of ``handler`` in ``env``."""
        ...
