"""The steady-fleet bench: what it counts as a round trip, and its table."""

from __future__ import annotations

import re

from bench._fleet_steady import INNER, markdown
from workit.lease.redis import SCRIPT


def test_the_commands_the_lease_script_runs_inside_are_not_round_trips() -> None:
    """The bench leaves out exactly the commands the Redis script calls itself."""
    called = {name.lower() for name in re.findall(r"redis\.call\('([A-Za-z]+)'", SCRIPT)}
    assert called == INNER


def test_a_fleet_is_compared_with_as_many_processes_without_leases() -> None:
    """Each row's ratios are against the baselines with the same processes and cooler, the
    handlers in step and spread."""

    def record(
        backend: str, replicas: int, handlers: int, cpu: float, *, spread: bool = False
    ) -> dict[str, object]:
        return {
            "backend": backend,
            "replicas": replicas,
            "handlers": handlers,
            "cooler_s": 1.0,
            "spread": spread,
            "cpu_us_per_execution": cpu,
            "owned": [handlers // replicas] * replicas,
            "round_trips_per_replica_s": None if backend == "none" else 0.34,
            "round_trips_per_renew": None if backend == "none" else 1.02,
        }

    table = markdown(
        [
            record("redis", 10, 1000, 30.0),
            record("none", 1, 1000, 10.0),
            record("none", 10, 100, 20.0),
            record("none", 10, 100, 60.0, spread=True),
        ]
    )
    rows = table.splitlines()[2:]
    assert rows[0].endswith("| 100-100 | 30.0 µs | 1.50x | 0.50x |")
    assert "| 0.34 | 1.02 |" in rows[0]
    assert rows[1].startswith("| none, in step | 1 x 1,000 |")
    assert rows[1].endswith("| 10.0 µs |  |  |")
    assert rows[3].startswith("| none, spread | 10 x 100 |")
