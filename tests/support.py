"""Helpers the tests share: series names, the fake clock marker, counter reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from trio.testing import MockClock

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

TOTAL = "worker_handler_execution_total"
DURATION = "worker_handler_execution_duration_seconds"


def fake_clock() -> pytest.MarkDecorator:
    """Run the test on trio with a MockClock that jumps ahead whenever all tasks wait."""
    return pytest.mark.parametrize(
        "anyio_backend",
        [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-mockclock")],
    )


def executions(prom: CollectorRegistry, handler: str, success: bool, env: str = "test") -> float:
    """The execution counter of ``handler`` (0 when never recorded)."""
    labels = {"env": env, "handler": handler, "success": "true" if success else "false"}
    return prom.get_sample_value(TOTAL, labels) or 0.0
