"""Registry: validation of env and ignore, the filter's verdict, defaults and wrap()."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
from prometheus_client import REGISTRY

import workit
from tests.support import executions

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class Raises:
    """A handler that raises ``error`` on every execution."""

    def __init__(self, error: BaseException, name: str = "raises") -> None:
        self.error = error
        self.name = name

    async def ensure(self) -> None:
        raise self.error


class FetchArtefacts:
    """A handler named after its class."""

    async def ensure(self) -> None:
        return None


class Named:
    """A handler with a name of its own."""

    name = "artefact"

    async def ensure(self) -> None:
        return None


async def mirror() -> None:
    """A function made into a handler."""


def broken_filter(error: BaseException) -> bool:
    raise RuntimeError("the filter itself is broken")


def filter_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record for record in caplog.records if record.getMessage() == "worker ignore filter failed"
    ]


@pytest.mark.parametrize("env", ["", None, 3])
def test_env_must_be_a_non_empty_string(env: object, prom: CollectorRegistry) -> None:
    """An env that is not a non-empty string raises ValueError."""
    with pytest.raises(ValueError, match="env"):
        workit.Registry(env, metrics=workit.metrics.Prometheus(prom))  # type: ignore[arg-type]


def test_env_is_kept(prom: CollectorRegistry) -> None:
    """A valid env is the registry's env."""
    assert workit.Registry("production", metrics=workit.metrics.Prometheus(prom)).env == (
        "production"
    )


@pytest.mark.parametrize("ignore", ["KeyError", 3, True])
def test_ignore_must_be_callable(ignore: object, prom: CollectorRegistry) -> None:
    """An ignore that is neither callable nor None raises TypeError."""
    with pytest.raises(TypeError, match="ignore"):
        workit.Registry("test", ignore=ignore, metrics=workit.metrics.Prometheus(prom))  # type: ignore[arg-type]


def test_ignore_may_be_none(prom: CollectorRegistry) -> None:
    """ignore=None is accepted and ignores nothing."""
    registry = workit.Registry("test", ignore=None, metrics=workit.metrics.Prometheus(prom))
    assert registry.ignores(KeyError("gone")) is False


def test_ignores_is_the_filter_verdict(prom: CollectorRegistry) -> None:
    """ignores(exc) is what the filter says about exc."""
    registry = workit.Registry(
        "test",
        ignore=lambda error: isinstance(error, LookupError),
        metrics=workit.metrics.Prometheus(prom),
    )
    assert registry.ignores(KeyError("gone")) is True
    assert registry.ignores(IndexError("gone")) is True
    assert registry.ignores(ValueError("boom")) is False


def test_ignores_passes_the_exception_to_the_filter(prom: CollectorRegistry) -> None:
    """The filter is called with the very exception asked about."""
    seen: list[BaseException] = []

    def remember(error: BaseException) -> bool:
        seen.append(error)
        return False

    registry = workit.Registry("test", ignore=remember, metrics=workit.metrics.Prometheus(prom))
    error = ValueError("boom")
    registry.ignores(error)
    assert seen == [error]
    assert seen[0] is error


@pytest.mark.parametrize(
    "error", [Exception("x"), KeyError("x"), KeyboardInterrupt(), SystemExit(1)]
)
def test_default_ignores_nothing(error: BaseException, prom: CollectorRegistry) -> None:
    """Without ignore=, no exception is ignored."""
    assert workit.Registry("test", metrics=workit.metrics.Prometheus(prom)).ignores(error) is False


def test_raising_filter_ignores_nothing(prom: CollectorRegistry) -> None:
    """A filter that raises is taken to ignore nothing."""
    registry = workit.Registry(
        "test", ignore=broken_filter, metrics=workit.metrics.Prometheus(prom)
    )
    assert registry.ignores(KeyError("gone")) is False


