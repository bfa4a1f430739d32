"""The random DAG of the ``dag`` scenario and its critical path."""

from __future__ import annotations

import random
from dataclasses import dataclass

import anyio

__all__ = ["Dag", "nap", "random_dag"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Dag:
    """Nodes ``0..n-1``: each sleeps ``durations[i]`` after ``dependencies[i]`` are done.

    Every dependency is an earlier node, so the graph is acyclic.
    """

    durations: tuple[float, ...]
    dependencies: tuple[tuple[int, ...], ...]

    @property
    def critical_path(self) -> float:
        """The longest sum of durations along a dependency path, in seconds."""
        finish: list[float] = []
        for duration, dependencies in zip(self.durations, self.dependencies, strict=True):
            finish.append(duration + max((finish[dep] for dep in dependencies), default=0.0))
        return max(finish)

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


async def nap(duration: float) -> None:
    """A node's work: ``await anyio.sleep(duration)``, the same for every system."""
    await anyio.sleep(duration)
