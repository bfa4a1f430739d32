"""workit as a benchmarked system: ParallelWorker and SequenceWorker.

Metrics are on, recorded by ``workit.metrics.Prometheus`` into a
``CollectorRegistry`` of the benchmark's own; debug logging is off (the
``workit`` logger is left at the default WARNING level of the root logger).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

import workit
from bench._measure import Probe
from workit.metrics import Prometheus

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from contextlib import AbstractAsyncContextManager

    from bench._dag import Dag

__all__ = ["Workit"]


def _registry() -> workit.Registry:
    return workit.Registry("bench", metrics=Prometheus(CollectorRegistry()))


class _Node:
    """One DAG node as a workit handler."""

    __slots__ = ("dag", "index", "name")

    def __init__(self, dag: Dag, index: int) -> None:
        self.name = f"node{index}"
        self.dag = dag
        self.index = index

    async def ensure(self) -> None:
        await self.dag.run_node(self.index)


class Workit:
    """Jobs as ``workit.Handler(job, cooler=..., name=...)`` in one ``ParallelWorker``.

    ``stop()`` is ``worker.stop()`` and then awaiting ``daemon()``'s return.
    A DAG is a ``SequenceWorker`` built once; a pass is ``await worker.ensure()``.
    """

    def __init__(self) -> None:
        self._worker: workit.ParallelWorker | None = None
        self._daemon: asyncio.Task[None] | None = None

    async def start(
        self,
        jobs: Sequence[Callable[[], object]],
        *,
        cooler: float,
        sync: bool,
        jitter: float = 0.0,
    ) -> None:
        # `sync` needs nothing here: workit runs a plain function in a worker thread itself.
        # `jitter` is passed only when set, so that an older workit without it runs too.
        handlers = [
            workit.Handler(job, cooler=cooler, jitter=jitter, name=f"job{index}")
            if jitter
            else workit.Handler(job, cooler=cooler, name=f"job{index}")
            for index, job in enumerate(jobs)
        ]
        self._worker = worker = workit.ParallelWorker(handlers, registry=_registry())
        if jitter:
            # Each probe measures its lateness against the wait workit drew for it too.
            for job, instrumented in zip(jobs, worker.handlers, strict=True):
                probe = getattr(job, "__self__", None)
                if isinstance(probe, Probe):
                    probe.planned = instrumented
        self._daemon = asyncio.create_task(self._worker.daemon(), name="workit daemon")
        await self._worker.wait_ready()

    async def stop(self) -> None:
        assert self._worker is not None, "start() first"
        assert self._daemon is not None, "start() first"
        self._worker.stop()
        await self._daemon

    def serve_status(self, host: str, port: int) -> AbstractAsyncContextManager[None]:
        """``workit.http.serve(worker, host, port)``: the HTTP endpoints, ``/status`` included."""
        import workit.http

        assert self._worker is not None, "start() first"
        return workit.http.serve(self._worker, host, port)

    def build_status(self) -> bytes:
        """The body ``/status`` serves, built as ``workit.http`` builds it, on this thread."""
        assert self._worker is not None, "start() first"
        status = self._worker.status().to_dict()
        return json.dumps(status, separators=(",", ":")).encode()

    def dag_pass(self, dag: Dag) -> Callable[[], Awaitable[None]]:
        nodes = [_Node(dag, index) for index in range(len(dag.durations))]
        # Annotated: Mapping keys are invariant, so dict[_Node, ...] would not match.
        graph: dict[object, list[_Node]] = {
            node: [nodes[dep] for dep in dependencies]
            for node, dependencies in zip(nodes, dag.dependencies, strict=True)
        }
        return workit.SequenceWorker(graph, registry=_registry()).ensure

    def notes(self) -> dict[str, int]:
        return {}
