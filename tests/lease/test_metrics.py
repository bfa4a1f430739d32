"""The lease metrics, on both metrics back ends and every lease backend.

``worker_lease_owned`` (gauge, ``env``, ``handler``) and
``worker_lease_events_total`` (counter, ``env``, ``event``) follow the
fleet's events: a claim acquired, lost when the lease expired on the server,
released at a graceful stop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import workit
import workit.lease
from tests.lease.support import backend_for, running, until

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.lease.support import Kit

pytestmark = pytest.mark.anyio

LOGGER = logging.getLogger("workit.tests.lease.metrics")
OWNED = "worker_lease_owned"
EVENTS = "worker_lease_events_total"
METRICS = ("prometheus", "opentelemetry")


@pytest.fixture
def anyio_backend(kind: str) -> object:
    """Memory on trio's MockClock, the real servers on asyncio in real time."""
    return backend_for(kind)


class Reading:
    """A metrics back end of one kind, and what it exports now."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.backend: workit.metrics.Prometheus | workit.metrics.OpenTelemetry
        if kind == "prometheus":
            self.prom = CollectorRegistry()
            self.backend = workit.metrics.Prometheus(self.prom)
        else:
            self.reader = InMemoryMetricReader()
            self.provider = MeterProvider(metric_readers=[self.reader])
            self.backend = workit.metrics.OpenTelemetry(self.provider.get_meter("workit.tests"))

    def close(self) -> None:
        if self.kind == "opentelemetry":
            self.provider.shutdown()

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every sample (labels, value) of the series ``name``."""
        if self.kind == "prometheus":
            text = generate_latest(self.prom).decode()
            return [
                (dict(sample.labels), sample.value)
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == name
            ]
        data = self.reader.get_metrics_data()
        points: list[Any] = [
            point
            for resource in (data.resource_metrics if data is not None else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]
        return [(dict(point.attributes or {}), float(point.value)) for point in points]

    def owned(self) -> dict[str, float]:
        """``worker_lease_owned`` by handler (env ``test``)."""
        found = {}
        for labels, value in self.samples(OWNED):
            assert set(labels) == {"env", "handler"}, labels
            if labels["env"] == "test":
                found[labels["handler"]] = value
        return found

    def events(self) -> dict[str, float]:
        """``worker_lease_events_total`` by event (env ``test``)."""
        found = {}
        for labels, value in self.samples(EVENTS):
            assert set(labels) == {"env", "event"}, labels
            if labels["env"] == "test":
                found[labels["event"]] = value
        return found


@pytest.fixture(params=METRICS)
def reading(request: pytest.FixtureRequest) -> Iterator[Reading]:
    """A fresh metrics back end of each kind."""
    one = Reading(str(request.param))
    yield one
    one.close()


class Tick:
    """A handler that returns at once."""

    def __init__(self, name: str, cooler: float) -> None:
        self.name = name
        self.cooler = cooler

    async def ensure(self) -> None:
        await anyio.lowlevel.checkpoint()


def cooler(kit: Kit) -> float:
    return 5.0 if kit.kind == "memory" else 0.2


async def member_of(kit: Kit, identity: str) -> str:
    """The member id of the replica named ``identity``, read from the group's roster."""
    roster = await kit.leases("reader").roster()  # type: ignore[attr-defined]  # every backend
    [member] = [member.member for member in roster.members if member.identity == identity]
    return str(member)


async def test_owned_gauge_and_event_counter_follow_acquire_loss_and_release(
    kit: Kit, reading: Reading
) -> None:
    """Acquired: the gauge is 1 and acquired counts each handler. The lease expired on the
    server: lost counts each, and once rejoined they are acquired again. A graceful stop:
    released counts each and the gauge is 0."""
    registry = workit.Registry("test", metrics=reading.backend)
    worker = workit.ParallelWorker(
        [Tick("a", cooler(kit)), Tick("b", cooler(kit))],
        registry=registry,
        logger=LOGGER,
        leases=kit.leases("one"),
        grace=5,
    )
    assert (reading.owned(), reading.events()) == ({}, {})  # nothing under leases yet
    with anyio.fail_after(120):
        async with running(worker):
            await until(lambda: reading.owned() == {"a": 1, "b": 1}, within=kit.ttl * 2)
            assert reading.events() == {"acquired": 2, "released": 0, "lost": 0}
            kit.expire(await member_of(kit, "one"))
            await until(lambda: reading.events()["lost"] == 2, within=kit.ttl * 2)
            await until(lambda: reading.owned() == {"a": 1, "b": 1}, within=kit.ttl * 2)
            assert reading.events() == {"acquired": 4, "released": 0, "lost": 2}
    assert reading.owned() == {"a": 0, "b": 0}
    assert reading.events() == {"acquired": 4, "released": 2, "lost": 2}


async def test_only_the_owner_of_a_pipeline_shows_its_handlers_owned(
    kit: Kit, reading: Reading
) -> None:
    """Two replicas of one SequenceWorker: the handlers of the pipeline are 1 on the replica
    that owns it and 0 on the other, which counts nothing acquired."""
    standby = Reading(reading.kind)

    def pipeline(name: str, metrics: Reading) -> workit.SequenceWorker:
        registry = workit.Registry("test", metrics=metrics.backend)
        steps = [[Tick("scan", 0)], [Tick("report", 0)]]
        return workit.SequenceWorker(
            steps, cooler=cooler(kit), registry=registry, leases=kit.leases(name), name="nightly"
        )

    first = pipeline("first", reading)
    with anyio.fail_after(120):
        async with running(first):
            await until(lambda: reading.owned() == {"scan": 1, "report": 1}, within=kit.ttl * 2)
            second = pipeline("second", standby)
            async with running(second):
                await until(lambda: bool(standby.owned()), within=kit.ttl * 2)
                await anyio.sleep(kit.renew * 2)  # a rebalance would have moved it by now
                assert standby.owned() == {"scan": 0, "report": 0}
                assert standby.events() == {"acquired": 0, "released": 0, "lost": 0}
                assert reading.owned() == {"scan": 1, "report": 1}
                assert reading.events() == {"acquired": 1, "released": 0, "lost": 0}
    standby.close()


@pytest.mark.parametrize("kind", ["memory"])
async def test_no_lease_series_without_leases(kit: Kit, reading: Reading) -> None:
    """A worker without leases exports neither lease series, before, during or after a run."""
    registry = workit.Registry("test", metrics=reading.backend)
    worker = workit.ParallelWorker([Tick("plain", cooler(kit))], registry=registry)
    with anyio.fail_after(60):
        async with running(worker):
            await anyio.sleep(cooler(kit) * 2)
            assert (reading.owned(), reading.events()) == ({}, {})
    assert (reading.owned(), reading.events()) == ({}, {})


@pytest.mark.parametrize("kind", ["memory"])
async def test_a_fenced_replica_counts_its_claims_lost(kit: Kit, reading: Reading) -> None:
    """Cut off from the backend past its lease, a replica's gauge drops to 0 and lost counts
    each claim; once the backend answers again the gauge is back at 1."""
    registry = workit.Registry("test", metrics=reading.backend)
    worker = workit.ParallelWorker(
        [Tick("cut", cooler(kit))], registry=registry, logger=LOGGER, leases=kit.leases("cut")
    )
    assert kit.memory is not None
    with anyio.fail_after(600):
        async with running(worker):
            await until(lambda: reading.owned() == {"cut": 1}, within=kit.ttl)
            with kit.memory.outage("cut"):
                await until(lambda: reading.owned() == {"cut": 0}, within=kit.ttl * 2)
                assert reading.events()["lost"] == 1
            await until(lambda: reading.owned() == {"cut": 1}, within=kit.ttl * 2)


async def test_a_handler_handed_to_a_new_replica_counts_released(
    kit: Kit, reading: Reading
) -> None:
    """When a second replica joins, the first hands over half of its handlers: released
    counts them and their gauge is 0 there, while the daemon runs on."""
    newcomer = Reading(reading.kind)
    names = ["a", "b", "c", "d"]

    def replica(name: str, metrics: Reading) -> workit.ParallelWorker:
        registry = workit.Registry("test", metrics=metrics.backend)
        return workit.ParallelWorker(
            [Tick(handler, cooler(kit)) for handler in names],
            registry=registry,
            logger=LOGGER,
            leases=kit.leases(name),
            grace=5,
        )

    with anyio.fail_after(120):
        async with running(replica("one", reading)):
            await until(lambda: sum(reading.owned().values()) == 4, within=kit.ttl * 2)
            async with running(replica("two", newcomer)):
                await until(lambda: sum(newcomer.owned().values()) == 2, within=kit.ttl * 4)
                await until(lambda: sum(reading.owned().values()) == 2, within=kit.ttl * 2)
                assert reading.events() == {"acquired": 4, "released": 2, "lost": 0}
                assert newcomer.events() == {"acquired": 2, "released": 0, "lost": 0}
                mine = {name for name, value in reading.owned().items() if value}
                theirs = {name for name, value in newcomer.owned().items() if value}
                assert mine | theirs == set(names)
                assert not mine & theirs
    newcomer.close()


@pytest.mark.parametrize("kind", ["memory"])
async def test_a_cancelled_daemon_leaves_nothing_owned(kit: Kit, reading: Reading) -> None:
    """A daemon cancelled rather than stopped releases nothing (no event is counted), yet once
    it returned its gauge is 0: a replica that no longer runs owns nothing."""
    registry = workit.Registry("test", metrics=reading.backend)
    worker = workit.ParallelWorker(
        [Tick("cut", cooler(kit))], registry=registry, logger=LOGGER, leases=kit.leases("cut")
    )
    with anyio.fail_after(600):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await until(lambda: reading.owned() == {"cut": 1}, within=kit.ttl)
            tasks.cancel_scope.cancel()
    assert reading.events() == {"acquired": 1, "released": 0, "lost": 0}
    assert reading.owned() == {"cut": 0}
