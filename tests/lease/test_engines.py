"""The engines under leases: replicas of a worker in one process, on every backend.

Memory runs on trio's MockClock, Redis and PostgreSQL in real time (ttl 1.5 s).
Every execution is written to an audit (replica, handler, start, end, token)
that the tests check for overlaps, cadence and spread.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest
from prometheus_client import CollectorRegistry

import workit
import workit.lease
from tests.lease.support import backend_for, running, until

if TYPE_CHECKING:
    from tests.lease.support import Kit

pytestmark = pytest.mark.anyio

LOGGER = logging.getLogger("workit.tests.lease.engines")


@pytest.fixture
def anyio_backend(kind: str) -> object:
    """Memory on trio's MockClock, the real servers on asyncio in real time."""
    return backend_for(kind)


@dataclass
class Audit:
    """Every execution of every replica: (handler, replica, start, end, token)."""

    runs: list[tuple[str, str, float, float, int]] = field(default_factory=list)
    outside: list[object] = field(default_factory=list)

    def of(self, handler: str) -> list[tuple[str, str, float, float, int]]:
        return sorted((run for run in self.runs if run[0] == handler), key=lambda run: run[2])

    def overlaps(self) -> list[str]:
        found = []
        for handler in {run[0] for run in self.runs}:
            runs = self.of(handler)
            found += [handler for one, two in itertools.pairwise(runs) if two[2] < one[3]]
        return found


class Audited:
    """A handler that writes each execution to the audit, with its replica and claim."""

    def __init__(self, name: str, replica: str, audit: Audit, *, cooler: float, takes: float):
        self.name = name
        self.replica = replica
        self.audit = audit
        self.cooler = cooler
        self.takes = takes

    async def ensure(self) -> None:
        claim = workit.lease.current()
        assert claim is not None
        assert claim.valid()
        assert (claim.handler, claim.owner) == (self.name, self.replica)
        start = anyio.current_time()
        await anyio.sleep(self.takes)
        self.audit.runs.append((self.name, self.replica, start, anyio.current_time(), claim.token))


def timings(kit: Kit) -> tuple[float, float]:
    """A cooler and an execution's length that suit the backend's clock."""
    return (5.0, 1.0) if kit.kind == "memory" else (0.3, 0.05)


def replica(
    kit: Kit, name: str, audit: Audit, handlers: list[str], **settings: float
) -> workit.ParallelWorker:
    cooler, takes = timings(kit)
    registry = workit.Registry("test", metrics=workit.metrics.Prometheus(CollectorRegistry()))
    return workit.ParallelWorker(
        [Audited(handler, name, audit, cooler=cooler, takes=takes) for handler in handlers],
        registry=registry,
        logger=LOGGER,
        leases=kit.leases(name),
        grace=5,
        **settings,  # type: ignore[arg-type]  # keyword settings of the engine
    )


HANDLERS = [f"job{index}" for index in range(6)]


async def test_two_replicas_share_the_handlers_and_never_overlap(kit: Kit) -> None:
    """Two replicas of one worker split six handlers three and three, each handler runs on
    one replica at a time, and its cooler holds between executions."""
    audit = Audit()
    one, two = (replica(kit, name, audit, HANDLERS) for name in ("one", "two"))
    cooler, _ = timings(kit)
    with anyio.fail_after(120):
        async with running(one, two):
            await until(
                lambda: (
                    {run[0] for run in audit.runs} == set(HANDLERS)
                    and len({run[1] for run in audit.runs[-12:]}) == 2
                ),
                within=20 * cooler + 10,
            )
            await anyio.sleep(4 * cooler)
            owners = [status.owner for status in one.status().handlers]
    assert not audit.overlaps()
    assert sorted(owners.count(name) for name in ("one", "two")) == [3, 3]
    for handler in HANDLERS:
        runs = audit.of(handler)
        for before, after in itertools.pairwise(runs):
            assert after[2] >= before[3] + cooler - 0.01, (handler, before, after)


async def test_claim_is_current_in_an_execution_only(kit: Kit) -> None:
    """Inside an execution ``workit.lease.current()`` is the replica's valid claim (checked
    by the handler); outside it is None; tokens are positive ints."""
    audit = Audit()
    worker = replica(kit, "solo", audit, ["alone"])
    with anyio.fail_after(60):
        async with running(worker):
            await until(lambda: len(audit.runs) >= 2, within=30)
            assert workit.lease.current() is None
    assert all(isinstance(run[4], int) and run[4] > 0 for run in audit.runs)
    assert len({run[4] for run in audit.runs}) == 1  # one owner all along: one token


