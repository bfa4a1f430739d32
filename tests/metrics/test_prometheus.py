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
from tests.support import DURATION, TOTAL, FakeState, executions, fake_clock
from workit.testing import running

if TYPE_CHECKING:
    from prometheus_client.samples import Sample

EXPECTED_BUCKETS = [0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0, math.inf]
LAST_SUCCESS = "worker_handler_last_success_timestamp_seconds"
RUNNING = "worker_handler_running"
CONSECUTIVE_FAILURES = "worker_handler_consecutive_failures"
GAUGES = (LAST_SUCCESS, RUNNING, CONSECUTIVE_FAILURES)


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


def declared(prom: CollectorRegistry) -> dict[str, str]:
    """workit's series declared by the exposition (``# TYPE`` lines), with their types."""
    found = {}
    for line in exposition(prom).splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            found[name] = kind
    # prometheus_client adds a `<name>_created` gauge beside every counter and
    # histogram (unless PROMETHEUS_DISABLE_CREATED_SERIES is set): not workit's.
    return {name: kind for name, kind in found.items() if not name.endswith("_created")}


def gauges(prom: CollectorRegistry, handler: str, env: str = "test") -> dict[str, float | None]:
    """The three gauges of ``handler``, by name, read from the text exposition."""
    values: dict[str, float | None] = dict.fromkeys(GAUGES)
    for family in text_string_to_metric_families(exposition(prom)):
        for sample in family.samples:
            if sample.name in values and sample.labels == {"env": env, "handler": handler}:
                assert values[sample.name] is None, f"{sample.name} exposed twice"
                values[sample.name] = sample.value
    return values


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
    """The exposition declares exactly the execution counter, the duration histogram and
    the three gauges of the handlers' state."""
    await registry.wrap(workit.Handler(succeed)).ensure()
    await registry.wrap(Raises(ValueError("boom"))).execute()
    assert declared(prom) == {
        TOTAL: "counter",
        DURATION: "histogram",
        LAST_SUCCESS: "gauge",
        RUNNING: "gauge",
        CONSECUTIVE_FAILURES: "gauge",
    }


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
        async with running(workers[0]), running(workers[1]):
            # Executions at t=0, 1 and 2 (fake clock), then stop.
            await anyio.sleep(2.5)
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


# Gauges read from observed states


def test_observed_handler_adds_the_three_gauges(prom: CollectorRegistry) -> None:
    """Once a handler is observed the exposition declares the three gauges beside the two series."""
    workit.metrics.Prometheus(prom).observe("test", "sync", FakeState())
    assert declared(prom) == {
        TOTAL: "counter",
        DURATION: "histogram",
        LAST_SUCCESS: "gauge",
        RUNNING: "gauge",
        CONSECUTIVE_FAILURES: "gauge",
    }


def test_gauges_of_a_fresh_handler_are_zero(prom: CollectorRegistry) -> None:
    """An observed handler that never ran has each gauge at 0, labelled env and handler only."""
    workit.metrics.Prometheus(prom).observe("test", "sync", FakeState())
    assert gauges(prom, "sync") == {LAST_SUCCESS: 0.0, RUNNING: 0.0, CONSECUTIVE_FAILURES: 0.0}


def test_gauges_are_read_from_the_state_at_scrape_time(prom: CollectorRegistry) -> None:
    """A change of the state shows at the next scrape, with nothing recorded."""
    state = FakeState()
    workit.metrics.Prometheus(prom).observe("test", "sync", state)
    state.last_success = 1_764_633_485.25
    state.running = True
    state.consecutive_failures = 4
    assert gauges(prom, "sync") == {
        LAST_SUCCESS: 1_764_633_485.25,
        RUNNING: 1.0,
        CONSECUTIVE_FAILURES: 4.0,
    }


def test_recording_never_reads_the_state(prom: CollectorRegistry) -> None:
    """Executions recorded cost no read of the observed state; only a scrape reads it."""
    reads: list[str] = []

    class Counted(FakeState):
        def __getattribute__(self, name: str) -> object:
            reads.append(name)
            return super().__getattribute__(name)

    backend = workit.metrics.Prometheus(prom)
    backend.observe("test", "sync", Counted())
    record = backend.recorder("test", "sync")
    for _ in range(100):
        record(0.01, True)
        record(0.01, False)
    assert reads == []
    exposition(prom)
    assert reads


def test_the_latest_observation_of_a_label_set_wins(prom: CollectorRegistry) -> None:
    """Observing a handler again replaces its state: its gauges show once, from the new one."""
    backend = workit.metrics.Prometheus(prom)
    backend.observe("test", "sync", FakeState(consecutive_failures=7))
    workit.metrics.Prometheus(prom).observe("test", "sync", FakeState(consecutive_failures=2))
    assert gauges(prom, "sync")[CONSECUTIVE_FAILURES] == 2.0


def test_gauges_are_kept_apart_by_env_and_handler(prom: CollectorRegistry) -> None:
    """Handlers of one name in two envs, and two handlers of one env, each have their own gauges."""
    backend = workit.metrics.Prometheus(prom)
    backend.observe("staging", "sync", FakeState(consecutive_failures=1))
    backend.observe("production", "sync", FakeState(consecutive_failures=2))
    backend.observe("production", "prune", FakeState(consecutive_failures=3))
    assert gauges(prom, "sync", env="staging")[CONSECUTIVE_FAILURES] == 1.0
    assert gauges(prom, "sync", env="production")[CONSECUTIVE_FAILURES] == 2.0
    assert gauges(prom, "prune", env="production")[CONSECUTIVE_FAILURES] == 3.0


