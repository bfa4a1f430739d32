"""``SequenceWorker``: handlers as a directed acyclic graph, one pass at a time."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from graphlib import CycleError, TopologicalSorter
from time import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import anyio
import anyio.lowlevel

from workit._backend import tasks
from workit._duration import seconds
from workit._policy import contain, log
from workit.handler import Proxy
from workit.handler import name as handler_name
from workit.status import EngineInfo
from workit.worker._build import (
    check_backoff,
    check_unique_names,
    describe,
    listed,
    own_handler_calling,
    proxies,
    raise_failure,
)
from workit.worker._engine import DEFAULT_GRACE, Engine
from workit.worker._lifecycle import State

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from workit._backend import Tasks
    from workit._duration import Duration
    from workit.backoff import Backoff
    from workit.handler import Instrumented, SupportsEnsure
    from workit.registry import Registry
    from workit.worker._engine import Run
    from workit.worker._fleet import Leases

__all__ = ["SequenceWorker"]

_Failure = tuple["Instrumented", BaseException]


class SequenceWorker(Engine):
    """Runs handlers as one pipeline: a directed acyclic graph, pass by pass.

    ``handlers`` is a list of steps (each a non-empty list of handlers; step
    *k* starts once every handler of step *k-1* succeeded) or a mapping
    ``{handler: [handlers it depends on]}``. A handler starts as soon as all
    its dependencies succeeded; independent handlers run concurrently;
    inactive handlers are skipped and count as done. On the first failure no
    further handler starts and the running ones finish.

    ``ensure()`` runs one pass on demand. ``daemon()`` runs a pass at start,
    then one ``cooler`` after each pass ended (on-demand passes included);
    with no cooler (the default) it returns at once, and passes run only on
    demand. Passes never overlap. With ``backoff``, the wait after
    consecutive failed passes grows as it says.

    With ``leases``, the pipeline is one unit of the fleet, known by ``name``
    (default ``"pipeline"``): its passes run on one replica at a time, the
    fleet's ledger keeping the cooler between them, and an on-demand pass
    runs only on the replica that owns it.
    """

    engine: ClassVar[Literal["parallel", "sequence"]] = "sequence"

    def __init__(
        self,
        handlers: Sequence[Iterable[SupportsEnsure]] | Mapping[Any, Iterable[SupportsEnsure]],
        *,
        cooler: Duration | None = None,
        registry: Registry,
        logger: logging.Logger | None = None,
        grace: Duration = DEFAULT_GRACE,
        backoff: Backoff | None = None,
        leases: Leases | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(registry=registry, logger=logger, grace=grace, leases=leases)
        if name is not None and not (isinstance(name, str) and name):
            raise ValueError(f"SequenceWorker name must be a non-empty string, got {name!r}")
        self.name: str = "pipeline" if name is None else name
        nodes, self._graph = _build_graph(handlers)
        self.handlers: tuple[Instrumented, ...] = tuple(
            registry.wrap(node, logger=self.logger) for node in nodes
        )
        # What a pass needs of the graph, validated (acyclic) by _build_graph: how
        # many dependencies each handler has, and which handlers depend on each.
        self._indegree = [len(self._graph[node]) for node in range(len(nodes))]
        dependents: list[list[int]] = [[] for _ in nodes]
        for node, dependencies in self._graph.items():
            for dependency in dependencies:
                dependents[dependency].append(node)
        self._dependents = tuple(tuple(each) for each in dependents)
        self._roots = [node for node, count in enumerate(self._indegree) if not count]
        self.cooler: float | None = (
            None if cooler is None else seconds(cooler, "SequenceWorker cooler")
        )
        self.backoff: Backoff | None = check_backoff(backoff, "SequenceWorker")
        self._lock: anyio.Lock | None = None
        self._lock_loop: object = None  # the event loop the lock belongs to
        self._due = -math.inf  # when the daemon's next pass is due, on the loop's clock
        self._failed_passes = 0
        self._backoff_failed = False
        self._pass_ended: anyio.Event | None = None
        self._next_pass: float | None = None

    @property
    def dependencies(self) -> dict[str, list[str]]:
        """Each handler's name and the names of the handlers it depends on."""
        names = [handler.name for handler in self.handlers]
        return {names[node]: [names[dep] for dep in deps] for node, deps in self._graph.items()}

    async def ensure(self) -> None:
        """Run one pass over the graph now.

        Raises ``HandlerError`` for the first handler that failed (its
        ``__cause__`` is what it raised, even an exception the registry
        ignores) or ``HandlerTimeout`` when it exceeded its timeout. The
        daemon's next pass comes ``cooler`` after this one ended. Raises
        ``RuntimeError`` while the daemon stops, when a stop cut the pass
        short, and when called from a handler of a pass of this worker
        (which would wait for itself).
        """
        caller = self._own_handler_calling()
        if caller is not None:
            raise RuntimeError(
                f"{self!r}.ensure() called by its own handler {caller!r} during a pass: "
                "the pass would wait for itself"
            )
        membership = self._membership
        if membership is not None and membership.claim(self.name) is None:
            raise RuntimeError(
                f"{self!r} is not this replica's to run: its fleet gives {self.name!r} to "
                f"{membership.owner_of(self.name) or 'no replica yet'}"
            )
        with self._on_demand():
            outcome = await self._locked_pass(due_only=False)
        if isinstance(outcome, _Pass):
            raise RuntimeError(
                f"{self!r} stopped during the pass: {', '.join(map(repr, outcome.not_run()))} "
                "did not run"
            )
        if outcome is not None:
            raise_failure(*outcome)

    def _own_handler_calling(self) -> str | None:
        """The name of this worker's handler whose execution calls, if one does."""
        return own_handler_calling(self.handlers)

    def describe(self) -> tuple[EngineInfo, ...]:
        """The handlers with their timeouts, the pass's cooler and the graph."""
        handlers = tuple(describe(handler, cooler=False) for handler in self.handlers)
        return (
            EngineInfo(
                kind="sequence",
                handlers=handlers,
                cooler=self.cooler,
                dependencies=self.dependencies,
            ),
        )

    def _pipelines(self) -> int:
        return 1 if self.cooler else 0

    @property
    def units(self) -> tuple[str, ...]:
        """The one name the pipeline is known by to a fleet under leases."""
        return (self.name,)

    def _unit_of_each(self) -> tuple[str, ...]:
        return (self.name,) * len(self.handlers)

    def _start(self, tasks: TaskGroup, run: Run) -> None:
        run.live += 1
        loop = self._loop if self._membership is None else self._leased_loop
        tasks.start_soon(loop, run, name="workit:sequence")

    async def _leased_loop(self, run: Run) -> None:
        """The passes under leases: each once this replica owns the pipeline and it is due."""
        membership = self._membership
        assert membership is not None
        try:
            while not self.stopping:
                claim = await membership.acquire(self.name, cooler=self.cooler)
                if claim is None or self.stopping:
                    return
                for handler in self.handlers:
                    handler.claim = claim
                await self._locked_pass(due_only=False)
        finally:
            run.ended()

    async def _loop(self, run: Run) -> None:
        try:
            await self._locked_pass(due_only=False)
            while not self.stopping:
                await self._cool()
                if self.stopping:
                    return
                await self._locked_pass(due_only=True)
        finally:
            run.ended()

    async def _cool(self) -> None:
        """Wait until the next pass is due: ``cooler`` after the last pass ended."""
        while not self.stopping:
            delay = self._due - anyio.current_time()
            if delay <= 0:
                return
            self._pass_ended = anyio.Event()
            with anyio.move_on_after(delay):
                await self._pass_ended.wait()

    def _wake(self) -> None:
        if self._pass_ended is not None:
            self._pass_ended.set()

    async def _locked_pass(self, *, due_only: bool) -> _Failure | _Pass | None:
        """A pass, one at a time: its failure, or the pass when a stop cut it short."""
        loop = anyio.lowlevel.current_token().native_token
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = anyio.Lock(), loop  # a lock serves one event loop
        async with self._lock:
            if due_only and (self._state is State.STOPPING or anyio.current_time() < self._due):
                return None  # an on-demand pass ran meanwhile
            one = _Pass(self)
            failure = None
            membership = self._membership
            if membership is not None:  # the fleet's ledger: a pass runs
                membership.started(self.name, cooler=self.cooler)
            try:
                failure = await one.run()
            finally:
                self._passed(failure)
                if membership is not None:
                    membership.finished(self.name, cooler=self._due - anyio.current_time())
            if failure is None and one.cut:
                return one
            return failure

    def _passed(self, failure: _Failure | None) -> None:
        """Plan the next pass: ``cooler`` from now, or longer when backing off."""
        failed = failure is not None and failure[0].last_outcome == "failure"
        self._failed_passes = self._failed_passes + 1 if failed else 0
        pause = self.cooler or 0.0
        if self.backoff is not None and self._failed_passes:
            pause = max(pause, self._backoff_delay())
        self._due = anyio.current_time() + pause
        if self.cooler:
            self._next_pass = time() + pause
        if self._pass_ended is not None:
            self._pass_ended.set()

    def _backoff_delay(self) -> float:
        assert self.backoff is not None
        try:
            return self.backoff.delay(self._failed_passes)
        except BaseException as error:  # a random source that raises: the longest wait then
            contain(error)
            if not self._backoff_failed:
                self._backoff_failed = True  # reported once
                log(
                    self.logger,
                    logging.ERROR,
                    "worker backoff failed: the pipeline waits the maximum, %.3g s",
                    self.backoff.maximum,
                    exc_info=error,
                )
            return self.backoff.maximum

    def _next_run(self, handler: Instrumented) -> float | None:
        return self._next_pass

    def __repr__(self) -> str:
        return f"SequenceWorker({self.dependencies!r}, cooler={self.cooler!r})"


