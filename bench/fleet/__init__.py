"""The fleet harness: several replica processes under leases, faults, and the audit checked.

A library the tests (``tests/lease/test_processes.py``) and the benchmarks
use alike::

    with RedisServer() as server:                      # or PostgresServer()
        result = anyio.run(run, server, Profile(replicas=3, handlers=6),
                           [Fault(at=2, kind="kill", replica=0)])
    result.report.violations                           # [] when every guarantee held
    result.summary()                                   # overlaps, failover, handoff, spread...

``Profile`` sets the fleet (replicas, handlers, ttl, renew, cooler,
execution length, sync or async handlers, duration); ``Fault`` s are the
schedule; ``run()`` returns a ``Result`` with the ``Audit`` (every
execution of every replica, what each owned, what the harness did) and the
``Report`` of ``check()``: the figures of API.md section 6 and the
violations. The servers are private (``RedisServer``, ``PostgresServer``)
so that restarting them disturbs nothing else.
"""

from __future__ import annotations

from bench.fleet._audit import (
    Audit,
    Event,
    Execution,
    Report,
    Rules,
    Sample,
    Violation,
    check,
    read,
)
from bench.fleet._harness import KINDS, Fault, Profile, Result, Server, run
from bench.fleet._servers import (
    PostgresServer,
    RedisServer,
    free_port,
    missing_postgres,
    missing_redis,
)

__all__ = [
    "KINDS",
    "Audit",
    "Event",
    "Execution",
    "Fault",
    "PostgresServer",
    "Profile",
    "RedisServer",
    "Report",
    "Result",
    "Rules",
    "Sample",
    "Server",
    "Violation",
    "check",
    "free_port",
    "missing_postgres",
    "missing_redis",
    "read",
    "run",
]
