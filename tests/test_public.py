"""The public surface matches the API contract and cannot drift unnoticed."""

from __future__ import annotations

import importlib
import importlib.resources
import inspect
import pkgutil

import pytest

import workit

API = {
    "workit": {
        "Backoff",
        "CombinedWorker",
        "Handler",
        "HandlerError",
        "HandlerTimeout",
        "ParallelWorker",
        "Registry",
        "SequenceWorker",
        "Worker",
        "handler",
        "metrics",
        "status",
        "testing",
    },
    "workit.handler": {"Handler", "Instrumented", "Proxy", "SupportsEnsure", "name", "names"},
    "workit.status": {"ErrorInfo", "HandlerStatus", "Outcome", "StopReport", "WorkerStatus"},
    "workit.testing": {"Execution", "Recorder", "running"},
    "workit.metrics": {
        "BUCKETS",
        "CONSECUTIVE_FAILURES",
        "DURATION",
        "LAST_SUCCESS",
        "RUNNING",
        "TOTAL",
        "Backend",
        "Observed",
        "Observes",
        "OpenTelemetry",
        "Prometheus",
        "Record",
    },
}


@pytest.mark.parametrize("module_name", sorted(API))
def test_all_is_the_documented_surface(module_name: str) -> None:
    """Each public module exports exactly the documented names, and all exist."""
    module = importlib.import_module(module_name)
    assert set(module.__all__) == API[module_name]
    for public in module.__all__:
        assert hasattr(module, public), public


def test_every_module_declares_all() -> None:
    """Every module of the package declares ``__all__`` naming what it defines."""
    for info in pkgutil.walk_packages(workit.__path__, "workit."):
        module = importlib.import_module(info.name)
        assert isinstance(getattr(module, "__all__", None), list), info.name
        for public in module.__all__:
            assert hasattr(module, public), f"{info.name}.{public}"


def _keyword_only(function: object) -> set[str]:
    parameters = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
    return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


@pytest.mark.parametrize(
    ("constructor", "positional", "keywords"),
    [
        (workit.Registry, ["env"], {"ignore", "logger", "metrics"}),
        (workit.Handler, ["ensure"], {"cooler", "active", "name", "timeout", "jitter"}),
        (workit.ParallelWorker, ["handlers"], {"registry", "logger", "grace", "backoff"}),
        (workit.SequenceWorker, ["handlers"], {"cooler", "registry", "logger", "grace", "backoff"}),
    ],
)
def test_signatures(constructor: type, positional: list[str], keywords: set[str]) -> None:
    """Constructors take the documented positional and keyword-only parameters."""
    parameters = list(inspect.signature(constructor).parameters.values())
    leading = [p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert leading == positional
    assert _keyword_only(constructor) == keywords


def test_errors_hierarchy() -> None:
    """HandlerTimeout is a HandlerError, which is an Exception."""
    assert issubclass(workit.HandlerTimeout, workit.HandlerError)
    assert issubclass(workit.HandlerError, Exception)


def test_engines_share_the_lifecycle() -> None:
    """Every engine has daemon, wait_ready, stop and run."""
    for engine in (workit.ParallelWorker, workit.SequenceWorker, workit.CombinedWorker):
        assert issubclass(engine, workit.Worker)
        for method in ("daemon", "wait_ready", "stop", "run", "status"):
            assert callable(getattr(engine, method)), f"{engine.__name__}.{method}"
    assert inspect.iscoroutinefunction(workit.SequenceWorker.ensure)


def test_py_typed_is_shipped() -> None:
    """The package ships its py.typed marker."""
    assert (importlib.resources.files("workit") / "py.typed").is_file()
