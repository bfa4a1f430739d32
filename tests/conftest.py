"""Shared fixtures: a private Prometheus registry, a workit Registry, backends."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry

import workit

if TYPE_CHECKING:
    from collections.abc import Iterator


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