class _Pass:
    """One pass over the graph: each handler starts once its dependencies are done.

    Each handler's count of dependencies not done yet drops as they succeed;
    at zero it starts, from the task of the dependency that succeeded last (no
    round trip through the pass's task). An inactive handler is done at once.
    After the first failure (or a stop) no handler starts; the running ones
    finish. (The graph was checked for cycles once, at construction: a
    graphlib sorter per pass would check it again, milliseconds for 1,000
    nodes, before the first handler starts.)
    """

    __slots__ = ("_done", "_engine", "_group", "_waiting", "cut", "failure")

    def __init__(self, engine: SequenceWorker) -> None:
        self._engine = engine
        self._waiting = engine._indegree.copy()
        self._done = bytearray(len(self._waiting))
        self._group: Tasks | None = None
        self.failure: _Failure | None = None
        self.cut = False  # a stop kept handlers from starting

    async def run(self) -> _Failure | None:
        """Run the pass; the first failure, if any."""
        async with tasks() as group:
            self._group = group
            self._start(list(self._engine._roots))
        self._group = None
        return self.failure

    def not_run(self) -> list[str]:
        """The names of the handlers the pass did not finish."""
        handlers = self._engine.handlers
        return [handlers[node].name for node, done in enumerate(self._done) if not done]

    def _start(self, nodes: list[int]) -> None:
        handlers = self._engine.handlers
        for node in nodes:  # grows as inactive handlers release their dependents
            if self.failure is not None:
                return
            if self._engine._state is State.STOPPING:
                self.cut = True
                return
            handler = handlers[node]
            answer = handler.decide()
            if answer is True:
                assert self._group is not None
                self._group.spawn(self._run, node, name=handler.name)
            elif answer is False:
                nodes += self._released(node)
            else:
                self.failure = (handler, answer)
                return

    def _released(self, node: int) -> list[int]:
        """The dependents of ``node``, done now, that have nothing left to wait for."""
        self._done[node] = 1
        waiting = self._waiting
        ready = []
        for dependent in self._engine._dependents[node]:
            waiting[dependent] -= 1
            if not waiting[dependent]:
                ready.append(dependent)
        return ready

    async def _run(self, node: int) -> None:
        handler = self._engine.handlers[node]
        error = await handler.execute()
        if error is None:
            self._start(self._released(node))
        elif self.failure is None:
            self.failure = (handler, error)


