"""Shared fixtures: a private Prometheus registry, a workit Registry, backends."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry
from trio.testing import MockClock

import workit

if TYPE_CHECKING:
    from collections.abc import Iterator

TOTAL = "worker_handler_execution_total"
DURATION = "worker_handler_execution_duration_seconds"


def fake_clock() -> pytest.MarkDecorator:
    """Run the test on trio with a MockClock that jumps ahead whenever all tasks wait."""
    return pytest.mark.parametrize(
        "anyio_backend",
        [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-mockclock")],
    )


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on both backends unless it says otherwise."""
    return str(request.param)


@pytest.fixture
def prom() -> CollectorRegistry:
    """A Prometheus registry of the test's own."""
    return CollectorRegistry()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of the test's own, at DEBUG, so caplog sees every record."""
    log = logging.getLogger("workit.tests")
    log.setLevel(logging.DEBUG)
    yield log
    log.setLevel(logging.NOTSET)


@pytest.fixture
def registry(prom: CollectorRegistry, logger: logging.Logger) -> workit.Registry:
    """A Registry recording into ``prom`` and logging to ``logger``."""
    return workit.Registry("test", metrics=workit.metrics.Prometheus(prom), logger=logger)


def executions(prom: CollectorRegistry, handler: str, success: bool, env: str = "test") -> float:
    """The execution counter of ``handler`` (0 when never recorded)."""
    labels = {"env": env, "handler": handler, "success": "true" if success else "false"}
    return prom.get_sample_value(TOTAL, labels) or 0.0
