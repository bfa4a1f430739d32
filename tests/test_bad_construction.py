"""Bad input at construction that no other test file covers: each raises at once, naming it."""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Any
from unittest.mock import MagicMock

import pytest
from prometheus_client import CollectorRegistry

import workit

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator


class Good:
    """A minimal valid handler for either engine."""

    cooler = 1

    def __init__(self, name: str = "good") -> None:
        self.name = name

    async def ensure(self) -> None:
        pass


def parallel(handlers: Any, registry: Any, **options: Any) -> workit.Worker:
    return workit.ParallelWorker(handlers, registry=registry, **options)


def sequence(handlers: Any, registry: Any, **options: Any) -> workit.Worker:
    return workit.SequenceWorker(handlers, registry=registry, **options)


ENGINES = [pytest.param(parallel, id="parallel"), pytest.param(sequence, id="sequence")]


@pytest.mark.parametrize("build", ENGINES)
@pytest.mark.parametrize(
    "handlers", [None, "handler", Good(), 3], ids=["None", "str", "a-handler", "int"]
)
def test_handlers_that_are_not_a_collection_are_rejected(
    registry: workit.Registry, build: Callable[..., workit.Worker], handlers: object
) -> None:
    """Handlers given as None, a string, a bare handler or a number raise TypeError naming them."""
    with pytest.raises(TypeError, match="handlers must be a list of handlers"):
        build(handlers, registry)


def test_parallel_handlers_as_a_mapping_are_rejected(registry: workit.Registry) -> None:
    """A dependency mapping given to the parallel engine raises TypeError."""
    with pytest.raises(TypeError, match="list of handlers"):
        workit.ParallelWorker({Good(): []}, registry=registry)


def test_dependencies_that_are_not_a_list_are_rejected(registry: workit.Registry) -> None:
    """A mapping value that is a bare handler rather than a list raises TypeError naming it."""
    first, second = Good("first"), Good("second")
    with pytest.raises(TypeError, match=r"'second' dependencies must be a list"):
        workit.SequenceWorker({first: [], second: first}, registry=registry)  # type: ignore[dict-item]


class Declaring:
    """A handler declaring ``attribute = value``."""

    name = "declaring"

    def __init__(self, attribute: str, value: object) -> None:
        setattr(self, attribute, value)
        if attribute != "cooler":
            self.cooler = 1

    async def ensure(self) -> None:
        pass


@pytest.mark.parametrize("build", ENGINES)
@pytest.mark.parametrize(
    ("attribute", "value", "error"),
    [
        ("cooler", -1, ValueError),
        ("cooler", math.nan, ValueError),
        ("cooler", True, TypeError),
        ("cooler", "5", TypeError),
        ("timeout", -1, ValueError),
        ("timeout", math.nan, ValueError),
        ("timeout", True, TypeError),
        ("timeout", "5", TypeError),
        ("active", 1, TypeError),
        ("active", "yes", TypeError),
    ],
)
def test_bad_declared_attribute_is_rejected_by_both_engines(
    registry: workit.Registry,
    build: Callable[..., workit.Worker],
    attribute: str,
    value: object,
    error: type[Exception],
) -> None:
    """A bad cooler/timeout/active attribute raises, naming the handler's index, name and part."""
    # The sequence engine checks a handler's cooler too, though it never uses it.
    handlers = [Good(), Declaring(attribute, value)]
    steps = handlers if build is parallel else [handlers]
    with pytest.raises(error, match=rf"handler 1\b.*'declaring'.*{attribute}"):
        build(steps, registry)


@pytest.mark.parametrize(
    ("cooler", "error"),
    [(math.nan, ValueError), ("5", TypeError), (True, TypeError), ([5], TypeError)],
    ids=["nan", "str", "bool", "list"],
)
def test_sequence_cooler_of_the_wrong_kind_is_rejected(
    registry: workit.Registry, cooler: object, error: type[Exception]
) -> None:
    """A sequence cooler that is NaN or not a number raises, naming the cooler."""
    with pytest.raises(error, match="SequenceWorker cooler"):
        workit.SequenceWorker([[Good()]], cooler=cooler, registry=registry)  # type: ignore[arg-type]


@pytest.mark.parametrize("build", ENGINES)
@pytest.mark.parametrize(
    ("grace", "error"),
    [(-1, ValueError), (math.nan, ValueError), ("5", TypeError), (True, TypeError)],
    ids=["negative", "nan", "str", "bool"],
)
def test_bad_grace_is_rejected_by_both_engines(
    registry: workit.Registry,
    build: Callable[..., workit.Worker],
    grace: object,
    error: type[Exception],
) -> None:
    """A grace that is negative, NaN or not a number raises, naming the grace."""
    handlers = [Good()] if build is parallel else [[Good()]]
    with pytest.raises(error, match="grace"):
        build(handlers, registry, grace=grace)


@pytest.mark.parametrize("bad_registry", [None, "test", logging.getLogger("workit")])
def test_sequence_registry_of_the_wrong_type_is_rejected(bad_registry: object) -> None:
    """A sequence engine's registry that is not a workit.Registry raises TypeError."""
    with pytest.raises(TypeError, match="SequenceWorker registry"):
        workit.SequenceWorker([[Good()]], registry=bad_registry)  # type: ignore[arg-type]


