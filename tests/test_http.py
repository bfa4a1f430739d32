"""The HTTP endpoints: /metrics, /healthz, /readyz, /status, the lifespan and serve()."""

from __future__ import annotations

import contextlib
import json
import socket
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from opentelemetry.metrics import NoOpMeter
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Message  # a runtime subscript of create_memory_object_stream
from trio.testing import MockClock

import workit
import workit.http
import workit.lease
from tests.support import TOTAL
from workit.status import ErrorInfo, HandlerStatus, StopReport, WorkerStatus

if TYPE_CHECKING:
    import logging
    from collections.abc import AsyncIterator, Iterable

    from prometheus_client.metrics_core import Metric
    from starlette.types import ASGIApp

COOLER = 3600
"""Long enough that no handler runs a second time during a test."""

OPENMETRICS = "application/openmetrics-text"
PROMETHEUS_SCRAPE = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
"""The Accept header Prometheus itself sends when it scrapes."""

HANDLER_FIELDS = {
    "name",
    "engine",
    "active",
    "running",
    "executions",
    "failures",
    "consecutive_failures",
    "last_started",
    "last_finished",
    "last_success",
    "next_run",
    "last_error",
    "overdue",
    "recent",
}
TIME_FIELDS = ("last_started", "last_finished", "last_success", "next_run")
COUNT_FIELDS = ("executions", "failures", "consecutive_failures")


class Job:
    """An async handler cooling for an hour; ``failing`` makes it raise, ``hold()`` blocks it."""

    def __init__(self, name: str, *, failing: bool = False, active: bool = True) -> None:
        self.name = name
        self.cooler = COOLER
        self.active = active
        self.failing = failing
        self.started = anyio.Event()
        self.gate: anyio.Event | None = None
        self.calls = 0
        self.finished = 0
        self.cancelled = False

    def hold(self) -> anyio.Event:
        """Keep executions running until the returned event is set."""
        self.gate = anyio.Event()
        return self.gate

    async def ensure(self) -> None:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            try:
                await self.gate.wait()
            except anyio.get_cancelled_exc_class():
                self.cancelled = True
                raise
        self.finished += 1
        if self.failing:
            raise LookupError(f"{self.name} failed")


def build(kind: str, registry: workit.Registry, job: Job) -> workit.Worker:
    """A worker of ``kind`` whose first handler is ``job``."""
    if kind == "parallel":
        return workit.ParallelWorker([job], registry=registry, grace=5)
    if kind == "sequence":
        return workit.SequenceWorker([[job]], cooler=COOLER, registry=registry, grace=5)
    assert kind == "combined"
    return workit.CombinedWorker(
        workit.ParallelWorker([job], registry=registry, grace=5),
        workit.SequenceWorker([[Job("step")]], cooler=COOLER, registry=registry, grace=5),
    )


def prometheus_registry(env: str, prom: CollectorRegistry) -> workit.Registry:
    """A Registry for ``env`` recording into ``prom``."""
    return workit.Registry(env, metrics=workit.metrics.Prometheus(prom))


@asynccontextmanager
async def client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling ``app`` in process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@asynccontextmanager
async def running(worker: workit.Worker) -> AsyncIterator[None]:
    """Run ``worker.daemon()`` around the block: ready and idle at its start, stopped at its end."""
    async with workit.testing.running(worker):
        await anyio.wait_all_tasks_blocked()
        yield


class LifespanServer:
    """Speaks the ASGI lifespan protocol to an app, as uvicorn does."""

    def __init__(self) -> None:
        self._to_app, self._app_inbox = anyio.create_memory_object_stream[Message](1)
        self._app_outbox, self._from_app = anyio.create_memory_object_stream[Message](1)

    async def run(self, app: ASGIApp) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        with self._app_inbox, self._app_outbox:
            await app(scope, self._app_inbox.receive, self._app_outbox.send)

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait until the app says it completed."""
        await self._to_app.send({"type": "lifespan.startup"})
        message = await self._from_app.receive()
        assert message == {"type": "lifespan.startup.complete"}, message

    async def begin_shutdown(self) -> None:
        await self._to_app.send({"type": "lifespan.shutdown"})

    async def shutdown_complete(self) -> None:
        message = await self._from_app.receive()
        assert message == {"type": "lifespan.shutdown.complete"}, message

    def close(self) -> None:
        self._to_app.close()
        self._from_app.close()


@asynccontextmanager
async def lifespan_server(app: ASGIApp) -> AsyncIterator[LifespanServer]:
    """Run ``app``'s lifespan in the background; the block drives startup and shutdown."""
    server = LifespanServer()
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.run, app)
            yield server
    finally:
        server.close()


