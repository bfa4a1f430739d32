"""SequenceWorker properties: random DAGs with random outcomes, invariants checked on every pass.

Each example builds a random acyclic graph (mapping or list-of-steps form) of up
to 30 nodes, gives every node a behaviour per pass (succeed, fail, raise an
ignored exception, be inactive, be slow) and a duration, runs the passes on
trio with a fake clock, and checks what happened against the contract from the
recorded starts and ends alone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Literal, TypeVar

import anyio
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from trio.testing import MockClock

import workit
from tests.support import DURATION, TOTAL
from workit import HandlerError, SequenceWorker

if TYPE_CHECKING:
    from collections.abc import Sequence

T = TypeVar("T")
Behaviour = Literal["succeed", "fail", "ignored", "inactive", "slow"]
Form = Literal["mapping", "steps"]

ENV = "prop"
MAX_NODES = 30
MAX_DURATION = 5
SLOW = 20
"""Extra seconds a slow node takes, so it outlives whole chains of ordinary ones."""
PASS_DEADLINE = 3600.0
"""Fake seconds a pass may take: far more than 30 nodes of at most 25 s in a chain."""

FAILING: frozenset[Behaviour] = frozenset({"fail", "ignored"})
SUCCEEDING: frozenset[Behaviour] = frozenset({"succeed", "slow"})
BEHAVIOURS: tuple[Behaviour, ...] = ("succeed", "fail", "ignored", "inactive", "slow")
HARMLESS: tuple[Behaviour, ...] = ("succeed", "inactive", "slow")


class Failed(Exception):
    """What a failing node raises."""


class Skipped(Exception):
    """What an ignored node raises: the registry's ``ignore`` filter matches it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one node does in one pass."""

    behaviour: Behaviour
    duration: int

    @property
    def seconds(self) -> int:
        return self.duration + (SLOW if self.behaviour == "slow" else 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A graph, how it is handed to the worker, and each node's plan per pass.

    Nodes are numbered so that every dependency has a lower number; the worker
    sees them in ``order`` (mapping form) or as ``steps``.
    """

    form: Form
    dependencies: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]
    steps: tuple[tuple[int, ...], ...]
    plans: tuple[tuple[Plan, ...], ...]

    @property
    def size(self) -> int:
        return len(self.dependencies)

    def handlers(self, nodes: Sequence[Node]) -> dict[object, list[Node]] | list[list[Node]]:
        """The argument for ``SequenceWorker``, in this scenario's form."""
        if self.form == "mapping":
            return {
                nodes[index]: [nodes[dep] for dep in self.dependencies[index]]
                for index in self.order
            }
        return [[nodes[index] for index in step] for step in self.steps]


@dataclass(slots=True)
class Execution:
    """One run of a node's ``ensure()``, on the fake clock."""

    node: int
    start: float
    end: float | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class PassRecord:
    """What one pass did: its executions, the order of events, how it ended."""

    number: int
    began: float
    executions: list[Execution] = field(default_factory=list)
    events: list[tuple[Literal["start", "end"], int]] = field(default_factory=list)
    returned: float = math.nan
    raised: BaseException | None = None


class Recorder:
    """Shared by the nodes of one example: the current pass and what it recorded."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.passes: list[PassRecord] = []

    def begin(self) -> PassRecord:
        record = PassRecord(number=len(self.passes), began=anyio.current_time())
        self.passes.append(record)
        return record

    @property
    def current(self) -> PassRecord:
        return self.passes[-1]

    def plan(self, node: int) -> Plan:
        return self.scenario.plans[self.current.number][node]


class Node:
    """A handler that plays its plan and records when it started and ended."""

    def __init__(self, index: int, recorder: Recorder) -> None:
        self.index = index
        self.name = f"n{index:02d}"
        self._recorder = recorder

    def active(self) -> bool:
        return self._recorder.plan(self.index).behaviour != "inactive"

    async def ensure(self) -> None:
        record = self._recorder.current
        plan = self._recorder.plan(self.index)
        execution = Execution(self.index, anyio.current_time())
        record.executions.append(execution)
        record.events.append(("start", self.index))
        await anyio.sleep(plan.seconds)
        execution.end = anyio.current_time()
        record.events.append(("end", self.index))
        if plan.behaviour == "fail":
            execution.error = Failed(self.name)
        elif plan.behaviour == "ignored":
            execution.error = Skipped(self.name)
        if execution.error is not None:
            raise execution.error

    def __repr__(self) -> str:
        return f"Node({self.name!r})"


class Capture(logging.Handler):
    """Keeps the records of one example's logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# Strategies


def graphs(nodes: st.SearchStrategy[T]) -> st.SearchStrategy[list[T]]:
    """1..30 nodes, often many: hypothesis alone would average about six."""
    return st.lists(nodes, min_size=1, max_size=MAX_NODES) | st.lists(
        nodes, min_size=MAX_NODES // 2, max_size=MAX_NODES
    )


@st.composite
def scenarios(draw: st.DrawFn, *, passes: int) -> Scenario:
    """A random DAG of 1..30 nodes in either form, with a plan per node per pass.

    Each node is drawn whole (its links, its place, its plans), so shrinking
    deletes nodes one by one.
    """
    form: Form = draw(st.sampled_from(("mapping", "steps")))
    # Half the examples cannot fail, so complete passes over big graphs are common.
    behaviours = BEHAVIOURS if draw(st.booleans()) else HARMLESS
    # One choice per plan, simplest first: cheap to draw, quick to shrink.
    plan = st.sampled_from(
        [Plan(behaviour=b, duration=d) for b in behaviours for d in range(MAX_DURATION + 1)]
    )
    plans = st.tuples(*[plan] * passes)
    if form == "steps":
        # Whether each node opens a new step; step k depends on all of step k-1.
        specs = draw(graphs(st.tuples(st.booleans(), plans)))
        bounds = [0, *(index for index, (new, _) in enumerate(specs) if new and index), len(specs)]
        steps = tuple(tuple(range(low, high)) for low, high in pairwise(bounds))
        dependencies = tuple(
            previous for previous, step in zip(((), *steps), steps, strict=False) for _ in step
        )
        order: tuple[int, ...] = ()
    else:
        # Node i depends on nodes i - k, some k (so only on earlier nodes: acyclic by
        # construction), listed in random order; a random rank per node shuffles the keys.
        links = st.lists(st.integers(1, MAX_NODES - 1), unique=True)
        nodes = st.tuples(links, st.integers(0, MAX_NODES - 1), plans)
        mapped = draw(graphs(nodes))
        dependencies = tuple(
            tuple(index - back for back in backs if back <= index)
            for index, (backs, _, _) in enumerate(mapped)
        )
        order = tuple(sorted(range(len(mapped)), key=lambda index: (mapped[index][1], index)))
        steps = ()
        specs = [(False, node_plans) for _, _, node_plans in mapped]
    return Scenario(
        form=form,
        dependencies=dependencies,
        order=order,
        steps=steps,
        plans=tuple(zip(*(node_plans for _, node_plans in specs), strict=True)),
    )


# Running and checking


def play(scenario: Scenario) -> list[PassRecord]:
    """Run ``scenario``'s passes with ``ensure()`` on a fake clock; check every invariant."""
    prom = CollectorRegistry()
    logger = logging.Logger("workit.tests.properties", logging.INFO)  # not in the hierarchy
    capture = Capture()
    logger.addHandler(capture)
    registry = workit.Registry(
        ENV,
        ignore=lambda error: isinstance(error, Skipped),
        metrics=workit.metrics.Prometheus(prom),
        logger=logger,
    )
    recorder = Recorder(scenario)
    nodes = [Node(index, recorder) for index in range(scenario.size)]
    worker = SequenceWorker(scenario.handlers(nodes), registry=registry)

    async def passes() -> None:
        for _ in scenario.plans:
            record = recorder.begin()
            try:
                with anyio.fail_after(PASS_DEADLINE):
                    await worker.ensure()
            except HandlerError as error:
                record.raised = error
            record.returned = anyio.current_time()

    anyio.run(passes, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})

    successes = [0] * scenario.size
    failures = [0] * scenario.size
    for record in recorder.passes:
        check_pass(scenario, record, registry, nodes)
        for execution in record.executions:
            behaviour = scenario.plans[record.number][execution.node].behaviour
            if behaviour == "fail":
                failures[execution.node] += 1
            else:
                successes[execution.node] += 1
    check_metrics(prom, nodes, successes, failures)
    check_error_logs(capture.records, nodes, failures)
    return recorder.passes