async def test_a_sync_handler_reads_its_claim_in_its_thread(kit: Kit) -> None:
    """A plain ``def`` handler, in its worker thread, gets the claim and ``valid()``."""
    seen: list[tuple[int, bool]] = []

    def ensure() -> None:
        claim = workit.lease.current()
        assert claim is not None
        seen.append((claim.token, claim.valid()))

    worker = workit.ParallelWorker(
        [workit.Handler(ensure, cooler=timings(kit)[0], name="in_thread")],
        registry=workit.Registry("test", metrics=workit.metrics.Prometheus(CollectorRegistry())),
        logger=LOGGER,
        leases=kit.leases("solo"),
    )
    with anyio.fail_after(60):
        async with running(worker):
            await until(lambda: len(seen) >= 1, within=30)
    assert seen[0][0] > 0
    assert seen[0][1] is True
    assert worker.status().handlers[0].failures == 0


async def test_a_stop_during_an_execution_does_not_wait_out_the_cooler(kit: Kit) -> None:
    """stop() while an execution runs: once it ends the loop ends, without its cooler's nap."""
    cooler = 30.0
    stopped: list[float] = []
    worker: workit.ParallelWorker | None = None

    async def ensure() -> None:
        assert worker is not None
        worker.stop()  # as a signal would, mid-execution
        await anyio.lowlevel.checkpoint()  # the stop's wake-up runs while this execution still does
        stopped.append(anyio.current_time())

    worker = workit.ParallelWorker(
        [workit.Handler(ensure, cooler=cooler, name="stops")],
        registry=workit.Registry("test", metrics=workit.metrics.Prometheus(CollectorRegistry())),
        logger=LOGGER,
        leases=kit.leases("solo"),
    )
    with anyio.fail_after(cooler + 30):
        await worker.daemon()
    assert len(stopped) == 1
    assert anyio.current_time() - stopped[0] < 5


async def test_a_stopped_replica_hands_its_handlers_over(kit: Kit) -> None:
    """After one replica's graceful stop, the other runs every handler, keeping each cooler
    from the last execution, whichever replica ran it."""
    audit = Audit()
    one, two = (replica(kit, name, audit, HANDLERS) for name in ("one", "two"))
    cooler, _ = timings(kit)
    with anyio.fail_after(120):
        async with running(two) as tasks:
            tasks.start_soon(one.daemon)
            await one.wait_ready()
            await until(lambda: len({run[1] for run in audit.runs}) == 2, within=20 * cooler + 10)
            one.stop()
            stopped = anyio.current_time()
            await until(
                lambda: (
                    {run[0] for run in audit.runs if run[2] > stopped and run[1] == "two"}
                    == set(HANDLERS)
                ),
                within=3 * cooler + 2 * kit.renew + 5,
            )
    assert not audit.overlaps()
    for handler in HANDLERS:
        runs = audit.of(handler)
        for before, after in itertools.pairwise(runs):
            assert after[2] >= before[3] + cooler - 0.01, (handler, before, after)


async def test_a_stopping_replica_hands_its_idle_handlers_over_while_one_still_runs(
    kit: Kit,
) -> None:
    """A replica told to stop hands each idle handler over at once, not after its drain:
    the other replica runs them while the stopping one still waits for an execution."""
    audit = Audit()
    gate = anyio.Event()
    blocked: list[str] = []

    class Held(Audited):
        async def ensure(self) -> None:
            if not blocked:  # the first execution on replica one waits for the gate
                blocked.append(self.name)
                await gate.wait()
            await super().ensure()

    cooler, takes = timings(kit)
    registry = workit.Registry("test", metrics=workit.metrics.Prometheus(CollectorRegistry()))
    one = workit.ParallelWorker(
        [Held(handler, "one", audit, cooler=cooler, takes=takes) for handler in HANDLERS],
        registry=registry,
        logger=LOGGER,
        leases=kit.leases("one"),
        grace=60,
    )
    two = replica(kit, "two", audit, HANDLERS)
    with anyio.fail_after(120):
        async with running(two) as tasks:
            tasks.start_soon(one.daemon)
            await one.wait_ready()
            await until(lambda: bool(blocked), within=20 * cooler + 10)
            await until(lambda: len({run[1] for run in audit.runs}) == 2, within=20 * cooler + 10)
            one.stop()
            stopped = anyio.current_time()
            rest = set(HANDLERS) - set(blocked)
            await until(
                lambda: {run[0] for run in audit.runs if run[2] > stopped} == rest,
                within=cooler + 2 * kit.renew + 5,
            )
            assert not gate.is_set()
            assert {run[1] for run in audit.runs if run[2] > stopped} == {"two"}
            gate.set()
            await until(
                lambda: any(run[0] == blocked[0] and run[1] == "two" for run in audit.runs),
                within=cooler + 2 * kit.renew + 5,
            )
    assert not audit.overlaps()