@pytest.mark.parametrize("build", ENGINES)
@pytest.mark.parametrize(
    "bad_logger", ["workit", 3, logging.NullHandler()], ids=["str", "int", "handler"]
)
def test_engine_logger_of_the_wrong_type_is_rejected(
    registry: workit.Registry, build: Callable[..., workit.Worker], bad_logger: object
) -> None:
    """An engine's logger that is not a logging.Logger raises TypeError naming it."""
    handlers = [Good()] if build is parallel else [[Good()]]
    with pytest.raises(TypeError, match=r"logger must be a logging\.Logger"):
        build(handlers, registry, logger=bad_logger)


@pytest.mark.parametrize(
    "bad_logger", ["workit", 3, logging.NullHandler()], ids=["str", "int", "handler"]
)
def test_registry_logger_of_the_wrong_type_is_rejected(
    prom: CollectorRegistry, bad_logger: object
) -> None:
    """A registry's logger that is not a logging.Logger raises TypeError naming it."""
    with pytest.raises(TypeError, match="Registry logger"):
        workit.Registry("test", logger=bad_logger, metrics=workit.metrics.Prometheus(prom))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "metrics", [object(), "prometheus", CollectorRegistry()], ids=["object", "str", "collector"]
)
def test_registry_metrics_of_the_wrong_type_is_rejected(metrics: object) -> None:
    """A registry's metrics that is not a backend (no recorder()) raises TypeError naming it."""
    with pytest.raises(TypeError, match="Registry metrics"):
        workit.Registry("test", metrics=metrics)  # type: ignore[arg-type]


def test_the_same_engine_nested_twice_is_rejected(registry: workit.Registry) -> None:
    """An engine reachable twice through nesting raises ValueError at construction."""
    engine = workit.ParallelWorker([Good()], registry=registry)
    with pytest.raises(ValueError, match="twice"):
        workit.CombinedWorker(engine, workit.CombinedWorker(engine))


class SyncUsers:
    """A handler class, to be given as the class instead of an instance."""

    cooler = 1

    async def ensure(self) -> None:
        pass


@pytest.mark.parametrize("build", ENGINES)
def test_a_class_instead_of_an_instance_is_rejected_by_both_engines(
    registry: workit.Registry, build: Callable[..., workit.Worker]
) -> None:
    """A handler class raises TypeError naming its index and saying to pass an instance."""
    steps = [Good(), SyncUsers] if build is parallel else [[Good(), SyncUsers]]
    with pytest.raises(TypeError) as caught:
        build(steps, registry)
    assert str(caught.value).endswith(
        "handler 1: SyncUsers is a class; pass an instance: SyncUsers()"
    )


class NeverRuns:
    """Handlers whose ``ensure`` or optional parts could never work, by kind."""

    class Generator:
        cooler = 1

        def ensure(self) -> Iterator[None]:
            yield

    class AsyncGenerator:
        cooler = 1

        async def ensure(self) -> AsyncIterator[None]:
            yield

    class NeedsArgument:
        cooler = 1

        async def ensure(self, since: float) -> None:
            pass

    class NotCallable:
        cooler = 1
        ensure = 42

    class AsyncActive:
        cooler = 1

        async def active(self) -> bool:
            return True

        async def ensure(self) -> None:
            pass

    class RaisingCooler:
        @property
        def cooler(self) -> float:
            raise RuntimeError("settings not loaded")

        async def ensure(self) -> None:
            pass

    class HugeCooler:
        cooler = 10**400

        async def ensure(self) -> None:
            pass


@pytest.mark.parametrize("build", ENGINES)
@pytest.mark.parametrize(
    ("handler", "error", "says"),
    [
        pytest.param(
            NeverRuns.Generator, TypeError, "ensure() is a generator function", id="generator"
        ),
        pytest.param(
            NeverRuns.AsyncGenerator,
            TypeError,
            "ensure() is an async generator function",
            id="async-generator",
        ),
        pytest.param(
            NeverRuns.NeedsArgument,
            TypeError,
            "ensure() cannot be called without arguments",
            id="needs-argument",
        ),
        pytest.param(
            NeverRuns.NotCallable, TypeError, "ensure is not callable: int", id="not-callable"
        ),
        pytest.param(
            NeverRuns.AsyncActive, TypeError, "active() is a coroutine function", id="async-active"
        ),
        pytest.param(
            NeverRuns.RaisingCooler,
            TypeError,
            "reading its cooler raised RuntimeError",
            id="raising-cooler",
        ),
        pytest.param(NeverRuns.HugeCooler, ValueError, "cooler is too large", id="huge-cooler"),
    ],
)
def test_a_handler_that_could_never_work_is_rejected_by_both_engines(
    registry: workit.Registry,
    build: Callable[..., workit.Worker],
    handler: type,
    error: type[Exception],
    says: str,
) -> None:
    """Each raises at construction, naming the index and the handler, then what is wrong."""
    bad = handler()
    steps = [Good(), bad] if build is parallel else [[Good(), bad]]
    with pytest.raises(error) as caught:
        build(steps, registry)
    name = workit.handler.name(bad)
    assert re.search(rf"handler 1: handler '{name}': {re.escape(says)}", str(caught.value))


@pytest.mark.parametrize("build", ENGINES)
def test_a_mock_handler_is_built_at_once_by_both_engines(
    registry: workit.Registry, build: Callable[..., workit.Worker]
) -> None:
    """A MagicMock handler (its unwrap() chain without end) no longer hangs construction."""
    steps = [MagicMock(cooler=1)] if build is parallel else [[MagicMock(cooler=1)]]
    worker = build(steps, registry)
    assert [handler.name for handler in worker.status().handlers] == ["magic_mock"]
