"""The Prometheus backend: series, labels, buckets and sharing of collectors."""

from __future__ import annotations

import math
import uuid
from typing import TYPE_CHECKING

import anyio
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import workit
from tests.support import DURATION, TOTAL, executions, fake_clock

if TYPE_CHECKING:
    from prometheus_client.samples import Sample

EXPECTED_BUCKETS = [0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0, math.inf]


class Raises:
    """A handler that raises ``error`` on every execution."""

    def __init__(self, error: BaseException, name: str = "raises") -> None:
        self.error = error
        self.name = name

    async def ensure(self) -> None:
        raise self.error


async def succeed() -> None:
    """Returns at once."""


def exposition(prom: CollectorRegistry) -> str:
    return generate_latest(prom).decode()


def samples(prom: CollectorRegistry, name: str) -> list[Sample]:
    """Every sample named ``name`` in the text exposition of ``prom``."""
    return [
        sample
        for family in text_string_to_metric_families(exposition(prom))
        for sample in family.samples
        if sample.name == name
    ]


def buckets(prom: CollectorRegistry, handler: str, success: str) -> dict[float, float]:
    """The cumulative bucket counts of one duration series, by upper bound."""
    return {
        float(sample.labels["le"]): sample.value
        for sample in samples(prom, f"{DURATION}_bucket")
        if sample.labels["handler"] == handler and sample.labels["success"] == success
    }


def duration(prom: CollectorRegistry, suffix: str, handler: str, success: bool) -> float | None:
    labels = {"env": "test", "handler": handler, "success": "true" if success else "false"}
    return prom.get_sample_value(f"{DURATION}_{suffix}", labels)