def utc(value: object) -> datetime:
    """An ISO-8601 time from a JSON document, checked to be UTC."""
    assert isinstance(value, str), value
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timedelta(0), value
    return moment


def checked_handler(entry: object) -> dict[str, Any]:
    """One handler of a /status document, after checking every field's type."""
    assert isinstance(entry, dict)
    assert entry.keys() >= HANDLER_FIELDS, HANDLER_FIELDS - entry.keys()
    assert isinstance(entry["name"], str)
    assert entry["engine"] in ("parallel", "sequence")
    assert entry["active"] is None or isinstance(entry["active"], bool)
    assert isinstance(entry["running"], bool)
    assert isinstance(entry["overdue"], bool)
    assert isinstance(entry["recent"], list)
    assert set(entry["recent"]) <= {"success", "ignored", "failure"}
    for field in COUNT_FIELDS:
        assert type(entry[field]) is int, (field, entry[field])
        assert entry[field] >= 0
    now = datetime.now(UTC)
    for field in TIME_FIELDS:
        if entry[field] is not None:
            assert abs(utc(entry[field]) - now) < timedelta(hours=2), (field, entry[field])
    error = entry["last_error"]
    if error is not None:
        assert isinstance(error, dict)
        assert error.keys() == {"type", "message"}
        assert isinstance(error["type"], str)
        assert isinstance(error["message"], str)
    return entry


async def get_status(http: httpx.AsyncClient, path: str = "/status") -> dict[str, Any]:
    """GET /status, checked: ``{"ready": bool, "handlers": {name: entry}, "fleet": None}``."""
    response = await http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert isinstance(document, dict)
    assert document.keys() == {"ready", "handlers", "fleet"}
    assert document["fleet"] is None  # no leases
    assert isinstance(document["ready"], bool)
    assert isinstance(document["handlers"], list)
    entries = [checked_handler(entry) for entry in document["handlers"]]
    by_name = {entry["name"]: entry for entry in entries}
    assert len(by_name) == len(entries)
    return {"ready": document["ready"], "handlers": by_name}


