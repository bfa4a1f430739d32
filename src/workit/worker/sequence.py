"""``SequenceWorker``: handlers as a directed acyclic graph, one pass at a time."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from graphlib import CycleError, TopologicalSorter
from time import time
from typing import TYPE_CHECKING, Any

import anyio

from workit._duration import seconds
from workit.handler import Proxy
from workit.handler import name as handler_name
from workit.handler._instrument import is_cancellation
from workit.worker._loop import (
    DEFAULT_GRACE,
    Engine,
    check_backoff,
    check_unique_names,
    listed,
    proxies,
    raise_failure,
    spawner,
)

if TYPE_CHECKING:
    import logging

    from anyio.abc import TaskGroup

    from workit._duration import Duration
    from workit.backoff import Backoff
    from workit.handler import Instrumented
    from workit.handler._instrument import HandlerState
    from workit.registry import Registry

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
    with no cooler it returns at once. Passes never overlap. With
    ``backoff``, the wait after consecutive failed passes grows as it says.
    """

    engine = "sequence"

    def __init__(
        self,
        handlers: Sequence[Iterable[object]] | Mapping[Any, Iterable[object]],
        *,
        cooler: Duration | None = None,
        registry: Registry,
        logger: logging.Logger | None = None,
        grace: Duration = DEFAULT_GRACE,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(registry=registry, logger=logger, grace=grace)
        nodes, self._graph = _build_graph(handlers)
        self.handlers = tuple(registry.wrap(node, logger=self.logger) for node in nodes)
        # What a pass needs of the graph, validated (acyclic) by _build_graph: how
        # many dependencies each handler has, and which handlers depend on each.
        self._indegree = [len(self._graph[node]) for node in range(len(nodes))]
        dependents: list[list[int]] = [[] for _ in nodes]
        for node, dependencies in self._graph.items():
            for dependency in dependencies:
                dependents[dependency].append(node)
        self._dependents = tuple(tuple(each) for each in dependents)
        self._roots = [node for node, count in enumerate(self._indegree) if not count]
        self.cooler = None if cooler is None else seconds(cooler, "SequenceWorker cooler")
        self.backoff = check_backoff(backoff, "SequenceWorker")
        self._lock: anyio.Lock | None = None
        self._due = -math.inf  # when the daemon's next pass is due, on the loop's clock
        self._failed_passes = 0
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
        daemon's next pass comes ``cooler`` after this one ended.
        """
        failure = await self._locked_pass(due_only=False)
        if failure is not None:
            raise_failure(*failure)

    def _pipelines(self) -> int:
        return 1 if self.cooler else 0

    def _start(self, tasks: TaskGroup) -> None:
        tasks.start_soon(self._loop, name="workit:sequence")

    async def _loop(self) -> None:
        await self._locked_pass(due_only=False)
        while not self._stopping:
            await self._cool()
            if self._stopping:
                return
            await self._locked_pass(due_only=True)

    async def _cool(self) -> None:
        """Wait until the next pass is due: ``cooler`` after the last pass ended."""
        while not self._stopping:
            delay = self._due - anyio.current_time()
            if delay <= 0:
                return
            self._pass_ended = anyio.Event()
            with anyio.move_on_after(delay):
                await self._pass_ended.wait()

    async def _locked_pass(self, *, due_only: bool) -> _Failure | None:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if due_only and (self._stopping or anyio.current_time() < self._due):
                return None  # an on-demand pass ran meanwhile
            failure = None
            try:
                failure = await self._pass()
                return failure
            finally:
                self._passed(failure)

    def _passed(self, failure: _Failure | None) -> None:
        """Plan the next pass: ``cooler`` from now, or longer when backing off."""
        failed = failure is not None and failure[0].state.last_outcome == "failure"
        self._failed_passes = self._failed_passes + 1 if failed else 0
        pause = self.cooler or 0.0
        if self.backoff is not None and self._failed_passes:
            pause = max(pause, self.backoff.delay(self._failed_passes))
        self._due = anyio.current_time() + pause
        if self.cooler:
            self._next_pass = time() + pause
        if self._pass_ended is not None:
            self._pass_ended.set()

    def _next_run(self, state: HandlerState) -> float | None:
        if not self._running or self._stopping:
            return None
        return self._next_pass

    async def _pass(self) -> _Failure | None:
        """One pass: start each handler once its dependencies are done.

        Each handler's count of dependencies not done yet drops as they
        succeed; at zero it starts, from the task of the dependency that
        succeeded last (no round trip through this one). An inactive handler
        is done at once. After the first failure (or a stop) no handler
        starts; the running ones finish. (The graph was checked for cycles
        once, at construction: a graphlib sorter per pass would check it
        again, milliseconds for 1,000 nodes, before the first handler starts.)
        """
        waiting = self._indegree.copy()
        dependents = self._dependents
        failure: _Failure | None = None

        async with spawner() as spawn:

            def start(nodes: list[int]) -> None:
                nonlocal failure
                for node in nodes:  # grows as inactive handlers release their dependents
                    if failure is not None or self._stopping:
                        return
                    handler = self.handlers[node]
                    try:
                        active = handler.proxy.active()
                    except BaseException as error:
                        if is_cancellation(error):
                            raise
                        handler.report(error)
                        failure = (handler, error)
                        return
                    handler.state.active = active
                    if active:
                        spawn(run, node, name=handler.name)
                    else:
                        nodes += released(node)

            def released(node: int) -> list[int]:
                """The dependents of ``node``, done now, that have nothing left to wait for."""
                ready = []
                for dependent in dependents[node]:
                    waiting[dependent] -= 1
                    if not waiting[dependent]:
                        ready.append(dependent)
                return ready

            async def run(node: int) -> None:
                nonlocal failure
                handler = self.handlers[node]
                error = await self._execute(handler)
                if error is None:
                    start(released(node))
                elif failure is None:
                    failure = (handler, error)

            start(list(self._roots))
        return failure

    def __repr__(self) -> str:
        return f"SequenceWorker({self.dependencies!r}, cooler={self.cooler!r})"


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
