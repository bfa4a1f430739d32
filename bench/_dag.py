"""The random DAG of the ``dag`` scenario, its nodes' work and its critical paths."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Dag", "random_dag"]


def _longest_path(durations: Sequence[float], dependencies: Sequence[tuple[int, ...]]) -> float:
    finish: list[float] = []
    for duration, before in zip(durations, dependencies, strict=True):
        finish.append(duration + max((finish[dep] for dep in before), default=0.0))
    return max(finish)


@dataclass(frozen=True, slots=True, kw_only=True)
class Dag:
    """Nodes ``0..n-1``: each sleeps ``durations[i]`` after ``dependencies[i]`` are done.

    Every dependency is an earlier node, so the graph is acyclic. ``run_node()``
    is a node's work, the same for every system; it notes when the node
    started and ended, so a pass can be compared with the time its nodes
    really took (a sleep overruns its duration a little).
    """

    durations: tuple[float, ...]
    dependencies: tuple[tuple[int, ...], ...]
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.starts[:] = self.ends[:] = [0.0] * len(self.durations)

    async def run_node(self, index: int) -> None:
        """Node ``index``'s work: ``await anyio.sleep(durations[index])``, timed."""
        self.starts[index] = perf_counter()
        await anyio.sleep(self.durations[index])
        self.ends[index] = perf_counter()

    @property
    def critical_path(self) -> float:
        """The longest sum of durations along a dependency path, in seconds."""
        return _longest_path(self.durations, self.dependencies)

    @property
    def measured_critical_path(self) -> float:
        """The longest sum of the nodes' measured run times (last pass) along a path."""
        taken = [end - start for start, end in zip(self.starts, self.ends, strict=True)]
        return _longest_path(taken, self.dependencies)

    @property
    def dispatch_delays(self) -> list[float]:
        """Per node of the last pass, seconds from its last dependency's end to its start."""
        return [
            start - max(self.ends[dep] for dep in before)
            for start, before in zip(self.starts, self.dependencies, strict=True)
            if before
        ]

    @property
    def depth(self) -> int:
        """The number of nodes on the longest dependency chain."""
        levels: list[int] = []
        for dependencies in self.dependencies:
            levels.append(1 + max((levels[dep] for dep in dependencies), default=0))
        return max(levels)


def random_dag(
    nodes: int,
    *,
    seed: int,
    max_dependencies: int = 3,
    shortest: float = 0.001,
    longest: float = 0.01,
) -> Dag:
    """A seeded random DAG: each node depends on up to ``max_dependencies`` earlier nodes
    and sleeps a uniform random duration in [``shortest``, ``longest``] seconds."""
    rng = random.Random(seed)
    durations = tuple(rng.uniform(shortest, longest) for _ in range(nodes))
    dependencies = tuple(
        tuple(sorted(rng.sample(range(node), rng.randint(0, min(max_dependencies, node)))))
        for node in range(nodes)
    )
    return Dag(durations=durations, dependencies=dependencies)