def check_pass(
    scenario: Scenario, record: PassRecord, registry: workit.Registry, nodes: Sequence[Node]
) -> None:
    """The invariants of one pass, derived from what the nodes recorded."""
    plans = scenario.plans[record.number]
    where = f"pass {record.number}"
    started: dict[int, Execution] = {}
    for execution in record.executions:
        name = nodes[execution.node].name
        assert execution.node not in started, f"{where}: {name} ran twice"
        assert plans[execution.node].behaviour != "inactive", f"{where}: inactive {name} ran"
        # Running nodes finish: the pass returns only after every execution ended.
        assert execution.end is not None, f"{where}: {name} never finished"
        assert execution.end <= record.returned, f"{where}: returned before {name} ended"
        started[execution.node] = execution
    position = {event: index for index, event in enumerate(record.events)}

    failed = [e for e in started.values() if plans[e.node].behaviour in FAILING]
    first_failure = min((e.end for e in failed if e.end is not None), default=math.inf)

    # When each node is done (None: never), and when it is ready: once all its
    # dependencies are done, or at once for a root. An inactive node is done as
    # soon as it is ready; a node that started is done when it ended well.
    done: list[float | None] = []
    ready: list[float | None] = []
    for node, deps in enumerate(scenario.dependencies):
        times = [done[dep] for dep in deps]
        if not times:
            ready.append(record.began)
        elif None in times:
            ready.append(None)
        else:
            ready.append(max(time for time in times if time is not None))
        if plans[node].behaviour == "inactive":
            done.append(ready[node])
        elif node in started and plans[node].behaviour in SUCCEEDING:
            done.append(started[node].end)
        else:
            done.append(None)

    for node, deps in enumerate(scenario.dependencies):
        name = nodes[node].name
        run = started.get(node)
        if run is None:
            # Nothing stalls: a node ready before the first failure was seen runs.
            due = ready[node]
            assert plans[node].behaviour == "inactive" or due is None or due >= first_failure, (
                f"{where}: {name} was ready at {due} (first failure {first_failure}) but never ran"
            )
            continue
        for dep in deps:
            dep_name, dep_plan = nodes[dep].name, plans[dep]
            if dep_plan.behaviour == "inactive":
                assert dep not in started, f"{where}: {name} started after inactive {dep_name} ran"
                continue
            assert dep in started, f"{where}: {name} started though {dep_name} never ran"
            assert dep_plan.behaviour in SUCCEEDING, (
                f"{where}: {name} started though {dep_name} {dep_plan.behaviour}"
            )
            dep_end = started[dep].end
            assert dep_end is not None
            assert dep_end <= run.start, f"{where}: {name} started before {dep_name} ended"
            assert position[("end", dep)] < position[("start", node)], (
                f"{where}: {name} started before {dep_name} ended (event order)"
            )
        # Covers the inactive dependencies' own dependencies, transitively.
        assert ready[node] is not None, f"{where}: {name} started though not all deps were done"
        # Ready nodes start at once, so independent ready nodes overlap.
        assert run.start == ready[node], (
            f"{where}: {name} ready at {ready[node]} but started at {run.start}"
        )
        # After the first failure was seen, nothing new starts.
        assert run.start <= first_failure, (
            f"{where}: {name} started at {run.start}, after the failure at {first_failure}"
        )

    ends = [e.end for e in started.values() if e.end is not None]
    assert record.returned == max(ends, default=record.began), (
        f"{where}: returned at {record.returned}, last execution ended at {max(ends, default=None)}"
    )

    if not failed:
        assert record.raised is None, (
            f"{where}: raised {record.raised!r} from {record.raised.__cause__!r} "
            "though nothing failed"
        )
        ran = {node for node, plan in enumerate(plans) if plan.behaviour != "inactive"}
        assert set(started) == ran, f"{where}: complete pass ran {sorted(started)}"
        return
    error = record.raised
    assert type(error) is HandlerError, f"{where}: {failed!r} failed but it raised {error!r}"
    culprits = {nodes[e.node].name: e for e in failed if e.end == first_failure}
    assert error.handler in culprits, (
        f"{where}: HandlerError names {error.handler!r}, first failures were {sorted(culprits)}"
    )
    culprit = culprits[error.handler]
    cause = error.__cause__
    assert cause is not None, f"{where}: HandlerError without a cause"
    assert cause is culprit.error, f"{where}: cause {cause!r}"
    assert registry.ignores(cause) is (plans[culprit.node].behaviour == "ignored")