def test_observed_handler_counts_zero_for_both_outcomes(prom: CollectorRegistry) -> None:
    """An observed handler's execution counter is exposed at 0 for success "true" and "false"."""
    workit.metrics.Prometheus(prom).observe("test", "sync", FakeState())
    found = sorted((s.labels["success"], s.value) for s in samples(prom, TOTAL))
    assert found == [("false", 0.0), ("true", 0.0)]
    assert samples(prom, f"{DURATION}_count") == []


def test_recorded_counts_replace_the_zeros(prom: CollectorRegistry) -> None:
    """Once recorded, an outcome's counter shows its count, exposed once; the other stays 0."""
    backend = workit.metrics.Prometheus(prom)
    backend.observe("test", "sync", FakeState())
    backend.recorder("test", "sync")(0.01, False)
    found = sorted((s.labels["success"], s.value) for s in samples(prom, TOTAL))
    assert found == [("false", 1.0), ("true", 0.0)]


@pytest.mark.anyio
async def test_gauges_follow_a_real_handler_state(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """The state an engine keeps (running during ensure, then last success or failures) shows."""
    seen: list[dict[str, float | None]] = []
    failing = True

    async def flaky() -> None:
        seen.append(gauges(prom, "flaky"))
        if failing:
            raise RuntimeError("down")

    # Registry.wrap() registers the handler's state for the gauges of its backend.
    wrapped = registry.wrap(workit.Handler(flaky))
    await wrapped.execute()
    await wrapped.execute()
    assert seen[0][RUNNING] == 1.0
    assert gauges(prom, "flaky") == {LAST_SUCCESS: 0.0, RUNNING: 0.0, CONSECUTIVE_FAILURES: 2.0}
    failing = False
    await wrapped.execute()
    after = gauges(prom, "flaky")
    assert after[CONSECUTIVE_FAILURES] == 0.0
    assert after[LAST_SUCCESS] == wrapped.last_success


def test_the_backends_observe() -> None:
    """Both of workit's backends and the engines' handler state fit the observation protocols."""
    assert isinstance(workit.metrics.Prometheus(CollectorRegistry()), workit.metrics.Observes)
    wrapped = workit.Registry("test", metrics=workit.metrics.Prometheus(CollectorRegistry())).wrap(
        workit.Handler(lambda: None)
    )
    assert isinstance(wrapped, workit.metrics.Observed)
    assert isinstance(FakeState(), workit.metrics.Observed)


# Buckets


def test_custom_buckets_make_the_histogram(prom: CollectorRegistry) -> None:
    """Prometheus(buckets=...) gives the histogram those upper bounds and +Inf."""
    record = workit.metrics.Prometheus(prom, buckets=(1, 10, 60)).recorder("test", "slow")
    record(30.0, True)
    record(0.5, True)
    assert buckets(prom, "slow", "true") == {1.0: 1, 10.0: 1, 60.0: 2, math.inf: 2}


def test_buckets_are_read_back_as_floats(prom: CollectorRegistry) -> None:
    """The backend's buckets are the given bounds as a tuple of floats."""
    assert workit.metrics.Prometheus(prom, buckets=[1, 2.5]).buckets == (1.0, 2.5)
    assert workit.metrics.Prometheus(CollectorRegistry()).buckets == workit.metrics.BUCKETS


BAD_BUCKETS = [
    pytest.param([], ValueError, "empty", id="empty"),
    pytest.param([0, 1], ValueError, "0", id="zero"),
    pytest.param([-1, 1], ValueError, "-1", id="negative"),
    pytest.param([1, math.nan], ValueError, "nan", id="nan"),
    pytest.param([1, math.inf], ValueError, "inf", id="inf"),
    pytest.param([1, 10**400], ValueError, "inf", id="huge-int"),
    pytest.param([2, 1], ValueError, "1.0 after 2.0", id="unsorted"),
    pytest.param([1, 1], ValueError, "1.0 after 1.0", id="repeated"),
    pytest.param(["1"], TypeError, "'1'", id="string-bound"),
    pytest.param([True], TypeError, "True", id="bool-bound"),
    pytest.param("0.5", TypeError, "'0.5'", id="string"),
    pytest.param(None, TypeError, "None", id="none"),
]


@pytest.mark.parametrize(("value", "error", "named"), BAD_BUCKETS)
def test_bad_buckets_are_rejected(value: object, error: type[Exception], named: str) -> None:
    """Buckets must be a non-empty, increasing sequence of positive finite numbers."""
    with pytest.raises(error, match="buckets") as caught:
        workit.metrics.Prometheus(CollectorRegistry(), buckets=value)  # type: ignore[arg-type]
    assert named in str(caught.value)


def test_different_buckets_on_one_collector_registry_are_rejected(prom: CollectorRegistry) -> None:
    """A second backend on a CollectorRegistry with other buckets is a ValueError naming both."""
    workit.metrics.Prometheus(prom, buckets=(1, 2))
    with pytest.raises(ValueError, match="same buckets") as caught:
        workit.metrics.Prometheus(prom)
    assert "(1.0, 2.0)" in str(caught.value)
    assert "(0.1, 0.15" in str(caught.value)


def test_same_custom_buckets_share_one_collector_registry(prom: CollectorRegistry) -> None:
    """Backends given equal buckets in other forms share the registry and add up."""
    workit.metrics.Prometheus(prom, buckets=[1, 2]).recorder("test", "job")(1.5, True)
    workit.metrics.Prometheus(prom, buckets=(1.0, 2.0)).recorder("test", "job")(1.5, True)
    assert buckets(prom, "job", "true") == {1.0: 0, 2.0: 2, math.inf: 2}