def _build_graph(
    handlers: object,
) -> tuple[list[Proxy], dict[int, tuple[int, ...]]]:
    """The handlers and, by index, each one's dependencies; checked for errors."""
    if isinstance(handlers, Mapping):
        nodes, graph = _from_mapping(handlers)
    else:
        nodes, graph = _from_steps(listed(handlers, "SequenceWorker handlers"))
    check_unique_names(nodes, "SequenceWorker")
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        cycle = " -> ".join(nodes[node].name for node in error.args[1])
        raise ValueError(f"SequenceWorker: the graph has a cycle: {cycle}") from None
    return nodes, graph


def _from_steps(steps: list[object]) -> tuple[list[Proxy], dict[int, tuple[int, ...]]]:
    if not steps:
        raise ValueError("SequenceWorker needs at least one step")
    nodes: list[Proxy] = []
    graph: dict[int, tuple[int, ...]] = {}
    previous: tuple[int, ...] = ()
    for number, step in enumerate(steps):
        if not isinstance(step, (list, tuple)):
            raise TypeError(
                f"SequenceWorker step {number} must be a list of handlers, got {step!r}; "
                "write a single handler as [handler]"
            )
        if not step:
            raise ValueError(f"SequenceWorker step {number} is empty")
        first = len(nodes)
        nodes.extend(proxies(step, f"SequenceWorker step {number}, handler"))
        current = tuple(range(first, len(nodes)))
        for node in current:
            graph[node] = previous
        previous = current
    return nodes, graph


def _from_mapping(
    mapping: Mapping[Any, object],
) -> tuple[list[Proxy], dict[int, tuple[int, ...]]]:
    if not mapping:
        raise ValueError("SequenceWorker needs at least one handler")
    keys = list(mapping)
    nodes = proxies(keys, "SequenceWorker handler")
    index = {id(key): number for number, key in enumerate(keys)}
    graph: dict[int, tuple[int, ...]] = {}
    for number, dependencies in enumerate(mapping.values()):
        where = f"SequenceWorker handler {nodes[number].name!r}"
        items = listed(dependencies, f"{where} dependencies")
        deps: list[int] = []
        for dependency in items:
            found = index.get(id(dependency))
            if found is None and not callable(getattr(dependency, "ensure", None)):
                raise TypeError(f"{where} depends on {dependency!r}, which is not a handler")
            if found is None:
                raise ValueError(
                    f"{where} depends on {_describe(dependency)}, which is not in the graph; "
                    "add it as a key (with [] if it depends on nothing)"
                )
            deps.append(found)
        graph[number] = tuple(dict.fromkeys(deps))
    return nodes, graph


def _describe(handler: object) -> str:
    return repr(handler_name(handler))
