"""The OpenTelemetry backend, through an ``opentelemetry.metrics.Meter``.

Needs the ``workit-jobs[otel]`` extra only to create the ``Meter``: this module
calls the meter it is given and imports nothing from OpenTelemetry itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workit.metrics._series import BUCKETS, DURATION, DURATION_HELP, TOTAL, TOTAL_HELP

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.metrics import Meter

__all__ = ["OpenTelemetry"]


class OpenTelemetry:
    """Records executions through an OpenTelemetry ``Meter``.

    Creates the counter and the histogram (with workit's bucket boundaries as
    the advisory) on ``meter`` once; one backend may serve any number of
    registries and workers.
    """

    __slots__ = ("_counter", "_histogram", "meter")

    meter: Meter
    """The ``Meter`` the counter and the histogram were created on."""

    def __init__(self, meter: Meter) -> None:
        create_counter = getattr(meter, "create_counter", None)
        if not callable(create_counter):
            raise TypeError(f"meter must be an OpenTelemetry Meter, got {meter!r}")
        self.meter = meter
        self._counter = meter.create_counter(TOTAL, description=TOTAL_HELP)
        self._histogram = meter.create_histogram(
            DURATION,
            unit="s",
            description=DURATION_HELP,
            explicit_bucket_boundaries_advisory=BUCKETS,
        )

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

    def __repr__(self) -> str:
        return f"OpenTelemetry(meter={self.meter!r})"