def check_metrics(
    prom: CollectorRegistry, nodes: Sequence[Node], successes: list[int], failures: list[int]
) -> None:
    """Counters and histogram counts equal the executions, exactly, per node and outcome."""
    # One scrape: get_sample_value() would collect everything once per lookup.
    samples: dict[tuple[str, str, str], float] = {}
    for metric in prom.collect():
        for sample in metric.samples:
            labels = sample.labels
            assert labels.get("env") == ENV, f"{sample.name} with labels {labels}"
            if "success" in labels and sample.value:  # the gauges and the zeros aside
                samples[sample.name, labels["handler"], labels["success"]] = sample.value
    executed = {node.name for node in nodes if successes[node.index] + failures[node.index]}
    strays = {handler for _, handler, _ in samples} - executed
    # Never executed (inactive or never started): nothing counted.
    assert not strays, f"samples for handlers that never executed: {sorted(strays)}"
    for node in nodes:
        for success, expected in (("true", successes[node.index]), ("false", failures[node.index])):
            total = samples.get((TOTAL, node.name, success), 0)
            count = samples.get((f"{DURATION}_count", node.name, success), 0)
            assert total == expected, f"{node.name} success={success}: {total} != {expected}"
            assert count == expected, f"{node.name} success={success} histogram: {count}"
    recorded = sum(value for (name, _, _), value in samples.items() if name == TOTAL)
    assert recorded == sum(successes) + sum(failures), f"{recorded} executions recorded in all"