def sample(families: Iterable[Metric], name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels``, or None."""
    found = [
        point.value
        for family in families
        for point in family.samples
        if point.name == name and point.labels == labels
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def families_of(response: httpx.Response) -> list[Metric]:
    """The metric families of a /metrics response, parsed as its content type says."""
    if response.headers["content-type"].startswith(OPENMETRICS):
        parsed = parse_openmetrics(response.text)  # type: ignore[no-untyped-call]  # unannotated
        return list(parsed)
    return list(parse_text(response.text))


def declared_types(exposition: str) -> list[str]:
    """The metric family names of the ``# TYPE`` lines, in order."""
    return [line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# /healthz and /readyz


@pytest.mark.anyio
async def test_healthz_answers_while_the_worker_is_not_ready(registry: workit.Registry) -> None:
    """/healthz is 200 as long as the event loop answers, whatever the worker does."""
    worker = workit.ParallelWorker([Job("idle")], registry=registry)
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http:
            health = await http.get("/healthz")
            ready = await http.get("/readyz")
    assert health.status_code == 200
    assert ready.status_code == 503


@pytest.mark.parametrize("kind", ["parallel", "sequence", "combined"])
@pytest.mark.anyio
async def test_readyz_follows_the_daemon(registry: workit.Registry, kind: str) -> None:
    """/readyz is 503 before the daemon runs, 200 once it is ready, 503 after it returned."""
    worker = build(kind, registry, Job("job"))
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http:
            before = (await http.get("/readyz")).status_code
            async with running(worker):
                during = (await http.get("/readyz")).status_code
            after = (await http.get("/readyz")).status_code
    assert (before, during, after) == (503, 200, 503)


async def _poll(http: httpx.AsyncClient, status: int, within: float) -> float:
    """Poll /readyz until it answers ``status``, for at most ``within`` s: how long it took."""
    start = anyio.current_time()
    with anyio.fail_after(within):
        # Readiness changes inside the membership's task: nothing to wait on, so poll.
        while (await http.get("/readyz")).status_code != status:  # noqa: ASYNC110
            await anyio.sleep(0.1)
    return anyio.current_time() - start


@pytest.mark.parametrize("kind", ["parallel", "sequence", "combined"])
@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
@pytest.mark.anyio
async def test_readyz_is_503_until_joined_and_while_fenced(
    registry: workit.Registry, kind: str
) -> None:
    """Under leases /readyz is 503 while the backend cannot be reached at start, 200 once the
    replica joined, 503 once an outage fenced it (not before its lease could expire), 200
    when the backend answers again; /healthz stays 200 throughout."""
    fleet = workit.lease.Memory(group="ready", ttl=15)
    leases = fleet.replica("solo")
    job = Job("job")
    worker: workit.Worker
    if kind == "parallel":
        worker = workit.ParallelWorker([job], registry=registry, leases=leases)
    elif kind == "sequence":
        worker = workit.SequenceWorker([[job]], cooler=COOLER, registry=registry, leases=leases)
    else:
        worker = workit.CombinedWorker(
            workit.ParallelWorker([job], registry=registry, leases=leases),
            workit.SequenceWorker([[Job("step")]], cooler=COOLER, registry=registry),
        )
    health = []
    with anyio.fail_after(600):
        async with client(workit.http.app(worker)) as http, anyio.create_task_group() as tasks:
            with contextlib.ExitStack() as outage:
                outage.enter_context(fleet.outage())
                tasks.start_soon(worker.daemon)
                await worker.wait_ready()
                await anyio.sleep(30)  # retrying with backoff meanwhile, never a crash
                unjoined = (await http.get("/readyz")).status_code
                health.append((await http.get("/healthz")).status_code)
            await _poll(http, 200, within=5)
            with fleet.outage():
                fenced_after = await _poll(http, 503, within=30)
                health.append((await http.get("/healthz")).status_code)
            await _poll(http, 200, within=5)
            worker.stop()
    assert unjoined == 503
    assert 15 - 1 - 3 <= fenced_after <= 15  # ttl - margin - renew: the last renewal's start
    assert health == [200, 200]


@pytest.mark.parametrize("kind", ["parallel", "sequence", "combined"])
@pytest.mark.anyio
async def test_readyz_is_503_while_stopping(registry: workit.Registry, kind: str) -> None:
    """/readyz turns 503 as soon as stop() is called, while an execution still runs."""
    job = Job("held")
    gate = job.hold()
    worker = build(kind, registry, job)
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http, running(worker):
            await job.started.wait()
            assert (await http.get("/readyz")).status_code == 200
            worker.stop()
            at_stop = (await http.get("/readyz")).status_code
            await anyio.wait_all_tasks_blocked()
            draining = (await http.get("/readyz")).status_code
            in_flight = job.calls - job.finished
            gate.set()
    assert (at_stop, draining) == (503, 503)
    assert in_flight == 1
    assert (job.finished, job.cancelled) == (1, False)


# /status


@pytest.mark.anyio
async def test_status_before_any_execution(registry: workit.Registry) -> None:
    """Before the daemon runs, /status is not ready and every handler is blank."""
    worker = workit.ParallelWorker([Job("a"), Job("b")], registry=registry)
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http:
            status = await get_status(http)
    assert status["ready"] is False
    assert list(status["handlers"]) == ["a", "b"]
    for entry in status["handlers"].values():
        assert entry["engine"] == "parallel"
        assert entry["active"] is None
        assert entry["running"] is False
        assert (entry["executions"], entry["failures"], entry["consecutive_failures"]) == (0, 0, 0)
        assert all(entry[field] is None for field in TIME_FIELDS)
        assert entry["last_error"] is None


@pytest.mark.anyio
async def test_status_of_a_running_combined_worker(registry: workit.Registry) -> None:
    """A running combined worker lists every handler with its engine, times and next run."""
    worker = workit.CombinedWorker(
        workit.ParallelWorker([Job("loop")], registry=registry),
        workit.SequenceWorker([[Job("first")], [Job("second")]], cooler=COOLER, registry=registry),
    )
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http, running(worker):
            status = await get_status(http)
    assert status["ready"] is True
    handlers = status["handlers"]
    assert [(name, entry["engine"]) for name, entry in handlers.items()] == [
        ("loop", "parallel"),
        ("first", "sequence"),
        ("second", "sequence"),
    ]
    for entry in handlers.values():
        assert entry["active"] is True
        assert entry["running"] is False
        assert (entry["executions"], entry["failures"], entry["consecutive_failures"]) == (1, 0, 0)
        assert entry["last_error"] is None
        started, finished = utc(entry["last_started"]), utc(entry["last_finished"])
        assert started <= finished == utc(entry["last_success"])
        assert abs(utc(entry["next_run"]) - finished - timedelta(seconds=COOLER)) < timedelta(
            seconds=5
        )
    assert handlers["first"]["next_run"] == handlers["second"]["next_run"]  # one pass


@pytest.mark.anyio
async def test_status_shows_a_running_execution(registry: workit.Registry) -> None:
    """An execution in flight shows running true, a start time and no finish time."""
    job = Job("held")
    gate = job.hold()
    worker = workit.ParallelWorker([job], registry=registry, grace=5)
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http, running(worker):
            await job.started.wait()
            held = (await get_status(http))["handlers"]["held"]
            gate.set()
            await anyio.wait_all_tasks_blocked()
            done = (await get_status(http))["handlers"]["held"]
    assert held["running"] is True
    assert held["active"] is True
    assert held["executions"] == 0
    utc(held["last_started"])
    assert (held["last_finished"], held["last_success"], held["next_run"]) == (None, None, None)
    assert done["running"] is False
    assert done["executions"] == 1
    assert utc(done["last_started"]) <= utc(done["last_finished"])
    utc(done["next_run"])


@pytest.mark.anyio
async def test_status_shows_an_inactive_handler(registry: workit.Registry) -> None:
    """A handler whose active() says no shows active false and no execution."""
    worker = workit.ParallelWorker([Job("off", active=False)], registry=registry)
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http, running(worker):
            entry = (await get_status(http))["handlers"]["off"]
    assert entry["active"] is False
    assert entry["executions"] == 0
    assert entry["last_started"] is None
    utc(entry["next_run"])


@pytest.mark.anyio
async def test_status_shows_failures_and_the_last_error(registry: workit.Registry) -> None:
    """Failures show last_error, failures and consecutive_failures; a success resets the streak."""
    job = Job("flaky", failing=True)
    worker = workit.SequenceWorker([[job]], registry=registry)
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http:
            for _ in range(2):
                with pytest.raises(workit.HandlerError):
                    await worker.ensure()
            failing = (await get_status(http))["handlers"]["flaky"]
            job.failing = False
            await worker.ensure()
            recovered = (await get_status(http))["handlers"]["flaky"]
    assert failing["engine"] == "sequence"
    assert failing["last_error"] == {"type": "LookupError", "message": "flaky failed"}
    assert (failing["executions"], failing["failures"], failing["consecutive_failures"]) == (
        2,
        2,
        2,
    )
    assert failing["last_success"] is None
    utc(failing["last_finished"])
    assert (
        recovered["executions"],
        recovered["failures"],
        recovered["consecutive_failures"],
    ) == (3, 2, 0)
    assert utc(recovered["last_success"]) == utc(recovered["last_finished"])


@pytest.mark.anyio
async def test_status_is_the_typed_snapshot_as_json(registry: workit.Registry) -> None:
    """/status serves worker.status(), a typed snapshot with aware UTC datetimes."""
    worker = workit.SequenceWorker([[Job("good")], [Job("bad", failing=True)]], registry=registry)
    with pytest.raises(workit.HandlerError):
        await worker.ensure()
    snapshot = worker.status()
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http:
            document = (await http.get("/status")).json()
    assert isinstance(snapshot, WorkerStatus)
    assert all(isinstance(handler, HandlerStatus) for handler in snapshot.handlers)
    good, bad = snapshot.handlers
    assert good.last_success is not None
    assert good.last_success.utcoffset() == timedelta(0)
    assert bad.last_error == ErrorInfo(type="LookupError", message="bad failed")
    assert document == json.loads(json.dumps(snapshot.to_dict()))


@pytest.mark.anyio
async def test_status_answers_with_a_lone_surrogate_in_an_error_message(
    registry: workit.Registry,
) -> None:
    """A failure whose message holds a lone surrogate (a file name decoded with
    surrogateescape) is served, escaped, in valid UTF-8 JSON: /status answers 200."""

    class Mirror:
        name = "mirror"
        cooler = COOLER

        def ensure(self) -> None:
            raise ValueError("cannot parse report-\udcff.csv: unexpected header")

    worker = workit.ParallelWorker([Mirror()], registry=registry)
    with anyio.fail_after(5):
        with pytest.raises(workit.HandlerError):
            await worker.ensure()
        async with client(workit.http.app(worker)) as http:
            response = await http.get("/status")
            status = await get_status(http)
    assert response.status_code == 200
    json.loads(response.content.decode("utf-8", errors="strict"))
    assert status["handlers"]["mirror"]["last_error"] == {
        "type": "ValueError",
        "message": "cannot parse report-\\udcff.csv: unexpected header",
    }


@pytest.mark.anyio
async def test_status_and_metrics_answer_with_a_lone_surrogate_in_a_handler_name(
    registry: workit.Registry,
) -> None:
    """A handler named with a lone surrogate leaves /status and /metrics answering 200."""
    handlers = [
        workit.Handler(lambda: None, cooler=COOLER, name=f"mirror:{directory}")
        for directory in ("ok", "report-\udcff")
    ]
    worker = workit.ParallelWorker(handlers, registry=registry)
    with anyio.fail_after(5):
        await worker.ensure()
        async with client(workit.http.app(worker)) as http:
            codes = [(await http.get(path)).status_code for path in ("/status", "/metrics")]
    assert codes == [200, 200]


# /metrics


@pytest.mark.anyio
async def test_metrics_are_prometheus_text_by_default(registry: workit.Registry) -> None:
    """/metrics without an Accept header is Prometheus text format 0.0.4 with the executions."""
    worker = workit.SequenceWorker([[Job("counted")]], registry=registry)
    await worker.ensure()
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http:
            response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = families_of(response)
    assert sample(families, TOTAL, env="test", handler="counted", success="true") == 1


@pytest.mark.parametrize("accept", [OPENMETRICS, PROMETHEUS_SCRAPE])
@pytest.mark.anyio
async def test_metrics_are_openmetrics_when_asked(registry: workit.Registry, accept: str) -> None:
    """An Accept header asking for OpenMetrics gets a valid OpenMetrics exposition."""
    worker = workit.SequenceWorker([[Job("counted")]], registry=registry)
    await worker.ensure()
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http:
            response = await http.get("/metrics", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(OPENMETRICS)
    assert response.text.endswith("# EOF\n")
    families = families_of(response)
    assert sample(families, TOTAL, env="test", handler="counted", success="true") == 1


@pytest.mark.anyio
async def test_metrics_404_without_prometheus(logger: logging.Logger) -> None:
    """A worker recording with OpenTelemetry answers 404 on /metrics, saying why."""
    backend = workit.metrics.OpenTelemetry(NoOpMeter("workit.tests"))
    registry = workit.Registry("test", metrics=backend, logger=logger)
    worker = workit.ParallelWorker([Job("otel")], registry=registry)
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http:
            response = await http.get("/metrics")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert "Prometheus" in response.text


@pytest.mark.anyio
async def test_metrics_skip_engines_without_prometheus(prom: CollectorRegistry) -> None:
    """A combined worker exposes its Prometheus engine even when another uses OpenTelemetry."""
    otel = workit.Registry("otel", metrics=workit.metrics.OpenTelemetry(NoOpMeter("tests")))
    exposed = workit.SequenceWorker([[Job("exposed")]], registry=prometheus_registry("prom", prom))
    worker = workit.CombinedWorker(workit.ParallelWorker([Job("hidden")], registry=otel), exposed)
    await exposed.ensure()
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http:
            response = await http.get("/metrics")
    assert response.status_code == 200
    families = families_of(response)
    assert sample(families, TOTAL, env="prom", handler="exposed", success="true") == 1


async def ensure_both(worker: workit.CombinedWorker) -> None:
    for engine in worker.engines:
        assert isinstance(engine, workit.SequenceWorker)
        await engine.ensure()


@pytest.mark.anyio
async def test_metrics_expose_every_registry_of_a_combined_worker() -> None:
    """Engines recording into two CollectorRegistries have both exposed on /metrics."""
    worker = workit.CombinedWorker(
        workit.SequenceWorker(
            [[Job("a")]], registry=prometheus_registry("one", CollectorRegistry())
        ),
        workit.SequenceWorker(
            [[Job("b")]], registry=prometheus_registry("two", CollectorRegistry())
        ),
    )
    await ensure_both(worker)
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http:
            response = await http.get("/metrics")
    assert response.status_code == 200
    families = families_of(response)
    assert sample(families, TOTAL, env="one", handler="a", success="true") == 1
    assert sample(families, TOTAL, env="two", handler="b", success="true") == 1


@pytest.mark.parametrize("accept", ["", OPENMETRICS])
@pytest.mark.anyio
async def test_metrics_of_two_registries_declare_each_family_once(accept: str) -> None:
    """Two CollectorRegistries are exposed as one valid exposition: each family declared once."""
    worker = workit.CombinedWorker(
        workit.SequenceWorker(
            [[Job("a")]], registry=prometheus_registry("one", CollectorRegistry())
        ),
        workit.SequenceWorker(
            [[Job("b")]], registry=prometheus_registry("two", CollectorRegistry())
        ),
    )
    await ensure_both(worker)
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http:
            response = await http.get("/metrics", headers={"Accept": accept})
    types = declared_types(response.text)
    assert len(types) == len(set(types)), sorted(types)
    families = families_of(response)
    assert sample(families, TOTAL, env="one", handler="a", success="true") == 1
    assert sample(families, TOTAL, env="two", handler="b", success="true") == 1


@pytest.mark.parametrize("accept", ["", OPENMETRICS])
@pytest.mark.parametrize("shared", ["one workit Registry", "one CollectorRegistry"])
@pytest.mark.anyio
async def test_metrics_of_a_shared_registry_are_exposed_once(
    prom: CollectorRegistry, shared: str, accept: str
) -> None:
    """Engines sharing one CollectorRegistry expose it once: no duplicated metric family."""
    first = prometheus_registry("test", prom)
    second = first if shared == "one workit Registry" else prometheus_registry("test", prom)
    worker = workit.CombinedWorker(
        workit.SequenceWorker([[Job("a")]], registry=first),
        workit.SequenceWorker([[Job("b")]], registry=second),
    )
    await ensure_both(worker)
    with anyio.fail_after(5):
        async with client(workit.http.app(worker)) as http:
            response = await http.get("/metrics", headers={"Accept": accept})
    assert response.status_code == 200
    types = declared_types(response.text)
    assert len(types) == len(set(types)), sorted(types)
    families = families_of(response)
    assert sample(families, TOTAL, env="test", handler="a", success="true") == 1
    assert sample(families, TOTAL, env="test", handler="b", success="true") == 1


# Mounting and the lifespan


def starlette_app(worker: workit.Worker) -> Starlette:
    """The documented setup: the worker runs with the app, its endpoints under /worker."""
    return Starlette(
        lifespan=workit.http.lifespan(worker),
        routes=[Mount("/worker", app=workit.http.app(worker))],
    )


@pytest.mark.anyio
async def test_app_mounts_under_a_prefix(registry: workit.Registry) -> None:
    """Mounted in a Starlette app, every endpoint answers under the mount path."""
    worker = workit.SequenceWorker([[Job("mounted")]], registry=registry)
    await worker.ensure()
    api = Starlette(routes=[Mount("/worker", app=workit.http.app(worker))])
    with anyio.fail_after(5):
        async with client(api) as http:
            health = await http.get("/worker/healthz")
            ready = await http.get("/worker/readyz")
            status = await get_status(http, "/worker/status")
            metrics = await http.get("/worker/metrics")
    assert health.status_code == 200
    assert ready.status_code == 503
    assert status["handlers"]["mounted"]["executions"] == 1
    assert metrics.status_code == 200
    families = families_of(metrics)
    assert sample(families, TOTAL, env="test", handler="mounted", success="true") == 1


@pytest.mark.anyio
async def test_lifespan_runs_the_worker(registry: workit.Registry) -> None:
    """lifespan(worker) is ready once entered and has the daemon returned once exited."""
    job = Job("job")
    worker = workit.ParallelWorker([job], registry=registry)
    api = Starlette()
    with anyio.fail_after(5):
        async with workit.http.lifespan(worker)(api):
            ready_at_startup = worker.ready
            await anyio.wait_all_tasks_blocked()
            [during] = worker.status().handlers
        [after] = worker.status().handlers
    assert ready_at_startup
    assert job.calls == 1
    assert during.next_run is not None
    assert not worker.ready
    assert not worker.stopping
    assert after.next_run is None  # no run is planned: the daemon has returned


@pytest.mark.parametrize("kind", ["parallel", "sequence", "combined"])
@pytest.mark.anyio
async def test_starlette_lifespan_serves_a_ready_worker(
    registry: workit.Registry, kind: str
) -> None:
    """Starlette(lifespan=lifespan(worker)): ready when startup completes, stopped at shutdown."""
    worker = build(kind, registry, Job("job"))
    api = starlette_app(worker)
    with anyio.fail_after(5):
        async with client(api) as http, lifespan_server(api) as server:
            before = (await http.get("/worker/readyz")).status_code
            await server.startup()
            at_startup = (await http.get("/worker/readyz")).status_code
            await anyio.wait_all_tasks_blocked()
            status = await get_status(http, "/worker/status")
            await server.begin_shutdown()
            await server.shutdown_complete()
            after = (await http.get("/worker/readyz")).status_code
    assert (before, at_startup, after) == (503, 200, 503)
    assert status["ready"] is True
    assert status["handlers"]["job"]["executions"] == 1
    assert not worker.ready


@pytest.mark.anyio
async def test_lifespan_shutdown_lets_the_running_execution_finish(
    registry: workit.Registry,
) -> None:
    """At shutdown the worker stops gracefully: not ready, the execution in flight finishes."""
    job = Job("slow")
    gate = job.hold()
    worker = workit.ParallelWorker([job], registry=registry, grace=5)
    api = starlette_app(worker)
    with anyio.fail_after(5):
        async with client(api) as http, lifespan_server(api) as server:
            await server.startup()
            await job.started.wait()
            await server.begin_shutdown()
            await anyio.wait_all_tasks_blocked()
            still_stopping = worker.stopping
            readyz = (await http.get("/worker/readyz")).status_code
            stopping = await get_status(http, "/worker/status")
            gate.set()
            await server.shutdown_complete()
    assert still_stopping  # the daemon waits for the execution in flight
    assert readyz == 503
    assert stopping["ready"] is False
    assert stopping["handlers"]["slow"]["running"] is True
    assert (job.calls, job.finished, job.cancelled) == (1, 1, False)
    assert worker.last_stop == StopReport()
    [slow] = worker.status().handlers
    assert (slow.executions, slow.last_outcome, slow.running) == (1, "success", False)
    assert not worker.stopping


@pytest.mark.anyio
async def test_lifespan_run_again_is_ready_at_startup(registry: workit.Registry) -> None:
    """A second lifespan run of the same worker is ready again when its startup completes."""
    worker = build("combined", registry, Job("job"))
    with anyio.fail_after(5):
        async with workit.http.lifespan(worker)(None):
            first = worker.ready
        async with workit.http.lifespan(worker)(None):
            second = worker.ready
    assert (first, second) == (True, True)


# serve()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_serve_answers_on_a_real_socket(registry: workit.Registry) -> None:
    """serve() listens on host:port while its block runs, and no longer after it."""
    worker = workit.ParallelWorker([Job("served")], registry=registry)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with anyio.fail_after(10):
        async with (
            running(worker),
            workit.http.serve(worker, "127.0.0.1", port),
            httpx.AsyncClient(base_url=base_url, trust_env=False) as http,
        ):
            health = await http.get("/healthz")
            ready = await http.get("/readyz")
            status = await get_status(http)
            metrics = await http.get("/metrics")
        async with httpx.AsyncClient(base_url=base_url, trust_env=False) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get("/healthz")
    assert health.status_code == 200
    assert ready.status_code == 200
    assert status["ready"] is True
    assert status["handlers"]["served"]["executions"] == 1
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = families_of(metrics)
    assert sample(families, TOTAL, env="test", handler="served", success="true") == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_serve_raises_server_error_when_the_port_is_taken(
    registry: workit.Registry,
) -> None:
    """serve() raises ServerError, naming the address, when the port is already in use."""
    worker = workit.ParallelWorker([Job("idle")], registry=registry)
    entered = False

    async def serve_on(port: int) -> None:
        nonlocal entered
        async with workit.http.serve(worker, "127.0.0.1", port):
            entered = True

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with anyio.fail_after(5), pytest.raises(workit.http.ServerError, match=f":{port}"):
            await serve_on(port)
    assert not entered
