"""The public surface matches the API contract and cannot drift unnoticed."""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.metadata
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
        "__version__",
        "handler",
        "metrics",
        "status",
        "testing",
    },
    "workit.handler": {
        "Execution",
        "Handler",
        "Instrumented",
        "Proxy",
        "SupportsEnsure",
        "current",
        "name",
        "names",
    },
    "workit.status": {
        "EngineInfo",
        "ErrorInfo",
        "FleetStatus",
        "HandlerInfo",
        "HandlerStatus",
        "Outcome",
        "StopReport",
        "WorkerStatus",
    },
    "workit.testing": {"Execution", "Recorder", "running"},
    "workit.lease": {
        "Claim",
        "FleetStatus",
        "LeaseEvent",
        "LeaseLost",
        "Leases",
        "Membership",
        "Memory",
        "Postgres",
        "Redis",
        "Roster",
        "RosterMember",
        "RosterUnit",
        "SCHEMES",
        "current",
        "from_url",
    },
    "workit.metrics": {
        "BUCKETS",
        "CONSECUTIVE_FAILURES",
        "DURATION",
        "LAST_SUCCESS",
        "LEASE_EVENTS",
        "LEASE_OWNED",
        "RUNNING",
        "TOTAL",
        "Backend",
        "CountsLeases",
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
        (workit.ParallelWorker, ["handlers"], {"registry", "logger", "grace", "backoff", "leases"}),
        (
            workit.SequenceWorker,
            ["handlers"],
            {"cooler", "registry", "logger", "grace", "backoff", "leases", "name"},
        ),
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


def test_version_is_the_installed_distributions() -> None:
    """``workit.__version__`` is the version in the metadata of the installed distribution."""
    assert workit.__version__ == importlib.metadata.version("workit-jobs")
    assert workit.__version__


PUBLIC_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(workit.__path__, "workit.")
    if not any(part.startswith("_") for part in info.name.split("."))
)


def _public_objects() -> list[tuple[str, str, object]]:
    """Every class and function a public module exports, with the module and name."""
    found: list[tuple[str, str, object]] = []
    for module_name in ["workit", *PUBLIC_MODULES]:
        module = importlib.import_module(module_name)
        for public in module.__all__:
            value = getattr(module, public)
            if inspect.isclass(value) or inspect.isfunction(value):
                found.append((module_name, public, value))
    return found


@pytest.mark.parametrize(
    ("module_name", "public", "value"),
    _public_objects(),
    ids=[f"{module}.{name}" for module, name, _ in _public_objects()],
)
def test_every_public_name_is_workits_and_documented(
    module_name: str, public: str, value: object
) -> None:
    """Every class and function in a public module's ``__all__`` is defined in workit and
    has a docstring, and so has every public method and property of an exported class."""
    assert getattr(value, "__module__", "").startswith("workit"), f"{module_name}.{public}"
    assert inspect.getdoc(value), f"{module_name}.{public} has no docstring"
    if inspect.isclass(value):
        for attribute, member in vars(value).items():
            if attribute.startswith("_"):
                continue
            if isinstance(member, (classmethod, staticmethod)):
                member = member.__func__
            if inspect.isfunction(member) or isinstance(member, property):
                assert member.__doc__, f"{module_name}.{public}.{attribute} has no docstring"


def _imports(path: importlib.resources.abc.Traversable) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def test_no_subpackage_imports_another_ones_private_modules() -> None:
    """``workit.handler._x`` is imported only inside ``workit.handler``, and so on for
    every subpackage: layers meet through their public names."""
    root = importlib.resources.files("workit")
    offending = []
    for info in pkgutil.walk_packages(workit.__path__, "workit."):
        parts = info.name.split(".")
        relative = "/".join(parts[1:]) + ("/__init__.py" if info.ispkg else ".py")
        path = root.joinpath(*relative.split("/"))
        for imported in _imports(path):
            target = imported.split(".")
            private = [i for i, part in enumerate(target) if part.startswith("_") and i >= 2]
            if private and target[: private[0]] != parts[: private[0]]:
                offending.append(f"{info.name} imports {imported}")
    assert not offending