def test_raising_filter_is_logged_once(
    prom: CollectorRegistry, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """A filter that raises on every call is logged once, with its exception, not once per call."""
    registry = workit.Registry(
        "test", ignore=broken_filter, logger=logger, metrics=workit.metrics.Prometheus(prom)
    )
    for _ in range(3):
        registry.ignores(KeyError("gone"))
    (record,) = filter_failures(caplog)
    assert record.levelno == logging.ERROR
    assert record.name == logger.name
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


@pytest.mark.anyio
async def test_raising_filter_counts_failures(
    prom: CollectorRegistry, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Under a raising filter every failure counts success="false"; the filter is logged once."""
    registry = workit.Registry(
        "test", ignore=broken_filter, logger=logger, metrics=workit.metrics.Prometheus(prom)
    )
    wrapped = registry.wrap(Raises(KeyError("gone")))
    for _ in range(3):
        await wrapped.execute()
    assert executions(prom, "raises", False) == 3
    assert len(filter_failures(caplog)) == 1


def test_default_logger_is_workit(prom: CollectorRegistry) -> None:
    """Without logger=, the registry logs to logging.getLogger("workit")."""
    registry = workit.Registry("test", metrics=workit.metrics.Prometheus(prom))
    assert registry.logger is logging.getLogger("workit")


def test_logger_is_kept(prom: CollectorRegistry, logger: logging.Logger) -> None:
    """logger= is the registry's logger."""
    registry = workit.Registry("test", logger=logger, metrics=workit.metrics.Prometheus(prom))
    assert registry.logger is logger


def test_default_metrics_is_prometheus_on_the_global_registry() -> None:
    """Without metrics=, the backend is a Prometheus on prometheus_client's REGISTRY."""
    registry = workit.Registry("test-default-metrics")
    assert isinstance(registry.metrics, workit.metrics.Prometheus)
    assert registry.metrics.registry is REGISTRY


@pytest.mark.parametrize(
    "handler", [FetchArtefacts(), Named(), workit.Handler(mirror)], ids=["class", "named", "fn"]
)
def test_wrap_unwraps_to_the_handler(handler: object, registry: workit.Registry) -> None:
    """wrap(h).unwrap() is h itself."""
    assert registry.wrap(handler).unwrap() is handler


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (FetchArtefacts(), "fetch_artefacts"),
        (Named(), "artefact"),
        (workit.Handler(mirror), "mirror"),
    ],
    ids=["class", "named", "fn"],
)
def test_wrap_is_named_like_the_handler(
    handler: object, expected: str, registry: workit.Registry
) -> None:
    """wrap(h) is named workit.handler.name(h), in its attribute and through name()."""
    wrapped = registry.wrap(handler)
    assert workit.handler.name(handler) == expected
    assert wrapped.name == expected
    assert workit.handler.name(wrapped) == expected


@pytest.mark.anyio
async def test_wrap_records_under_the_registry_env(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """A wrapped handler's executions count under the registry's env and the handler's name."""
    await registry.wrap(Named()).ensure()
    assert executions(prom, "artefact", True, env="test") == 1


@pytest.mark.anyio
async def test_wrap_logs_to_the_registry_logger(
    registry: workit.Registry, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Without logger=, a wrapped handler logs to the registry's logger."""
    await registry.wrap(Raises(ValueError("boom"))).execute()
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert [record.name for record in errors] == [logger.name]


@pytest.mark.anyio
async def test_wrap_with_logger_logs_there(
    registry: workit.Registry, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """wrap(h, logger=other) logs to other, not to the registry's logger."""
    other = logging.getLogger("workit.tests.other")
    await registry.wrap(Raises(ValueError("boom")), logger=other).execute()
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert [record.name for record in errors] == [other.name]
    assert [record.getMessage() for record in errors] == [
        "worker execution failed: handler 'raises'"
    ]


class Counted:
    """A handler counting its executions."""

    name = "counted"
    cooler = 3600

    def __init__(self) -> None:
        self.calls = 0

    async def ensure(self) -> None:
        self.calls += 1


@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@pytest.mark.anyio
async def test_a_wrapped_handler_given_to_an_engine_is_counted_once(
    registry: workit.Registry, prom: CollectorRegistry, engine: str
) -> None:
    """wrap(h) given to an engine on the same registry: each execution counts once, in the
    metrics and in status()."""
    handler = Counted()
    wrapped = registry.wrap(handler)
    worker: workit.Worker
    if engine == "parallel":
        worker = workit.ParallelWorker([wrapped], registry=registry)
    else:
        worker = workit.SequenceWorker([[wrapped]], registry=registry)
    for _ in range(2):
        await worker.ensure()
    assert handler.calls == 2
    assert executions(prom, "counted", True) == 2
    [status] = worker.status().handlers
    assert (status.name, status.executions) == ("counted", 2)


@pytest.mark.anyio
async def test_wrapping_a_wrapped_handler_counts_each_execution_once(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """wrap(wrap(h)) is wrapped around h's Proxy: one execution is one count."""
    handler = Counted()
    twice = registry.wrap(registry.wrap(handler))
    await twice.ensure()
    assert handler.calls == 1
    assert executions(prom, "counted", True) == 1
    assert twice.unwrap() is handler