async def test_status_shows_the_owner_and_the_fleet(kit: Kit) -> None:
    """Each handler's status says who owns it and whether this replica does; the worker's
    status has the fleet block: identity, group, backend, connection, members."""
    audit = Audit()
    one, two = (replica(kit, name, audit, HANDLERS) for name in ("one", "two"))
    cooler, _ = timings(kit)
    with anyio.fail_after(120):
        async with running(one, two):

            def settled() -> bool:
                handlers = one.status().handlers
                return sum(h.owned for h in handlers) == 3 and all(
                    h.owner is not None and h.owned == (h.owner == "one") for h in handlers
                )

            await until(settled, within=20 * cooler + 10)
            status = one.status()
            document = status.to_dict()
    assert status.fleet is not None
    assert (status.fleet.identity, status.fleet.group) == ("one", kit.group)
    assert status.fleet.members == ("one", "two")
    assert status.fleet.connected
    fleet = document["fleet"]
    assert isinstance(fleet, dict)
    assert fleet["members"] == ["one", "two"]
    assert "password" not in str(fleet["backend"])
    assert {handler.owner for handler in status.handlers} == {"one", "two"}


async def test_a_pipeline_runs_its_passes_on_one_replica_at_a_time(kit: Kit) -> None:
    """Two replicas of a SequenceWorker named "nightly": its passes never overlap, and the
    pass cooler holds between them, on whichever replica they ran."""
    audit = Audit()
    cooler, takes = timings(kit)

    def pipeline(name: str) -> workit.SequenceWorker:
        first = Audited("nightly", name, audit, cooler=0, takes=takes)
        registry = workit.Registry("test", metrics=workit.metrics.Prometheus(CollectorRegistry()))
        return workit.SequenceWorker(
            [[_AsPipeline(first)]],
            cooler=cooler,
            registry=registry,
            logger=LOGGER,
            leases=kit.leases(name),
            name="nightly",
        )

    one, two = pipeline("one"), pipeline("two")
    with anyio.fail_after(120):
        async with running(one, two):
            await until(lambda: len(audit.runs) >= 4, within=20 * cooler + 10)
    runs = audit.of("nightly")
    assert not audit.overlaps()
    for before, after in itertools.pairwise(runs):
        assert after[2] >= before[3] + cooler - 0.01, (before, after)


class _AsPipeline:
    """A step of the pipeline: its claim is the pipeline's, named after the pipeline."""

    name = "step"

    def __init__(self, audited: Audited) -> None:
        self.audited = audited

    async def ensure(self) -> None:
        await self.audited.ensure()