@pytest.mark.anyio
async def test_exposition_has_exactly_the_two_series(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """The exposition declares exactly the execution counter and the duration histogram."""
    await registry.wrap(workit.Handler(succeed)).ensure()
    await registry.wrap(Raises(ValueError("boom"))).execute()
    declared = {}
    for line in exposition(prom).splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            declared[name] = kind
    # prometheus_client adds a `<name>_created` gauge beside every counter and
    # histogram (unless PROMETHEUS_DISABLE_CREATED_SERIES is set): not workit's.
    ours = {name: kind for name, kind in declared.items() if not name.endswith("_created")}
    assert ours == {TOTAL: "counter", DURATION: "histogram"}


@pytest.mark.anyio
async def test_series_are_labelled_env_handler_success(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """Every counter and histogram sample has exactly the labels env, handler and success."""
    await registry.wrap(workit.Handler(succeed)).ensure()
    names = [TOTAL, f"{DURATION}_count", f"{DURATION}_sum", f"{DURATION}_bucket"]
    found = {name: samples(prom, name) for name in names}
    assert all(found.values())
    for name, series in found.items():
        extra = {"le"} if name.endswith("_bucket") else set()
        for sample in series:
            assert set(sample.labels) == {"env", "handler", "success"} | extra
            assert sample.labels["env"] == "test"
            assert sample.labels["handler"] == "succeed"


@pytest.mark.anyio
async def test_histogram_buckets_are_workits(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """The duration histogram has the buckets 0.1 0.15 0.2 0.25 0.5 1 1.5 2 2.5 5 and +Inf."""
    await registry.wrap(workit.Handler(succeed)).ensure()
    assert sorted(buckets(prom, "succeed", "true")) == EXPECTED_BUCKETS


@pytest.mark.anyio
async def test_returning_counts_success_true(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """An execution whose ensure() returns is counted success="true" and nothing else."""
    await registry.wrap(workit.Handler(succeed)).ensure()
    assert executions(prom, "succeed", True) == 1
    assert executions(prom, "succeed", False) == 0


@pytest.mark.anyio
async def test_ignored_exception_counts_success_true(prom: CollectorRegistry) -> None:
    """An exception the ignore filter matches is counted success="true"."""
    registry = workit.Registry(
        "test",
        ignore=lambda error: isinstance(error, LookupError),
        metrics=workit.metrics.Prometheus(prom),
    )
    error = await registry.wrap(Raises(KeyError("gone"))).execute()
    assert isinstance(error, KeyError)
    assert executions(prom, "raises", True) == 1
    assert executions(prom, "raises", False) == 0


@pytest.mark.anyio
async def test_failure_counts_success_false(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """An exception the filter does not match is counted success="false"."""
    error = await registry.wrap(Raises(ValueError("boom"))).execute()
    assert isinstance(error, ValueError)
    assert executions(prom, "raises", False) == 1
    assert executions(prom, "raises", True) == 0


@pytest.mark.anyio
async def test_counts_are_exact(registry: workit.Registry, prom: CollectorRegistry) -> None:
    """Each execution adds exactly one to the counter of its outcome."""
    outcomes = [True, False, True, True, False]
    pending = list(outcomes)

    async def flaky() -> None:
        if not pending.pop(0):
            raise RuntimeError("flaky")

    wrapped = registry.wrap(workit.Handler(flaky))
    for _ in outcomes:
        await wrapped.execute()
    assert executions(prom, "flaky", True) == 3
    assert executions(prom, "flaky", False) == 2


@pytest.mark.anyio
async def test_histogram_count_and_sum_match_executions(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """The histogram's count equals the counter, its +Inf bucket the count, its sum >= 0."""
    wrapped = registry.wrap(workit.Handler(succeed))
    for _ in range(4):
        await wrapped.ensure()
    count = duration(prom, "count", "succeed", True)
    total = duration(prom, "sum", "succeed", True)
    assert count == executions(prom, "succeed", True) == 4
    assert total is not None
    assert 0 <= total < 4 * 5.0
    counts = buckets(prom, "succeed", "true")
    assert counts[math.inf] == 4
    ordered = [counts[bound] for bound in EXPECTED_BUCKETS]
    assert ordered == sorted(ordered)


@pytest.mark.anyio
async def test_latency_covers_the_execution(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """The recorded duration is at least as long as the handler took."""

    async def nap() -> None:
        await anyio.sleep(0.02)

    with anyio.fail_after(5):
        await registry.wrap(workit.Handler(nap)).ensure()
    total = duration(prom, "sum", "nap", True)
    assert total is not None
    assert 0.02 <= total < 5


def test_recorder_puts_latency_in_its_bucket(prom: CollectorRegistry) -> None:
    """A recorded latency lands in the first bucket whose bound is not below it."""
    record = workit.metrics.Prometheus(prom).recorder("test", "direct")
    record(0.3, True)
    record(0.01, False)
    counts = buckets(prom, "direct", "true")
    assert counts[0.25] == 0
    assert counts[0.5] == 1
    assert duration(prom, "sum", "direct", True) == pytest.approx(0.3)
    assert buckets(prom, "direct", "false")[0.1] == 1


@pytest.mark.anyio
async def test_several_backends_share_one_collector_registry(prom: CollectorRegistry) -> None:
    """Several Prometheus(prom) objects record into the same series without a registration error."""
    first = workit.Registry("test", metrics=workit.metrics.Prometheus(prom))
    second = workit.Registry("test", metrics=workit.metrics.Prometheus(prom))
    await first.wrap(workit.Handler(succeed)).ensure()
    await second.wrap(workit.Handler(succeed)).ensure()
    workit.metrics.Prometheus(prom).recorder("test", "succeed")(0.0, True)
    assert executions(prom, "succeed", True) == 3


@pytest.mark.anyio
async def test_one_backend_serves_several_registries(prom: CollectorRegistry) -> None:
    """One backend shared by registries of different envs keeps each env's counts apart."""
    backend = workit.metrics.Prometheus(prom)
    staging = workit.Registry("staging", metrics=backend)
    production = workit.Registry("production", metrics=backend)
    await staging.wrap(workit.Handler(succeed)).ensure()
    for _ in range(2):
        await production.wrap(workit.Handler(succeed)).ensure()
    assert executions(prom, "succeed", True, env="staging") == 1
    assert executions(prom, "succeed", True, env="production") == 2


@fake_clock()
@pytest.mark.anyio
async def test_one_backend_serves_several_workers(prom: CollectorRegistry) -> None:
    """Workers of registries sharing one backend all record into it."""
    backend = workit.metrics.Prometheus(prom)
    workers = [
        workit.ParallelWorker(
            [workit.Handler(succeed, cooler=1)], registry=workit.Registry(env, metrics=backend)
        )
        for env in ("first", "second")
    ]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for worker in workers:
                tasks.start_soon(worker.daemon)
            for worker in workers:
                await worker.wait_ready()
            # Executions at t=0, 1 and 2 (fake clock), then stop.
            await anyio.sleep(2.5)
            for worker in workers:
                worker.stop()
    assert executions(prom, "succeed", True, env="first") == 3
    assert executions(prom, "succeed", True, env="second") == 3


@pytest.mark.anyio
async def test_registries_without_metrics_share_the_global_registry() -> None:
    """Several Registry() built without metrics= all record into prometheus_client's REGISTRY."""
    # A label of this test's own, so counts do not depend on other tests.
    env = f"default-{uuid.uuid4().hex}"
    registries = [workit.Registry(env) for _ in range(3)]
    for index, registry in enumerate(registries):
        assert isinstance(registry.metrics, workit.metrics.Prometheus)
        assert registry.metrics.registry is REGISTRY
        await registry.wrap(workit.Handler(succeed, name=f"default_{index}")).ensure()
        await registry.wrap(workit.Handler(succeed, name="default_shared")).ensure()
    for index in range(3):
        labels = {"env": env, "handler": f"default_{index}", "success": "true"}
        assert REGISTRY.get_sample_value(TOTAL, labels) == 1
    shared = {"env": env, "handler": "default_shared", "success": "true"}
    assert REGISTRY.get_sample_value(TOTAL, shared) == 3


@pytest.mark.parametrize("value", [object(), "registry", {}, 0])
def test_non_collector_registry_is_a_type_error(value: object) -> None:
    """Prometheus() of anything but a CollectorRegistry raises TypeError."""
    with pytest.raises(TypeError, match="CollectorRegistry"):
        workit.metrics.Prometheus(value)  # type: ignore[arg-type]