def check_error_logs(
    records: Sequence[logging.LogRecord], nodes: Sequence[Node], failures: list[int]
) -> None:
    """One error log per failed execution, none for ignored ones."""
    logged = [0] * len(nodes)
    names = {node.name: node.index for node in nodes}
    for record in records:
        if record.levelno >= logging.ERROR:
            assert record.getMessage().startswith("worker execution failed"), record.getMessage()
            logged[names[record.__dict__["handler"]]] += 1
    assert logged == failures


def tell(scenario: Scenario, records: Sequence[PassRecord]) -> None:
    """Label the example for ``--hypothesis-show-statistics``."""
    low = (scenario.size - 1) // 10 * 10 + 1
    event(f"{low}-{low + 9} nodes")
    for record in records:
        event(f"{scenario.form} pass {'failed' if record.raised else 'completed'}")


# The properties

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    # A regression should fail CI in seconds, not minutes: shrink one failure, and
    # skip the explain phase, which re-runs it hundreds of times under a tracer.
    report_multiple_bugs=False,
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
)


@PROPERTY
@given(scenarios(passes=1))
def test_one_pass_respects_dependencies_failures_and_metrics(scenario: Scenario) -> None:
    """One pass over a random DAG starts, stops, raises and counts as the contract says."""
    tell(scenario, play(scenario))


@PROPERTY
@given(scenarios(passes=2))
def test_two_passes_in_a_row_add_up(scenario: Scenario) -> None:
    """Two passes with new outcomes each: every pass holds, and the metrics add up."""
    tell(scenario, play(scenario))
