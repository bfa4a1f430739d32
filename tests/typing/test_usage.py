"""Typed usage of the public API: checked by mypy --strict, and run by pytest."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

import workit


class Artefact:
    """A handler with every optional part, as attributes and methods."""

    name = "artefact"
    cooler = timedelta(seconds=5)
    timeout = 30.0

    def active(self) -> bool:
        return True

    async def ensure(self) -> None:
        return None


class Blocking:
    """A sync handler: runs in a worker thread."""

    def cooler(self) -> float:
        return 1.0

    def ensure(self) -> None:
        return None


def prune() -> None:
    """A plain function made into a handler."""


def test_construction_is_typed() -> None:
    """Every engine accepts handler objects and function handlers."""
    registry = workit.Registry(
        "dev",
        ignore=lambda error: isinstance(error, LookupError),
        logger=logging.getLogger("typed"),
        metrics=workit.metrics.Prometheus(CollectorRegistry()),
    )
    function = workit.Handler(prune, cooler=60, name="prune")
    parallel = workit.ParallelWorker([Artefact(), Blocking(), function], registry=registry)
    metrics = workit.metrics.Prometheus(CollectorRegistry())
    # One handler name in two engines of a CombinedWorker needs two envs.
    steps = workit.SequenceWorker(
        [[Artefact()], [Blocking()]], cooler=10, registry=workit.Registry("steps", metrics=metrics)
    )
    first, second = Artefact(), Blocking()
    graph = workit.SequenceWorker(
        {first: [], second: [first]}, registry=workit.Registry("graph", metrics=metrics)
    )
    combined: workit.Worker = workit.CombinedWorker(parallel, steps, graph)
    names: list[str] = workit.handler.names([first, second, function])
    cooler: float = workit.handler.Proxy(first).cooler()
    assert names == ["artefact", "blocking", "prune"]
    assert cooler == 5.0
    assert not combined.ready


@pytest.mark.anyio
async def test_errors_are_typed() -> None:
    """HandlerError carries the failing handler's name."""

    async def fail() -> None:
        raise ValueError("boom")

    registry = workit.Registry("dev", metrics=workit.metrics.Prometheus(CollectorRegistry()))
    worker = workit.SequenceWorker([[workit.Handler(fail)]], registry=registry)
    with pytest.raises(workit.HandlerError) as raised:
        await worker.ensure()
    handler: str = raised.value.handler
    assert handler == "fail"


class Step:
    """A named sync handler, for graphs."""

    def __init__(self, name: str) -> None:
        self.name = name

    def ensure(self) -> None:
        return None


def test_a_typed_graph_is_accepted() -> None:
    """A ``dict`` of handler type to handler lists type-checks as a sequence graph."""
    first, second = Step("first"), Step("second")
    graph: dict[Step, list[Step]] = {first: [], second: [first]}
    registry = workit.Registry("dev", metrics=workit.metrics.Prometheus(CollectorRegistry()))
    worker = workit.SequenceWorker(graph, registry=registry)
    assert worker.dependencies == {"first": [], "second": ["first"]}


@pytest.mark.anyio
async def test_testing_helpers_are_typed() -> None:
    """Recorder, running() and the observation protocols type-check as users write them."""
    recorder = workit.testing.Recorder()
    backend: workit.metrics.Backend = recorder
    observes: workit.metrics.Observes = recorder
    registry = workit.Registry("test", metrics=backend)
    worker = workit.ParallelWorker(
        [workit.Handler(prune, cooler=60, jitter=0.1)], registry=registry
    )
    async with workit.testing.running(worker) as running:
        same: workit.ParallelWorker = running
        found: list[workit.testing.Execution] = await recorder.wait_for("prune")
    outcomes: list[workit.status.Outcome] = recorder.outcomes("prune")
    buckets: tuple[float, ...] = workit.metrics.Prometheus(
        CollectorRegistry(), buckets=[1, 5]
    ).buckets
    jitter: float = workit.handler.Proxy(Artefact()).jitter()
    assert same is worker
    assert observes is recorder
    assert [execution.success for execution in found] == [True]
    assert outcomes == ["success"]
    assert buckets == (1.0, 5.0)
    assert jitter == 0.0