@pytest.mark.parametrize("kind", ["memory"])
async def test_a_fenced_replica_fails_its_running_execution_with_lease_lost(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    """Cut off from the backend, a replica cancels the execution it runs once its lease could
    have expired: the execution fails with LeaseLost, and the worker is not ready meanwhile.
    The outage is one error; the execution it cut short a warning without a traceback."""
    started = anyio.Event()

    class Hangs:
        name = "hangs"
        cooler = 60

        async def ensure(self) -> None:
            started.set()
            await anyio.sleep_forever()

    registry = workit.Registry("test", metrics=workit.metrics.Prometheus(CollectorRegistry()))
    leases = kit.leases("cut")
    worker = workit.ParallelWorker([Hangs()], registry=registry, logger=LOGGER, leases=leases)
    assert kit.memory is not None
    with anyio.fail_after(600):
        async with running(worker):
            await started.wait()
            assert worker.ready
            with kit.memory.outage("cut"):
                await until(lambda: worker.status().handlers[0].failures == 1, within=kit.ttl * 2)
                assert not worker.ready
            [status] = worker.status().handlers
            assert status.last_error is not None
            assert status.last_error.type == "LeaseLost"
            await until(lambda: worker.ready, within=kit.ttl * 2)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "fenced" in errors[0]
    [cut] = [r for r in caplog.records if "execution failed" in r.getMessage()]
    assert cut.levelno == logging.WARNING
    assert cut.exc_info is None


@pytest.mark.parametrize("kind", ["memory"])
@pytest.mark.parametrize("told", [False, True], ids=["cut-at-once", "cut-after-a-renewal"])
async def test_a_first_execution_cut_by_a_fence_keeps_the_cooler_on_the_next_owner(
    kit: Kit, told: bool
) -> None:
    """A handler's first execution never ends by itself: its replica is fenced. The next
    owner waits a cooler after it all the same: its own when the fleet was told none (cut
    at once), the fleet's, from the start, once a renewal told it (here the next owner's
    own cooler is shorter, as in a rolling deploy)."""
    starts: list[tuple[str, float]] = []
    ends: list[float] = []

    class Slow:
        name = "slow"

        def __init__(self, replica: str, cooler: float) -> None:
            self.replica = replica
            self.cooler = cooler

        async def ensure(self) -> None:
            starts.append((self.replica, anyio.current_time()))
            try:
                await anyio.sleep_forever()
            finally:
                ends.append(anyio.current_time())

    def worker(name: str, cooler: float) -> workit.ParallelWorker:
        registry = workit.Registry("test", metrics=workit.metrics.Prometheus(CollectorRegistry()))
        handlers = [Slow(name, cooler)]
        return workit.ParallelWorker(handlers, registry=registry, leases=kit.leases(name))

    first, second = worker("first", 60), worker("second", 1 if told else 60)
    assert kit.memory is not None
    records = kit.memory._server.records
    with anyio.fail_after(600):
        async with running(first):
            await until(lambda: len(starts) == 1, within=kit.ttl)
            if told:
                await until(lambda: records["slow"].running, within=kit.ttl)
            with kit.memory.outage("first"):
                async with running(second):
                    await until(lambda: len(starts) == 2, within=60 + kit.ttl * 3)
    assert [replica for replica, _ in starts] == ["first", "second"]
    assert starts[1][1] >= ends[0] + 60


@pytest.mark.parametrize("kind", ["memory"])
async def test_a_fenced_replica_fails_its_running_pass_with_lease_lost(kit: Kit) -> None:
    """A pipeline is one unit, named unlike its handlers: cut off from the backend, the
    replica cancels the step it runs, which fails with LeaseLost."""
    started = anyio.Event()

    class Step:
        name = "step"

        async def ensure(self) -> None:
            started.set()
            await anyio.sleep_forever()

    registry = workit.Registry("test", metrics=workit.metrics.Prometheus(CollectorRegistry()))
    worker = workit.SequenceWorker(
        [[Step()]], cooler=60, registry=registry, leases=kit.leases("cut"), name="nightly"
    )
    assert kit.memory is not None
    with anyio.fail_after(600):
        async with running(worker):
            await started.wait()
            with kit.memory.outage("cut"):
                await until(lambda: worker.status().handlers[0].failures == 1, within=kit.ttl * 2)
            [status] = worker.status().handlers
            assert status.last_error is not None
            assert status.last_error.type == "LeaseLost"


@pytest.mark.parametrize("kind", ["memory"])
def test_two_engines_sharing_a_group_and_a_handler_name_are_refused(kit: Kit) -> None:
    """A CombinedWorker of two engines under leases of one group with a handler name in
    common is a ValueError naming the name and the group; other groups or names are fine
    (under another env: one env and one name are refused anyway)."""
    audit = Audit()
    first = replica(kit, "one", audit, ["shared", "own"])
    second = replica(kit, "one", audit, ["shared"])
    with pytest.raises(ValueError, match=r"'shared' is also a unit of worker 0 in the lease group"):
        workit.CombinedWorker(first, second)
    workit.CombinedWorker(first, replica(kit, "one", audit, ["other"]))
    elsewhere = workit.lease.Memory(group=f"{kit.group}-2").replica("one")
    cooler, takes = timings(kit)
    registry = workit.Registry("apart", metrics=workit.metrics.Prometheus(CollectorRegistry()))
    apart = workit.ParallelWorker(
        [Audited("shared", "one", audit, cooler=cooler, takes=takes)],
        registry=registry,
        leases=elsewhere,
    )
    workit.CombinedWorker(first, apart)


@pytest.mark.parametrize("kind", ["memory"])
async def test_a_combined_worker_shows_the_fleet_of_its_engine_under_leases(kit: Kit) -> None:
    """status() of a CombinedWorker has the fleet block of the engine under leases, as
    /status does, beside the handlers of every engine."""
    audit = Audit()
    leased = replica(kit, "one", audit, ["job"])
    plain = workit.ParallelWorker(
        [workit.Handler(lambda: None, cooler=60, name="plain")],
        registry=workit.Registry("other", metrics=workit.metrics.Prometheus(CollectorRegistry())),
    )
    combined = workit.CombinedWorker(plain, leased)
    assert combined.status().fleet is None  # not joined yet
    with anyio.fail_after(600):
        async with running(combined):
            fleet = combined.status().fleet
            assert fleet is not None
            assert fleet == leased.status().fleet
            assert fleet.members == ("one",)
            assert [handler.name for handler in combined.status().handlers] == ["plain", "job"]
